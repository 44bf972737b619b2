"""Poison-loop detection: per task id, count the distinct deliveries taskdash has seen.

A poison message kills whatever runs it (``acks_late`` + ``reject_on_worker_lost``, OOM, segfault)
and is redelivered again and again with the same delivery tag. No single source sees every
delivery, so the tracker collects evidence from several and counts each source on its own:

- ``unacked``: every delivery writes a new ``unacked_index`` score for the message's tag
  (distinct scores per tag; a ``redelivered`` entry proves at least two deliveries);
- ``active``: a new appearance in a worker's active list (distinct ``(hostname, worker_pid,
  time_start)``); appearances flagged ``redelivered`` are redeliveries of one message;
- ``events``: ``task-received`` events (distinct ``(hostname, timestamp)``, per ``retries`` value);
- ``lost``: ``WorkerLostError`` FAILUREs from the result backend (distinct timestamps).

The delivery count of a task is the **maximum** over sources, so the same delivery seen through two
sources is never counted twice (a source that missed deliveries only lowers its own figure).
Retries (``Task.retry``) are new messages with a new delivery tag and a higher ``retries`` value:
they are kept apart so a task that legitimately retries three times is not a suspect.
Memory is bounded: at most ``max_tasks`` task ids (least recently seen dropped) and a small
bounded set of delivery keys per source.

A task that was quarantined (or revoked) is ``forget``-ten: it leaves ``suspects()`` at once, and
what any source still reports of deliveries from before that moment (a ledger read in flight, a late
``task-received`` event) is ignored, so it does not come back. A delivery after it (the message was
replayed and loops again) is counted afresh. ``forget`` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collectors.core.models import PoisonSuspect, TaskRef, UnackedEntry

log = logging.getLogger(__name__)

_KEYS_PER_SOURCE = 64
"""Distinct delivery keys remembered per source and task (older keys are forgotten, counts kept)."""

_MAX_TAGS = 16
"""Delivery tags (messages) remembered per task id."""


class _KeySet:
    """A bounded set of recently seen delivery keys with a monotonic count of distinct keys."""

    __slots__ = ("_order", "_seen", "count")

    def __init__(self) -> None:
        self._order: deque[Hashable] = deque()
        self._seen: set[Hashable] = set()
        self.count = 0

    def add(self, key: Hashable) -> bool:
        """Record ``key``; True when it had not been seen (a new delivery)."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > _KEYS_PER_SOURCE:
            self._seen.discard(self._order.popleft())
        self.count += 1
        return True


@dataclass(slots=True)
class _Record:
    """Everything known about one task id's deliveries."""

    task_id: str
    first_seen: float
    last_seen: float
    observed_at: float = 0.0
    """Local time any source last mentioned this task id (for idle expiry)."""
    task: str | None = None
    queue: str | None = None
    delivery_tag: str | None = None
    redelivered: bool = False
    workers: dict[str, None] = field(default_factory=dict)
    """Hostnames in the order they were first seen (dict as an ordered set)."""
    last_worker: str | None = None
    unacked: dict[str, _KeySet] = field(default_factory=dict)
    """delivery tag -> distinct unacked_index scores seen for it."""
    unacked_redelivered: set[str] = field(default_factory=set)
    active: _KeySet = field(default_factory=_KeySet)
    active_redelivered: _KeySet = field(default_factory=_KeySet)
    events: dict[int, _KeySet] = field(default_factory=dict)
    """retries value -> distinct task-received events."""
    lost: _KeySet = field(default_factory=_KeySet)

    def touch(self, ts: float) -> None:
        self.first_seen = min(self.first_seen, ts)
        self.last_seen = max(self.last_seen, ts)

    def on_worker(self, hostname: str | None) -> None:
        if hostname:
            self.workers.setdefault(hostname, None)
            self.last_worker = hostname

    def by_source(self) -> dict[str, int]:
        """Deliveries proven by each source on its own."""
        unacked = 0
        for tag, scores in self.unacked.items():
            n = scores.count
            if tag in self.unacked_redelivered:
                n = max(n, 2)
            unacked = max(unacked, n)
        # Retries are new messages (not flagged redelivered): one execution each, never a loop.
        # Each flagged appearance is one more delivery of a message already delivered before.
        if self.active_redelivered.count:
            active = self.active_redelivered.count + 1
        else:
            active = 1 if self.active.count else 0
        events = max((ks.count for ks in self.events.values()), default=0)
        flag = 2 if self.redelivered else 0
        return {"unacked": unacked, "active": active, "events": events, "lost": self.lost.count,
                "flag": flag}

    def deliveries(self) -> int:
        return max(self.by_source().values(), default=0)


