"""Crash forensics fed by a real Collector watching a real poison loop (and a frozen worker)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from collectors.analysis.forensics import Forensics, TimelineEvent, format_timeline
from collectors.collector import Collector
from collectors.core.config import resolve_settings
from collectors.core.models import (
    PoisonSuspect,
    Snapshot,
    SourceStatus,
    TaskFailure,
    TaskStats,
    WorkerInfo,
)


def _feed_until(collector: Collector, fx: Forensics, pred: Callable[[], bool], timeout: float) -> None:
    """Refresh until ``pred``: the collector feeds ``fx`` itself (snapshot + the same refresh's WorkersView)."""
    assert collector.forensics is fx
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        collector.collect()
        if pred():
            return
        time.sleep(0.25)


def test_poison_loop_timeline_names_the_killer(redis_url: str, start_worker: Any, demo_app: Any) -> None:
    worker = start_worker(("risky",), concurrency=2)
    settings = resolve_settings(broker=redis_url, env={}, inspect_interval=0.5, inspect_timeout=0.4,
                                poison_threshold=2)
    fx = Forensics()
    with Collector(settings, forensics=fx) as collector:
        _feed_until(collector, fx, lambda: bool(fx.timeline(worker.hostname)), 10)
        first = fx.timeline(worker.hostname)
        assert first and first[0].kind == "online"
        res = demo_app.send_task("demo_tasks.tasks.poison", args=("bad input",))

        def killed() -> bool:
            return any(e.kind == "process-died" and e.task_id == res.id and e.culprit == "active"
                       for e in fx.timeline(worker.hostname))

        _feed_until(collector, fx, killed, 25)
        events = fx.timeline(worker.hostname)
        assert killed(), format_timeline(events)
        died = [e for e in events if e.kind == "process-died" and e.task_id == res.id]
        assert died[0].task == "demo_tasks.tasks.poison" and died[0].pid
        assert any(e.kind == "process-started" for e in events)  # billiard replaced the process
        casualties = fx.took_down(res.id)
        assert casualties and casualties[0].hostname == worker.hostname and casualties[0].pid == died[0].pid
        assert fx.victims(res.id) == [worker.hostname]
        assert fx.killers()[0][0] == res.id

        # freeze the worker's main process: heartbeats stop (gap, then offline), resume after SIGCONT
        assert worker.pid
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            _feed_until(collector, fx, lambda: any(e.kind == "offline" for e in fx.timeline(worker.hostname)), 12)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        _feed_until(collector, fx, lambda: fx.timeline(worker.hostname)[-1].kind in ("online", "heartbeat-back")
                    or any(e.kind == "heartbeat-back" for e in fx.timeline(worker.hostname)), 12)
        kinds = [e.kind for e in fx.timeline(worker.hostname)]
        assert "heartbeat-gap" in kinds and "offline" in kinds, kinds
        assert kinds.index("heartbeat-gap") < kinds.index("offline")
        assert kinds.count("online") >= 2 or "heartbeat-back" in kinds, kinds
        demo_app.control.revoke(res.id)


OK = SourceStatus("redis://x", True)


def _snap(ts: float, pids: tuple[int, ...], failures: tuple[TaskFailure, ...] = (),
          poison: tuple[PoisonSuspect, ...] = (), online: bool = True, pid: int = 100) -> Snapshot:
    w = WorkerInfo("w1@h", online, pid=pid, pool_pids=pids, last_seen_s=0.5)
    return Snapshot(taken_at=ts, broker=OK, backend=OK, workers=(w,), poison=poison,
                    tasks=TaskStats(recent_failures=failures))


def test_worker_lost_results_and_poison_attribution() -> None:
    fx = Forensics()
    t = 1_800_000_000.0
    fx.observe(_snap(t, (1, 2)))
    lost = TaskFailure("t-9", "app.oom", "WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL)')",
                       None, "2027-01-15T08:00:01+00:00", worker="w1@h")
    new = fx.observe(_snap(t + 2, (2, 3), failures=(lost,)))
    kinds = [e.kind for e in new]
    assert "worker-lost" in kinds and "process-died" in kinds and "process-started" in kinds
    died = [e for e in new if e.kind == "process-died"]
    assert died[0].pid == 1 and died[0].task_id == "t-9" and died[0].culprit == "worker-lost"
    # the same failure seen again is not a new event
    assert not [e for e in fx.observe(_snap(t + 3, (2, 3), failures=(lost,))) if e.kind == "worker-lost"]
    # a death with no active task and no recent WorkerLostError is linked to the poison suspect on that worker
    sus = PoisonSuspect("t-7", "app.poison", "risky", 4, t, t + 9, "x", ("w1@h",))
    died = [e for e in fx.observe(_snap(t + 10, (3, 4), poison=(sus,))) if e.kind == "process-died"]
    assert died and died[0].task_id == "t-7" and died[0].culprit == "poison"
    assert fx.victims("t-7") == ["w1@h"]
    # restart and offline transitions
    evs: list[TimelineEvent] = fx.observe(_snap(t + 20, (7,), pid=200))
    assert "restarted" in [e.kind for e in evs]
    assert "offline" in [e.kind for e in fx.observe(_snap(t + 30, (7,), online=False, pid=200))]
    assert format_timeline(fx.timeline("w1@h"), now=t + 30)[0].split() == ["-30.0s", "w1@h", "online", "online", "(pid", "100)"]


async def test_timeline_screen_renders() -> None:
    from textual.app import App
    from textual.widgets import Static

    from tui.screens.health import TimelineScreen

    fx = Forensics()
    t = time.time() - 10
    fx.observe(_snap(t, (1, 2)))
    sus = PoisonSuspect("t-7", "app.poison", "risky", 4, t, t + 9, "x", ("w1@h",))
    fx.observe(_snap(t + 9, (2, 3), poison=(sus,)))
    app: App[None] = App()
    async with app.run_test(size=(140, 40)) as pilot:
        await app.push_screen(TimelineScreen(fx, "w1@h", interval=0))
        await pilot.pause()
        text = str(app.screen.query_one("#timeline-body", Static).render())
        assert "Tasks that took pool processes down" in text and "app.poison [t-7]" in text
        assert "process-died" in text and "pool process 1 died while running app.poison" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, TimelineScreen)


