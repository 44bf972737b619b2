"""Crash forensics: per worker, a timeline of what happened to it and who killed its processes.

``Forensics`` is pure logic fed with successive refreshes (``observe(snapshot, view)``): it compares
each worker with the previous refresh and records

- ``online`` / ``offline`` transitions and ``restarted`` (a new main-process pid);
- ``heartbeat-gap``: no heartbeat or reply for longer than ``gap_s`` while the worker is still
  considered online (a hung or overloaded main process), and ``heartbeat-back`` when it resumes;
- ``process-died`` / ``process-started``: pool process churn (``stats.pool.processes`` changing);
  a died event names the task that was running on that pid when it was last seen (``active``
  TaskRef with ``worker_pid``; ``culprit="active"``), else a WorkerLostError result of that worker
  seen around the same time (``culprit="worker-lost"``), else a poison suspect that was on that worker
  (``culprit="poison"``);
- ``worker-lost``: WorkerLostError FAILUREs from the result backend (``observe_worker_lost`` for the
  ResultsMonitor feed, or the snapshot's recent failures).

``took_down(task_id)`` lists the processes/workers a (poison) task took down. Memory is bounded
(events per worker, workers, casualties). No Textual, no I/O. Thread-safe (one lock): the poll thread
can feed it while the UI thread reads a timeline.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from collectors.core.messages import eta_timestamp
from collectors.core.models import PoisonSuspect, Snapshot, TaskRef, WorkerInfo
from collectors.reads.workers import WorkersView

EventKind = Literal["online", "offline", "restarted", "heartbeat-gap", "heartbeat-back", "process-died",
                    "process-started", "worker-lost"]

MAX_EVENTS = 500
"""Events kept per worker (oldest dropped)."""
MAX_WORKERS = 1000
MAX_CASUALTIES = 200
"""Process deaths remembered per task id."""
ATTRIBUTION_WINDOW_S = 15.0
"""A WorkerLostError / poison delivery this close to a process death is linked to it."""


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One thing that happened to a worker."""

    ts: float
    hostname: str
    kind: EventKind
    detail: str
    pid: int | None = None
    task_id: str | None = None
    task: str | None = None
    culprit: str | None = None
    """How the task of a ``process-died`` event was found: "active", "worker-lost", "poison"."""

    def to_json(self) -> dict[str, object]:
        return {"ts": self.ts, "hostname": self.hostname, "kind": self.kind, "detail": self.detail,
                "pid": self.pid, "task_id": self.task_id, "task": self.task, "culprit": self.culprit}


@dataclass(frozen=True, slots=True)
class Casualty:
    """A pool process (or worker) a task took down."""

    ts: float
    hostname: str
    pid: int | None
    culprit: str


@dataclass(slots=True)
class _WorkerState:
    online: bool | None = None
    pid: int | None = None
    pool_pids: frozenset[int] = frozenset()
    pid_tasks: dict[int, tuple[TaskRef, float]] = field(default_factory=dict)
    """pool pid -> (the task active on it at the previous refresh, when)."""
    in_gap: bool = False
    events: deque[TimelineEvent] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))


