"""Poison-loop tracking: dedup rules (pure) and a real loop of a task that kills its pool process."""

from __future__ import annotations

import time
from typing import Any

from collectors.analysis.poison import PoisonTracker
from collectors.core.models import TaskRef, UnackedEntry
from collectors.keyspace.keys import KeyLayout


def _entry(task_id: str, tag: str, score: float, *, redelivered: bool = False, queue: str = "risky",
           holder: str | None = None) -> UnackedEntry:
    return UnackedEntry(
        delivery_tag=tag, task_id=task_id, task="demo_tasks.tasks.poison", queue=queue, priority=0,
        reserved_at=score, age_s=0.0, redelivered=redelivered, state="reserved", holder=holder, stale=False,
        time_to_redelivery_s=None, argsrepr="()",
    )


def _active(task_id: str, host: str, pid: int, start: float, *, redelivered: bool = False) -> TaskRef:
    return TaskRef(task_id=task_id, name="demo_tasks.tasks.poison", state="active", hostname=host,
                   queue="risky", redelivered=redelivered, time_start=start, worker_pid=pid)


def read_unacked(r: Any, settings: Any, now: float) -> list[UnackedEntry]:
    """Raw read of the unacked ledger (ZRANGE + HMGET), decoded with collectors.core.messages."""
    from collectors.core.messages import decode_unacked

    pairs = r.zrange(KeyLayout.from_settings(settings).unacked_index, 0, 99, withscores=True)
    if not pairs:
        return []
    raws = r.hmget(KeyLayout.from_settings(settings).unacked, [tag for tag, _ in pairs])
    out = []
    for (tag, score), raw in zip(pairs, raws, strict=True):
        msg, _ex, rk = decode_unacked(raw)
        out.append(UnackedEntry(
            delivery_tag=tag.decode(), task_id=msg.task_id, task=msg.task, queue=rk, priority=msg.priority,
            reserved_at=score, age_s=now - score, redelivered=msg.redelivered, state="unknown", holder=None,
            stale=False, time_to_redelivery_s=None, argsrepr=msg.argsrepr,
        ))
    return out


def test_same_unacked_score_seen_many_times_is_one_delivery() -> None:
    t = PoisonTracker(threshold=3)
    for _ in range(10):
        t.observe_unacked([_entry("a", "tag1", 100.0)], now=200.0)
    assert t.deliveries("a") == 1
    assert t.suspects() == ()


def test_new_scores_for_the_same_tag_count_as_deliveries() -> None:
    t = PoisonTracker(threshold=3)
    t.observe_unacked([_entry("a", "tag1", 100.0)], now=100.5)
    t.observe_unacked([_entry("a", "tag1", 105.0, redelivered=True)], now=105.5)
    assert t.deliveries("a") == 2
    t.observe_unacked([_entry("a", "tag1", 110.0, redelivered=True, holder="w1@h")], now=110.5)
    (s,) = t.suspects()
    assert (s.task_id, s.deliveries, s.queue, s.task) == ("a", 3, "risky", "demo_tasks.tasks.poison")
    assert s.first_seen == 100.0 and s.last_seen == 110.0
    assert s.workers == ("w1@h",)
    assert "delivered 3 times in 10 s" in s.reason and "redelivered" in s.reason and "w1@h" in s.reason


def test_redelivered_flag_alone_proves_two_deliveries() -> None:
    t = PoisonTracker()
    t.observe_unacked([_entry("a", "tag1", 100.0, redelivered=True)], now=101.0)
    assert t.deliveries("a") == 2


def test_retries_with_new_tags_are_not_a_loop() -> None:
    t = PoisonTracker(threshold=3)
    for i in range(5):  # Task.retry: a new message (new tag) each time, never redelivered
        t.observe_unacked([_entry("a", f"tag{i}", 100.0 + i)], now=100.0 + i)
        t.observe_active([_active("a", "w1@h", 10 + i, 100.1 + i)], now=100.2 + i)
        t.observe_event({"type": "task-received", "uuid": "a", "hostname": "w1@h",
                         "timestamp": 100.0 + i, "retries": i})
    assert t.deliveries("a") == 1
    assert t.suspects() == ()


def test_same_delivery_through_several_sources_is_not_double_counted() -> None:
    t = PoisonTracker(threshold=3)
    # Two deliveries, each seen in unacked, in active and as a task-received event.
    for i, ts in enumerate((100.0, 104.0)):
        t.observe_unacked([_entry("a", "tag1", ts, redelivered=i > 0)], now=ts + 0.1)
        t.observe_active([_active("a", "w1@h", 50 + i, ts + 0.05, redelivered=i > 0)], now=ts + 0.1)
        t.observe_event({"type": "task-received", "uuid": "a", "hostname": "w1@h", "timestamp": ts,
                         "retries": 0, "name": "demo_tasks.tasks.poison"})
        # the same inspect window read twice
        t.observe_active([_active("a", "w1@h", 50 + i, ts + 0.05, redelivered=i > 0)], now=ts + 0.2)
    assert t.deliveries("a") == 2
    assert t.suspects() == ()


def test_sources_complement_each_other_by_max() -> None:
    t = PoisonTracker(threshold=3)
    # events saw 4 deliveries, unacked polling only 2 of them: 4, not 6
    for i in range(4):
        t.observe_event({"type": "task-received", "uuid": "a", "hostname": "w2@h", "timestamp": 10.0 + i,
                         "retries": 0, "name": "p"})
    t.observe_unacked([_entry("a", "tag1", 10.0)], now=10.5)
    t.observe_unacked([_entry("a", "tag1", 12.0, redelivered=True)], now=12.5)
    assert t.deliveries("a") == 4
    (s,) = t.suspects()
    assert s.workers == ("w2@h",) and s.queue == "risky"