def test_finished_task_is_not_blamed_and_restart_is_not_churn() -> None:
    from collectors.core.models import TaskRef
    from collectors.reads.workers import WorkersView

    def view(snap: Snapshot, active: tuple[TaskRef, ...]) -> WorkersView:
        return WorkersView(snap.workers, {}, None, True, snap.taken_at, None, active)

    fx = Forensics()
    t = time.time()
    ref = TaskRef("t-ok", "app.fine", "active", "w1@h", worker_pid=3)
    s0 = _snap(t, (3, 4))
    fx.observe(s0, view(s0, (ref,)))
    s1 = _snap(t + 5, (3, 4))
    fx.observe(s1, view(s1, ()))  # t-ok finished
    s2 = _snap(t + 10, (4, 5))  # pid 3 recycled (max-tasks-per-child), nothing running on it
    died = [e for e in fx.observe(s2, view(s2, ())) if e.kind == "process-died"]
    assert died and died[0].task_id is None and "no task seen" in died[0].detail
    # still reported active on a pid that left the pool: that task died with it
    killer = TaskRef("t-bad", "app.segfault", "active", "w1@h", worker_pid=5)
    s3 = _snap(t + 15, (4, 6))
    died = [e for e in fx.observe(s3, view(s3, (killer,))) if e.kind == "process-died"]
    assert died[0].task_id == "t-bad" and died[0].culprit == "active"
    s4 = _snap(t + 20, (8, 9), pid=101)  # a new main process: a restart, not pool churn
    kinds = [e.kind for e in fx.observe(s4, view(s4, ()))]
    assert "restarted" in kinds and "process-died" not in kinds


def test_cli_forensics_names_the_killer(redis_url: str, start_worker: Any, demo_app: Any) -> None:
    import json

    from click.testing import CliRunner

    from taskdash.cli import cli

    worker = start_worker(("risky",), concurrency=1)
    res = demo_app.send_task("demo_tasks.tasks.poison", args=("bad input",))
    try:
        out = CliRunner().invoke(cli, ["forensics", "--broker", redis_url, "--observe", "14", "--json",
                                       "--interval", "0.5"], env={"TASKDASH_CONFIG": "/nonexistent"})
    finally:
        demo_app.control.revoke(res.id)
    assert out.exit_code == 3, out.output
    doc = json.loads(out.output)
    assert doc["killers"][0]["task_id"] == res.id and doc["killers"][0]["workers"] == [worker.hostname]
    assert any(e["kind"] == "process-died" and e["task_id"] == res.id for e in doc["events"])
