"""Every Lua script taskdash runs on Redis, with one loading style and one thin Python wrapper each.

A :class:`Script` holds its source and the SHA1 of it, computed once at import. It runs with
``EVALSHA``; when Redis does not know it (restart, ``SCRIPT FLUSH``, a fresh server) the direct call
(:meth:`Script.__call__`) loads it with ``SCRIPT LOAD`` and retries once. Inside a pipeline
(:meth:`Script.queue`) nothing is checked first: the caller queues :meth:`Script.load` in the same
pipeline when its scripts may be unknown and redoes the pipeline after a ``NoScriptError`` (the
broker reader's 2-round-trip refresh depends on this). redis-py's ``register_script`` is not used: its
``Script`` objects add a ``SCRIPT EXISTS`` round trip to every pipeline they are queued in.

Write scripts are compare-and-swap: each one checks that what it is about to move is still exactly the
bytes (and delivery time) taskdash read, so it cannot race a worker's ack, kombu's visibility restore
or a producer into a loss or a duplicate. Their text is part of that contract: tests/test_scripts.py
pins every script's SHA1, so an edit to a script is a visible, deliberate change.

Every script's header comment states its KEYS, its ARGV and what it returns. Keys are passed in, never
built here (see :mod:`collectors.keyspace.keys`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

Arg = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its name, its source and the SHA1 Redis knows it by."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode("utf-8")).hexdigest())

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Arg] = ()) -> Any:
        """``EVALSHA`` on ``client``; on ``NOSCRIPT`` load the script and run it again (once)."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Arg] = (), *, mode: str = "evalsha") -> None:
        """Queue the script in ``pipe`` (no ``SCRIPT EXISTS``; the caller handles ``NoScriptError``).

        ``mode``: ``"evalsha"`` (loaded with ``SCRIPT LOAD`` beforehand), ``"evalsha_ro"`` or ``"eval_ro"``
        — the read-only forms (Redis >= 7) for a user allowed read-only scripts but neither writes nor
        ``SCRIPT LOAD``: the first ``EVAL_RO`` with the source puts the script in Redis' cache, after
        which ``EVALSHA_RO`` finds it by :attr:`sha`. Only read-only scripts may use them.
        """
        if mode == "evalsha":
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        elif mode == "evalsha_ro":
            pipe.evalsha_ro(self.sha, len(keys), *keys, *args)
        elif mode == "eval_ro":
            pipe.eval_ro(self.source, len(keys), *keys, *args)
        else:
            raise ValueError(f"unknown script mode {mode!r}")

    def load(self, client_or_pipe: Any) -> Any:
        """``SCRIPT LOAD`` the source (queued when given a pipeline); Redis answers with :attr:`sha`."""
        return client_or_pipe.script_load(self.source)


# ==== write scripts (collectors.writes): compare-and-swap moves ======================================

# MOVE_UNACKED — requeue one unacked entry (kombu restore_by_tag, made compare-and-swap).
# KEYS[1] unacked hash, KEYS[2] unacked index, KEYS[3..] target priority lists.
# ARGV[1] tag, ARGV[2] expected hash value, ARGV[3] expected score or '', ARGV[4] message to push,
# ARGV[5] 'L' (LPUSH) | 'R' (RPUSH).
# Returns 1 moved, 0 the entry is gone (its stale index row is removed), -1 the value changed,
# -2 the delivery time changed.
_MOVE_UNACKED_LUA = """
-- KEYS[1] unacked hash, KEYS[2] unacked index, KEYS[3..] target lists
-- ARGV[1] tag, ARGV[2] expected hash value, ARGV[3] expected score or '', ARGV[4] message, ARGV[5] 'L'|'R'
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if cur ~= ARGV[2] then return -1 end
if ARGV[3] ~= '' then
  local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if (not s) or tonumber(s) ~= tonumber(ARGV[3]) then return -2 end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
for i = 3, #KEYS do
  if ARGV[5] == 'L' then redis.call('LPUSH', KEYS[i], ARGV[4]) else redis.call('RPUSH', KEYS[i], ARGV[4]) end
end
return 1
"""
MOVE_UNACKED = Script("move_unacked", _MOVE_UNACKED_LUA)


def move_unacked(client: Any, *, unacked: str, index: str, targets: Sequence[str], tag: str, expected: bytes,
                 score: str, message: str, end: str) -> int:
    """Move one unacked entry onto ``targets`` if it is still ``expected``; see MOVE_UNACKED for codes."""
    return int(MOVE_UNACKED(client, [unacked, index, *targets], [tag, expected, score, message, end]))


