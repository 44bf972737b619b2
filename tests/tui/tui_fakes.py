"""Fixed snapshots, a fake collector and fake actions for the TUI tests (no Redis)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from collectors.analysis.forensics import Forensics
from collectors.analysis.history import History
from collectors.core.config import Settings
from collectors.core.models import (
    PoisonSuspect,
    QueueInfo,
    RefreshCost,
    Snapshot,
    SourceError,
    SourceStatus,
    TaskFailure,
    TaskStats,
    UnackedEntry,
    WorkerInfo,
)
from collectors.writes.actions import ActionResult, PurgePreview, QuarantinedMessage
from tui.app import TaskDashApp

T0 = 1_780_000_000.0
"""Fixed snapshot time (2026-05-28): screenshots never depend on the real clock."""

BROKER = SourceStatus("redis://:***@broker.example:6379/0", True)
BACKEND = SourceStatus("redis://:***@broker.example:6379/1", True)
SETTINGS = Settings(broker_url="redis://:secret@broker.example:6379/0",
                    backend_url="redis://:secret@broker.example:6379/1", interval=0)


def entry(tag: str, task_id: str, *, task: str = "demo_tasks.tasks.slow", queue: str = "slow",
          state: str = "active", holder: str | None = "w1@host", age: float = 12.0, stale: bool = False,
          redelivered: bool = False) -> UnackedEntry:
    """An unacked entry with sensible defaults."""
    return UnackedEntry(
        delivery_tag=tag, task_id=task_id, task=task, queue=queue, priority=0, reserved_at=T0 - age,
        age_s=age, redelivered=redelivered, state=state,  # type: ignore[arg-type]
        holder=holder if state in ("active", "reserved", "scheduled") else None, stale=stale,
        time_to_redelivery_s=3600.0 - age, argsrepr="(5,)", kwargsrepr="{'tag': 'x'}",
        exchange="", routing_key=queue, size=812,
    )


QUEUES = (
    QueueInfo("celery", 120, ((0, 100), (3, 20), (6, 0), (9, 0)), 42.0, 1, 2, ("binding",)),
    QueueInfo("emails", 7, ((0, 7), (3, 0), (6, 0), (9, 0)), 310.0, 0, 0, ("binding",)),
    QueueInfo("slow", 0, ((0, 0), (3, 0), (6, 0), (9, 0)), None, 3, 1, ("binding", "worker")),
    QueueInfo("risky", 1, ((0, 1), (3, 0), (6, 0), (9, 0)), 5.0, 1, 1, ("worker",)),
)
UNACKED = (
    entry("tag-a1", "a1a1a1a1-0000-4000-8000-000000000001", age=12.0),
    entry("tag-o1", "0a0a0a0a-0000-4000-8000-000000000002", state="orphaned", age=4000.0, stale=True,
          redelivered=True),
    entry("tag-o2", "0b0b0b0b-0000-4000-8000-000000000003", state="orphaned", age=95.0),
    entry("tag-r1", "r1r1r1r1-0000-4000-8000-000000000004", state="reserved", holder="w2@host", age=3.0,
          queue="celery", task="demo_tasks.tasks.add"),
    entry("tag-p1", "p0150n00-0000-4000-8000-000000000005", task="demo_tasks.tasks.poison", queue="risky",
          state="active", holder="w2@host", age=1.0, redelivered=True),
)
WORKERS = (
    WorkerInfo("w1@host", True, "prefork", 4, 1, 0, 0, 1520, ("celery", "slow"), 0.8, pid=101,
               sw_ver="5.7.0", pool_pids=(102, 103, 104, 105)),
    WorkerInfo("w2@host", True, "solo", 1, 1, 1, 0, 88, ("celery", "risky"), 1.2, pid=201, sw_ver="5.7.0"),
    WorkerInfo("w3@gone", False, "prefork", 2, 0, 0, 0, 12, ("emails",), 340.0, pid=301),
)
LIVENESS_WORKERS = (
    WorkerInfo("w1@host", True, "prefork", 4, 1, 0, 0, 1520, ("celery", "slow"), 0.8, pid=101, sw_ver="5.7.0",
               pool_pids=(102, 103, 104, 105), liveness="responding", liveness_evidence="heartbeat 1s ago",
               liveness_since=T0 - 0.8, boot_at=T0 - 7200.0),
    WorkerInfo("w4@quiet", True, "solo", 1, 1, 0, 0, 400, ("celery",), 42.0, pid=401, responding=False,
               liveness="silent", liveness_evidence=(
                   "no heartbeat or reply for 42s; 3 subscriber connection(s) opened at its start still open "
                   "(CLIENT LIST)"), liveness_since=T0 - 42.0, boot_at=T0 - 600.0),
    WorkerInfo("w5@killed", False, "prefork", 2, 0, 0, 0, 77, ("slow",), 95.0, pid=501, responding=False,
               liveness="dead", liveness_evidence=(
                   "no Redis connection, silent 1m (CLIENT LIST: no Redis connection (CLIENT LIST))"),
               liveness_since=T0 - 80.0, boot_at=T0 - 3600.0),
    WorkerInfo("w6@ghost", True, "prefork", 4, 0, 0, 0, 12, ("emails",), 1.0, pid=601, liveness="ghost",
               liveness_evidence=(
                   "ghost: 'emails' has a backlog for 5m, processed flat at 12 for 5m, 0/4 slots busy; no longer "
                   "consuming 'emails' (not in active_queues)"), liveness_since=T0 - 300.0, boot_at=T0 - 900.0),
)
"""One worker in each liveness state (issue 12), with the evidence the collector gives."""
LIVENESS_UNACKED = (
    replace(entry("tag-h1", "h1h1h1h1-0000-4000-8000-000000000011", queue="celery", state="held-by-silent",
                  age=42.0), holder="w4@quiet", possible_holders=("w4@quiet",),
            state_reason="may be held by silent w4@quiet (not proven dead); kombu redelivers it in 59m"),
    replace(entry("tag-m1", "m1m1m1m1-0000-4000-8000-000000000012", queue="celery", state="may-be-held",
                  age=30.0), possible_holders=("w1@host", "w4@quiet"),
            state_reason=("not reported, but w1@host (alive) consumed 'celery' at its delivery and may hold it "
                          "unreported (rate limit, prefetch); kombu redelivers it in 59m")),
    replace(entry("tag-o9", "o9o9o9o9-0000-4000-8000-000000000013", state="orphaned", age=90.0),
            possible_holders=("w5@killed",), state_reason="every possible holder is dead (w5@killed: ...)"),
)


def liveness_snapshot(**changes: Any) -> Snapshot:
    """The standard snapshot with a worker in each liveness state and the unacked states that follow."""
    return make_snapshot(workers=LIVENESS_WORKERS, unacked=LIVENESS_UNACKED, unacked_total=len(LIVENESS_UNACKED),
                         **changes)


FAILURES = (
    TaskFailure("f1f1f1f1-0000-4000-8000-000000000006", "demo_tasks.tasks.fail", "ValueError('boom')",
                'Traceback (most recent call last):\n  File "tasks.py", line 20, in fail\n'
                "    raise ValueError('boom')\nValueError: boom", "2026-05-28T19:59:01",
                args="()", kwargs="{}", worker="w1@host", queue="celery"),
    TaskFailure("p0150n00-0000-4000-8000-000000000005", "demo_tasks.tasks.poison",
                "WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL)')", None,
                "2026-05-28T19:58:40", worker="w2@host", queue="risky"),
)
POISON = (
    PoisonSuspect("p0150n00-0000-4000-8000-000000000005", "demo_tasks.tasks.poison", "risky", 4, T0 - 120.0,
                  T0 - 1.0, "4 deliveries, WorkerLostError", ("w2@host", "w1@host"), "tag-p1"),
)


def make_snapshot(**changes: Any) -> Snapshot:
    """The standard fixed snapshot, optionally changed."""
    snap = Snapshot(
        taken_at=T0, broker=BROKER, backend=BACKEND, queues=QUEUES, unacked=UNACKED,
        unacked_total=len(UNACKED), workers=WORKERS,
        tasks=TaskStats((("SUCCESS", 1204), ("FAILURE", 2), ("RETRY", 3)), 1209, True, FAILURES, 1),
        poison=POISON, errors=(), cost=RefreshCost(4, 37, 3.2), visibility_timeout=3600.0, inspect_ok=True,
    )
    return replace(snap, **changes)


def down_snapshot(error: str = "Error 111 connecting to broker.example:6379. Connection refused.") -> Snapshot:
    """What the collector returns while Redis is down."""
    return Snapshot(taken_at=T0, broker=SourceStatus(BROKER.url, False, error),
                    backend=SourceStatus(BACKEND.url, False, error),
                    errors=(SourceError("broker", error),))


def big_snapshot(n_unacked: int = 10_000, n_queues: int = 500) -> Snapshot:
    """10,000 unacked entries and 500 queues."""
    queues = tuple(QueueInfo(f"queue-{i:03d}", i * 3, ((0, i * 3), (3, 0), (6, 0), (9, 0)), float(i), i % 7,
                             i % 3) for i in range(n_queues))
    states = ("active", "reserved", "orphaned", "scheduled")
    unacked = tuple(
        entry(f"tag-{i:05d}", f"{i:08x}-0000-4000-8000-{i:012d}", queue=f"queue-{i % n_queues:03d}",
              state=states[i % 4], age=float(i % 5000), stale=(i % 5000) > 3600)
        for i in range(n_unacked)
    )
    return make_snapshot(queues=queues, unacked=unacked, unacked_total=n_unacked)


class FakeCollector:
    """Returns queued snapshots in order (the last one repeats); counts calls; optional delay."""

    def __init__(self, snapshots: Sequence[Snapshot | Callable[[], Snapshot]], *, delay: float = 0.0,
                 settings: Settings = SETTINGS) -> None:
        self.settings = settings
        self.snapshots = list(snapshots)
        self.delay = delay
        self.calls = 0
        self.inspects = 0
        self.closed = False
        self.release = threading.Event()
        self.release.set()
        self.in_flight = threading.Event()
        self.forensics: Forensics | None = None
        self.history: History | None = None

    def collect(self) -> Snapshot:
        self.calls += 1
        self.in_flight.set()
        try:
            if self.delay:
                time.sleep(self.delay)
            self.release.wait(30)
            item = self.snapshots[0] if len(self.snapshots) == 1 else self.snapshots.pop(0)
            snapshot = item() if callable(item) else item
            self.feed(snapshot)
            return snapshot
        finally:
            self.in_flight.clear()

    def attach(self, *, forensics: Forensics | None, history: History | None) -> None:
        self.forensics = forensics
        self.history = history

    def workers_view(self, snapshot: Snapshot) -> Any:
        """The workers view fed to forensics with ``snapshot`` (None: the snapshot alone)."""
        return None

    def feed(self, snapshot: Snapshot) -> None:
        """What ``Collector.collect()`` does with its attachments (broker reachable only)."""
        if not snapshot.broker.ok:
            return
        if self.forensics is not None:
            self.forensics.observe(snapshot, self.workers_view(snapshot))
        if self.history is not None:
            self.history.record(snapshot)

    def inspect_soon(self) -> None:
        self.inspects += 1

    def close(self) -> None:
        self.closed = True


def FakeResult(action: str, count: int, message: str) -> ActionResult:  # noqa: N802 - reads like a class
    """A real ``ActionResult``."""
    return ActionResult(action, count, message, {})


class FakeActions:
    """Same API as ``collectors.writes.actions.Actions``; records every call, returns real result types."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.quarantine_entries: list[QuarantinedMessage] = [
            QuarantinedMessage("q-1", "p0150n00-0000-4000-8000-000000000005", "demo_tasks.tasks.poison", "risky",
                               "poison suspect", T0 - 60, 4, "unacked"),
        ]

    def _rec(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def requeue(self, tags: Sequence[str], *, force: bool = False, live: set[str] | None = None,
                expected: Mapping[str, float] | None = None) -> ActionResult:
        if live is None:
            self._rec("requeue", list(tags), force=force)
        else:
            self._rec("requeue", list(tags), force=force, live=live)
        return FakeResult("requeue", len(tags), f"requeued {len(tags)} message(s)")

    def requeue_orphaned(self, *, older_than: float | None = None, force: bool = False) -> ActionResult:
        self._rec("requeue_orphaned", older_than=older_than, force=force)
        return FakeResult("requeue", 2, "requeued 2 message(s)")

    def quarantine(self, *, tags: Sequence[str] = (), task_ids: Sequence[str] = (), reason: str = "",
                   deliveries: int | None = None, queues: Sequence[str] | None = None) -> ActionResult:
        if queues is None:
            self._rec("quarantine", tags=list(tags), task_ids=list(task_ids), reason=reason, deliveries=deliveries)
        else:
            self._rec("quarantine", tags=list(tags), task_ids=list(task_ids), reason=reason, deliveries=deliveries,
                      queues=list(queues))
        return FakeResult("quarantine", len(tags) + len(task_ids), "quarantined")

    def list_quarantine(self, limit: int = 500) -> list[QuarantinedMessage]:
        self._rec("list_quarantine")
        return list(self.quarantine_entries)

    def replay(self, ids: Sequence[str]) -> ActionResult:
        self._rec("replay", list(ids))
        return FakeResult("replay", len(ids), f"replayed {len(ids)}")

    def delete_quarantined(self, ids: Sequence[str]) -> ActionResult:
        self._rec("delete_quarantined", list(ids))
        return FakeResult("delete", len(ids), f"deleted {len(ids)}")

    def purge_preview(self, queue: str) -> PurgePreview:
        self._rec("purge_preview", queue)
        return PurgePreview(queue, ((0, 100), (3, 20), (6, 0), (9, 0)), 120, 1, 0)

    def purge(self, queue: str, *, include_unacked: bool = False, export_path: str | None = None) -> ActionResult:
        self._rec("purge", queue, include_unacked=include_unacked, export_path=export_path)
        return FakeResult("purge", 120, f"purged 120 message(s) from {queue}")

    def revoke(self, task_id: str, *, terminate: bool = False) -> ActionResult:
        self._rec("revoke", task_id, terminate=terminate)
        return FakeResult("revoke", 1, f"revoked {task_id}")

    def retry(self, task_id: str) -> ActionResult:
        self._rec("retry", task_id)
        return FakeResult("retry", 1, f"retried {task_id}")

    def display_key(self, key: str) -> str:
        return key

    def export_quarantine(self, path: str) -> ActionResult:
        self._rec("export_quarantine", path)
        return FakeResult("export", len(self.quarantine_entries), f"exported to {path}")

    def find_tags(self, task_id: str) -> list[str]:
        return [e.delivery_tag for e in UNACKED if e.task_id == task_id]

    def live_task_ids(self) -> set[str] | None:
        return {e.task_id for e in UNACKED if e.holder and e.task_id}

    def orphaned(self, *, older_than: float | None = None, live: set[str] | None = None,
                 limit: int | None = None) -> list[tuple[str, float, str | None, str | None]]:
        return [(e.delivery_tag, e.reserved_at, e.task_id, e.queue) for e in UNACKED if e.state == "orphaned"]

    def orphan_census(self, *, older_than: float | None = None, live: set[str] | None = None,
                      limit: int | None = None
                      ) -> tuple[list[tuple[str, float, str | None, str | None]], dict[str, Any]]:
        held = [e.delivery_tag for e in UNACKED if e.state != "orphaned"]
        return self.orphaned(older_than=older_than, live=live, limit=limit), {"refused": [], "held": held,
                                                                               "why": {}}

    def restore(self, path: str, *, force: bool = False) -> ActionResult:
        self._rec("restore", path, force=force)
        return FakeResult("restore", 0, f"restored 0 message(s) from {path}")


class FakeControl:
    """Same API as ``collectors.writes.control.WorkerControl``; records (method, args, destination)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...], object]] = []

    def _rec(self, method: str, args: tuple[object, ...], destination: Sequence[str] | None,
             message: str) -> ActionResult:
        self.calls.append((method, args, destination))
        return ActionResult(method, len(destination or ()) or 1, message, {})

    def add_consumer(self, queue: str, destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("add_consumer", (queue,), destination, f"consuming {queue}")

    def autoscale(self, max_: int, min_: int, destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("autoscale", (max_, min_), destination, f"autoscale {max_}/{min_}")

    def broadcast(self, command: str, arguments: Mapping[str, Any] | None = None,
                  destination: Sequence[str] | None = None, *, reply: bool = True) -> dict[str, Any]:
        self.calls.append(("broadcast", (command, dict(arguments or {})), destination))
        return {}

    def enable_events(self, destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("enable_events", (), destination, "task events enabled")

    def cancel_consumer(self, queue: str, destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("cancel_consumer", (queue,), destination, f"stopped consuming {queue}")

    def pool_grow(self, n: int = 1, destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("pool_grow", (n,), destination, f"pool grown by {n}")

    def pool_restart(self, destination: Sequence[str] | None = None, *, modules: Sequence[str] | None = None,
                     reload: bool = False) -> ActionResult:
        return self._rec("pool_restart", (), destination, "pool restarted")

    def pool_shrink(self, n: int = 1, destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("pool_shrink", (n,), destination, f"pool shrunk by {n}")

    def rate_limit(self, task_name: str, rate: str | int | None,
                   destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("rate_limit", (task_name, rate), destination, f"rate limit {rate}")

    def shutdown(self, destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("shutdown", (), destination, "shutdown sent")

    def time_limit(self, task_name: str, soft: float | None, hard: float | None,
                   destination: Sequence[str] | None = None) -> ActionResult:
        return self._rec("time_limit", (task_name, soft, hard), destination, f"time limits {soft}/{hard}")

    def worker_details(self, hostname: str) -> dict[str, Any]:
        return {}


def make_app(snapshots: Sequence[Snapshot | Callable[[], Snapshot]] | None = None, *,
             actions: Any = None, settings: Settings = SETTINGS, delay: float = 0.0,
             **kw: Any) -> TaskDashApp:
    """An app on a fake collector, interval 0 (refresh only when asked), pinned clock."""
    collector = FakeCollector(snapshots if snapshots is not None else [make_snapshot()], delay=delay,
                              settings=settings)
    kw.setdefault("interval", 0)
    kw.setdefault("clock", lambda: T0 + 0.4)
    kw.setdefault("load_details", False)
    kw.setdefault("export_dir", Path("/tmp/taskdash-tui-exports"))  # fixed: shown in screenshots, never written
    return TaskDashApp(collector, actions=actions if actions is not None else FakeActions(), **kw)
