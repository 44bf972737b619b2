"""The broker read side: task queues (depth per priority band, oldest waiting age) and the unacked ledger.

One :meth:`BrokerReader.read` costs **2 pipelined round trips, 3 when new binding tables were found**
(never more, whatever the number of queues or ledger size), and it never writes a key. Every script is
read-only (LLEN, LINDEX, SSCAN, HLEN, ZCARD, ZRANGE, HGET, HEXISTS, HSCAN, TYPE).

Round trip 1 (one pipeline)
    * ``SCAN <cursor> MATCH <prefix>_kombu.binding.* COUNT 1000`` — one step of an endless incremental
      scan; the binding-table keys it found are cached (KEYS is never used). Tables that a whole SCAN
      pass no longer sees are forgotten. The tables ``_kombu.binding.<q>`` of the app's and workers'
      queues are read even before the scan reaches them (Celery binds queue ``q`` to exchange ``q``).
    * ``ZRANGE <prefix>_kombu.binding_deadlines 0 999`` — exchange names of expiring bindings.
    * ``EVALSHA tables`` (one call per 256 tables): an ``SSCAN <table> <cursor> COUNT 1000`` step of
      every known *task* binding table (pidbox, reply and event tables are never read: their queues are
      internal). A small set comes back whole in one step; a huge one is read 1000 rows per refresh and
      its rows are replaced once a pass completes. Rows ``rk<sep>pattern<sep>queue`` are split on the
      transport ``sep``.
    * ``EVALSHA unacked-window``: ``HLEN unacked``, ``ZCARD unacked_index``, ``ZRANGE unacked_index 0 N-1
      WITHSCORES`` (N = ``settings.unacked_window``, oldest first) and ``HGET`` of those N tags only.
      Entries whose (tag, score) the reader decoded last time are only checked with ``HEXISTS`` and not
      transferred again (a redelivery changes the score). Values up to 64 KiB come back whole; bigger
      ones as size, first 512 bytes and last 16 KiB (enough for the headers, see
      :func:`collectors.messages.decode_truncated`).
    * On the first read only: ``SCRIPT LOAD`` of the four scripts (shas known locally).

Round trip 2 (only when round trip 1 found binding tables never read before)
    * ``EVALSHA tables`` for those new tables, so a queue created by a producer shows on the same refresh.

Last round trip (one pipeline)
    * ``EVALSHA queue-probe``, one call per 256 queues: ``LLEN`` of every priority key (``redis.pcall``,
      so a key of the wrong type is flagged ``wrong_type`` instead of failing the refresh) and
      ``LINDEX key -1`` of the highest-priority non-empty band — the message BRPOP takes next. The script
      extracts that message's delivery tag from its last KiB; when it is the tag the reader saw last time
      nothing more is returned, otherwise the message (or, above 64 KiB, its size + head + tail). So an
      unchanged 50 MB message is never transferred (it is still copied once inside Redis by LINDEX).
    * when the ledger is larger than the window: one ``EVALSHA unacked-scan`` step: ``HSCAN unacked
      <cursor> COUNT 2000`` returning only each tag and the last 256 bytes of its value (which hold the
      exchange and routing key).

Commands sent per refresh: about 4 + queues/256 + tables/256 (+ 4 SCRIPT LOADs once); inside Redis the
scripts run ~2 commands per priority key and per table, so server work grows linearly with the number of
queues, round trips do not. Measured: 1000 queues ≈ 0.1 s of client time per refresh (mostly redis-py's
reply parsing). If Redis lost the scripts (restart, ``SCRIPT FLUSH``), the read is redone once after
reloading them (the view's ``round_trips`` then counts both attempts).

Oldest waiting age
    Messages carry no enqueue time. The reader remembers when it first saw each message at the consuming
    end of a queue (identified by its delivery tag, or a hash of a tag-less value) and reports
    ``now - first_seen``: **a message seen for the first time has age 0**, so the age is a lower bound that
    becomes exact for messages that arrived after taskdash started. When the message has an ``eta`` in the
    past, ``now - eta`` is used if larger. The last 8 identities per queue are remembered, so the age
    survives a higher-priority message jumping ahead and being consumed.

Per-queue unacked counts
    When ``HLEN unacked`` ≤ window, the counts are exact (from the window). For bigger ledgers the bounded
    ``unacked-scan`` steps count entries per queue (memory: one counter per queue, no per-tag state); a
    full HSCAN pass takes about ``total / 2000`` refreshes. The counts shown are those of the last complete
    pass (during the very first pass: the running partial counts), never fewer than the window holds for
    a queue; so they lag the ledger by at most one pass. ``BrokerView.unacked_counts_exact`` is False
    whenever the ledger exceeds the window. (HSCAN may return an entry twice while Redis rehashes the
    hash: a count can then be slightly high for one pass.)

Queue of an unacked entry: the routing key when the exchange is ``''`` (what Celery uses), else the
binding table of the exchange (direct: routing key equality; topic: the stored regex).

Unacked classification (DESIGN.md §2): a task id that a responding worker reports (``claims``) takes its
state (active/reserved/scheduled) and holder; an unclaimed entry reserved before ``inspected_at - grace_s``
is ``orphaned``; a newer one is ``unknown`` (the last inspect could not have seen it), and everything is
``unknown`` when inspect failed (``claims=None``). Reserve times are the consuming worker's clock, so clock
skew between workers and taskdash shifts ages.

Not thread-safe: one reader per collector thread.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from collectors.config import Settings
from collectors.messages import (
    decode_envelope,
    decode_truncated,
    decode_unacked,
    decode_unacked_truncated,
    delivery_tag_of,
    eta_timestamp,
    exchange_and_routing_key_of_tail,
)
from collectors.models import DecodedMessage, QueueInfo, TaskRef, UnackedEntry, UnackedState

INLINE_MAX = 65536
"""Values up to this size are transferred whole; bigger ones as size + head + tail."""
HEAD_BYTES = 512
TAIL_BYTES = 16384
SCAN_COUNT = 1000
SSCAN_COUNT = 1000
HSCAN_COUNT = 2000
HSCAN_TAIL = 256
OLDEST_MEMORY = 8
BATCH = 256
"""Queues (or binding tables) handled by one script call: bounds how long one call blocks Redis."""
DEADLINES_LIMIT = 1000

# KEYS: the band keys of several queues, band 0 first, ARGV[1] keys per queue. ARGV: bands, inline max,
# head bytes, tail bytes, then per queue the delivery tag of the message seen last time ('' if none).
# Returns one item per queue:
# {wrong_type_flag, {llen or -1 per band}[, band index, size[, value | head, tail]]}
# where a missing value means "the same delivery tag as last time" (the message is not sent again).
LUA_QUEUE_PROBE = """
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
      for m in string.gmatch(string.sub(v, -1024), '"delivery_tag":%s*"([^"]*)"') do tag = m end
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