# UNACKED_TO_QUARANTINE — move one unacked entry into taskdash's quarantine.
# KEYS[1] unacked hash, KEYS[2] unacked index, KEYS[3] quarantine hash, KEYS[4] quarantine index.
# ARGV[1] tag, ARGV[2] expected hash value, ARGV[3] quarantine id, ARGV[4] record JSON, ARGV[5] time.
# Returns 1 moved, 0 the entry is gone (its stale index row is removed), -1 the value changed.
_UNACKED_TO_QUARANTINE_LUA = """
-- KEYS[1] unacked, KEYS[2] unacked index, KEYS[3] quarantine hash, KEYS[4] quarantine index
-- ARGV[1] tag, ARGV[2] expected hash value, ARGV[3] quarantine id, ARGV[4] record, ARGV[5] time
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if cur ~= ARGV[2] then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
return 1
"""
UNACKED_TO_QUARANTINE = Script("unacked_to_quarantine", _UNACKED_TO_QUARANTINE_LUA)


def unacked_to_quarantine(client: Any, *, unacked: str, index: str, quarantine: str, quarantine_index: str,
                          tag: str, expected: bytes, qid: str, record: str, now: str) -> int:
    """Quarantine one unacked entry if it is still ``expected``; see UNACKED_TO_QUARANTINE for codes."""
    return int(UNACKED_TO_QUARANTINE(client, [unacked, index, quarantine, quarantine_index],
                                     [tag, expected, qid, record, now]))


# LIST_TO_QUARANTINE — move one waiting message (its exact bytes) from a priority list into quarantine.
# KEYS[1] priority list, KEYS[2] quarantine hash, KEYS[3] quarantine index.
# ARGV[1] exact message, ARGV[2] quarantine id, ARGV[3] record JSON, ARGV[4] time.
# Returns 1 moved (one LREM of that element), 0 the message is no longer in the list.
_LIST_TO_QUARANTINE_LUA = """
-- KEYS[1] priority list, KEYS[2] quarantine hash, KEYS[3] quarantine index
-- ARGV[1] exact message, ARGV[2] quarantine id, ARGV[3] record, ARGV[4] time
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
  return 1
end
return 0
"""
LIST_TO_QUARANTINE = Script("list_to_quarantine", _LIST_TO_QUARANTINE_LUA)


def list_to_quarantine(client: Any, *, source: str, quarantine: str, quarantine_index: str, message: bytes,
                       qid: str, record: str, now: str) -> int:
    """Quarantine one queued message if it is still in ``source``: 1 moved, 0 not there."""
    return int(LIST_TO_QUARANTINE(client, [source, quarantine, quarantine_index], [message, qid, record, now]))


# QUARANTINE_POP — take one record out of quarantine, pushing its message back (replay) or not (delete).
# KEYS[1] quarantine hash, KEYS[2] quarantine index, KEYS[3] target list (any key when deleting).
# ARGV[1] quarantine id, ARGV[2] expected record, ARGV[3] message or '' (delete only), ARGV[4] 'L' | 'R'.
# Returns 1 done, 0 the record is gone (its stale index row is removed), -1 the record changed.
_QUARANTINE_POP_LUA = """
-- KEYS[1] quarantine hash, KEYS[2] quarantine index, KEYS[3] target list ('' ARGV[3] = delete only)
-- ARGV[1] id, ARGV[2] expected record, ARGV[3] message or '', ARGV[4] 'L'|'R'
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if cur ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then
  if ARGV[4] == 'R' then redis.call('RPUSH', KEYS[3], ARGV[3]) else redis.call('LPUSH', KEYS[3], ARGV[3]) end
end
return 1
"""
QUARANTINE_POP = Script("quarantine_pop", _QUARANTINE_POP_LUA)


def quarantine_pop(client: Any, *, quarantine: str, quarantine_index: str, target: str, qid: str,
                   expected: bytes, message: bytes | str, end: str) -> int:
    """Remove one quarantine record if it is still ``expected`` (pushing ``message`` unless it is '')."""
    return int(QUARANTINE_POP(client, [quarantine, quarantine_index, target], [qid, expected, message, end]))


