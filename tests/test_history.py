"""History: samples from a real Collector survive a reopen; the file stays bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from collectors.analysis.history import History, sparkline
from collectors.collector import Collector
from collectors.core.config import resolve_settings
from collectors.core.models import PoisonSuspect, QueueInfo, Snapshot, SourceStatus, WorkerInfo

OK = SourceStatus("redis://x", True)


def _snap(ts: float, depth: int, processed: int = 0, poison: tuple[PoisonSuspect, ...] = ()) -> Snapshot:
    return Snapshot(taken_at=ts, broker=OK, backend=OK, queues=(QueueInfo("q", depth),),
                    workers=(WorkerInfo("w1@h", True, processed=processed),), poison=poison)


def test_record_real_snapshots_and_reopen(redis_url: str, demo_app: Any, tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    settings = resolve_settings(broker=redis_url, env={}, inspect_timeout=0.3)
    hist = History(path, scope=settings.broker_masked, sample_s=0)
    sent = 0
    with Collector(settings, background=False) as collector:
        for n in (1, 3, 6):
            while sent < n:
                demo_app.send_task("demo_tasks.tasks.send_email", args=("a@b",))
                sent += 1
            snap = collector.collect()
            assert {q.name: q.messages for q in snap.queues}.get("emails") == n
            assert hist.record(snap)
    hist.close()
    reopened = History(path, scope=settings.broker_masked)
    depths = [m for _, m in reopened.series("emails")]
    assert depths == [1, 3, 6]
    assert "emails" in reopened.queues()
    assert History(path, scope="another broker").series("emails") == []  # scopes never mix
    assert sparkline(depths) == "▁▃█"
    reopened.close()


def test_collector_records_into_its_attached_history(redis_url: str, demo_app: Any, tmp_path: Path) -> None:
    """``Collector(history=...)`` records every refresh itself (what the TUI's poll thread relies on)."""
    path = tmp_path / "h.sqlite3"
    settings = resolve_settings(broker=redis_url, env={}, inspect_timeout=0.3)
    hist = History(path, scope=settings.broker_masked, sample_s=0)
    with Collector(settings, background=False, history=hist) as collector:
        for _ in range(2):
            demo_app.send_task("demo_tasks.tasks.send_email", args=("a@b",))
            collector.collect()
        collector.attach(forensics=None, history=None)  # detached: this refresh is not recorded
        demo_app.send_task("demo_tasks.tasks.send_email", args=("a@b",))
        collector.collect()
    assert [m for _, m in hist.series("emails")] == [1, 2]
    hist.close()


def test_throughput_and_deliveries_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    t0 = time.time() - 60
    suspect = PoisonSuspect("t-1", "demo_tasks.tasks.poison", "risky", 5, t0, t0 + 10, "x", ("w1@h",))
    with History(path, sample_s=5) as h:
        assert h.record(_snap(t0, 1, processed=10))
        assert not h.record(_snap(t0 + 2, 1, processed=12))  # inside sample_s: skipped
        assert h.record(_snap(t0 + 10, 2, processed=30, poison=(suspect,)))
        lower = PoisonSuspect("t-1", "demo_tasks.tasks.poison", "risky", 2, t0, t0 + 20, "x", ("w1@h",))
        assert h.record(_snap(t0 + 20, 2, processed=30, poison=(lower,)))  # a restarted tracker counts from 0
    with History(path, sample_s=5) as h:
        assert h.deliveries("t-1") == 5 and h.deliveries("nope") == 0
        assert h.throughput() == [(t0 + 10, 2.0), (t0 + 20, 0.0)]
        assert h.suspects()[0]["workers"] == ["w1@h"]
        h.forget("t-1")
        assert h.deliveries("t-1") == 0


def test_bounded_by_rows_and_age(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with History(path, sample_s=0, caps={"depth": 100, "throughput": 50}, prune_every=10,
                 max_age_s=10_000) as h:
        for i in range(500):
            h.record(_snap(1_000_000.0 + i, i))
        rows = h.rows()
        assert rows["depth"] <= 110 and rows["throughput"] <= 60
        assert h.series("q")[-1] == (1_000_499.0, 499)  # newest kept, oldest dropped
        size_500 = path.stat().st_size
        for i in range(500, 2000):
            h.record(_snap(1_000_000.0 + i, i))
        h.prune(now=1_000_000.0 + 2000)
        assert h.rows()["depth"] <= 100
        assert path.stat().st_size < max(size_500 * 3, 200_000)
        h.prune(now=1_000_000.0 + 2000 + 20_000)  # everything is older than max_age_s now
        assert h.rows() == {"depth": 0, "throughput": 0, "deliveries": 0, "task_minutes": 0}
