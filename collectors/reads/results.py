"""Result backend reader: counts per state over ``celery-task-meta-*`` and the recent failures.

Two feeds keep one in-memory map ``task id -> state`` current:

- ``step()``: one bounded ``SCAN`` step (``COUNT settings.scan_count``), then one plain pipeline of
  ``GETRANGE key 0 47`` for the keys it returned (the status is the first field of Celery's JSON, so
  big results are never transferred), and a pipelined ``GET`` only of the values that need a full
  read (FAILUREs for their traceback, compressed, pickled-looking or oddly ordered values). When a
  pass ends (cursor 0) the map built by that pass replaces the old one, so keys that expired
  disappear, and a new pass starts. The pipeline costs Redis ≈ 5 µs per key (SCAN included; measured
  in ``bench/RESULTS.md``), about half of what the same reads cost inside a Lua script.
- ``start()`` runs those steps on the monitor's own daemon thread, **paced by a Redis-time budget**:
  after each step it sleeps so that the estimated Redis time of its steps (``SCAN_US_PER_SLOT`` per
  SCAN slot + ``READ_US_PER_KEY`` per key read) stays at ``scan_budget`` (default 9.2 %) of one Redis
  core. At that rate 1,000,000 results are counted in about a minute; a backend of a few thousand
  results in one step. The Collector then never steps itself.
- **Steady state** (issue 14: re-scanning 1M results 5 s after each pass cost ~10 % of a Redis core
  forever). The second pass, at ``STEADY_BUDGET`` (0.4 % of a core), reads only each key's ``PTTL``
  (and the value of keys the map does not know): Celery stores results with ``SETEX result_expires``,
  so the TTL says exactly when a count can change without a PUBLISH. Expiries are scheduled in
  ``EXPIRY_BUCKET_S`` buckets (task ids packed as 16 bytes) and checked when due with one pipelined
  ``PTTL`` each (``expire_due``: gone → forgotten; rewritten → re-scheduled). From then on there is no
  SCAN: new results and state changes come from the live feed, whose ``PTTL`` per message (it
  replaced ``EXISTS``, same cost) schedules their expiry. A low-duty pass runs again only when the
  live feed reconnected (redis-py resubscribes silently: a connect callback tells) or every
  ``SAFETY_PASS_S`` (deleted keys, ``forget()``, publish nothing).
- a daemon thread ``PSUBSCRIBE <result_prefix>celery-task-meta-*``: the backend publishes every
  state change on a channel named like the key. Pub/sub ignores the db number, so a message for a
  task id taskdash does not know yet is only counted once ``PTTL`` confirms the key lives in the
  watched db (results of other apps/dbs on the same server are ignored).

PENDING is never stored by Celery, so it is never counted unless a value literally says so.
Pickled values are never unpickled: they are counted under ``(pickled)``.

The map is an open-addressing hash table in an ``array('Q')`` (8 bytes per slot: a 59-bit hash of
the task id and a 5-bit state code), so a million results cost ~16-32 MB instead of ~115 MB for a
dict of strings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from collectors.core.config import Settings, mask_text, own_client, redis_client
from collectors.core.messages import eta_timestamp
from collectors.core.models import TaskFailure, TaskStats
from collectors.keyspace.keys import KeyLayout

log = logging.getLogger(__name__)

COMPRESSED_MAGIC = b"\x00celery-compressed\x00"
"""Prefix of values written with ``result_compression`` (celery/backends/base.py)."""
PICKLED = "(pickled)"
"""Pseudo-state of values stored with the pickle serializer (never unpickled)."""
UNKNOWN = "(unknown)"
"""Pseudo-state of values taskdash cannot read (yaml/msgpack without the module, garbage)."""
OTHER = "(other)"
"""Pseudo-state once more than 30 distinct state names were seen."""

PREFIX_BYTES = 48
"""Bytes read per key for its status (``{"status": "<STATE>", ...``); longer prefixes need a full GET."""
SCAN_BUDGET = 0.092
"""Fraction of one Redis core the background scan may use (estimated, see ``READ_US_PER_KEY``)."""
SCAN_US_PER_SLOT = 1.0
"""Estimated Redis µs per slot a ``SCAN … COUNT n`` step visits (n slots, matching or not)."""
READ_US_PER_KEY = 4.3
"""Estimated Redis µs (CPU incl. socket I/O) per pipelined ``GETRANGE`` (bench: 5.3 µs/key with SCAN)."""
PASS_PAUSE_S = 5.0
"""Pause after a complete background pass before the steady state starts (or a pass is retried)."""
STEADY_BUDGET = 0.004
"""Fraction of one Redis core for passes after the first: the second pass learns every key's expiry
(``PTTL``), later ones only run when the live feed may have missed something."""
PTTL_US_PER_KEY = 4.3
"""Estimated Redis µs per pipelined ``PTTL`` (bench at 1M results: per-command overhead makes it cost
what a ``GETRANGE`` does; with 1.0 the 0.4 % budget measured 0.97 %)."""
EXPIRY_BUCKET_S = 2.0
"""Expiry checks are grouped in buckets this many seconds wide (counts are exact to within it)."""
SAFETY_PASS_S = 6 * 3600.0
"""After the steady state is reached, one low-duty pass this often (catches deleted keys: ``forget()``)."""

RECENT_FAILURES = 50
_STATUS_RE = re.compile(rb'"status"\s*:\s*"([^"\\]{1,64})"')
_MAX_CODES = 31
_HASH_MASK = (1 << 59) - 1


class _StateTable:
    """task-id hash -> small state code; open addressing with linear probing in an ``array('Q')``."""

    __slots__ = ("_slots", "_mask", "size", "counts")

    def __init__(self, capacity: int = 1024) -> None:
        cap = 1024
        while cap < capacity:
            cap *= 2
        self._slots = array("Q", bytes(8 * cap))
        self._mask = cap - 1
        self.size = 0
        self.counts = [0] * (_MAX_CODES + 1)

    @property
    def capacity(self) -> int:
        return self._mask + 1

    @staticmethod
    def hash_of(task_id: str) -> int:
        h = hash(task_id) & _HASH_MASK
        return h or 1

    def get(self, h: int) -> int:
        """State code stored for hash ``h`` (0 = absent)."""
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            v = slots[i]
            if v == 0:
                return 0
            if v >> 5 == h:
                return v & 31
            i = (i + 1) & mask

    def set(self, h: int, code: int) -> int:
        """Store ``code`` for ``h``; returns the previous code (0 when new)."""
        if (self.size + 1) * 2 > self.capacity:
            self._grow()
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            v = slots[i]
            if v == 0:
                slots[i] = (h << 5) | code
                self.size += 1
                self.counts[code] += 1
                return 0
            if v >> 5 == h:
                old = v & 31
                if old != code:
                    slots[i] = (h << 5) | code
                    self.counts[old] -= 1
                    self.counts[code] += 1
                return old
            i = (i + 1) & mask

    def delete(self, h: int) -> int:
        """Remove ``h``; returns its code (0 when absent). Backward-shift deletion keeps probing exact."""
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            v = slots[i]
            if v == 0:
                return 0
            if v >> 5 == h:
                break
            i = (i + 1) & mask
        old = v & 31
        self.counts[old] -= 1
        self.size -= 1
        j = i
        while True:
            j = (j + 1) & mask
            v = slots[j]
            if v == 0:
                break
            home = (v >> 5) & mask
            stays = (i < home <= j) if i <= j else (home > i or home <= j)
            if not stays:
                slots[i] = v
                i = j
        slots[i] = 0
        return old

    def _grow(self) -> None:
        old = self._slots
        cap = self.capacity * 2
        self._slots = array("Q", bytes(8 * cap))
        self._mask = cap - 1
        slots, mask = self._slots, self._mask
        for v in old:
            if v:
                i = (v >> 5) & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = v

    def nbytes(self) -> int:
        return self._slots.itemsize * len(self._slots)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What one backend value says (only what taskdash needs)."""

    state: str
    meta: dict[str, Any] | None = None


def parse_value(raw: bytes | None) -> _Parsed | None:
    """Decode one ``celery-task-meta-*`` value safely (never unpickles). None for a missing key."""
    if raw is None:
        return None
    data = bytes(raw)
    if data.startswith(COMPRESSED_MAGIC):
        content_type, _, body = data[len(COMPRESSED_MAGIC):].partition(b"\x00")
        try:
            from kombu.compression import decompress

            data = decompress(body, content_type.decode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - unknown codec or corrupt data
            return _Parsed(UNKNOWN)
    if not data:
        return _Parsed(UNKNOWN)
    if data[:1] == b"\x80":
        return _Parsed(PICKLED)
    if data[:1] in (b"{", b" ", b"\n"):
        try:
            meta = json.loads(data)
        except ValueError:
            return _Parsed(UNKNOWN)
        if isinstance(meta, dict) and isinstance(meta.get("status"), str):
            return _Parsed(meta["status"], meta)
        return _Parsed(UNKNOWN)
    meta = _try_msgpack(data)
    if meta is not None and isinstance(meta.get("status"), str):
        return _Parsed(meta["status"], meta)
    return _Parsed(UNKNOWN)


def _try_msgpack(data: bytes) -> dict[str, Any] | None:
    if not (0x81 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        return None
    try:
        import msgpack  # type: ignore[import-not-found]

        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - module missing or not msgpack
        return None
    return value if isinstance(value, dict) else None


def _quick_state(prefix: bytes | None) -> tuple[str | None, bool]:
    """(state, needs full GET) from the first bytes of a value."""
    if prefix is None:
        return None, False
    if prefix[:1] == b"\x00":
        return None, True  # result_compression: decompress the whole value
    if prefix[:1] == b"\x80":
        return PICKLED, False
    m = _STATUS_RE.search(prefix)
    if m and prefix[:1] == b"{":
        state = m.group(1).decode("utf-8", "replace")
        return state, state == "FAILURE"  # failures: full read for exception and traceback
    return None, True


def _short(value: Any, limit: int = 1000) -> str | None:
    if value is None:
        return None
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def exception_text(result: Any) -> tuple[str, str | None]:
    """(``"ExcType: message"``, exc_type) of a stored exception dict."""
    if isinstance(result, dict) and "exc_type" in result:
        exc_type = str(result.get("exc_type"))
        msg = result.get("exc_message")
        if isinstance(msg, list | tuple):
            msg = msg[0] if len(msg) == 1 else ", ".join(str(m) for m in msg)
        return f"{exc_type}: {msg}" if msg not in (None, "") else exc_type, exc_type
    return (_short(result, 300) or "unknown error"), None


def _uuid_bytes(task_id: str) -> bytes | None:
    """16 bytes of a canonical UUID task id (None for any other id: kept as text)."""
    if len(task_id) != 36:
        return None
    try:
        u = uuid.UUID(task_id)
    except ValueError:
        return None
    return u.bytes if str(u) == task_id else None


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class ResultsMonitor:
    """Counts per state over the result backend, recent failures and WorkerLostError FAILUREs."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None,
                 recent: int = RECENT_FAILURES) -> None:
        """Create the monitor (nothing connects until ``step``/``start``).

        Args:
            settings: taskdash settings; ``effective_backend_url`` is the Redis read.
            client: an existing redis client for the backend (tests); a new one otherwise.
            recent: how many newest FAILUREs to keep with their traceback.
        """
        self.settings = settings
        self._client = client
        self._own_client = client is None
        self._recent = recent
        self._prefix = KeyLayout.from_settings(settings).result_prefix
        self._pattern = _glob_escape(self._prefix) + "*"
        self._lock = threading.Lock()
        self._names: list[str] = [""]
        self._codes: dict[str, int] = {}
        self._current = _StateTable()
        self._pass = self._current
        self._cursor = 0
        self._visited = 0
        self._last_pass_visited = 0
        self.passes = 0
        self._failures: dict[str, TaskFailure] = {}
        self._failure_order: dict[str, str] = {}
        self._failures_seen_in_pass: set[str] = set()
        self._lost: list[tuple[str, str | None, str | None, float]] = []
        self._lost_reported: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._live_touched: set[str] = set()
        self._touched_overflow = False
        self.scan_budget = SCAN_BUDGET
        self._step_lock = threading.Lock()
        self._scan_thread: threading.Thread | None = None
        self.last_error: str | None = None
        self._ping_error: str | None = None
        self.live_error: str | None = None
        self.live_messages = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        """Set by stop() and by refresh() when the backend answers again: ends the scan thread's pause."""
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._due: dict[int, tuple[bytearray, list[str]]] = {}
        """Expiry bucket (epoch // EXPIRY_BUCKET_S) -> task ids to check then (UUIDs as 16 bytes)."""
        self.due_count = 0
        self.expired = 0
        """Keys found expired by the expiry checks (counts decremented without a SCAN)."""
        self.steady = False
        """True once a pass learnt every key's expiry: no more SCAN unless the live feed missed something."""
        self._rescan = threading.Event()
        """Set when the live feed reconnected (messages may be lost): one low-duty pass."""
        self._last_pass_at = 0.0

    # ---- plumbing ------------------------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.settings.effective_backend_url, self.settings)
        return self._client

    @property
    def ok(self) -> bool:
        """True when the backend answered: the last SCAN step, or (background scan) the last ``refresh()``."""
        return self.error is None

    @property
    def error(self) -> str | None:
        """Why the backend is not ok (masked), or None."""
        return (self._ping_error or self.last_error) if self.scanning else self.last_error

    def refresh(self) -> None:
        """Once per snapshot: one ``step()`` when no background scan runs, else one PING, so a snapshot
        says whether the backend answers right now (the background scan may be pausing). Never raises."""
        if not self.scanning:
            self.step()
            return
        try:
            self.client.ping()
            self._ping_error = None
            if self.last_error is not None:
                self._wake.set()  # the backend is back: retry the scan now rather than after its backoff
        except (redis.RedisError, OSError) as exc:
            self._ping_error = self._mask(exc)

    def _mask(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return mask_text(text, self.settings.effective_backend_url)

    def _code(self, state: str) -> int:
        code = self._codes.get(state)
        if code is None:
            if len(self._names) >= _MAX_CODES:
                return self._code(OTHER) if state != OTHER else _MAX_CODES
            code = len(self._names)
            self._names.append(state)
            self._codes[state] = code
        return code

    # ---- SCAN ----------------------------------------------------------------------------------
    def step(self) -> int:
        """Run one bounded SCAN step plus pipelined reads; returns the number of keys visited.

        Never raises for a backend error: ``last_error`` is set and the counts keep their values.
        Usable synchronously (CLI, tests) even while the background scan runs (steps never interleave).
        """
        with self._step_lock:
            return self._step()

    def _step(self) -> int:
        with self._lock:
            cursor = self._cursor
            self._live_touched.clear()
            learn = self.passes > 0  # passes after the first learn expiries and skip known states
        try:
            next_cursor, keys = self.client.scan(cursor, match=self._pattern, count=self.settings.scan_count)
            if learn:
                return self._steady_step(cursor, int(next_cursor), keys)
            parsed = self._fetch(keys)
        except (redis.RedisError, OSError) as exc:
            self.last_error = self._mask(exc)
            log.debug("results step failed: %s", self.last_error)
            return 0
        self.last_error = None
        with self._lock:
            if self._cursor != cursor:  # reset meanwhile
                return len(keys)
            overflow = self._touched_overflow
            self._touched_overflow = False
            for task_id, p in parsed:
                if task_id in self._live_touched:
                    continue  # a live update newer than our read already applied
                if overflow and self._current.get(_StateTable.hash_of(task_id)):
                    continue  # too many live updates to track: only add keys we did not know
                self._apply(task_id, p, from_scan=True)
            self._visited += len(keys)
            self._cursor = int(next_cursor)
            if self._cursor == 0:
                self._finish_pass()
        return len(keys)

    def _steady_step(self, cursor: int, next_cursor: int, keys: list[bytes]) -> int:
        """A step of a pass after the first: ``PTTL`` of every key (its expiry is scheduled), the value
        only of keys the map does not know (the live feed keeps known ones current)."""
        plen = len(self._prefix)
        ids = [k.decode("utf-8", "replace")[plen:] for k in keys]
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.pttl(k)
        ttls = pipe.execute() if keys else []
        with self._lock:
            unknown = [(tid, k) for tid, k in zip(ids, keys, strict=True)
                       if not self._current.get(_StateTable.hash_of(tid))]
        parsed = self._fetch([k for _tid, k in unknown]) if unknown else []
        self.last_error = None
        now = time.time()
        with self._lock:
            if self._cursor != cursor:
                return len(keys)
            for task_id, p in parsed:
                if task_id not in self._live_touched:
                    self._apply(task_id, p, from_scan=True)
            for task_id, ttl in zip(ids, ttls, strict=True):
                h = _StateTable.hash_of(task_id)
                code = self._current.get(h)
                if ttl == -2 or not code:
                    continue  # gone since SCAN returned it (or unreadable)
                if self._pass is not self._current:
                    self._pass.set(h, code)
                if code == self._codes.get("FAILURE"):
                    self._failures_seen_in_pass.add(task_id)
                if ttl is not None and ttl >= 0:
                    self._schedule(task_id, now + ttl / 1000.0)
            self._visited += len(keys)
            self._cursor = next_cursor
            if self._cursor == 0:
                self._finish_pass()
                self.steady = True
        return len(keys)

    # ---- expiries (no SCAN) ----------------------------------------------------------------------
    def _schedule(self, task_id: str, at: float) -> None:
        """Check ``task_id`` for expiry at ``at`` (called under the lock)."""
        bucket = int(at // EXPIRY_BUCKET_S) + 1  # checked once the whole bucket is past
        entry = self._due.get(bucket)
        if entry is None:
            entry = self._due[bucket] = (bytearray(), [])
        packed = _uuid_bytes(task_id)
        if packed is not None:
            entry[0].extend(packed)
        else:
            entry[1].append(task_id)
        self.due_count += 1

    def expire_due(self, now: float | None = None) -> int:
        """Check the keys whose expiry is due (one pipelined ``PTTL`` each): forget the expired ones,
        re-schedule the ones a later write kept alive. Returns how many expired."""
        now = time.time() if now is None else now
        limit = int(now // EXPIRY_BUCKET_S)
        with self._lock:
            buckets = sorted(b for b in self._due if b <= limit)
            ids: list[str] = []
            for b in buckets:
                packed, others = self._due.pop(b)
                ids.extend(str(uuid.UUID(bytes=bytes(packed[i:i + 16]))) for i in range(0, len(packed), 16))
                ids.extend(others)
            self.due_count -= len(ids)
        if not ids:
            return 0
        gone = 0
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            pipe = self.client.pipeline(transaction=False)
            for tid in chunk:
                pipe.pttl(self._prefix + tid)
            try:
                ttls = pipe.execute()
            except (redis.RedisError, OSError) as exc:
                self.last_error = self._mask(exc)
                with self._lock:  # try again later
                    for tid in ids[start:]:
                        self._schedule(tid, now + EXPIRY_BUCKET_S)
                return gone
            t = time.time()
            with self._lock:
                for tid, ttl in zip(chunk, ttls, strict=True):
                    if ttl == -2:
                        gone += self._forget(tid)
                    elif ttl is not None and ttl >= 0:
                        self._schedule(tid, t + ttl / 1000.0)
        self.expired += gone
        return gone

    def _forget(self, task_id: str) -> int:
        """Drop an expired key from both maps and the failures (under the lock); 1 if it was counted."""
        h = _StateTable.hash_of(task_id)
        old = self._current.delete(h)
        if self._pass is not self._current:
            self._pass.delete(h)
        self._failures.pop(task_id, None)
        self._failure_order.pop(task_id, None)
        return 1 if old else 0

    def _fetch(self, keys: list[bytes]) -> list[tuple[str, _Parsed]]:
        if not keys:
            return []
        plen = len(self._prefix)
        out: list[tuple[str, _Parsed]] = []
        full: list[tuple[str, bytes]] = []
        for k, (state, need_full) in zip(keys, self._quick_states(keys), strict=True):
            task_id = k.decode("utf-8", "replace")[plen:]
            if need_full:
                full.append((task_id, k))
            elif state is not None:
                out.append((task_id, _Parsed(state)))
        if full:
            pipe = self.client.pipeline(transaction=False)
            for _tid, k in full:
                pipe.get(k)
            for (task_id, _k), raw in zip(full, pipe.execute(), strict=True):
                p = parse_value(raw)
                if p is not None:
                    out.append((task_id, p))
        return out

    def _quick_states(self, keys: list[bytes]) -> list[tuple[str | None, bool]]:
        """(state or None, needs a full GET) per key; (None, False) for a key that is gone."""
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.getrange(k, 0, PREFIX_BYTES - 1)
        return [_quick_state(prefix or None) for prefix in pipe.execute()]

    def _finish_pass(self) -> None:
        self.passes += 1
        self._last_pass_at = time.monotonic()
        self._last_pass_visited = self._visited
        self._visited = 0
        if self._pass is not self._current:
            self._current = self._pass
        # failures whose key was not seen in the whole pass have expired or been deleted
        for task_id in list(self._failures):
            if task_id not in self._failures_seen_in_pass:
                self._failures.pop(task_id, None)
                self._failure_order.pop(task_id, None)
        self._failures_seen_in_pass = set()
        self._pass = _StateTable(self._current.capacity)

    def _apply(self, task_id: str, p: _Parsed, *, from_scan: bool) -> None:
        code = self._code(p.state)
        h = _StateTable.hash_of(task_id)
        self._current.set(h, code)
        if self._pass is not self._current:
            self._pass.set(h, code)
        if p.state == "FAILURE":
            self._failures_seen_in_pass.add(task_id)
            if p.meta is not None:
                self._note_failure(task_id, p.meta)
        elif task_id in self._failures:
            self._failures.pop(task_id, None)
            self._failure_order.pop(task_id, None)

    def _note_failure(self, task_id: str, meta: dict[str, Any]) -> None:
        exc, exc_type = exception_text(meta.get("result"))
        date_done = meta.get("date_done") if isinstance(meta.get("date_done"), str) else None
        name = meta.get("name") if isinstance(meta.get("name"), str) else None
        worker = meta.get("worker") if isinstance(meta.get("worker"), str) else None
        if exc_type == "WorkerLostError":
            key = (task_id, date_done)
            if key not in self._lost_reported:
                self._lost_reported[key] = None
                while len(self._lost_reported) > 10_000:
                    self._lost_reported.popitem(last=False)
                self._lost.append((task_id, name, worker, eta_timestamp(date_done) or time.time()))
                del self._lost[:-1000]
        order = date_done or ""
        if task_id not in self._failures and len(self._failures) >= self._recent:
            oldest = min(self._failure_order, key=lambda t: self._failure_order[t])
            if self._failure_order[oldest] >= order:
                return
            self._failures.pop(oldest, None)
            self._failure_order.pop(oldest, None)
        tb = meta.get("traceback")
        self._failures[task_id] = TaskFailure(
            task_id=task_id, task=name, exception=exc, traceback=tb if isinstance(tb, str) else None,
            date_done=date_done, args=_short(meta.get("args")), kwargs=_short(meta.get("kwargs")),
            worker=worker, queue=meta.get("queue") if isinstance(meta.get("queue"), str) else None,
        )
        self._failure_order[task_id] = order

    # ---- live PUBLISH --------------------------------------------------------------------------
    def start(self, *, scan: bool = True) -> None:
        """Start the live PSUBSCRIBE thread and (``scan``) the paced background SCAN thread (idempotent)."""
        self._stop.clear()
        self._wake.clear()
        if not (self._thread and self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run_live, name="taskdash-results", daemon=True)
            self._thread.start()
        if scan and not (self._scan_thread and self._scan_thread.is_alive()):
            self._scan_thread = threading.Thread(target=self._run_scan, name="taskdash-results-scan", daemon=True)
            self._scan_thread.start()

    @property
    def scanning(self) -> bool:
        """True while the background SCAN thread runs (then nobody needs to call ``step()``)."""
        return self._scan_thread is not None and self._scan_thread.is_alive()

    def _run_scan(self) -> None:
        """Background passes, each step followed by the pause that keeps Redis at its budget.

        The first pass counts everything at ``scan_budget``. The second, at ``STEADY_BUDGET``, reads
        each key's ``PTTL`` so its expiry is scheduled; from then on the counts are kept by the live
        feed (new results and state changes) and by the expiry checks (``expire_due``: a ``PTTL`` per
        key when it is due — Celery stores results with ``SETEX result_expires``), without any SCAN.
        A low-duty pass runs again only when the live feed reconnected or every ``SAFETY_PASS_S``.
        """
        backoff = 0.5
        while not self._stop.is_set():
            if self.steady and self._cursor == 0:
                self.expire_due()
                if not self._rescan.is_set() and time.monotonic() - self._last_pass_at < SAFETY_PASS_S:
                    self._pause(min(1.0, EXPIRY_BUCKET_S))
                    continue
                self._rescan.clear()
            t0 = time.perf_counter()
            n = self.step()
            wall = time.perf_counter() - t0
            if self.last_error is not None:
                self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            if self._cursor == 0:  # a pass just ended
                self._pause(PASS_PAUSE_S if self.passes == 1 else min(1.0, EXPIRY_BUCKET_S))
                continue
            if self.passes == 0:
                redis_s = (self.settings.scan_count * SCAN_US_PER_SLOT + n * READ_US_PER_KEY) / 1e6
                budget = self.scan_budget
            else:
                redis_s = (self.settings.scan_count * SCAN_US_PER_SLOT + n * PTTL_US_PER_KEY) / 1e6
                budget = min(self.scan_budget, STEADY_BUDGET)
            if self.steady:
                self.expire_due()
            self._pause(max(0.0, redis_s / max(budget, 0.0001) - wall))

    def _pause(self, seconds: float) -> None:
        if seconds > 0 and self._wake.wait(seconds):
            self._wake.clear()

    def stop(self) -> None:
        """Stop the background threads and close connections taskdash opened."""
        self._stop.set()
        self._wake.set()
        for t in (self._thread, self._scan_thread):
            if t:
                t.join(timeout=3)
        self._thread = self._scan_thread = None
        if self._own_client and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _run_live(self) -> None:
        backoff = 0.5
        connected_once = False
        while not self._stop.is_set():
            pubsub = None
            try:
                # named: another taskdash's liveness probe must not take this subscription for a worker's
                client = own_client(self.settings.effective_backend_url, self.settings) \
                    if self._own_client else self.client
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(self._pattern)
                if connected_once:
                    self._live_reconnected()
                connected_once = True
                with contextlib.suppress(Exception):  # redis-py reconnects and resubscribes silently
                    pubsub.connection.register_connect_callback(self._live_reconnected)
                self._pubsub = pubsub  # its connection is taskdash's own (the liveness probe skips it)
                self.live_error = None
                backoff = 0.5
                last_ping = time.monotonic()
                while not self._stop.is_set():
                    batch = []
                    msg = pubsub.get_message(timeout=0.5)
                    while msg is not None and len(batch) < 500:
                        if msg.get("type") == "pmessage":
                            batch.append(msg)
                        msg = pubsub.get_message(timeout=0.0)
                    if batch:
                        self._apply_live(batch)
                    if time.monotonic() - last_ping > 10:
                        pubsub.ping()
                        last_ping = time.monotonic()
            except (redis.RedisError, OSError) as exc:
                self.live_error = self._mask(exc)
                log.debug("results live feed: %s", self.live_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def _live_reconnected(self, connection: Any = None) -> None:
        """The live feed was away: what was published meanwhile is lost, so one low-duty pass re-counts."""
        self._rescan.set()
        self._wake.set()

    def _apply_live(self, batch: Iterable[dict[str, Any]]) -> None:
        plen = len(self._prefix)
        items: list[tuple[str, bytes, _Parsed]] = []
        for msg in batch:
            channel = msg.get("channel")
            if isinstance(channel, bytes):
                channel = channel.decode("utf-8", "replace")
            if not isinstance(channel, str) or not channel.startswith(self._prefix):
                continue
            p = parse_value(msg.get("data"))
            if p is None:
                continue
            items.append((channel[plen:], channel.encode(), p))
        if not items:
            return
        with self._lock:
            unknown = [(tid, key) for tid, key, _p in items
                       if self._current.get(_StateTable.hash_of(tid)) == 0]
        received = time.time()
        # One PTTL per message (what EXISTS cost before): -2 = not in the watched db (another db on the
        # same server published it); else when the write just made expires (each SETEX resets it).
        pipe = self.client.pipeline(transaction=False)
        for _tid, key, _p in items:
            pipe.pttl(key)
        ttls = {tid: int(n) for (tid, _k, _p), n in zip(items, pipe.execute(), strict=True)}
        known = {tid for tid, _k in unknown}
        exists = {tid: n != -2 for tid, n in ttls.items() if tid in known}
        with self._lock:
            for tid, _key, p in items:
                if not exists.get(tid, True):
                    continue  # published by another db on the same server
                self._apply(tid, p, from_scan=False)
                if ttls.get(tid, -1) >= 0:
                    self._schedule(tid, received + ttls[tid] / 1000.0)
                if len(self._live_touched) < 100_000:
                    self._live_touched.add(tid)
                else:
                    self._touched_overflow = True
                self.live_messages += 1

    # ---- reading -------------------------------------------------------------------------------
    def stats(self) -> TaskStats:
        """Counts per state (current map), scan progress and the newest failures."""
        with self._lock:
            counts = self._current.counts
            states = tuple(sorted((self._names[c], n) for c, n in enumerate(counts) if c and n > 0))
            failures = sorted(self._failures.values(), key=lambda f: f.date_done or "", reverse=True)
            scanned = self._visited if not self.passes else max(self._visited, self._last_pass_visited)
            return TaskStats(states=states, scanned=scanned, complete=self.passes > 0,
                             recent_failures=tuple(failures), passes=self.passes)

    def state_of(self, task_id: str) -> str | None:
        """The state taskdash currently holds for ``task_id`` (None when unknown)."""
        with self._lock:
            code = self._current.get(_StateTable.hash_of(task_id))
            return self._names[code] if code else None

    def worker_lost(self) -> list[tuple[str, str | None, str | None, float]]:
        """(task_id, task name, worker, ts) of WorkerLostError FAILUREs seen since the last call."""
        with self._lock:
            out, self._lost = self._lost, []
        return out

    def memory_bytes(self) -> int:
        """Bytes held by the state tables (for the bounded-memory check)."""
        with self._lock:
            n = self._current.nbytes()
            if self._pass is not self._current:
                n += self._pass.nbytes()
            return n + sum(len(a) + 8 * len(b) for a, b in self._due.values())