# DELETE_UNACKED — compare-and-delete one unacked entry (purge --include-unacked).
# KEYS[1] unacked hash, KEYS[2] unacked index.
# ARGV[1] tag, ARGV[2] expected hash value, ARGV[3] expected score or ''.
# Returns 1 deleted, 0 gone or changed (nothing deleted).
_DELETE_UNACKED_LUA = """
-- KEYS[1] unacked, KEYS[2] unacked index; ARGV[1] tag, ARGV[2] expected value, ARGV[3] expected score
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or cur ~= ARGV[2] then return 0 end
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if ARGV[3] ~= '' and ((not s) or tonumber(s) ~= tonumber(ARGV[3])) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""
DELETE_UNACKED = Script("delete_unacked", _DELETE_UNACKED_LUA)


def delete_unacked(client: Any, *, unacked: str, index: str, tag: str, expected: bytes, score: str) -> int:
    """Delete one unacked entry if it is still ``expected`` (and ``score``): 1 deleted, 0 not."""
    return int(DELETE_UNACKED(client, [unacked, index], [tag, expected, score]))


# RENAME_LISTS — move a queue's priority lists aside in one step (purge; producers get fresh lists).
# KEYS[1..n] source lists, KEYS[n+1..2n] temporary names. No ARGV.
# Returns the length moved for each source (0 for a missing or non-list key, which is left alone).
_RENAME_LISTS_LUA = """
-- KEYS[1..n] source lists, KEYS[n+1..2n] temporary names; returns the length moved for each
local n = #KEYS / 2
local out = {}
for i = 1, n do
  out[i] = 0
  if redis.call('TYPE', KEYS[i])['ok'] == 'list' then
    redis.call('RENAME', KEYS[i], KEYS[n + i])
    out[i] = redis.call('LLEN', KEYS[n + i])
  end
end
return out
"""
RENAME_LISTS = Script("rename_lists", _RENAME_LISTS_LUA)


def rename_lists(client: Any, sources: Sequence[str], temps: Sequence[str]) -> list[int]:
    """RENAME each list in ``sources`` to the same position in ``temps``; the lengths moved."""
    return [int(n) for n in RENAME_LISTS(client, [*sources, *temps])]


# UNDO_RENAME — put renamed lists back (a purge whose export failed), keeping their order.
# KEYS[1..n] source lists, KEYS[n+1..2n] temporary lists. No ARGV.
# Each temporary list is renamed back, or appended (RPUSH, in chunks) when producers re-created the source.
# Returns 1.
_UNDO_RENAME_LUA = """
-- KEYS[1..n] source lists, KEYS[n+1..2n] temporary lists: append each temporary list back (order kept)
local n = #KEYS / 2
for i = 1, n do
  local tmp = KEYS[n + i]
  local len = redis.call('LLEN', tmp)
  if len > 0 then
    if redis.call('EXISTS', KEYS[i]) == 0 then
      redis.call('RENAME', tmp, KEYS[i])
    else
      local j = 0
      while j < len do
        local chunk = redis.call('LRANGE', tmp, j, j + 999)
        redis.call('RPUSH', KEYS[i], unpack(chunk))
        j = j + 1000
      end
      redis.call('DEL', tmp)
    end
  end