# KEYS: binding tables. ARGV[1]: count; ARGV[1 + i]: SSCAN cursor of KEYS[i].
# Returns {cursor, {members}} per table ({'0', {}} for a key that is not a set).
LUA_TABLES = """
local out = {}
for i = 1, #KEYS do
  local r = redis.pcall('SSCAN', KEYS[i], ARGV[i + 1], 'COUNT', ARGV[1])
  if r.err then out[i] = {'0', {}} else out[i] = r end
end
return out
"""

# KEYS: unacked hash, unacked_index zset. ARGV: window, inline max, head bytes, tail bytes, then pairs
# (tag, score) already decoded by the caller. Returns {hlen, zcard, item...} with item =
# {tag, score, size, value} | {tag, score, size, head, tail} | {tag, score, -1} (not in the hash)
# | {tag, score, -2} (same tag and score as a pair the caller knows: the value is not sent again).
LUA_UNACKED_WINDOW = """
local hlen = redis.pcall('HLEN', KEYS[1])
if type(hlen) ~= 'number' then return redis.error_reply('unacked hash: ' .. tostring(hlen.err)) end
local zcard = redis.pcall('ZCARD', KEYS[2])
if type(zcard) ~= 'number' then return redis.error_reply('unacked_index: ' .. tostring(zcard.err)) end
local out = {hlen, zcard}
local n = tonumber(ARGV[1])
if n <= 0 or zcard == 0 then return out end
local z = redis.call('ZRANGE', KEYS[2], 0, n - 1, 'WITHSCORES')
local inline = tonumber(ARGV[2])
local known = {}
for i = 5, #ARGV - 1, 2 do known[ARGV[i]] = ARGV[i + 1] end
for i = 1, #z, 2 do
  local v = nil
  if known[z[i]] == z[i + 1] then
    if redis.call('HEXISTS', KEYS[1], z[i]) == 1 then v = true end
  else
    v = redis.call('HGET', KEYS[1], z[i])
  end
  if v == true then
    out[#out + 1] = {z[i], z[i + 1], -2}
  elseif not v then
    out[#out + 1] = {z[i], z[i + 1], -1}
  else
    local size = string.len(v)
    if size <= inline then
      out[#out + 1] = {z[i], z[i + 1], size, v}
    else
      out[#out + 1] = {z[i], z[i + 1], size, string.sub(v, 1, tonumber(ARGV[3])), string.sub(v, -tonumber(ARGV[4]))}
    end
  end
end
return out
"""

