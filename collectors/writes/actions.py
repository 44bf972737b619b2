"""Write actions on a Celery-on-Redis broker: requeue, quarantine, replay, purge, restore, revoke, retry.

Used by both the TUI (from a worker thread) and the CLI. Every method that changes Redis or Celery:

* raises :class:`ReadOnlyError` (and touches nothing, writes no audit line) when ``settings.read_only``;
* changes each message in ONE atomic step (a Lua script that compares-and-moves the exact bytes it read),
  so it cannot race a worker's ack, kombu's visibility restore or a producer into a loss or a duplicate;
* appends one JSON line to the audit log (``collectors.core.audit``) with enough detail to undo it.

Key layout and kombu's own restore are described in REDIS_LAYOUT.md sections 1, 3 and 9. Keys are
built with ``Settings.key()`` (global_keyprefix), priority lists with ``Settings.queue_key()``.
Message bodies are never deserialized: only the JSON envelope (headers, properties) is read.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import redis

from collectors.core.audit import AuditLog, audit_path, default_actor, default_audit_path, state_dir
from collectors.core.config import Settings, mask_text, redis_client
from collectors.reads.broker import topic_match

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

QUARANTINE_NAME = "taskdash.quarantine"
"""Hash ``id -> record JSON`` (prefix-aware); ``QUARANTINE_NAME + '.index'`` is the zset ``id -> time``."""
EXPORT_VERSION = 1
BATCH = 200
"""Messages handled per batch (and per hold of kombu's ``unacked_mutex``)."""
SEARCH_WINDOW = 1000
"""Messages looked at from each end of a priority list when searching a queue for a task id."""
FRESH_MARGIN = 1.0
"""Seconds before asking the workers after which a delivery may be unknown to their answer."""
MAX_UNACKED_SCAN = 200_000
"""Upper bound on unacked entries read by one ``find_tags`` call."""


class ActionError(Exception):
    """An action was refused or failed; the message is user-facing and has credentials masked."""


class ReadOnlyError(ActionError):
    """A write was attempted in read-only mode; nothing was changed."""


class BrokerUnreachableError(ActionError):
    """Redis (or the Celery control channel) cannot be reached; the CLI exits 2 on this one."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a write did, for a TUI notification or the CLI's one result line."""

    action: str
    count: int
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PurgePreview:
    """What ``purge(queue)`` would delete: per priority band counts, and the queue's unacked entries."""

    queue: str
    by_priority: tuple[tuple[int, int], ...]
    total: int
    unacked: int
    orphaned_unacked: int


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """One message held in taskdash's dead-letter store (the body is kept whole in Redis)."""

    id: str
    task_id: str | None
    task: str | None
    queue: str | None
    reason: str
    quarantined_at: float
    deliveries: int | None
    source: str  # "unacked" | "queue"


# ---- Lua: every move is compare-and-swap on the exact bytes that were read --------------------------

_LUA_MOVE_UNACKED = """
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

_LUA_UNACKED_TO_QUARANTINE = """
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

_LUA_LIST_TO_QUARANTINE = """
-- KEYS[1] priority list, KEYS[2] quarantine hash, KEYS[3] quarantine index
-- ARGV[1] exact message, ARGV[2] quarantine id, ARGV[3] record, ARGV[4] time
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
  return 1
end
return 0
"""

_LUA_QUARANTINE_POP = """
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

_LUA_DELETE_UNACKED = """
-- KEYS[1] unacked, KEYS[2] unacked index; ARGV[1] tag, ARGV[2] expected value, ARGV[3] expected score
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or cur ~= ARGV[2] then return 0 end
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if ARGV[3] ~= '' and ((not s) or tonumber(s) ~= tonumber(ARGV[3])) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

_LUA_RENAME_LISTS = """
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

_LUA_UNDO_RENAME = """
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

_LUA_RELEASE_MUTEX = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# ---- small helpers ----------------------------------------------------------------------------------

def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _s(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _enc(value: bytes | str, name: str = "raw") -> dict[str, str]:
    """JSON-safe, byte-exact form of a Redis value: ``{name: text}`` or ``{name_b64: base64}``."""
    data = _b(value)
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode("ascii")}


def _dec(obj: Mapping[str, Any], name: str = "raw") -> bytes | None:
    """Inverse of :func:`_enc`."""
    if isinstance(obj.get(name), str):
        return str(obj[name]).encode("utf-8")
    if isinstance(obj.get(f"{name}_b64"), str):
        return base64.b64decode(str(obj[f"{name}_b64"]))
    return None


def _dec_strict(obj: Mapping[str, Any], name: str = "raw") -> bytes:
    """:func:`_dec` for an export being restored: a missing value or bad base64 raises ValueError."""
    if isinstance(obj.get(name), str):
        return str(obj[name]).encode("utf-8")
    if isinstance(obj.get(f"{name}_b64"), str):
        return base64.b64decode(str(obj[f"{name}_b64"]), validate=True)
    raise ValueError(f"no '{name}' or '{name}_b64'")


def _finite(value: Any, name: str) -> float:
    """A float from an export field; ValueError if it is not a finite number."""
    if isinstance(value, bool):
        raise ValueError(f"bad {name!r}")
    out = float(value)
    if out != out or out in (float("inf"), float("-inf")):
        raise ValueError(f"bad {name!r}")
    return out


def _line_ranges(lines: Sequence[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2-4, 7"``."""
    runs: list[list[int]] = []
    for n in sorted(lines):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _kombu_dumps(obj: Any) -> str:
    """Serialize a restored envelope exactly the way kombu's own restore does."""
    from kombu.utils.json import dumps

    return str(dumps(obj))


def _task_id_of(payload: Mapping[str, Any]) -> str | None:
    headers = payload.get("headers") or {}
    tid = headers.get("id") if isinstance(headers, Mapping) else None
    if not tid:
        props = payload.get("properties") or {}
        tid = props.get("correlation_id") if isinstance(props, Mapping) else None
    return str(tid) if tid else None


def _task_name_of(payload: Mapping[str, Any]) -> str | None:
    headers = payload.get("headers") or {}
    name = headers.get("task") if isinstance(headers, Mapping) else None
    return str(name) if name else None


def _priority_of(payload: Mapping[str, Any]) -> int:
    """``properties.priority`` clamped to 0..9 as kombu's ``_get_message_priority`` does (default 0)."""
    props = payload.get("properties") or {}
    try:
        pri = int(props.get("priority") or 0) if isinstance(props, Mapping) else 0
    except (TypeError, ValueError):
        pri = 0
    return max(0, min(9, pri))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "queue"


@dataclass(slots=True)
class _Entry:
    """One parsed ``unacked`` hash entry."""

    tag: str
    raw: bytes
    score: float | None
    payload: dict[str, Any]
    exchange: str
    routing_key: str

    @property
    def task_id(self) -> str | None:
        return _task_id_of(self.payload)

    @property
    def task(self) -> str | None:
        return _task_name_of(self.payload)


def _parse_entry(tag: str, raw: bytes | None, score: float | None) -> _Entry | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        payload, exchange, routing_key = value[0], value[1], value[2]
        if not isinstance(payload, dict):
            return None
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return _Entry(tag, _b(raw), score, payload, str(exchange or ""), str(routing_key or ""))


class Actions:
    """Every write taskdash can do on a broker (plus the reads they need), guarded and audited.

    Args:
        settings: Connection, key layout, read-only flag, audit log path.
        client: A redis-py client on the broker db (bytes responses); built from settings when None.
        app: A Celery app used for control (revoke, inspect) and send_task (retry); a minimal app on
            ``settings.broker_url`` is built when None. Control always runs on a connection with
            ``ack_emulation=False`` so taskdash never triggers kombu's visibility restore itself.
        actor: ``user@host`` written to the audit log (default: the current user).
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None, *, app: Celery | None = None,
                 actor: str | None = None) -> None:
        self.settings = settings
        self.client: Any = client if client is not None else redis_client(settings.broker_url, settings)
        self._app = app
        self._own_app: Any = None
        self.actor = actor or default_actor()
        self.audit = AuditLog(audit_path(settings), self.actor, settings.broker_url)
        self._move = self.client.register_script(_LUA_MOVE_UNACKED)
        self._u2q = self.client.register_script(_LUA_UNACKED_TO_QUARANTINE)
        self._l2q = self.client.register_script(_LUA_LIST_TO_QUARANTINE)
        self._qpop = self.client.register_script(_LUA_QUARANTINE_POP)
        self._del_unacked = self.client.register_script(_LUA_DELETE_UNACKED)
        self._rename = self.client.register_script(_LUA_RENAME_LISTS)
        self._undo_rename = self.client.register_script(_LUA_UNDO_RENAME)
        self._release = self.client.register_script(_LUA_RELEASE_MUTEX)

    # ---- plumbing -------------------------------------------------------------------------------
    @property
    def quarantine_hash(self) -> str:
        """The quarantine hash key (``id -> record JSON``), prefix-aware."""
        return self.settings.key(QUARANTINE_NAME)

    @property
    def quarantine_index(self) -> str:
        """The quarantine index zset key (``id -> quarantined_at``), prefix-aware."""
        return self.settings.key(QUARANTINE_NAME + ".index")

    def _guard(self, action: str) -> None:
        if self.settings.read_only:
            raise ReadOnlyError(f"read-only mode: {action} refused, nothing was changed "
                                "(run without --read-only to change the broker)")

    def _mask(self, text: str) -> str:
        return mask_text(text, self.settings.broker_url, self.settings.backend_url)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn connection failures into BrokerUnreachableError with a masked message."""
        try:
            yield
        except ActionError:
            raise
        except (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError) as exc:
            raise BrokerUnreachableError(self._mask(
                f"{action}: cannot reach the broker {self.settings.broker_masked}: {exc}")) from exc
        except redis.RedisError as exc:
            raise ActionError(self._mask(f"{action} failed: {type(exc).__name__}: {exc}")) from exc
        except OSError as exc:  # export/audit files
            raise ActionError(self._mask(f"{action} failed: {exc}")) from exc

    def _record(self, action: str, target: Any, count: int, **details: Any) -> None:
        try:
            self.audit.record(action, target, count, **details)
        except OSError as exc:  # the write happened; do not hide that, but say the log failed
            log.error("audit log %s not writable: %s", self.audit.path, exc)
            raise ActionError(f"{action} done ({count}) but the audit log {self.audit.path} "
                              f"could not be written: {exc}") from exc

    def _control_app(self) -> Any:
        if self._app is not None:
            return self._app
        if self._own_app is None:
            from celery import Celery

            app = Celery("taskdash-actions", broker=self.settings.broker_url, set_as_current=False)
            app.conf.update(
                broker_transport_options=self._transport_options(),
                control_exchange=self.settings.control_exchange,
                accept_content=["json"], result_accept_content=["json"],
                task_serializer="json", broker_connection_retry_on_startup=False,
            )
            self._own_app = app
        return self._own_app

    def _transport_options(self) -> dict[str, Any]:
        opts = {k: v for k, v in dict(self.settings.transport_options).items()}
        opts["ack_emulation"] = False  # never put our own deliveries in unacked / never sweep it
        opts.setdefault("max_retries", 1)
        opts.setdefault("socket_timeout", self.settings.socket_timeout)
        opts.setdefault("socket_connect_timeout", min(self.settings.socket_timeout, 3.0))
        if self.settings.global_keyprefix:
            opts["global_keyprefix"] = self.settings.global_keyprefix
        return opts

    def _connection(self) -> Any:
        from kombu import Connection

        return Connection(self.settings.broker_url, transport_options=self._transport_options(),
                          connect_timeout=min(self.settings.socket_timeout, 3.0))

    def _check_reachable(self, action: str) -> None:
        with self._errors(action):
            self.client.ping()

    @contextmanager
    def _sweep_mutex(self, force: bool, wait: float = 5.0) -> Iterator[bool]:
        """Hold kombu's ``unacked_mutex`` (as its visibility restore does) while moving unacked entries.

        Holding it stops a concurrent sweep from restoring, from a stale ZRANGE, a tag that we just
        requeued and a worker already received again (REDIS_LAYOUT.md section 9, step 1). With
        ``force`` a mutex that stays held (e.g. left by a crashed sweeper) is ignored after ``wait``.
        """
        key = self.settings.unacked_mutex
        expire_ms = int(float(self.settings.transport_options.get("unacked_mutex_expire", 300)) * 1000)
        token = uuid.uuid1().hex
        deadline = time.monotonic() + wait
        acquired = False
        while True:
            if self.client.set(key, token, nx=True, px=expire_ms):
                acquired = True
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if not acquired and not force:
            raise ActionError("kombu's visibility restore holds the unacked mutex "
                              f"({key!r}); try again in a moment (or use force)")
        try:
            yield acquired
        finally:
            if acquired:
                with suppress(redis.RedisError):
                    self._release(keys=[key], args=[token])

    # ---- reads ---------------------------------------------------------------------------------------
    def live_task_ids(self) -> set[str] | None:
        """Task ids that live workers report active, reserved or scheduled; None if we could not ask.

        Pings first (one ``inspect_timeout``); nodes named in the pidbox bindings that stayed silent get
        a second, longer directed ping (a slow live worker must not pass for a dead one); then exactly
        the nodes that answered are asked, so each question returns as soon as they all replied. A node
        that answered the ping but not a later question makes the answer unknown (None): callers then
        refuse unless forced.
        """
        try:
            app = self._control_app()
            with self._connection() as conn:
                timeout = self.settings.inspect_timeout
                replies = app.control.ping(timeout=timeout, connection=conn) or []
                nodes = sorted({node for reply in replies if isinstance(reply, Mapping) for node in reply})
                silent = sorted(self._pidbox_nodes() - set(nodes))
                if silent:  # known nodes that did not answer: dead (kill -9 leaves rows) or just slow
                    again = app.control.ping(destination=silent, timeout=timeout, connection=conn) or []
                    nodes = sorted(set(nodes) | {n for reply in again if isinstance(reply, Mapping) for n in reply})
                if not nodes:
                    return set()
                insp = app.control.inspect(destination=nodes, timeout=max(timeout, 1.0) * 2, connection=conn)
                ids: set[str] = set()
                for method in ("active", "reserved", "scheduled"):
                    rep = getattr(insp, method)() or {}
                    if not set(nodes) <= set(rep):
                        log.warning("workers %s did not answer %s", sorted(set(nodes) - set(rep)), method)
                        return None
                    for items in rep.values():
                        for item in items or ():
                            info = item.get("request", item) if isinstance(item, Mapping) else {}
                            if isinstance(info, Mapping) and info.get("id"):
                                ids.add(str(info["id"]))
                return ids
        except Exception as exc:  # noqa: BLE001 - unknown is a valid answer, callers decide
            log.warning("cannot inspect workers: %s", self._mask(str(exc)))
            return None

    def _pidbox_nodes(self) -> set[str]:
        """Worker node names bound to the control exchange (live ones, and dead ones kill -9 left)."""
        ctl = self.settings.control_exchange
        suffix = f".{ctl}.pidbox"
        out: set[str] = set()
        for row in self.client.smembers(self.settings.key(f"_kombu.binding.{ctl}.pidbox")) or ():
            queue = _s(row).split(self.settings.sep)[-1]
            if queue.endswith(suffix):
                out.add(queue[: -len(suffix)])
        return out

    def _read_entries(self, tags: Sequence[str]) -> dict[str, _Entry | None]:
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.hget(self.settings.unacked_hash, tag)
            pipe.zscore(self.settings.unacked_zset, tag)
        res = pipe.execute()
        out: dict[str, _Entry | None] = {}
        for i, tag in enumerate(tags):
            out[tag] = _parse_entry(tag, res[2 * i], res[2 * i + 1])
        return out

    def _iter_unacked_batches(self, max_score: float | None = None, batch: int = BATCH,
                              limit: int | None = None) -> Iterator[list[tuple[str, float]]]:
        """(tag, score) pages of ``unacked_index`` with score <= max_score, newest first, bounded pages.

        Pages are found by score (ZRANGE BYSCORE REV LIMIT), not by offset, so entries the caller
        removes while iterating do not make the scan skip others; ties at a page boundary are handled by
        remembering the tags already yielded at that exact score.
        """
        upper = "+inf" if max_score is None else repr(float(max_score))
        at_upper: set[str] = set()
        seen = 0
        while True:
            want = batch + len(at_upper)
            rows = self.client.zrange(self.settings.unacked_zset, upper, "-inf", desc=True, byscore=True,
                                      offset=0, num=want, withscores=True)
            fresh = [(_s(t), float(s)) for t, s in rows if _s(t) not in at_upper][:batch]
            if limit is not None:
                fresh = fresh[: max(0, limit - seen)]
            if not fresh:
                return
            yield fresh
            seen += len(fresh)
            last = fresh[-1][1]
            if repr(last) != upper:
                at_upper = set()
            at_upper |= {t for t, s in fresh if s == last}
            upper = repr(last)
            if len(rows) < want or (limit is not None and seen >= limit):
                return

    def find_tags(self, task_id: str) -> list[str]:
        """Delivery tags in ``unacked`` whose message is task ``task_id`` (bounded scan, newest first)."""
        needle = task_id.encode("utf-8")
        found: list[str] = []
        with self._errors("find"):
            for page in self._iter_unacked_batches(limit=MAX_UNACKED_SCAN, batch=500):
                tags = [t for t, _ in page]
                raws = self.client.hmget(self.settings.unacked_hash, tags)
                for tag, raw in zip(tags, raws, strict=True):
                    if raw is None or needle not in _b(raw):
                        continue
                    entry = _parse_entry(tag, raw, None)
                    if entry is not None and entry.task_id == task_id:
                        found.append(tag)
        return found

    def _queues_for(self, exchange: str, routing_key: str) -> list[str]:
        """The queues a message published to (exchange, routing_key) belongs to (kombu ``_lookup``)."""
        if not exchange:
            return [routing_key] if routing_key else []
        rows = self.client.smembers(self.settings.key(f"_kombu.binding.{exchange}")) or set()
        out: list[str] = []
        sep = self.settings.sep
        for row in rows:
            parts = _s(row).split(sep)
            if len(parts) != 3:
                continue
            rk, pattern, queue = parts
            if pattern:  # never run the stored regex: a planted row like ``(a+)+$`` would hang us
                ok = topic_match(rk, pattern, routing_key)
            else:
                ok = rk == routing_key
            if ok and queue not in out:
                out.append(queue)
        return sorted(out)

    def _known_queues(self) -> list[str]:
        """Task queues to search for a message: the app's queues plus bound queues (bounded SCAN)."""
        names: dict[str, None] = dict.fromkeys(self.settings.app_queues)
        pattern = self.settings.key("_kombu.binding.*")
        prefix = self.settings.key("_kombu.binding.")
        ctl, ev = self.settings.control_exchange, self.settings.event_exchange
        internal = {f"{ctl}.pidbox", f"reply.{ctl}.pidbox", ev}
        for i, key in enumerate(self.client.scan_iter(match=pattern, count=1000)):
            if i > 2000:
                break
            exchange = _s(key)[len(prefix):]
            if exchange in internal:
                continue
            for row in self.client.smembers(key) or ():
                parts = _s(row).split(self.settings.sep)
                if len(parts) != 3 or not parts[2]:
                    continue
                queue = parts[2]
                if queue.endswith(".pidbox") or queue.startswith(f"{ev}."):
                    continue
                names.setdefault(queue, None)
        return list(names)

    def _scanned_queues(self, max_keys: int = 100_000) -> list[str]:
        """Queue names derived from the list keys that exist (SCAN ... TYPE list, bounded).

        The fallback when bindings do not name a queue (a producer that never declared it, bindings
        swept away): band keys map back to their queue (``q<sep>3`` -> ``q``).
        """
        prefix = self.settings.global_keyprefix
        suffixes = tuple(f"{self.settings.sep}{s}" for s in self.settings.priority_steps if s)
        names: dict[str, None] = {}
        for i, key in enumerate(self.client.scan_iter(match=f"{prefix}*" if prefix else None, count=1000,
                                                      _type="list")):
            if i >= max_keys:
                break
            name = _s(key)[len(prefix):]
            for suffix in suffixes:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            if name.endswith(".pidbox") or not name:
                continue
            names.setdefault(name, None)
        return list(names)

    # ---- requeue ---------------------------------------------------------------------------------------
    def _target_keys(self, entry: _Entry) -> list[str]:
        queues = self._queues_for(entry.exchange, entry.routing_key)
        pri = _priority_of(entry.payload)
        return [self.settings.queue_key(q, pri) for q in queues]

    @staticmethod
    def _restored_payload(entry: _Entry) -> str:
        payload = json.loads(entry.raw)[0]  # a fresh copy: the entry keeps what was read
        headers = payload.get("headers")
        if isinstance(headers, dict):
            headers["redelivered"] = True
        props = payload.get("properties")
        if isinstance(props, dict) and isinstance(props.get("delivery_info"), dict):
            props["delivery_info"]["redelivered"] = True
        return _kombu_dumps(payload)

    def _requeue_entries(self, entries: Sequence[_Entry], stats: dict[str, list[Any]]) -> int:
        moved = 0
        for entry in entries:
            keys = self._target_keys(entry)
            if not keys:
                stats["unroutable"].append(entry.tag)
                continue
            score = "" if entry.score is None else repr(float(entry.score))
            rc = int(self._move(keys=[self.settings.unacked_hash, self.settings.unacked_zset, *keys],
                                args=[entry.tag, entry.raw, score, self._restored_payload(entry), "R"]))
            if rc == 1:
                moved += 1
                stats["tags"].append(entry.tag)
                stats["task_ids"].append(entry.task_id)
                for k in keys:
                    stats["targets"].setdefault(k, 0)
                    stats["targets"][k] += 1
            elif rc == 0:
                stats["gone"].append(entry.tag)
            else:
                stats["changed"].append(entry.tag)
        return moved

    @staticmethod
    def _new_stats() -> dict[str, Any]:
        return {"tags": [], "task_ids": [], "gone": [], "changed": [], "refused": [], "unroutable": [],
                "targets": {}}

    def display_key(self, key: str) -> str:
        """A list key for humans: ``app:q\x06\x163`` -> ``q (priority 3)``."""
        prefix = self.settings.global_keyprefix
        name = key[len(prefix):] if prefix and key.startswith(prefix) else key
        if self.settings.sep in name:
            queue, band = name.rsplit(self.settings.sep, 1)
            return f"{queue} (priority {band})"
        return name

    def _requeue_message(self, n: int, stats: Mapping[str, Any], what: str) -> str:
        parts = [f"requeued {n} {what}"]
        if stats["targets"]:
            parts[0] += " to " + ", ".join(sorted({self.display_key(k) for k in stats["targets"]}))
        for key, label in (("refused", "refused (a live worker has or may have it)"),
                           ("gone", "already acked/restored"),
                           ("changed", "redelivered meanwhile"), ("unroutable", "without a matching queue")):
            if stats[key]:
                parts.append(f"{len(stats[key])} {label}")
        return "; ".join(parts)

    def requeue(self, tags: Sequence[str], *, force: bool = False, live: set[str] | None = None) -> ActionResult:
        """Move unacked messages back onto their queue (right priority list, the end consumed next).

        Each message moves in one atomic script that checks the entry is still exactly what was read
        (same bytes, same delivery time) and then removes it from ``unacked``/``unacked_index`` and
        RPUSHes it with ``redelivered`` set, like kombu's ``restore_by_tag``. Messages a live worker
        reports (active/reserved/scheduled) are refused unless ``force``.

        Args:
            tags: Delivery tags (keys of the ``unacked`` hash).
            force: Requeue even when a worker claims the task (it may then run twice).
            live: Task ids known to be live (skips asking the workers); None asks them now.

        Raises:
            ReadOnlyError: in read-only mode.
            ActionError: every requested message was refused, or workers could not be asked.
        """
        self._guard("requeue")
        tags = list(dict.fromkeys(str(t) for t in tags))
        if not tags:
            return ActionResult("requeue", 0, "nothing to requeue", {})
        self._check_reachable("requeue")
        asked_at: float | None = None
        if live is None and not force:
            asked_at = time.time()
            live = self.live_task_ids()  # asked BEFORE reading the entries: see requeue_orphaned
            if live is None:
                raise ActionError("requeue refused: cannot ask the workers what they are running "
                                  "(no reply to inspect); use force to requeue anyway")
        live = live or set()
        stats = self._new_stats()
        refused_ids: list[str] = []
        moved = 0
        with self._errors("requeue"):
            for i in range(0, len(tags), BATCH):
                chunk = tags[i:i + BATCH]
                with self._sweep_mutex(force):
                    entries = self._read_entries(chunk)
                    todo: list[_Entry] = []
                    for tag in chunk:
                        entry = entries[tag]
                        if entry is None:
                            if self.client.hexists(self.settings.unacked_hash, tag):
                                stats["unroutable"].append(tag)  # unparsable: leave it alone
                            else:
                                self.client.zrem(self.settings.unacked_zset, tag)
                                stats["gone"].append(tag)
                        elif not force and entry.task_id and entry.task_id in live:
                            stats["refused"].append(tag)
                            refused_ids.append(entry.task_id)
                        elif (asked_at is not None and entry.score is not None
                              and entry.score > asked_at - FRESH_MARGIN):
                            # delivered while (or after) the workers were asked: their answer cannot
                            # tell whether a live worker holds it
                            stats["refused"].append(tag)
                            refused_ids.append(entry.task_id or tag)
                        else:
                            todo.append(entry)
                    moved += self._requeue_entries(todo, stats)
        if moved == 0 and stats["refused"]:
            raise ActionError(f"requeue refused: a live worker is (or may be) running task(s) "
                              f"{', '.join(sorted(set(refused_ids)))[:300]} "
                              "(requeueing would run it twice); use force to override")
        msg = self._requeue_message(moved, stats, "message(s)")
        if moved:
            self._record("requeue", tags, moved, force=force, **stats)
        return ActionResult("requeue", moved, msg, stats)

    def _grace(self, older_than: float | None) -> float:
        if older_than is not None:
            return max(0.0, float(older_than))
        return max(2.0 * self.settings.interval, 2.0 * self.settings.inspect_timeout, 2.0)

    def orphaned(self, *, older_than: float | None = None, live: set[str] | None = None,
                 limit: int | None = None) -> list[tuple[str, float, str | None, str | None]]:
        """Unacked entries no responding worker claims, older than the grace: (tag, score, task_id, queue)."""
        self._check_reachable("orphaned")
        t0 = time.time()
        if live is None:
            live = self.live_task_ids()
            if live is None:
                raise ActionError("cannot ask the workers what they are running (no reply to inspect)")
        cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(older_than))
        out: list[tuple[str, float, str | None, str | None]] = []
        with self._errors("orphaned"):
            for page in self._iter_unacked_batches(cutoff, limit=limit):
                tags = [t for t, _ in page]
                raws = self.client.hmget(self.settings.unacked_hash, tags)
                for (tag, score), raw in zip(page, raws, strict=True):
                    entry = _parse_entry(tag, raw, score)
                    if entry is None or (entry.task_id and entry.task_id in live):
                        continue
                    queues = self._queues_for(entry.exchange, entry.routing_key)
                    out.append((tag, score, entry.task_id, queues[0] if queues else None))
        return out

    def requeue_orphaned(self, *, older_than: float | None = None, force: bool = False) -> ActionResult:
        """Requeue every orphaned unacked message (no responding worker claims it, older than a grace).

        The workers are asked first and the cutoff is taken from before that question, so a message
        delivered after the answer is never considered; each move then re-checks the entry's bytes
        and delivery time atomically. Pages of ``BATCH`` entries are read with ZRANGE ... LIMIT while
        holding kombu's ``unacked_mutex``; the ledger is never read whole.

        Args:
            older_than: Only entries delivered more than this many seconds ago (default: a grace of
                ``max(2*interval, 2*inspect_timeout, 2)`` seconds).
            force: Proceed when the workers cannot be asked (then every old entry counts as orphaned).
        """
        self._guard("requeue")
        self._check_reachable("requeue")
        t0 = time.time()
        live = self.live_task_ids()
        if live is None:
            if not force:
                raise ActionError("requeue refused: cannot ask the workers what they are running "
                                  "(no reply to inspect); use force to requeue anyway")
            live = set()
        cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(older_than))
        stats = self._new_stats()
        moved = 0
        with self._errors("requeue"):
            for page in self._iter_unacked_batches(cutoff):
                with self._sweep_mutex(force):
                    raws = self.client.hmget(self.settings.unacked_hash, [t for t, _ in page])
                    todo: list[_Entry] = []
                    for (tag, score), raw in zip(page, raws, strict=True):
                        entry = _parse_entry(tag, raw, score)
                        if entry is None:
                            if raw is None:
                                self.client.zrem(self.settings.unacked_zset, tag)
                            else:
                                stats["unroutable"].append(tag)
                        elif entry.task_id and entry.task_id in live:
                            stats["refused"].append(tag)
                        else:
                            todo.append(entry)
                    moved += self._requeue_entries(todo, stats)
        msg = self._requeue_message(moved, stats, "orphaned message(s)")
        if moved:
            self._record("requeue_orphaned", {"older_than": older_than, "cutoff": cutoff}, moved,
                         force=force, **stats)
        return ActionResult("requeue_orphaned", moved, msg, stats)

    # ---- quarantine ----------------------------------------------------------------------------------
    def _new_qid(self) -> str:
        return "q-" + uuid.uuid4().hex[:16]

    def _record_json(self, *, qid: str, raw: bytes, message: bytes | str, key: str, queue: str | None,
                     band: int, payload: Mapping[str, Any], source: str, reason: str, deliveries: int | None,
                     tag: str | None, exchange: str, routing_key: str, now: float) -> str:
        rec: dict[str, Any] = {
            "id": qid, "task_id": _task_id_of(payload), "task": _task_name_of(payload), "queue": queue,
            "key": key, "band": band, "exchange": exchange, "routing_key": routing_key, "tag": tag,
            "reason": reason, "quarantined_at": now, "deliveries": deliveries, "source": source,
            "actor": self.actor,
        }
        rec.update(_enc(raw, "raw"))
        rec.update(_enc(_b(message), "message"))
        return json.dumps(rec, sort_keys=True)

    def _quarantine_unacked(self, entry: _Entry, reason: str, deliveries: int | None,
                            done: list[dict[str, Any]]) -> int:
        queues = self._queues_for(entry.exchange, entry.routing_key)
        queue = queues[0] if queues else (entry.routing_key or None)
        pri = _priority_of(entry.payload)
        key = self.settings.queue_key(queue, pri) if queue else ""
        now = time.time()
        qid = self._new_qid()
        if deliveries is None:
            redelivered = bool((entry.payload.get("headers") or {}).get("redelivered"))
            deliveries = 2 if redelivered else 1
        rec = self._record_json(qid=qid, raw=entry.raw, message=self._restored_payload(entry), key=key,
                                queue=queue, band=self.settings.band(pri), payload=entry.payload,
                                source="unacked", reason=reason, deliveries=deliveries, tag=entry.tag,
                                exchange=entry.exchange, routing_key=entry.routing_key, now=now)
        rc = int(self._u2q(keys=[self.settings.unacked_hash, self.settings.unacked_zset, self.quarantine_hash,
                                 self.quarantine_index], args=[entry.tag, entry.raw, qid, rec, repr(now)]))
        if rc == 1:
            done.append({"id": qid, "task_id": entry.task_id, "source": "unacked", "tag": entry.tag,
                         "queue": queue})
        return 1 if rc == 1 else 0

    def _search_queue(self, queue: str, task_id: str) -> list[tuple[str, int, bytes, dict[str, Any]]]:
        """(key, band, exact bytes, payload) of messages of ``task_id`` near both ends of each list."""
        needle = task_id.encode("utf-8")
        out: list[tuple[str, int, bytes, dict[str, Any]]] = []
        for band, key in self.settings.queue_keys(queue):
            pipe = self.client.pipeline(transaction=False)
            pipe.llen(key)
            pipe.lrange(key, 0, SEARCH_WINDOW - 1)
            pipe.lrange(key, -SEARCH_WINDOW, -1)
            length, head, tail = pipe.execute()
            items = list(head) if length <= SEARCH_WINDOW else list(head) + list(tail)
            seen: set[bytes] = set()
            for item in items:
                data = _b(item)
                if needle not in data or data in seen:
                    continue
                seen.add(data)
                try:
                    payload = json.loads(data)
                except ValueError:
                    continue
                if isinstance(payload, dict) and _task_id_of(payload) == task_id:
                    out.append((key, band, data, payload))
        return out

    def quarantine(self, *, tags: Sequence[str] = (), task_ids: Sequence[str] = (), reason: str = "",
                   deliveries: int | None = None, queues: Sequence[str] | None = None) -> ActionResult:
        """Move messages (unacked or waiting in a queue) into taskdash's dead-letter store, atomically.

        A message is found by delivery tag (``unacked``) or by task id (``unacked`` and the queues, both
        ends of each priority list within ``SEARCH_WINDOW``). Each move is one script: the exact bytes
        are removed from where they were (HDEL+ZREM, or LREM of that element) and the whole message is
        stored with metadata. A worker that still holds the message can finish (or crash) once, but any
        requeue it then attempts finds nothing, so a poison loop stops.

        Args:
            tags: Delivery tags in ``unacked``.
            task_ids: Task ids to look for in ``unacked`` and in the queues.
            reason: Why (kept with the message, shown in the Quarantine view).
            deliveries: Deliveries seen so far (from the poison detector), kept as metadata.
            queues: Queues to search for ``task_ids`` (default: the app's and every bound queue).
        """
        self._guard("quarantine")
        if not tags and not task_ids:
            return ActionResult("quarantine", 0, "nothing to quarantine", {})
        self._check_reachable("quarantine")
        done: list[dict[str, Any]] = []
        missing: list[str] = []
        reason = reason or "quarantined by taskdash"
        with self._errors("quarantine"):
            for tag in dict.fromkeys(str(t) for t in tags):
                entry = self._read_entries([tag])[tag]
                if entry is None or not self._quarantine_unacked(entry, reason, deliveries, done):
                    missing.append(tag)
            search = list(queues) if queues is not None else None
            for task_id in dict.fromkeys(str(t) for t in task_ids):
                found = 0
                # a message can be in flight (BRPOPed, not yet in unacked) for a few ms: look a few times
                for attempt in range(6):
                    for tag in self.find_tags(task_id):
                        entry = self._read_entries([tag])[tag]
                        if entry is not None:
                            found += self._quarantine_unacked(entry, reason, deliveries, done)
                    if search is None:
                        search = self._known_queues()
                    elif attempt == 1 and queues is None:
                        search = list(dict.fromkeys(search + self._scanned_queues()))
                    for queue in search:
                        for key, band, data, payload in self._search_queue(queue, task_id):
                            found += self._quarantine_listed(queue, key, band, data, payload, reason,
                                                             deliveries, done)
                    if found:
                        break
                    if attempt < 5:
                        time.sleep(0.2)
                if not found:
                    missing.append(task_id)
        count = len(done)
        if count == 0:
            raise ActionError(f"quarantine: nothing matched {', '.join(missing)[:300]} "
                              "(not in unacked nor in the searched queues)")
        self._record("quarantine", list(tags) + list(task_ids), count, reason=reason, items=done,
                     missing=missing, store=self.quarantine_hash)
        msg = f"quarantined {count} message(s)"
        if missing:
            msg += f"; not found: {', '.join(missing)[:200]}"
        return ActionResult("quarantine", count, msg, {"items": done, "missing": missing})

    def _quarantine_listed(self, queue: str, key: str, band: int, data: bytes, payload: Mapping[str, Any],
                           reason: str, deliveries: int | None, done: list[dict[str, Any]]) -> int:
        now = time.time()
        qid = self._new_qid()
        props = payload.get("properties") or {}
        dinfo = props.get("delivery_info") or {} if isinstance(props, Mapping) else {}
        if deliveries is None:
            redelivered = bool((payload.get("headers") or {}).get("redelivered"))
            deliveries = 1 if redelivered else 0
        rec = self._record_json(qid=qid, raw=data, message=data, key=key, queue=queue, band=band,
                                payload=payload, source="queue", reason=reason, deliveries=deliveries,
                                tag=str(props.get("delivery_tag")) if isinstance(props, Mapping) else None,
                                exchange=str(dinfo.get("exchange") or ""),
                                routing_key=str(dinfo.get("routing_key") or queue), now=now)
        rc = int(self._l2q(keys=[key, self.quarantine_hash, self.quarantine_index],
                           args=[data, qid, rec, repr(now)]))
        if rc == 1:
            done.append({"id": qid, "task_id": _task_id_of(payload), "source": "queue", "key": key,
                         "queue": queue})
        return rc

    def _quarantine_records(self, limit: int | None = None) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
        """(id, exact record bytes, record) newest first, in bounded pages."""
        offset = 0
        yielded = 0
        while True:
            ids = [_s(i) for i in self.client.zrevrange(self.quarantine_index, offset, offset + BATCH - 1)]
            if not ids:
                return
            raws = self.client.hmget(self.quarantine_hash, ids)
            for qid, raw in zip(ids, raws, strict=True):
                if raw is None:
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                yield qid, _b(raw), rec
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            if len(ids) < BATCH:
                return
            offset += BATCH

    def list_quarantine(self, limit: int = 500) -> list[QuarantinedMessage]:
        """Quarantined messages, newest first (at most ``limit``)."""
        out: list[QuarantinedMessage] = []
        with self._errors("quarantine list"):
            for qid, _raw, rec in self._quarantine_records(limit):
                out.append(QuarantinedMessage(
                    id=qid, task_id=rec.get("task_id"), task=rec.get("task"), queue=rec.get("queue"),
                    reason=str(rec.get("reason") or ""), quarantined_at=float(rec.get("quarantined_at") or 0.0),
                    deliveries=rec.get("deliveries"), source=str(rec.get("source") or "")))
        return out

    def _resolve_quarantine(self, ids: Sequence[str]) -> tuple[list[tuple[str, bytes, dict[str, Any]]], list[str]]:
        """Records for quarantine ids or task ids; (found, not found)."""
        found: list[tuple[str, bytes, dict[str, Any]]] = []
        missing: list[str] = []
        wanted = list(dict.fromkeys(str(i) for i in ids))
        direct = self.client.hmget(self.quarantine_hash, wanted) if wanted else []
        by_task: list[str] = []
        for ident, raw in zip(wanted, direct, strict=True):
            if raw is not None:
                try:
                    found.append((ident, _b(raw), json.loads(raw)))
                except ValueError:
                    missing.append(ident)
            else:
                by_task.append(ident)
        if by_task:
            left = set(by_task)
            for qid, raw, rec in self._quarantine_records():
                if rec.get("task_id") in left:
                    found.append((qid, raw, rec))
            matched = {rec.get("task_id") for _, _, rec in found}
            missing.extend(t for t in by_task if t not in matched)
        return found, missing

    def replay(self, ids: Sequence[str]) -> ActionResult:
        """Put quarantined messages back on their original queue's priority list (LPUSH, like a publish).

        ``ids`` are quarantine ids or task ids. Removal from quarantine and the push are one script.
        """
        self._guard("replay")
        self._check_reachable("replay")
        done: list[dict[str, Any]] = []
        with self._errors("replay"):
            found, missing = self._resolve_quarantine(ids)
            for qid, raw, rec in found:
                message = _dec(rec, "message")
                key = rec.get("key")
                if message is None or not key:
                    missing.append(qid)
                    continue
                rc = int(self._qpop(keys=[self.quarantine_hash, self.quarantine_index, key],
                                    args=[qid, raw, message, "L"]))
                if rc == 1:
                    done.append({"id": qid, "task_id": rec.get("task_id"), "key": key})
                else:
                    missing.append(qid)
        if not done:
            raise ActionError(f"replay: nothing matched {', '.join(str(i) for i in ids)[:300]}")
        self._record("replay", list(ids), len(done), items=done, missing=missing)
        keys = sorted({self.display_key(str(d["key"])) for d in done})
        msg = f"replayed {len(done)} message(s) to {', '.join(keys)}"
        if missing:
            msg += f"; not found: {', '.join(missing)[:200]}"
        return ActionResult("replay", len(done), msg, {"items": done, "missing": missing})

    def delete_quarantined(self, ids: Sequence[str]) -> ActionResult:
        """Drop quarantined messages for good (after confirmation); their records go to a JSONL file first.

        The file (in the state dir) is named in the audit line, so ``restore`` can undo the deletion.
        """
        self._guard("delete")
        self._check_reachable("delete")
        with self._errors("delete"):
            found, missing = self._resolve_quarantine(ids)
            if not found:
                raise ActionError(f"delete: nothing matched {', '.join(str(i) for i in ids)[:300]}")
            path = self._default_export_path("quarantine-deleted")
            with self._open_export(path, "delete_quarantined", None) as fh:
                for _qid, raw, _rec in found:
                    fh.write(json.dumps({"type": "quarantine", **_enc(raw, "record")}) + "\n")
            done: list[str] = []
            for qid, raw, _rec in found:
                rc = int(self._qpop(keys=[self.quarantine_hash, self.quarantine_index, self.quarantine_hash],
                                    args=[qid, raw, "", "L"]))
                if rc == 1:
                    done.append(qid)
                else:
                    missing.append(qid)
        if not done:
            raise ActionError("delete: the messages changed meanwhile; nothing deleted")
        self._record("delete_quarantined", list(ids), len(done), ids=done, export=str(path), missing=missing)
        return ActionResult("delete_quarantined", len(done),
                            f"deleted {len(done)} quarantined message(s) (copy in {path})",
                            {"ids": done, "export": str(path), "missing": missing})

    def export_quarantine(self, path: str) -> ActionResult:
        """Write every quarantined message (whole record, exact bytes) to ``path`` as JSONL.

        Reads only; allowed in read-only mode and not audited. ``restore(path)`` puts them back.
        """
        count = 0
        with self._errors("export"):
            with self._open_export(Path(path), "export_quarantine", None) as fh:
                for _qid, raw, _rec in self._quarantine_records():
                    fh.write(json.dumps({"type": "quarantine", **_enc(raw, "record")}) + "\n")
                    count += 1
        return ActionResult("export_quarantine", count, f"exported {count} quarantined message(s) to {path}",
                            {"path": str(path)})

    # ---- purge / restore -----------------------------------------------------------------------------
    def _default_export_path(self, what: str) -> Path:
        """A new file under ``exports/`` beside the audit log (the user's state dir by default)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        base = self.audit.path.parent if self.audit.path != default_audit_path() else state_dir()
        return base / "exports" / f"{_safe_name(what)}-{stamp}.jsonl"

    @contextmanager
    def _open_export(self, path: Path, action: str, queue: str | None) -> Iterator[TextIO]:
        """A new export file with a header line; flushed and fsynced before the caller deletes anything."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            header = {"type": "header", "format": "taskdash-export", "version": EXPORT_VERSION,
                      "id": uuid.uuid4().hex, "action": action, "queue": queue, "ts": time.time(),
                      "broker": self.settings.broker_masked, "prefix": self.settings.global_keyprefix,
                      "actor": self.actor}
            fh.write(json.dumps(header) + "\n")
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def _unacked_of_queue(self, queue: str, live: set[str] | None,
                          cutoff: float | None) -> Iterator[tuple[_Entry, bool]]:
        """(entry, orphaned) for every unacked entry that belongs to ``queue`` (bounded pages)."""
        for page in self._iter_unacked_batches(None):
            raws = self.client.hmget(self.settings.unacked_hash, [t for t, _ in page])
            for (tag, score), raw in zip(page, raws, strict=True):
                entry = _parse_entry(tag, raw, score)
                if entry is None or queue not in self._queues_for(entry.exchange, entry.routing_key):
                    continue
                orphaned = (live is not None and not (entry.task_id and entry.task_id in live)
                            and cutoff is not None and score <= cutoff)
                yield entry, orphaned

    def purge_preview(self, queue: str) -> PurgePreview:
        """Counts per priority list of ``queue``, and how many of its unacked entries are orphaned."""
        with self._errors("purge preview"):
            keys = self.settings.queue_keys(queue)
            pipe = self.client.pipeline(transaction=False)
            for _band, key in keys:
                pipe.llen(key)
            lens = [int(n) for n in pipe.execute()]
            t0 = time.time()
            live = self.live_task_ids()
            cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(None))
            unacked = orphaned = 0
            for _entry, orph in self._unacked_of_queue(queue, live, cutoff):
                unacked += 1
                orphaned += int(orph)
        by_pri = tuple((band, n) for (band, _k), n in zip(keys, lens, strict=True))
        return PurgePreview(queue, by_pri, sum(lens), unacked, orphaned)

    def purge(self, queue: str, *, include_unacked: bool = False, export_path: str | None = None) -> ActionResult:
        """Delete every waiting message of ``queue`` after writing them all to a JSONL export.

        The priority lists are first RENAMEd to temporary keys in one script (producers keep writing to
        fresh lists), exported from there, fsynced, and only then deleted; if the export fails they are
        put back. With ``include_unacked`` the queue's orphaned unacked entries are exported and then
        removed by compare-and-delete. ``restore(export)`` undoes it.
        """
        self._guard("purge")
        self._check_reachable("purge")
        path = Path(export_path).expanduser() if export_path else self._default_export_path(f"purge-{queue}")
        if path.exists():
            raise ActionError(f"purge refused: export file {path} already exists")
        live: set[str] | None = None
        cutoff: float | None = None
        if include_unacked:
            t0 = time.time()
            live = self.live_task_ids()
            if live is None:
                raise ActionError("purge refused: cannot ask the workers which unacked messages are theirs "
                                  "(no reply to inspect); purge without --include-unacked")
            cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(None))
        token = uuid.uuid4().hex[:12]
        keys = self.settings.queue_keys(queue)
        tmp = [self.settings.key(f"taskdash.purging.{token}.{band}") for band, _k in keys]
        by_band: dict[int, int] = {}
        unacked_done: list[str] = []
        with self._errors("purge"):
            counts = [int(n) for n in self._rename(keys=[k for _b2, k in keys] + tmp)]
            try:
                with self._open_export(path, "purge", queue) as fh:
                    for (band, key), tkey, n in zip(keys, tmp, counts, strict=True):
                        by_band[band] = n
                        for start in range(0, n, 1000):
                            for i, item in enumerate(self.client.lrange(tkey, start, start + 999)):
                                fh.write(json.dumps({"type": "message", "queue": queue, "key": key, "band": band,
                                                     "index": start + i, **_enc(item)}) + "\n")
                    entries: list[_Entry] = []
                    if include_unacked:
                        for entry, orphaned in self._unacked_of_queue(queue, live, cutoff):
                            if orphaned:
                                entries.append(entry)
                                fh.write(json.dumps({"type": "unacked", "queue": queue, "tag": entry.tag,
                                                     "score": entry.score, **_enc(entry.raw)}) + "\n")
            except BaseException as exc:
                try:
                    self._undo_rename(keys=[k for _b2, k in keys] + tmp)
                except redis.RedisError as undo_exc:
                    raise ActionError(self._mask(
                        f"purge of {queue} failed ({exc}) and its messages could not be put back "
                        f"({undo_exc}): they are safe in {', '.join(tmp)}")) from exc
                with suppress(OSError):
                    path.unlink()
                raise
            self.client.delete(*tmp)
            if include_unacked:
                skipped: list[str] = []
                for entry in entries:
                    score = "" if entry.score is None else repr(float(entry.score))
                    if int(self._del_unacked(keys=[self.settings.unacked_hash, self.settings.unacked_zset],
                                             args=[entry.tag, entry.raw, score])):
                        unacked_done.append(entry.tag)
                    else:
                        skipped.append(entry.tag)
                if skipped:  # changed between export and delete (acked/restored): restore must skip them
                    with path.open("a", encoding="utf-8") as fh2:
                        for tag in skipped:
                            fh2.write(json.dumps({"type": "skipped", "tag": tag}) + "\n")
        total = sum(counts) + len(unacked_done)
        details = {"queue": queue, "export": str(path), "by_priority": by_band, "unacked": unacked_done}
        self._record("purge", queue, total, **details)
        msg = f"purged {sum(counts)} message(s) from {queue}"
        if include_unacked:
            msg += f" and {len(unacked_done)} orphaned unacked"
        msg += f"; export: {path}"
        return ActionResult("purge", total, msg, details)

    def _parse_export(self, p: Path) -> tuple[dict[str, Any], list[tuple[int, str, Any]]]:
        """Read, decode and validate a whole export before anything is written.

        Returns the header and ``(line, kind, data)`` items: ``("message", (key, raw))``,
        ``("unacked", (tag, raw, score))`` or ``("quarantine", (id, record_bytes, quarantined_at))``.
        Any damaged line (not JSON, bad base64, missing key/tag, a quarantine record that is not JSON
        or has no id) raises ActionError naming its line number; unacked entries whose tag a
        ``skipped`` line names are left out.
        """
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ActionError(self._mask(f"restore: cannot read {p}: {exc}")) from exc
        header: dict[str, Any] = {}
        items: list[tuple[int, str, Any]] = []
        skipped: set[str] = set()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                kind = obj.get("type")
                if kind == "header":
                    header = obj
                elif kind == "skipped":
                    skipped.add(str(obj.get("tag")))
                elif kind == "message":
                    key = obj.get("key")
                    if not isinstance(key, str) or not key:
                        raise ValueError("no 'key'")
                    items.append((n, kind, (key, _dec_strict(obj, "raw"))))
                elif kind == "unacked":
                    tag = obj.get("tag")
                    if not isinstance(tag, str) or not tag:
                        raise ValueError("no 'tag'")
                    score = obj.get("score")
                    items.append((n, kind, (tag, _dec_strict(obj, "raw"),
                                            None if score is None else _finite(score, "score"))))
                elif kind == "quarantine":
                    rec_raw = _dec_strict(obj, "record")
                    rec = json.loads(rec_raw)
                    if not isinstance(rec, dict):
                        raise ValueError("the quarantine record is not a JSON object")
                    qid = rec.get("id")
                    if not isinstance(qid, str) or not qid:
                        raise ValueError("the quarantine record has no 'id'")
                    items.append((n, kind, (qid, rec_raw, _finite(rec.get("quarantined_at") or 0, "quarantined_at"))))
            except (ValueError, TypeError, binascii.Error) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
                raise ActionError(self._mask(f"restore refused, nothing was changed: {p} line {n} is damaged "
                                             f"({type(exc).__name__}: {exc})")) from exc
        if header.get("format") != "taskdash-export":
            raise ActionError(self._mask(f"restore: {p} is not a taskdash export"))
        if not isinstance(header.get("id"), str) or not header["id"]:
            raise ActionError(self._mask(f"restore: {p} has no export id in its header"))
        items = [it for it in items if not (it[1] == "unacked" and it[2][0] in skipped)]
        return header, items

    def restore(self, path: str, *, force: bool = False) -> ActionResult:
        """Put back what an export holds: messages (byte-identical, same keys, same order) appended at
        the end consumed next, unacked entries back into ``unacked``, quarantine records back into the
        quarantine. A second restore of the same export is refused unless ``force``.

        The whole file is validated first (a damaged line refuses the restore before anything is
        written, the "already restored" marker included). If Redis fails midway, the marker is removed
        again and the error says exactly which lines were restored.
        """
        self._guard("restore")
        self._check_reachable("restore")
        p = Path(path).expanduser()
        header, items = self._parse_export(p)
        marker = self.settings.key(f"taskdash.restored.{header['id']}")
        counts = {"message": 0, "unacked": 0, "quarantine": 0}
        done_lines: list[int] = []
        with self._errors("restore"):
            created = bool(self.client.set(marker, str(time.time()), nx=True))
            if not created and not force:
                raise ActionError(f"restore: {p} was already restored (use force to restore it again)")
        pending: list[bytes] = []
        pending_lines: list[int] = []
        pending_key: str | None = None
        current = 0

        def flush() -> None:
            nonlocal current
            if pending and pending_key is not None:
                current = pending_lines[0]
                self.client.rpush(pending_key, *pending)
                counts["message"] += len(pending)
                done_lines.extend(pending_lines)
                pending.clear()
                pending_lines.clear()

        try:
            for n, kind, data in items:
                if kind == "message":
                    key, raw = data
                    if key != pending_key or len(pending) >= 1000:
                        flush()
                        pending_key = key
                    pending.append(raw)
                    pending_lines.append(n)
                    continue
                flush()
                current = n
                pipe = self.client.pipeline(transaction=True)
                if kind == "unacked":
                    tag, raw, score = data
                    pipe.hsetnx(self.settings.unacked_hash, tag, raw)
                    pipe.zadd(self.settings.unacked_zset, {tag: time.time() if score is None else score}, nx=True)
                else:
                    qid, rec_raw, at = data
                    pipe.hsetnx(self.quarantine_hash, qid, rec_raw)
                    pipe.zadd(self.quarantine_index, {qid: at}, nx=True)
                if pipe.execute()[0]:
                    counts[kind] += 1
                done_lines.append(n)
            flush()
        except (redis.RedisError, ConnectionError, TimeoutError, OSError) as exc:
            self._restore_failed(p, header, marker if created else None, current, exc, counts, done_lines)
        total = sum(counts.values())
        self._record("restore", str(p), total, export_id=header.get("id"), source_action=header.get("action"),
                     **counts)
        return ActionResult("restore", total, f"restored {counts['message']} message(s), {counts['unacked']} "
                            f"unacked, {counts['quarantine']} quarantined from {p}", {"path": str(p), **counts})

    def _restore_failed(self, p: Path, header: Mapping[str, Any], marker: str | None, line: int,
                        exc: BaseException, counts: Mapping[str, int], done_lines: Sequence[int]) -> NoReturn:
        """A write failed midway: remove the marker we set, audit the partial restore, raise what was done.

        ``marker`` is None on a forced re-run: the marker then records an earlier restore and is kept.
        """
        if marker is None:
            marker_note = "the marker of the earlier restore was kept"
        else:
            try:
                self.client.delete(marker)
                marker_note = "the 'already restored' marker was removed"
            except (redis.RedisError, OSError) as del_exc:
                marker_note = f"the 'already restored' marker {marker} could not be removed ({del_exc})"
        done = (f"{counts['message']} message(s), {counts['unacked']} unacked, {counts['quarantine']} quarantined"
                f" (lines {_line_ranges(done_lines)})" if done_lines else "nothing")
        msg = self._mask(f"restore of {p} failed at line {line} ({type(exc).__name__}: {exc}); restored before "
                         f"the failure: {done}; {marker_note}. Restoring the file again re-adds those lines.")
        with suppress(ActionError):
            self._record("restore", str(p), sum(counts.values()), export_id=header.get("id"),
                         source_action=header.get("action"), partial=True, failed_line=line,
                         restored_lines=_line_ranges(done_lines), error=self._mask(str(exc)), **counts)
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | ConnectionError | TimeoutError):
            raise BrokerUnreachableError(msg) from exc
        raise ActionError(msg) from exc

    # ---- Celery control ------------------------------------------------------------------------------
    def revoke(self, task_id: str, *, terminate: bool = False) -> ActionResult:
        """Revoke a task on every worker (``terminate`` also kills it if running) via Celery control."""
        self._guard("revoke")
        self._check_reachable("revoke")
        try:
            app = self._control_app()
            with self._connection() as conn:
                app.control.revoke(task_id, terminate=terminate, connection=conn)
        except Exception as exc:  # noqa: BLE001 - kombu raises many types; all are "unreachable" here
            raise BrokerUnreachableError(self._mask(f"revoke: {type(exc).__name__}: {exc}")) from exc
        self._record("revoke", task_id, 1, terminate=terminate)
        verb = "revoked and terminated" if terminate else "revoked"
        return ActionResult("revoke", 1, f"{verb} task {task_id} (sent to all workers)",
                            {"task_id": task_id, "terminate": terminate})

    def retry(self, task_id: str) -> ActionResult:
        """Send a FAILURE task again with its stored name/args/kwargs (needs ``result_extended``)."""
        self._guard("retry")
        backend = redis_client(self.settings.effective_backend_url, self.settings)
        try:
            raw = backend.get(self.settings.result_key(task_id))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnreachableError(self._mask(
                f"retry: cannot reach the result backend {self.settings.backend_masked}: {exc}")) from exc
        if raw is None:
            raise ActionError(f"retry: no stored result for task {task_id}")
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise ActionError(f"retry: the stored result of {task_id} is not JSON; not retried") from exc
        status = meta.get("status")
        if status != "FAILURE":
            raise ActionError(f"retry: task {task_id} is {status}, only FAILURE tasks are retried")
        name = meta.get("name")
        if not name or ("args" not in meta and "kwargs" not in meta):
            raise ActionError(f"retry: the backend has no name/args for {task_id} (enable result_extended)")
        args = list(meta.get("args") or [])
        kwargs = dict(meta.get("kwargs") or {})
        queue = meta.get("queue") or None
        self._check_reachable("retry")
        try:
            app = self._control_app()
            with self._connection() as conn:
                res = app.send_task(name, args=args, kwargs=kwargs, queue=queue, connection=conn)
        except Exception as exc:  # noqa: BLE001
            raise BrokerUnreachableError(self._mask(f"retry: {type(exc).__name__}: {exc}")) from exc
        self._record("retry", task_id, 1, new_task_id=res.id, task=name, queue=queue)
        return ActionResult("retry", 1, f"retried {name} as {res.id}" + (f" on {queue}" if queue else ""),
                            {"task_id": task_id, "new_task_id": res.id, "task": name, "queue": queue})