class Forensics:
    """Per-worker timelines built from successive refreshes (see the module docstring)."""

    def __init__(self, gap_s: float = 3.5) -> None:
        """Create an empty record.

        Args:
            gap_s: seconds without heartbeat/reply after which an online worker gets a heartbeat-gap
                (heartbeats come every 2 s; a worker is shown offline after ~5 s).
        """
        self.gap_s = gap_s
        self._workers: OrderedDict[str, _WorkerState] = OrderedDict()
        self._lost: deque[list[object]] = deque(maxlen=1000)
        """[task_id, task, worker, ts, used] of WorkerLostError results (used: linked to a death)."""
        self._lost_seen: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._casualties: OrderedDict[str, deque[Casualty]] = OrderedDict()
        self._suspects: dict[str, PoisonSuspect] = {}
        self._lock = threading.RLock()

    # ---- feeding -------------------------------------------------------------------------------
    def _observe(self, snapshot: Snapshot, view: WorkersView | None = None) -> list[TimelineEvent]:
        """``observe`` under the lock."""
        now = snapshot.taken_at
        new: list[TimelineEvent] = []
        for p in snapshot.poison:
            self._suspects[p.task_id] = p
        for f in snapshot.tasks.recent_failures:
            if f.exception.startswith("WorkerLostError"):
                new.extend(self.observe_worker_lost(f.task_id, f.task, f.worker, eta_timestamp(f.date_done) or now,
                                                    key=f.date_done))
        active: dict[str, list[TaskRef]] = {}
        for ref in (view.active if view is not None else ()):
            active.setdefault(ref.hostname, []).append(ref)
        workers = view.workers if view is not None else snapshot.workers
        for w in workers:
            new.extend(self._observe_worker(w, active.get(w.hostname, []), now))
        return new

    def _observe_worker_lost(self, task_id: str, task: str | None, worker: str | None, ts: float,
                            *, key: str | None = None) -> list[TimelineEvent]:
        """Record one WorkerLostError result (the ``ResultsMonitor.worker_lost()`` feed)."""
        dedupe = (task_id, key if key is not None else repr(ts))
        if dedupe in self._lost_seen:
            return []
        self._lost_seen[dedupe] = None
        while len(self._lost_seen) > 5000:
            self._lost_seen.popitem(last=False)
        self._lost.append([task_id, task, worker, ts, False])
        host = worker or "?"
        ev = TimelineEvent(ts, host, "worker-lost", f"{task or 'task'} [{task_id}] failed with WorkerLostError "
                           "(its pool process died)", task_id=task_id, task=task)
        self._state(host).events.append(ev)
        return [ev]

    def _state(self, host: str) -> _WorkerState:
        st = self._workers.get(host)
        if st is None:
            st = self._workers[host] = _WorkerState()
            while len(self._workers) > MAX_WORKERS:
                self._workers.popitem(last=False)
        return st

    def _observe_worker(self, w: WorkerInfo, active: list[TaskRef], now: float) -> list[TimelineEvent]:
        st = self._state(w.hostname)
        out: list[TimelineEvent] = []

        def emit(kind: EventKind, detail: str, **kw: object) -> None:
            ev = TimelineEvent(now, w.hostname, kind, detail, **kw)  # type: ignore[arg-type]
            st.events.append(ev)
            out.append(ev)

        if st.online is None or st.online != w.online:
            if w.online:
                emit("online", f"online (pid {w.pid})" if w.pid else "online", pid=w.pid)
            elif st.online is not None:
                seen = f", last seen {w.last_seen_s:.0f}s ago" if w.last_seen_s is not None else ""
                emit("offline", f"offline{seen}", pid=st.pid)
            st.online = w.online
        restarted = bool(w.pid and st.pid and w.pid != st.pid)
        if restarted:
            emit("restarted", f"main process changed {st.pid} -> {w.pid} (worker restarted)", pid=w.pid)
        if w.pid:
            st.pid = w.pid
        if w.online and w.last_seen_s is not None:
            if w.last_seen_s > self.gap_s and not st.in_gap:
                st.in_gap = True
                emit("heartbeat-gap", f"no heartbeat or reply for {w.last_seen_s:.0f}s", pid=w.pid)
            elif w.last_seen_s <= self.gap_s and st.in_gap:
                st.in_gap = False
                emit("heartbeat-back", "heartbeats resumed", pid=w.pid)
        # Which task runs on which pool process: the tasks active now (a task still reported active
        # on a pid that left the pool is the one that died with it) and, failing that, the task that
        # was active on that pid at the previous refresh.
        current = {ref.worker_pid: (ref, now) for ref in active if ref.worker_pid}
        pids = frozenset(w.pool_pids)
        if pids and st.pool_pids and w.online and not restarted:
            for pid in sorted(st.pool_pids - pids):
                out.append(self._died(st, w.hostname, pid, now, current.get(pid) or st.pid_tasks.get(pid)))
            for pid in sorted(pids - st.pool_pids):
                emit("process-started", f"pool process {pid} started", pid=pid)
        if pids:
            st.pool_pids = pids
        if w.online and (active or pids):
            st.pid_tasks = {p: v for p, v in current.items() if not pids or p in pids}
        return out

    def _died(self, st: _WorkerState, host: str, pid: int, now: float,
              seen: tuple[TaskRef, float] | None) -> TimelineEvent:
        task_id = task = culprit = None
        if seen is not None:
            ref, _at = seen
            task_id, task, culprit = ref.task_id, ref.name, "active"
        else:
            lost = [x for x in self._lost if x[2] == host and not x[4]
                    and abs(float(x[3]) - now) <= ATTRIBUTION_WINDOW_S]  # type: ignore[arg-type]
            if lost:
                lost[0][4] = True  # one WorkerLostError explains one death
                task_id, task = str(lost[0][0]), lost[0][1]  # type: ignore[assignment]
                culprit = "worker-lost"
            else:
                sus = [p for p in self._suspects.values() if host in p.workers
                       and now - p.last_seen <= ATTRIBUTION_WINDOW_S]
                if len(sus) == 1:
                    task_id, task, culprit = sus[0].task_id, sus[0].task, "poison"
        if task_id:
            detail = f"pool process {pid} died while running {task or 'task'} [{task_id}]"
            cas = self._casualties.get(task_id)
            if cas is None:
                cas = self._casualties[task_id] = deque(maxlen=MAX_CASUALTIES)
                while len(self._casualties) > 10_000:
                    self._casualties.popitem(last=False)
            cas.append(Casualty(now, host, pid, culprit or "?"))
        else:
            detail = f"pool process {pid} exited (no task seen on it)"
        ev = TimelineEvent(now, host, "process-died", detail, pid=pid, task_id=task_id, task=task,
                           culprit=culprit)
        st.events.append(ev)
        return ev

    # ---- reading -------------------------------------------------------------------------------
    def _workers_(self) -> list[str]:
        """Hostnames with a timeline."""
        return sorted(self._workers)

    def _timeline(self, hostname: str, since: float | None = None) -> tuple[TimelineEvent, ...]:
        """Events of one worker, oldest first."""
        st = self._workers.get(hostname)
        if st is None:
            return ()
        return tuple(e for e in st.events if since is None or e.ts >= since)

    def _events(self, since: float | None = None) -> list[TimelineEvent]:
        """Every worker's events merged, oldest first."""
        out = [e for st in self._workers.values() for e in st.events if since is None or e.ts >= since]
        return sorted(out, key=lambda e: e.ts)

    def _took_down(self, task_id: str) -> tuple[Casualty, ...]:
        """Pool processes (and their workers) that died while running ``task_id``."""
        return tuple(self._casualties.get(task_id, ()))

    def _victims(self, task_id: str) -> list[str]:
        """Workers ``task_id`` took processes down on, in order of first casualty."""
        seen: dict[str, None] = {}
        for c in self.took_down(task_id):
            seen.setdefault(c.hostname, None)
        return list(seen)

    def _killers(self) -> list[tuple[str, str | None, int, list[str]]]:
        """(task_id, task, processes taken down, workers) for every task linked to a death, worst first."""
        rows = []
        for task_id, cas in self._casualties.items():
            name = self._suspects[task_id].task if task_id in self._suspects else None
            rows.append((task_id, name, len(cas), self.victims(task_id)))
        return sorted(rows, key=lambda r: -r[2])


    # ---- locked public API ---------------------------------------------------------------------
    def observe(self, snapshot: Snapshot, view: WorkersView | None = None) -> list[TimelineEvent]:
        """Compare one refresh with the previous one; returns the new events.

        Args:
            snapshot: the refresh (workers, poison suspects, recent failures).
            view: the WorkersView of the same refresh, for the active tasks' ``worker_pid``
                (without it, process deaths are linked through WorkerLostError/poison only).
        """
        with self._lock:
            return self._observe(snapshot, view)

    def observe_worker_lost(self, task_id: str, task: str | None, worker: str | None, ts: float,
                            *, key: str | None = None) -> list[TimelineEvent]:
        """Record one WorkerLostError result (the ``ResultsMonitor.worker_lost()`` feed)."""
        with self._lock:
            return self._observe_worker_lost(task_id, task, worker, ts, key=key)

    def workers(self) -> list[str]:
        """Hostnames with a timeline."""
        with self._lock:
            return self._workers_()

    def timeline(self, hostname: str, since: float | None = None) -> tuple[TimelineEvent, ...]:
        """Events of one worker, oldest first."""
        with self._lock:
            return self._timeline(hostname, since)

    def events(self, since: float | None = None) -> list[TimelineEvent]:
        """Every worker's events merged, oldest first."""
        with self._lock:
            return self._events(since)

    def took_down(self, task_id: str) -> tuple[Casualty, ...]:
        """Pool processes (and their workers) that died while running ``task_id``."""
        with self._lock:
            return self._took_down(task_id)

    def victims(self, task_id: str) -> list[str]:
        """Workers ``task_id`` took processes down on, in order of first casualty."""
        with self._lock:
            return self._victims(task_id)

    def killers(self) -> list[tuple[str, str | None, int, list[str]]]:
        """(task_id, task, processes taken down, workers) for every task linked to a death, worst first."""
        with self._lock:
            return self._killers()


def format_timeline(events: Iterable[TimelineEvent], now: float | None = None) -> list[str]:
    """Readable lines ("-12.3s  w1@host  process-died  pool process 123 died while running ...")."""
    now = time.time() if now is None else now
    return [f"{e.ts - now:+8.1f}s  {e.hostname:<20} {e.kind:<15} {e.detail}" for e in events]