# KEYS: unacked hash. ARGV: cursor, count, tail bytes. Returns {cursor, tag, tail, tag, tail, ...}.
LUA_UNACKED_SCAN = """
local t = redis.pcall('TYPE', KEYS[1])
if type(t) == 'table' and t.ok ~= 'hash' and t.ok ~= 'none' then return {'0'} end
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out = {r[1]}
local kv = r[2]
local tail = tonumber(ARGV[3])
for i = 1, #kv, 2 do
  out[#out + 1] = kv[i]
  out[#out + 1] = string.sub(kv[i + 1], -tail)
end
return out
"""

_SCRIPTS = {"queue": LUA_QUEUE_PROBE, "tables": LUA_TABLES, "window": LUA_UNACKED_WINDOW,
            "scan": LUA_UNACKED_SCAN}
_SHAS = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in _SCRIPTS.items()}


@dataclass(frozen=True, slots=True)
class BrokerView:
    """What one broker read found: task queues and the unacked ledger window, plus what it cost."""

    queues: tuple[QueueInfo, ...]
    unacked: tuple[UnackedEntry, ...]
    """Bounded window of the ledger, oldest first."""
    unacked_total: int
    """HLEN unacked."""
    round_trips: int
    commands: int
    errors: tuple[str, ...] = ()
    """Non-fatal problems (a wrong-type unacked key, ...); the rest of the view is valid."""
    unacked_index_total: int = 0
    """ZCARD unacked_index (differs from unacked_total only transiently or after manual edits)."""
    unacked_counts_exact: bool = True
    """False while per-queue unacked counts come from an incomplete HSCAN pass of a big ledger."""
    binding_tables: int = 0
    """Binding tables (``_kombu.binding.*``) known so far."""
    discovery_passes: int = 0
    """Completed SCAN passes over the keyspace looking for binding tables."""


@dataclass(slots=True)
class _Table:
    """Cached state of one ``_kombu.binding.<exchange>`` set."""

    exchange: str
    rows: frozenset[tuple[str, str, str]] = frozenset()
    partial: set[tuple[str, str, str]] = field(default_factory=set)
    cursor: int = 0
    read_once: bool = False
    pinned: bool = False
    """A table guessed from a known queue name (Celery binds queue X to exchange X): never pruned."""


@dataclass(slots=True)
class _Cost:
    round_trips: int = 0
    commands: int = 0


def _text(value: Any) -> str:
    """Key names and members as str; undecodable bytes survive as surrogates (``surrogateescape``) so
    the name encodes back to the very same key (the client is made with ``encoding_errors`` to match)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value).encode("utf-8", "surrogateescape")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


MAX_ROUTING_KEY = 1024
"""Longer routing keys are never matched against topic bindings (AMQP caps them at 255 bytes)."""


def _topic_pattern(binding_key: str) -> str:
    """The regex kombu's topic exchange stores for ``binding_key`` (kombu ``TopicExchange.key_to_pattern``)."""
    from kombu.utils.text import escape_regex

    wildcards = {"*": r"[^\.]+", "#": r".*?"}
    body = r"\.".join(wildcards.get(w, w) for w in escape_regex(binding_key, ".#*").split("."))
    return f"^{body}$"