end
return 1
"""
UNDO_RENAME = Script("undo_rename", _UNDO_RENAME_LUA)


def undo_rename(client: Any, sources: Sequence[str], temps: Sequence[str]) -> None:
    """Append each list of ``temps`` back onto the same position in ``sources``."""
    UNDO_RENAME(client, [*sources, *temps])


# RELEASE_MUTEX — compare-and-delete release of kombu's ``unacked_mutex`` (as kombu's own Mutex does).
# KEYS[1] mutex key. ARGV[1] the token it was taken with.
# Returns 1 released, 0 not ours (expired, or taken by someone else).
_RELEASE_MUTEX_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RELEASE_MUTEX = Script("release_mutex", _RELEASE_MUTEX_LUA)


def release_mutex(client: Any, key: str, token: str) -> int:
    """Delete ``key`` only if it still holds ``token``."""
    return int(RELEASE_MUTEX(client, [key], [token]))


# LIST_BATCH — one batch of a bulk action on waiting messages of ONE priority list, atomically (issue 18).
# KEYS[1] source list, KEYS[2] quarantine hash, KEYS[3] quarantine index, KEYS[4..] target lists.
# ARGV: groups of 5 — exact message expected in the source, payload (new message, or quarantine record),
# op ('0' delete | '-1' quarantine | 'N' LPUSH onto KEYS[3 + N]), quarantine id (or ''), time (or '').
# Each message is removed with LREM ... -1 (searched from the end consumed next, where a bulk starts) and
# only if it was still there is it pushed / stored. Returns one '1' (done) or '0' (gone) per group.
_LIST_BATCH_LUA = """
-- KEYS[1] source list, KEYS[2] quarantine hash, KEYS[3] quarantine index, KEYS[4..] target lists
-- ARGV groups of 5: expected message, payload, op ('0' delete | '-1' quarantine | N target), id, time
local out = {}
for i = 1, #ARGV, 5 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    local op = tonumber(ARGV[i + 2])
    if op == -1 then
      redis.call('HSET', KEYS[2], ARGV[i + 3], ARGV[i + 1])
      redis.call('ZADD', KEYS[3], ARGV[i + 4], ARGV[i + 3])
    elseif op > 0 then
      redis.call('LPUSH', KEYS[3 + op], ARGV[i + 1])
    end
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
return table.concat(out)
"""
LIST_BATCH = Script("list_batch", _LIST_BATCH_LUA)


def list_batch(client: Any, *, source: str, quarantine: str, quarantine_index: str, targets: Sequence[str],
               ops: Sequence[tuple[bytes, bytes | str, int, str, str]]) -> str:
    """Run one LIST_BATCH: ``ops`` are (expected, payload, op, qid, time); one '1'/'0' per op."""
    argv: list[Arg] = []
    for expected, payload, op, qid, now in ops:
        argv += [expected, payload, str(op), qid, now]
    res = LIST_BATCH(client, [source, quarantine, quarantine_index, *targets], argv)
    return res.decode() if isinstance(res, bytes) else str(res or "")


# ==== read scripts (collectors.reads.broker): queued in the refresh pipelines ========================

# QUEUE_PROBE — depths of several queues' priority lists and the head (next message) of each.
# KEYS: the band keys of several queues, band 0 first, ARGV[1] keys per queue. ARGV: bands, inline max,
# head bytes, tail bytes, then per queue the delivery tag of the message seen last time ('' if none).
# Returns one item per queue:
# {wrong_type_flag, {llen or -1 per band}[, band index, size[, value | head, tail]]}
# where a missing value means "the same delivery tag as last time" (the message is not sent again).
# Used only for the queues whose head must be looked at this refresh (new queue, new priority band,
# changed length, round-robin slice); with one key per queue (ARGV[1] = 1) it is a pure head probe.
_QUEUE_PROBE_LUA = """
local nb = tonumber(ARGV[1])
local inline = tonumber(ARGV[2])
local hb = tonumber(ARGV[3])
local tb = tonumber(ARGV[4])
local out = {}
for q = 0, (#KEYS / nb) - 1 do
  local wrong = 0
  local lens = {}
  local first = 0
  for b = 1, nb do
    local n = redis.pcall('LLEN', KEYS[q * nb + b])
    if type(n) ~= 'number' then wrong = 1; n = -1 end
    lens[b] = n
    if first == 0 and n > 0 then first = b end
  end
  local item = {wrong, lens}
  if first > 0 then
    local v = redis.call('LINDEX', KEYS[q * nb + first], -1)
    if v then
      local size = string.len(v)
      item[3] = first
      item[4] = size
      local tag = nil
      local from = size - 1023
      if from < 1 then from = 1 end
      while true do
        local p = string.find(v, '"delivery_tag":', from, true)
        if not p then break end
        tag = string.match(v, '^"delivery_tag":%s*"([^"]*)"', p) or tag
        from = p + 15
      end
      local known = ARGV[5 + q]
      if tag and known and known ~= '' and tag == known then
        -- unchanged: nothing more to send
      elseif size <= inline then
        item[5] = v
      else
        item[5] = string.sub(v, 1, hb)
        item[6] = string.sub(v, -tb)
      end
    end
  end
  out[#out + 1] = item
end
return out
"""
QUEUE_PROBE = Script("queue", _QUEUE_PROBE_LUA)


def queue_probe(pipe: Any, keys: Sequence[str], bands: int, inline: int, head: int, tail: int,
                known: Sequence[str], *, mode: str = "evalsha") -> None:
    """Queue one QUEUE_PROBE call (``keys``: ``bands`` keys per queue; ``known``: one tag per queue)."""
    QUEUE_PROBE.queue(pipe, keys, [bands, inline, head, tail, *known], mode=mode)


# WINDOW_FETCH — the unacked values of the window's new tags, and which known tags still exist.
# KEYS: unacked hash. ARGV: inline max, head bytes, tail bytes, n, then n tags to fetch, then tags whose
# existence is to be checked. Returns {item per fetched tag..., checks} with item = {size, value} |
# {size, head, tail} | {-1} (not in the hash) and checks = one '1'/'0' character per checked tag.
_WINDOW_FETCH_LUA = """
local inline = tonumber(ARGV[1])
local hb = tonumber(ARGV[2])
local tb = tonumber(ARGV[3])
local nf = tonumber(ARGV[4])
local out = {}
for i = 5, 4 + nf do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if not v then
    out[#out + 1] = {-1}
  else
    local size = string.len(v)
    if size <= inline then
      out[#out + 1] = {size, v}
    else
      out[#out + 1] = {size, string.sub(v, 1, hb), string.sub(v, -tb)}
    end
  end
end
local checks = {}
for i = 5 + nf, #ARGV do
  checks[#checks + 1] = tostring(redis.call('HEXISTS', KEYS[1], ARGV[i]))
end
out[#out + 1] = table.concat(checks)
return out
"""
WINDOW_FETCH = Script("window", _WINDOW_FETCH_LUA)


def window_fetch(pipe: Any, unacked: str, inline: int, head: int, tail: int, fetch: Sequence[str],
                 check: Sequence[str], *, mode: str = "evalsha") -> None:
    """Queue one WINDOW_FETCH call: values of ``fetch``, existence of ``check``."""
    WINDOW_FETCH.queue(pipe, [unacked], [inline, head, tail, len(fetch), *fetch, *check], mode=mode)


# UNACKED_ROUTES — one bounded HSCAN step of the ledger, counted per (exchange, routing key).
# KEYS: unacked hash. ARGV: cursor, count. One HSCAN step; returns {cursor, lines} where lines is ONE
# bulk string of 'count<TAB>exchange<TAB>routing_key' lines, one per distinct route of the step (the
# value ends with '"exchange", "routing_key"]'); routes with escaped characters count under '?'.
_UNACKED_ROUTES_LUA = """
local t = redis.pcall('TYPE', KEYS[1])
if type(t) == 'table' and t.ok ~= 'hash' then return {'0', ''} end
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local agg = {}
local order = {}
local kv = r[2]
for i = 2, #kv, 2 do
  -- the value ends with '"exchange", "routing_key"]': match the reversed tail, anchored (linear time)
  local krev, xrev = string.match(string.reverse(string.sub(kv[i], -600)),
    '^%s*%]%s*"([^"\\\\]*)"%s*,%s*"([^"\\\\]*)"')
  local key = '?'
  if krev then key = string.reverse(xrev) .. '\\t' .. string.reverse(krev) end
  if not agg[key] then agg[key] = 0; order[#order + 1] = key end
  agg[key] = agg[key] + 1
end
local out = {}
for _, key in ipairs(order) do out[#out + 1] = agg[key] .. '\\t' .. key end
return {r[1], table.concat(out, '\\n')}
"""
UNACKED_ROUTES = Script("scan", _UNACKED_ROUTES_LUA)


def unacked_routes(pipe: Any, unacked: str, cursor: int, count: int, *, mode: str = "evalsha") -> None:
    """Queue one UNACKED_ROUTES step (HSCAN ``cursor`` of ``unacked``, ``count`` entries)."""
    UNACKED_ROUTES.queue(pipe, [unacked], [cursor, count], mode=mode)


# ==== permission pre-check of the writes ===========================================================
# ACL_PROBE — may the current user run these commands with these arguments? Writes nothing.
# KEYS: none (the keys to check are arguments of the checked commands). ARGV: groups of (argc, command, args...). Returns the 1-based index of the first refused group, 0 if
# every one is permitted (Redis 7 ``redis.acl_check_cmd``: command, key and channel permissions).
_ACL_PROBE_LUA = """
local i = 1
local n = 0
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  local args = {}
  for j = 1, argc do args[j] = ARGV[i + j] end
  n = n + 1
  if not redis.acl_check_cmd(unpack(args)) then return n end
  i = i + argc + 1
end
return 0
"""
ACL_PROBE = Script("acl_probe", _ACL_PROBE_LUA)


def acl_probe(client: Any, checks: Sequence[Sequence[str]]) -> int:
    """Run ACL_PROBE for ``checks`` (each ``[command, arg, ...]``); 0 or the 1-based refused index."""
    argv: list[Arg] = []
    for check in checks:
        argv += [len(check), *check]
    return int(ACL_PROBE(client, [], argv))


WRITE_SCRIPTS: tuple[Script, ...] = (MOVE_UNACKED, UNACKED_TO_QUARANTINE, LIST_TO_QUARANTINE, QUARANTINE_POP,
                                     DELETE_UNACKED, RENAME_LISTS, UNDO_RENAME, RELEASE_MUTEX, ACL_PROBE,
                                     LIST_BATCH)
"""The compare-and-swap scripts of collectors.writes."""
BROKER_SCRIPTS: tuple[Script, ...] = (QUEUE_PROBE, WINDOW_FETCH, UNACKED_ROUTES)
"""The scripts the broker reader loads in its first pipeline."""
SCRIPTS: tuple[Script, ...] = WRITE_SCRIPTS + BROKER_SCRIPTS
"""Every script taskdash runs."""