def test_active_appearances_on_several_workers() -> None:
    t = PoisonTracker(threshold=3)
    t.observe_active([_active("a", "w1@h", 1, 10.0)], now=10.0)
    t.observe_active([_active("a", "w2@h", 2, 20.0, redelivered=True)], now=20.0)
    t.observe_active([_active("a", "w1@h", 3, 30.0, redelivered=True)], now=30.0)
    (s,) = t.suspects()
    assert s.deliveries == 3
    assert s.workers == ("w1@h", "w2@h")
    assert s.reason.endswith("last on w1@h")


def test_worker_lost_results_count() -> None:
    t = PoisonTracker(threshold=3)
    for ts in (1.0, 2.0, 2.0, 3.0):  # the same FAILURE read twice counts once
        t.observe_worker_lost("a", "demo_tasks.tasks.poison", "w1@h", ts)
    assert t.deliveries("a") == 3
    assert "worker lost 3x" in t.suspects()[0].reason


def test_events_for_unknown_tasks_other_than_received_are_ignored() -> None:
    t = PoisonTracker()
    t.observe_event({"type": "task-succeeded", "uuid": "zz", "hostname": "w", "timestamp": 1.0})
    t.observe_event({"type": "worker-heartbeat", "hostname": "w", "timestamp": 1.0})
    t.observe_event({"type": "task-received"})  # no uuid
    assert t.deliveries("zz") == 0
    assert len(t._records) == 0


def test_suspects_expire_when_no_source_mentions_them() -> None:
    t = PoisonTracker(threshold=3, idle_expiry_s=60)
    for ts in (1.0, 2.0, 3.0):
        t.observe_unacked([_entry("a", "tag1", ts, redelivered=ts > 1)], now=ts)
    assert [s.task_id for s in t.suspects()] == ["a"]
    assert t.suspects(now=time.time() + 61) == ()
    t.forget("a")
    assert t.deliveries("a") == 0 and t.suspects() == ()


def test_an_unchanged_ledger_read_keeps_a_suspect_alive_and_new_deliveries_still_count() -> None:
    """observe_unacked's shortcut for entries exactly as the last read saw them: the suspect's last
    mention is renewed (it does not expire while it sits in the ledger), a new score is still a new
    delivery, and a quarantined (forgotten) id stays out even when its entry is unchanged."""
    t = PoisonTracker(threshold=3, idle_expiry_s=60)
    for ts in (1.0, 2.0, 3.0):
        t.observe_unacked([_entry("a", "tag1", ts, redelivered=ts > 1), _entry("b", "tag2", 1.0)], now=ts)
    before = t._records["a"].observed_at
    time.sleep(0.01)
    for _ in range(3):  # the same window again and again
        t.observe_unacked([_entry("a", "tag1", 3.0, redelivered=True), _entry("b", "tag2", 1.0)], now=4.0)
    assert t._records["a"].observed_at > before
    assert [(s.task_id, s.deliveries) for s in t.suspects()] == [("a", 3)]
    t.observe_unacked([_entry("a", "tag1", 9.0, redelivered=True), _entry("b", "tag2", 1.0)], now=9.0)
    assert [(s.task_id, s.deliveries) for s in t.suspects()] == [("a", 4)]
    assert t.deliveries("b") == 1
    t.forget("a", at=9.5)
    t.observe_unacked([_entry("a", "tag1", 9.0, redelivered=True)], now=10.0)
    assert t.suspects() == () and t.deliveries("a") == 0


def test_memory_is_bounded() -> None:
    t = PoisonTracker(max_tasks=100)
    for i in range(1000):
        t.observe_unacked([_entry(f"id{i}", "t", float(i))], now=float(i))
    assert len(t._records) == 100
    assert t.deliveries("id0") == 0 and t.deliveries("id999") == 1
    # per-task key sets are bounded too, while the count keeps growing
    for i in range(500):
        t.observe_unacked([_entry("id999", "t", 1000.0 + i, redelivered=True)], now=1000.0 + i)
    assert t.deliveries("id999") == 501
    assert len(t._records["id999"].unacked["t"]._seen) <= 64


def test_real_poison_loop_is_detected(start_worker: Any, demo_app: Any, redis_url: str, r: Any) -> None:
    """A task that SIGKILLs its pool process, reject_on_worker_lost: the loop is seen from real reads."""
    from collectors.core.config import resolve_settings
    from collectors.reads.workers import WorkerMonitor

    worker = start_worker(("risky",), concurrency=1)
    settings = resolve_settings(broker=redis_url, env={}, inspect_timeout=0.5, inspect_interval=0.5)
    monitor = WorkerMonitor(settings)
    monitor.start()
    tracker = PoisonTracker(threshold=3)
    try:
        res = demo_app.send_task("demo_tasks.tasks.poison")
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            now = time.time()
            tracker.observe_unacked(read_unacked(r, settings, now), now)
            view = monitor.view(now)
            tracker.observe_active(view.active, now)
            for ev in monitor.drain_events():
                tracker.observe_event(ev)
            if tracker.deliveries(res.id) >= 3 and any(s.workers for s in tracker.suspects()):
                break
            time.sleep(0.25)
    finally:
        monitor.stop()
        demo_app.control.revoke(res.id)
    rec = tracker._records.get(res.id)
    assert tracker.deliveries(res.id) >= 3, rec and rec.by_source()
    (s,) = [s for s in tracker.suspects() if s.task_id == res.id]
    assert s.task == "demo_tasks.tasks.poison"
    assert s.queue == "risky"
    assert worker.hostname in s.workers
    assert "redelivered" in s.reason