def topic_match(binding_key: str, pattern: str, routing_key: str) -> bool:
    r"""Does kombu's topic exchange route ``routing_key`` through the binding ``(binding_key, pattern)``?

    Never runs the stored regex: a binding row is data anyone with write access to the broker can
    plant, and a pattern like ``(a+)+$`` would freeze every refresh (catastrophic backtracking). Only
    rows whose pattern is exactly what kombu generates from their binding key are honoured, and they
    are matched in linear time by walking the words (``*`` = one non-empty word without dots,
    ``#`` = any text, as kombu's ``[^\.]+`` and ``.*?``). Binding keys with ``*``/``#`` inside a word
    (a raw regex quantifier in kombu's pattern) are not matched.
    """
    if len(routing_key) > MAX_ROUTING_KEY or pattern != _topic_pattern(binding_key):
        return False
    tokens: list[str | None] = []  # literal text, or None for a wildcard word
    kinds: list[str] = []
    for i, word in enumerate(binding_key.split(".")):
        if i:
            tokens.append(".")
            kinds.append("lit")
        if word in ("*", "#"):
            tokens.append(None)
            kinds.append(word)
        elif "*" in word or "#" in word:
            return False
        else:
            tokens.append(word)
            kinds.append("lit")
    n = len(routing_key)
    reach = [False] * (n + 1)  # positions of routing_key reachable after the tokens so far
    reach[0] = True
    for tok, kind in zip(tokens, kinds, strict=True):
        nxt = [False] * (n + 1)
        if kind == "lit":
            assert tok is not None
            size = len(tok)
            for p in range(n + 1):
                if reach[p] and routing_key.startswith(tok, p):
                    nxt[p + size] = True
        elif kind == "#":
            seen = False
            for p in range(n + 1):
                seen = seen or reach[p]
                nxt[p] = seen
        else:  # '*': one or more characters other than '.'
            run = False  # some reachable start p' < q with no dot in routing_key[p':q]
            for q in range(1, n + 1):
                if routing_key[q - 1] == ".":
                    run = False
                else:
                    run = run or reach[q - 1]
                nxt[q] = run
        reach = nxt
        if not any(reach):
            return False
    return reach[n]