class PoisonTracker:
    """Delivery history per task id; tasks delivered ``threshold`` times or more are suspects.

    Not thread-safe by itself: the collector feeds and reads it from one thread.
    """

    def __init__(self, threshold: int = 3, max_tasks: int = 10_000, idle_expiry_s: float = 3600.0) -> None:
        """Create a tracker.

        Args:
            threshold: deliveries at which a task id becomes a suspect.
            max_tasks: task ids tracked at most (least recently seen are forgotten).
            idle_expiry_s: a task id no source mentioned for this long is no longer a suspect
                (its loop was stopped: revoked, quarantined, purged).
        """
        self.threshold = max(2, int(threshold))
        self.max_tasks = max(16, int(max_tasks))
        self.idle_expiry_s = idle_expiry_s
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._forgotten: OrderedDict[str, float] = OrderedDict()
        """task id -> when it was forgotten (quarantined/revoked): older deliveries are ignored."""
        self._lock = threading.RLock()
        """``forget`` comes from the action thread while the poll thread feeds and reads."""
        self._hot: dict[str, None] = {}
        """Task ids whose record reached ``threshold`` when it last changed: ``suspects`` reads only these
        (it looked at every record, up to ``max_tasks``, each refresh)."""
        self._last_unacked: dict[str, tuple[Any, ...]] = {}
        """delivery tag -> what the previous ledger read said about it (an unchanged entry only renews its
        record's last mention)."""

    # ---- feeding -----------------------------------------------------------------------------
    def _record(self, task_id: str, ts: float) -> _Record | None:
        """The record of ``task_id`` touched at ``ts``; None for a delivery from before it was forgotten."""
        gone = self._forgotten.get(task_id)
        if gone is not None:
            if ts <= gone:
                return None
            del self._forgotten[task_id]  # delivered again after the quarantine: a new history
        rec = self._records.get(task_id)
        if rec is None:
            rec = _Record(task_id=task_id, first_seen=ts, last_seen=ts)
            self._records[task_id] = rec
            while len(self._records) > self.max_tasks:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(task_id)
            rec.touch(ts)
        rec.observed_at = time.time()
        return rec

    def _rate(self, rec: _Record) -> None:
        """Note ``rec`` as a possible suspect once its deliveries reach the threshold."""
        if rec.deliveries() >= self.threshold:
            self._hot[rec.task_id] = None

    def observe_unacked(self, entries: Iterable[UnackedEntry], now: float) -> None:
        """Feed one read of the unacked ledger (a new score for a tag = a new delivery).

        The ledger's window is mostly the same from one read to the next: an entry exactly as the last
        read saw it (same task, delivery time, holder, flags) adds nothing but its record's last mention
        (``observed_at`` and its place in the LRU), so that is all it costs."""
        with self._lock:
            last, seen = self._last_unacked, {}
            records, forgotten = self._records, self._forgotten
            for e in entries:
                sig = (e.task_id, e.reserved_at, e.holder, e.redelivered, e.task, e.queue)
                seen[e.delivery_tag] = sig
                if last.get(e.delivery_tag) == sig and e.task_id and e.task_id not in forgotten:
                    rec = records.get(e.task_id)
                    if rec is not None:
                        rec.observed_at = time.time()
                        records.move_to_end(e.task_id)
                        continue
                self._observe_unacked(e, now)
            self._last_unacked = seen

    def _observe_unacked(self, e: UnackedEntry, now: float) -> None:
        if not e.task_id:
            return
        ts = e.reserved_at if e.reserved_at is not None else now
        rec = self._record(e.task_id, ts)
        if rec is None:
            return
        rec.task = e.task or rec.task
        rec.queue = e.queue or rec.queue
        rec.delivery_tag = e.delivery_tag or rec.delivery_tag
        rec.on_worker(e.holder)
        tags = rec.unacked.get(e.delivery_tag)
        if tags is None:
            if len(rec.unacked) >= _MAX_TAGS:
                rec.unacked.pop(next(iter(rec.unacked)))
            tags = rec.unacked[e.delivery_tag] = _KeySet()
        if e.reserved_at is not None:
            tags.add(round(e.reserved_at, 6))
        elif not tags.count:
            tags.add(None)
        if e.redelivered:
            rec.redelivered = True
            rec.unacked_redelivered.add(e.delivery_tag)
        self._rate(rec)

    def observe_active(self, refs: Iterable[TaskRef], now: float) -> None:
        """Feed the active lists of one inspect window (a new execution = a new delivery)."""
        with self._lock:
            for ref in refs:
                self._observe_active(ref, now)

    def _observe_active(self, ref: TaskRef, now: float) -> None:
        if ref.state != "active":
            return
        ts = ref.time_start if ref.time_start is not None else now
        rec = self._record(ref.task_id, ts)
        if rec is None:
            return
        rec.task = ref.name or rec.task
        rec.queue = ref.queue or rec.queue
        rec.on_worker(ref.hostname)
        key = (ref.hostname, ref.worker_pid,
               round(ref.time_start, 3) if ref.time_start is not None else None)
        rec.active.add(key)
        if ref.redelivered:
            rec.redelivered = True
            rec.active_redelivered.add(key)
        self._rate(rec)

    def observe_worker_lost(self, task_id: str, task: str | None, worker: str | None, ts: float) -> None:
        """Feed a WorkerLostError FAILURE from the result backend (its worker died running it)."""
        with self._lock:
            rec = self._record(task_id, ts)
            if rec is None:
                return
            rec.task = task or rec.task
            rec.on_worker(worker)
            rec.lost.add(round(ts, 3))
            self._rate(rec)

    def observe_event(self, event: Mapping[str, Any]) -> None:
        """Feed one Celery task event (``task-received`` counts a delivery; others add context)."""
        with self._lock:
            self._observe_event(event)

    def _observe_event(self, event: Mapping[str, Any]) -> None:
        task_id = event.get("uuid")
        etype = event.get("type")
        if not isinstance(task_id, str) or not isinstance(etype, str) or not etype.startswith("task-"):
            return
        ts = _as_float(event.get("timestamp")) or time.time()
        if etype != "task-received" and task_id not in self._records:
            return  # context for tasks we never saw delivered is not worth memory
        rec = self._record(task_id, ts)
        if rec is None:
            return
        hostname = event.get("hostname")
        rec.on_worker(hostname if isinstance(hostname, str) else None)
        if isinstance(event.get("name"), str):
            rec.task = event["name"]
        rk = event.get("routing_key") or event.get("queue")
        if isinstance(rk, str) and rk:
            rec.queue = rec.queue or rk
        if etype == "task-received":
            retries = event.get("retries")
            bucket = int(retries) if isinstance(retries, int) else 0
            ks = rec.events.get(bucket)
            if ks is None:
                if len(rec.events) >= _MAX_TAGS:
                    rec.events.pop(next(iter(rec.events)))
                ks = rec.events[bucket] = _KeySet()
            ks.add((hostname, event.get("timestamp"), event.get("clock")))
        elif etype == "task-failed" and "WorkerLostError" in str(event.get("exception", "")):
            rec.lost.add(round(ts, 3))
        self._rate(rec)

    # ---- reading -----------------------------------------------------------------------------
    def deliveries(self, task_id: str) -> int:
        """Distinct deliveries seen for ``task_id`` (0 when never seen)."""
        with self._lock:
            rec = self._records.get(task_id)
            return rec.deliveries() if rec else 0

    def forget(self, task_id: str, at: float | None = None) -> None:
        """Drop a task id's history (after it was quarantined or revoked): it leaves ``suspects()`` now.

        Deliveries from before ``at`` (default: now) that a source reports later are ignored; a delivery
        after it starts a new history (a replayed message that loops again is a suspect again).
        Thread-safe.
        """
        with self._lock:
            self._records.pop(task_id, None)
            self._hot.pop(task_id, None)
            self._forgotten[task_id] = time.time() if at is None else float(at)
            self._forgotten.move_to_end(task_id)
            while len(self._forgotten) > self.max_tasks:
                self._forgotten.popitem(last=False)

    def suspects(self, now: float | None = None) -> tuple[PoisonSuspect, ...]:
        """Tasks delivered at least ``threshold`` times, most deliveries first.

        Args:
            now: local epoch time (default: now); ids idle longer than ``idle_expiry_s`` are left out.
        """
        now = time.time() if now is None else now
        with self._lock:
            return self._suspects(now)

    def _suspects(self, now: float) -> tuple[PoisonSuspect, ...]:
        out: list[PoisonSuspect] = []
        for task_id in list(self._hot):
            rec = self._records.get(task_id)
            if rec is None:  # forgotten, or pushed out of the LRU
                del self._hot[task_id]
                continue
            if now - rec.observed_at > self.idle_expiry_s:
                continue
            n = rec.deliveries()
            if n < self.threshold:  # a remembered key aged out: back when it reaches it again
                del self._hot[task_id]
                continue
            out.append(PoisonSuspect(
                task_id=rec.task_id, task=rec.task, queue=rec.queue, deliveries=n,
                first_seen=rec.first_seen, last_seen=rec.last_seen, reason=_reason(rec, n),
                workers=tuple(rec.workers), delivery_tag=rec.delivery_tag,
            ))
        out.sort(key=lambda s: (-s.deliveries, -s.last_seen))
        return tuple(out)


def _reason(rec: _Record, n: int) -> str:
    span = max(0.0, rec.last_seen - rec.first_seen)
    parts = [f"delivered {n} times in {_span(span)}"]
    if rec.redelivered:
        parts.append("redelivered")
    if rec.lost.count:
        parts.append(f"worker lost {rec.lost.count}x")
    if rec.last_worker:
        parts.append(f"last on {rec.last_worker}")
    return "; ".join(parts)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _as_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
