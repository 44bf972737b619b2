"""Beat against real beat processes and workers (issue 16): kill -9 -> missed runs and "dead" within two
intervals; restarted -> alive, and the missed count stops growing. RedBeat and the default scheduler."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collectors.analysis.beat_canvas import BeatCanvasSource
from collectors.core.beat_canvas import BeatView
from collectors.core.config import resolve_settings
from tests.beat_helpers import CeleryBeat, wait_for

INTERVAL = 2.0

pytest.importorskip("redbeat")


@pytest.fixture()
def start_beat(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., CeleryBeat]]:
    beats: list[CeleryBeat] = []

    def _start(redbeat: bool) -> CeleryBeat:
        b = CeleryBeat(redis_url, tmp_path, redbeat=redbeat, interval=INTERVAL).start()
        beats.append(b)
        return b

    yield _start
    for b in beats:
        b.stop()


def _source(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> BeatCanvasSource:
    monkeypatch.setenv("DEMO_BEAT_INTERVAL", str(INTERVAL))
    s = resolve_settings(broker=redis_url, backend=redis_url, app="demo_tasks.beat_app", env={})
    client = redis.Redis.from_url(redis_url)
    return BeatCanvasSource(s, client, client, env={})


def _kill_and_restart(src: BeatCanvasSource, beat: CeleryBeat, start_beat: Callable[..., CeleryBeat],
                      redbeat: bool, workers: dict[str, int]) -> tuple[BeatView, BeatView]:
    def read() -> BeatView:
        return src.read(worker_queues=workers)[0]

    alive = wait_for(lambda: (v := read()).state == "alive" and v.entries[0].last_run_at and v, 30,
                     what="beat alive")
    assert alive.scheduler == ("redbeat" if redbeat else "default")
    # a couple of runs on time first
    wait_for(lambda: (v := read()).state == "alive" and v, 3 * INTERVAL)
    beat.kill9()
    killed_at = time.monotonic()
    dead = wait_for(lambda: (v := read()).state == "dead" and v, 4 * INTERVAL + 2, step=0.2, what="dead")
    took = time.monotonic() - killed_at
    assert took <= 2 * INTERVAL + 0.5, f"dead after {took:.1f}s (evidence {dead.evidence})"
    assert dead.dead_since is not None and dead.evidence
    entry = dead.entries[0]
    assert entry.name == "tick" and entry.overdue_s is not None
    wait_for(lambda: read().entries[0].missed_runs >= 2, 4 * INTERVAL, what="missed runs growing")

    restarted_at = time.time()
    start_beat(redbeat)
    back = wait_for(lambda: (v := read()).state == "alive" and (v.entries[0].last_run_at or 0) > restarted_at
                    and v, 30, what="alive again, with a run after the restart")
    missed = back.entries[0].missed_runs
    assert missed >= 2
    time.sleep(2.5 * INTERVAL)
    later = read()
    assert later.state == "alive"
    assert later.entries[0].missed_runs == missed, (
        f"missed count kept growing after the restart: runs {src.beat.tracker.history('tick').runs}")
    return dead, later


def test_redbeat_killed_and_restarted(redis_url: str, start_worker: Any, start_beat: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    start_worker(("celery",))
    beat = start_beat(True)
    src = _source(redis_url, monkeypatch)
    try:
        dead, later = _kill_and_restart(src, beat, start_beat, True, {"celery": 1})
        assert later.lock is not None and later.lock.holder is not None
        assert dead.lock is None or dead.lock.holder != later.lock.holder or dead.lock.holder is None
        assert later.entries[0].total_run_count and later.entries[0].total_run_count >= 3
        assert later.to_json()["alive"] is True
    finally:
        src.stop()


def test_default_scheduler_killed_and_restarted(redis_url: str, start_worker: Any, start_beat: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    start_worker(("celery",))
    src = _source(redis_url, monkeypatch)
    src.start()  # the live result feed: the default scheduler's runs are observed
    try:
        beat = start_beat(False)
        dead, later = _kill_and_restart(src, beat, start_beat, False, {"celery": 1})
        assert "no entry ran on time" in (dead.evidence or "")
        assert later.entries[0].evidence == "result"
    finally:
        src.stop()


def test_schedule_to_a_queue_nobody_consumes_is_flagged(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(redis_url, monkeypatch)
    v = src.read(worker_queues={"celery": 0})[0]
    assert v.scheduler == "default"
    assert [f.rule for f in v.findings] == ["no-consumer"]