_NOT_READY = ("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


class _NoScript(Exception):
    """Redis does not know one of our scripts any more (restart or SCRIPT FLUSH)."""


class BrokerReader:
    """Reads task queues and the unacked ledger in a constant number of pipelined round trips.

    Keeps small caches between reads (binding tables, first-seen times of queue heads, a tag → queue
    map for big ledgers), so reuse one reader for the life of a collector.
    """

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self._scripts_loaded = False
        self._scan_cursor = 0
        self._scan_seen: set[str] = set()
        self._discovery_passes = 0
        self._tables: dict[str, _Table] = {}
        self._seen: dict[str, OrderedDict[str, tuple[float, float | None]]] = {}
        self._scan_counts_done: dict[str, int] | None = None
        """Unacked entries per queue counted by the last complete HSCAN pass (None: no pass yet)."""
        self._scan_counts_partial: dict[str, int] = {}
        self._hscan_cursor = 0
        self._hscan_passes = 0
        self._window_cache: dict[str, tuple[bytes, DecodedMessage, str | None, str | None]] = {}
        """tag -> (score, decoded) of the last window: unchanged entries are not transferred again."""
        self._binding_prefix = settings.key("_kombu.binding.")
        self._deadlines_key = settings.key("_kombu.binding_deadlines")
        ctl = settings.control_exchange
        self._internal_exchanges = {f"{ctl}.pidbox", f"reply.{ctl}.pidbox", settings.event_exchange, "C.dq2"}

    # ---- public ----------------------------------------------------------------------------------
    def read(self, *, now: float, worker_queues: Mapping[str, int] | None = None,
             claims: Mapping[str, TaskRef] | None = None, inspected_at: float | None = None,
             grace_s: float = 2.0) -> BrokerView:
        """One refresh of queues and the unacked window.

        Args:
            now: the reference time for ages (epoch seconds, taskdash's clock).
            worker_queues: queue name → number of online workers consuming it (inspect active_queues);
                None when inspect is unavailable (then ``consumers`` is None).
            claims: task id → TaskRef for every task a responding worker reports; None when inspect failed.
            inspected_at: when the inspect that produced ``claims`` ran (defaults to ``now``).
            grace_s: unclaimed entries younger than ``inspected_at - grace_s`` are "unknown", not orphaned.

        Raises:
            redis.RedisError: the broker is unreachable (connection errors are not swallowed).
        """
        cost = _Cost()
        try:
            return self._read(cost, now, worker_queues, claims, inspected_at, grace_s)
        except _NoScript:
            self._scripts_loaded = False  # the retry's cost adds to the failed attempt's
            return self._read(cost, now, worker_queues, claims, inspected_at, grace_s)

    def is_internal_queue(self, name: str) -> bool:
        """True for Celery's own queues (pidbox, reply, event receivers, worker-direct)."""
        ev = self.settings.event_exchange
        return (
            name.endswith(".pidbox")
            or name.startswith(f"{ev}.")
            or name == ev
            or name.endswith(".dq2")
        )

    def queue_for(self, exchange: str | None, routing_key: str | None) -> str | None:
        """The queue a message published with (exchange, routing_key) lands in, from the binding tables."""
        if not exchange:
            return routing_key
        table = self._tables.get(self._binding_prefix + exchange)
        if table is not None and routing_key is not None:
            rows = table.rows | table.partial
            matches = sorted(q for rk, pattern, q in rows if (rk == routing_key and not pattern))
            if not matches:
                for rk, pattern, q in sorted(rows):
                    if pattern and topic_match(rk, pattern, routing_key):
                        matches.append(q)
            if matches:
                return matches[0]
        return None

    # ---- implementation --------------------------------------------------------------------------
    def _execute(self, pipe: Any, cost: _Cost) -> list[Any]:
        n = len(pipe.command_stack)
        if n == 0:
            return []
        cost.round_trips += 1
        cost.commands += n
        try:
            results = pipe.execute(raise_on_error=False)
        finally:
            pipe.reset()
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
            raise _NoScript()
        for r in results:
            # A Redis that is up but cannot answer (a busy script, loading, a master down) fails the whole
            # read: its per-command errors must not look like wrong-type keys or empty queues.
            if isinstance(r, redis.exceptions.ResponseError) and str(r).startswith(_NOT_READY):
                raise r
        return list(results)

    def _read(self, cost: _Cost, now: float, worker_queues: Mapping[str, int] | None,
              claims: Mapping[str, TaskRef] | None, inspected_at: float | None, grace_s: float) -> BrokerView:
        s = self.settings
        errors: list[str] = []

        # Celery binds queue X to exchange X by default: read those tables even before the incremental
        # SCAN reaches them (large keyspaces, e.g. results in the broker db).
        for name in (*s.app_queues, *(worker_queues or {})):
            if name and not self.is_internal_queue(name):
                key = self._binding_prefix + name
                self._tables.setdefault(key, _Table(exchange=name)).pinned = True

        # ---- round trip 1: discovery step, known tables, unacked window ----
        pipe = self.client.pipeline(transaction=False)
        if not self._scripts_loaded:
            for src in _SCRIPTS.values():
                pipe.script_load(src)
        n_load = len(pipe.command_stack)
        pipe.scan(self._scan_cursor, match=_glob_escape(self._binding_prefix) + "*", count=SCAN_COUNT)
        pipe.zrange(self._deadlines_key, 0, DEADLINES_LIMIT - 1)
        to_read = [k for k, t in self._tables.items() if t.exchange not in self._internal_exchanges]
        n_tables = self._queue_table_reads(pipe, to_read)
        known = [x for tag, (score_b, *_rest) in self._window_cache.items() for x in (tag, score_b)]
        pipe.evalsha(_SHAS["window"], 2, s.unacked_hash, s.unacked_zset, max(0, s.unacked_window),
                     INLINE_MAX, HEAD_BYTES, TAIL_BYTES, *known)
        res = self._execute(pipe, cost)
        if not self._scripts_loaded:
            bad = [r for r in res[:n_load] if isinstance(r, Exception)]
            if bad:
                raise bad[0]
            self._scripts_loaded = True
        res = res[n_load:]
        scan_res, deadlines_res = res[0], res[1]
        sscan_res = self._flatten(res[2:2 + n_tables], len(to_read))
        window_res = res[2 + n_tables]

        self._absorb_scan(scan_res, deadlines_res, errors)
        for key, r in zip(to_read, sscan_res, strict=True):
            self._absorb_sscan(key, r)

        # ---- round trip 2 (only for binding tables never read) ----
        new = [k for k, t in self._tables.items()
               if not t.read_once and t.exchange not in self._internal_exchanges]
        if new:
            pipe = self.client.pipeline(transaction=False)
            self._queue_table_reads(pipe, new)
            for key, r in zip(new, self._flatten(self._execute(pipe, cost), len(new)), strict=True):
                self._absorb_sscan(key, r)

        # ---- queue names ----
        sources: dict[str, set[str]] = {}
        for name in s.app_queues:
            sources.setdefault(name, set()).add("app")
        for name in worker_queues or {}:
            sources.setdefault(name, set()).add("worker")
        for table in self._tables.values():
            if table.exchange in self._internal_exchanges:
                continue
            for _rk, _pattern, q in table.rows | table.partial:
                if q:
                    sources.setdefault(q, set()).add("binding")
        names = sorted(n for n in sources if n and not self.is_internal_queue(n))

        # ---- unacked window (decoded before the last round trip: it tells if we need an HSCAN step) ----
        unacked_total, index_total, window = self._absorb_window(window_res, errors)
        need_scan = unacked_total > len(window) and unacked_total > 0

        # ---- last round trip: one probe per queue (+ one ledger scan step) ----
        pipe = self.client.pipeline(transaction=False)
        nb = len(s.priority_steps)
        for i in range(0, len(names), BATCH):
            chunk = names[i:i + BATCH]
            keys = [k for name in chunk for _band, k in s.queue_keys(name)]
            known = [self._last_identity(name) for name in chunk]
            pipe.evalsha(_SHAS["queue"], len(keys), *keys, nb, INLINE_MAX, HEAD_BYTES, TAIL_BYTES, *known)
        n_probes = len(pipe.command_stack)
        if need_scan:
            pipe.evalsha(_SHAS["scan"], 1, s.unacked_hash, self._hscan_cursor, HSCAN_COUNT, HSCAN_TAIL)
        res = self._execute(pipe, cost)
        probe_res = self._flatten(res[:n_probes], len(names))
        if need_scan:
            self._absorb_hscan(res[n_probes], errors)
        else:
            self._scan_counts_done = None
            self._scan_counts_partial = {}
            self._hscan_cursor = 0

        # ---- build the view ----
        entries = self._classify(window, now, claims, inspected_at, grace_s)
        counts, exact = self._unacked_counts(entries, unacked_total, need_scan)
        queues: list[QueueInfo] = []
        for name, r in zip(names, probe_res, strict=True):
            queues.append(self._queue_info(name, r, now, sources[name], worker_queues,
                                           counts.get(name, 0), errors))
        for gone in set(self._seen) - set(names):
            del self._seen[gone]
        return BrokerView(
            queues=tuple(queues),
            unacked=tuple(entries),
            unacked_total=unacked_total,
            round_trips=cost.round_trips,
            commands=cost.commands,
            errors=tuple(errors),
            unacked_index_total=index_total,
            unacked_counts_exact=exact,
            binding_tables=len(self._tables),
            discovery_passes=self._discovery_passes,
        )

    @staticmethod
    def _flatten(results: Sequence[Any], n: int) -> list[Any]:
        """Per-item results of batched script calls; a failed call fails each of its items."""
        out: list[Any] = []
        for r in results:
            if isinstance(r, Exception):
                out.extend([r] * min(BATCH, n - len(out)))
            else:
                out.extend(r)
        if len(out) != n:
            raise redis.exceptions.ResponseError(f"unexpected script reply ({len(out)} items, {n} expected)")
        return out

    def _queue_table_reads(self, pipe: Any, keys: Sequence[str]) -> int:
        """Queue SSCAN steps of ``keys`` as batched script calls; returns the number of calls."""
        calls = 0
        for i in range(0, len(keys), BATCH):
            chunk = keys[i:i + BATCH]
            cursors = [self._tables[k].cursor if self._tables[k].read_once else 0 for k in chunk]
            pipe.evalsha(_SHAS["tables"], len(chunk), *chunk, SSCAN_COUNT, *cursors)
            calls += 1
        return calls

    # ---- discovery ----
    def _absorb_scan(self, scan_res: Any, deadlines_res: Any, errors: list[str]) -> None:
        if isinstance(scan_res, Exception):
            errors.append(f"binding discovery: {scan_res}")
        else:
            cursor, keys = scan_res
            for k in keys:
                key = _text(k)
                if key.startswith(self._binding_prefix):
                    self._scan_seen.add(key)
                    self._tables.setdefault(key, _Table(exchange=key[len(self._binding_prefix):]))
            self._scan_cursor = int(cursor)
            if self._scan_cursor == 0:
                self._discovery_passes += 1
                # A whole pass is done: forget tables that no longer exist.
                for key in [k for k, t in self._tables.items() if k not in self._scan_seen and not t.pinned]:
                    del self._tables[key]
                self._scan_seen = set()
        if not isinstance(deadlines_res, Exception):
            for ex in deadlines_res or ():
                exchange = _text(ex)
                key = self._binding_prefix + exchange
                self._scan_seen.add(key)
                self._tables.setdefault(key, _Table(exchange=exchange))

    def _absorb_sscan(self, key: str, r: Any) -> None:
        table = self._tables.get(key)
        if table is None:
            return
        table.read_once = True
        if isinstance(r, Exception):  # wrong type: not a binding table
            table.rows, table.partial, table.cursor = frozenset(), set(), 0
            return
        cursor, members = r
        sep = self.settings.sep
        for m in members:
            parts = _text(m).split(sep)
            if len(parts) == 3:
                table.partial.add((parts[0], parts[1], parts[2]))
        table.cursor = int(cursor)
        if table.cursor == 0:
            table.rows = frozenset(table.partial)
            table.partial = set()

    # ---- unacked ----
    def _absorb_window(self, res: Any, errors: list[str]
                       ) -> tuple[int, int, list[tuple[str, float | None, DecodedMessage, str | None, str | None]]]:
        if isinstance(res, Exception):
            errors.append(f"unacked: {res}")
            return 0, 0, []
        hlen, zcard = int(res[0]), int(res[1])
        window: list[tuple[str, float | None, DecodedMessage, str | None, str | None]] = []
        cache: dict[str, tuple[bytes, DecodedMessage, str | None, str | None]] = {}
        for item in res[2:]:
            tag = _text(item[0])
            score_b = _bytes(item[1])
            try:
                score: float | None = float(score_b)
            except (TypeError, ValueError):
                score = None
            size = int(item[2])
            if size == -2 and tag in self._window_cache:  # unchanged since the last read
                _sb, msg, ex, rk = self._window_cache[tag]
            elif size < 0:
                continue  # in the index but acked meanwhile (or half-written): not in the ledger
            elif len(item) == 4:
                msg, ex, rk = decode_unacked(_bytes(item[3]))
            else:
                msg, ex, rk = decode_unacked_truncated(size, _bytes(item[3]), _bytes(item[4]))
            cache[tag] = (score_b, msg, ex, rk)
            window.append((tag, score, msg, ex, rk))
        self._window_cache = cache
        return hlen, zcard, window

    def _absorb_hscan(self, res: Any, errors: list[str]) -> None:
        if isinstance(res, Exception):
            errors.append(f"unacked scan: {res}")
            return
        cursor = int(res[0])
        items = res[1:]
        memo: dict[tuple[str | None, str | None], str | None] = {}
        counts = self._scan_counts_partial
        for i in range(1, len(items), 2):
            route = exchange_and_routing_key_of_tail(_bytes(items[i]))
            if route not in memo:
                memo[route] = self.queue_for(*route) if route[1] is not None else None
            q = memo[route]
            if q:
                counts[q] = counts.get(q, 0) + 1
        self._hscan_cursor = cursor
        if cursor == 0:
            self._hscan_passes += 1
            self._scan_counts_done = counts
            self._scan_counts_partial = {}

    def _unacked_counts(self, entries: Sequence[UnackedEntry], total: int, scanning: bool
                        ) -> tuple[dict[str, int], bool]:
        if not scanning:
            counts: dict[str, int] = {}
            for e in entries:
                if e.queue:
                    counts[e.queue] = counts.get(e.queue, 0) + 1
            return counts, True
        counts = dict(self._scan_counts_done if self._scan_counts_done is not None else self._scan_counts_partial)
        in_window: dict[str, int] = {}
        for e in entries:
            if e.queue:
                in_window[e.queue] = in_window.get(e.queue, 0) + 1
        for q, n in in_window.items():  # window entries are certain: never show fewer
            counts[q] = max(counts.get(q, 0), n)
        return counts, False

    def _classify(self, window: Iterable[tuple[str, float | None, DecodedMessage, str | None, str | None]],
                  now: float, claims: Mapping[str, TaskRef] | None, inspected_at: float | None,
                  grace_s: float) -> list[UnackedEntry]:
        vt = self.settings.visibility_timeout
        ref = inspected_at if inspected_at is not None else now
        out: list[UnackedEntry] = []
        for tag, score, msg, ex, rk in window:
            age = None if score is None else max(0.0, now - score)
            holder: str | None = None
            state: UnackedState
            claim = claims.get(msg.task_id) if (claims is not None and msg.task_id) else None
            if claims is None:
                state = "unknown"
            elif claim is not None:
                state, holder = claim.state, claim.hostname
            elif score is not None and score < ref - grace_s:
                state = "orphaned"
            else:
                state = "unknown"
            out.append(UnackedEntry(
                delivery_tag=tag,
                task_id=msg.task_id,
                task=msg.task,
                queue=self.queue_for(ex, rk),
                priority=msg.priority,
                reserved_at=score,
                age_s=age,
                redelivered=msg.redelivered,
                state=state,
                holder=holder,
                stale=age is not None and age > vt,
                time_to_redelivery_s=None if age is None else vt - age,
                argsrepr=msg.argsrepr,
                kwargsrepr=msg.kwargsrepr,
                exchange=ex,
                routing_key=rk,
                eta=msg.eta,
                size=msg.size,
                decode_error=msg.error,
            ))
        return out

    # ---- queues ----
    def _queue_info(self, name: str, r: Any, now: float, sources: set[str],
                    worker_queues: Mapping[str, int] | None, unacked: int, errors: list[str]) -> QueueInfo:
        bands = [band for band, _k in self.settings.queue_keys(name)]
        consumers = None if worker_queues is None else int(worker_queues.get(name, 0))
        srcs = tuple(sorted(sources))
        if isinstance(r, Exception):
            errors.append(f"queue {name}: {r}")
            return QueueInfo(name=name, messages=0, by_priority=tuple((b, 0) for b in bands), unacked=unacked,
                             consumers=consumers, sources=srcs, wrong_type=True)
        wrong = bool(int(r[0]))
        lens = [int(x) for x in r[1]]
        by_priority = tuple((b, max(n, 0)) for b, n in zip(bands, lens, strict=False))
        messages = sum(n for _b, n in by_priority)
        oldest: float | None = None
        if len(r) > 2:
            size = int(r[3])
            decode: Callable[[], DecodedMessage]
            if len(r) == 4:  # same message as last time: not transferred again
                identity = self._last_identity(name)
                decode = DecodedMessage
            elif len(r) == 5:
                raw = _bytes(r[4])
                identity = delivery_tag_of(raw) or "?"
                decode = partial(decode_envelope, raw)
            else:
                head, tail = _bytes(r[4]), _bytes(r[5])
                identity = delivery_tag_of(tail, fallback=False) or (
                    f"len:{size}:" + hashlib.sha1(head + tail).hexdigest())
                decode = partial(decode_truncated, size, head, tail)
            oldest = self._age_of(name, identity, decode, now)
        else:
            self._seen.pop(name, None)
        return QueueInfo(name=name, messages=messages, by_priority=by_priority, oldest_age_s=oldest,
                         unacked=unacked, consumers=consumers, sources=srcs, wrong_type=wrong)

    def _last_identity(self, queue: str) -> str:
        """Delivery tag of the message last seen at the consuming end of ``queue`` ('' if none)."""
        seen = self._seen.get(queue)
        if not seen:
            return ""
        last = next(reversed(seen))
        return "" if last.startswith(("sha1:", "len:")) else last

    def _age_of(self, queue: str, identity: str, decode: Callable[[], DecodedMessage], now: float) -> float:
        """Age of the message at the consuming end; the message is decoded only on first sighting."""
        seen = self._seen.setdefault(queue, OrderedDict())
        known = seen.get(identity)
        if known is None:
            known = (now, eta_timestamp(decode().eta))
            seen[identity] = known
            while len(seen) > OLDEST_MEMORY:
                seen.popitem(last=False)
        else:
            seen.move_to_end(identity)
        first, eta = known
        age = max(0.0, now - first)
        if eta is not None and eta < now:
            age = max(age, now - eta)
        return age
