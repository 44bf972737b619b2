"""Chords against real workers (issue 16): done, failed, stuck (a header part lost with its worker's
kill -9 under early ack) and a 1,000-part chord in progress whose refresh stays bounded."""

from __future__ import annotations

from typing import Any

import redis
from celery import chord

from collectors.core.config import resolve_settings
from collectors.reads.canvas import CanvasReader
from tests.beat_helpers import wait_for


def _reader(redis_url: str, **kw: Any) -> CanvasReader:
    s = resolve_settings(broker=redis_url, backend=redis_url, env={})
    return CanvasReader(s, redis.Redis.from_url(redis_url), rescan_s=0.0, env={}, **kw)


def _chord(reader: CanvasReader, gid: str, now: float | None = None) -> Any:
    view = reader.read(now)
    return next((c for c in view.chords if c.group_id == gid), None)


def test_finished_and_failed_chords(redis_url: str, start_worker: Any, demo_app: Any) -> None:
    start_worker(("celery",), concurrency=2)
    add, fail, tsum = (demo_app.signature(f"demo_tasks.tasks.{n}") for n in ("add", "fail", "tsum"))
    reader = _reader(redis_url)
    ok = chord([add.clone((i, i)) for i in range(5)])(tsum)
    bad = chord([add.clone((1, 1)), fail.clone(("nope",)), add.clone((2, 2))])(tsum)
    assert ok.get(timeout=30) == 20
    done = wait_for(lambda: (c := _chord(reader, ok.parent.id)) and c.state == "done" and c, 15, what="done")
    assert done.kind == "chord"
    failed = wait_for(lambda: (c := _chord(reader, bad.parent.id)) and c.state == "failed" and c, 15, what="failed")
    assert failed.failed >= 1 or "ChordError" in (failed.reason or "")
    assert reader.read().problem and "failed" in reader.read().problem


def test_header_part_lost_with_its_worker_is_stuck(redis_url: str, start_worker: Any, demo_app: Any) -> None:
    w = start_worker(("celery",), concurrency=2)  # early ack: a running part's message is already gone
    add, nap, tsum = (demo_app.signature(f"demo_tasks.tasks.{n}") for n in ("add", "nap", "tsum"))
    r = redis.Redis.from_url(redis_url)
    res = chord([nap.clone((60,)), add.clone((1, 1)), add.clone((2, 2))])(tsum)
    gid = res.parent.id
    nap_id = res.parent.results[0].id
    wait_for(lambda: r.get(f"celery-task-meta-{nap_id}") and
             r.zcard(f"celery-taskset-meta-{gid}.j") == 2, 20, what="adds done, nap started")
    reader = _reader(redis_url, stuck_after_s=2.0)
    w.kill9()
    first = _chord(reader, gid)
    assert first.state == "running" and first.size == 3 and first.done == 2
    stuck = wait_for(lambda: (c := _chord(reader, gid)) and c.state == "stuck" and c, 10, what="stuck")
    assert stuck.missing == 1 and "no part finished" in (stuck.reason or "")
    parts = reader.parts(gid, queues=("celery",))
    by_index = {p.index: p for p in parts}
    assert by_index[1].state == "SUCCESS" and by_index[2].state == "SUCCESS"
    assert by_index[0].state == "lost", parts
    assert "stuck" in (reader.read().problem or "")


def _calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


def test_thousand_part_chord_in_progress_counts_right_and_refresh_is_bounded(
        redis_url: str, start_worker: Any, demo_app: Any) -> None:
    add, tsum = (demo_app.signature(f"demo_tasks.tasks.{n}") for n in ("add", "tsum"))
    r = redis.Redis.from_url(redis_url)
    header = [add.clone((i, i)) for i in range(600)] + [add.clone((i, i), queue="hold") for i in range(400)]
    res = chord(header)(tsum)
    gid = res.parent.id
    w = start_worker(("celery",), concurrency=2)
    wait_for(lambda: r.zcard(f"celery-taskset-meta-{gid}.j") == 600, 120, step=0.5, what="600 parts done")
    w.stop()
    reader = _reader(redis_url, part_budget=200)
    for _ in range(3):
        reader.read()
    per_refresh = []
    for _ in range(3):
        before = _calls(r)
        info = _chord(reader, gid)
        per_refresh.append(_calls(r) - before)
    assert info.size == 1000 and info.done == 600 and info.missing == 400 and info.failed == 0
    assert info.parts_scanned == 600
    assert max(per_refresh) <= 12, per_refresh  # SCAN step + 5 status commands + part windows, not O(parts)
    parts = reader.parts(gid, queues=("celery", "hold"))
    states: dict[str, int] = {}
    for p in parts:
        states[p.state] = states.get(p.state, 0) + 1
    assert states == {"SUCCESS": 600, "queued": 400}, states
    assert _chord(reader, gid).body == "demo_tasks.tasks.tsum"
