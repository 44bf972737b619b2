"""Beat decisions without processes: missed-run counting, RedBeat keys read from a real Redis, lint rules."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import redis

from collectors.analysis.beat_rules import BeatMonitor, BeatTracker, missed_between
from collectors.core.config import resolve_settings
from collectors.reads.beat import BeatConfig, ScheduleSpec, spec_from_schedule
from collectors.reads.result_stream import ResultEvent

SPEC = ScheduleSpec("tick", "demo_tasks.tasks.record", 3.0, "every 3s", "celery")


def test_missed_between_counts_due_times_passed_by_more_than_the_tolerance() -> None:
    assert missed_between(SPEC, 0, 3.0, 1.5) == 0  # on time
    assert missed_between(SPEC, 0, 4.4, 1.5) == 0  # late within the tolerance
    assert missed_between(SPEC, 0, 4.6, 1.5) == 1
    assert missed_between(SPEC, 0, 9.0, 1.5) == 2  # dues 3 and 6 missed, the run at 9 is on time


def test_missed_count_does_not_jump_when_beat_comes_back() -> None:
    tr = BeatTracker(now=0)
    tr.record_run(SPEC, 0.0, "a", "result", 1.5)
    before = missed_between(SPEC, 0.0, 10.9, 1.5)
    tr.record_run(SPEC, 11.0, "b", "result", 1.5)  # beat restarted at 11: its first run closes the gap
    assert tr.history("tick").gap_missed == before == 3
    tr.record_run(SPEC, 14.0, "c", "result", 1.5)
    assert tr.history("tick").gap_missed == 3


def test_two_sends_within_half_an_interval_look_like_two_beats() -> None:
    tr = BeatTracker(now=0)
    tr.record_run(SPEC, 0.0, "a", "result", 1.5)
    tr.record_run(SPEC, 0.4, "b", "result", 1.5)
    assert tr.history("tick").duplicate_gap is not None


def _rb_def(name: str, every: float) -> str:
    return json.dumps({"name": name, "task": "demo_tasks.tasks.record", "args": [], "kwargs": {},
                       "options": {"queue": "celery"}, "enabled": True,
                       "schedule": {"__type__": "interval", "every": every, "relative": False}})


def _rb_dt(ts: float) -> dict[str, object]:
    d = datetime.fromtimestamp(ts, timezone.utc)
    return {"__type__": "datetime", "year": d.year, "month": d.month, "day": d.day, "hour": d.hour,
            "minute": d.minute, "second": d.second, "microsecond": d.microsecond, "timezone": "UTC"}


def test_redbeat_state_read_from_its_keys(r: redis.Redis, redis_url: str) -> None:
    now = time.time()
    r.zadd("redbeat::schedule", {"redbeat:fresh": now + 2, "redbeat:late": now - 20})
    r.hset("redbeat:fresh", mapping={"definition": _rb_def("fresh", 3),
                                    "meta": json.dumps({"last_run_at": _rb_dt(now - 1), "total_run_count": 7})})
    r.hset("redbeat:late", mapping={"definition": _rb_def("late", 3),
                                   "meta": json.dumps({"last_run_at": _rb_dt(now - 23), "total_run_count": 2})})
    r.set("redbeat::lock", "tok1", px=5000)
    s = resolve_settings(broker=redis_url, env={})
    mon = BeatMonitor(s, redis.Redis.from_url(redis_url), config=BeatConfig(lock_timeout_s=5.0,
                                                                             redbeat_lock_key="redbeat::lock"))
    v = mon.read(now, worker_queues={"celery": 1})
    assert v.scheduler == "redbeat" and v.state == "alive" and v.lock and v.lock.holder == "tok1"
    by = {e.name: e for e in v.entries}
    assert by["fresh"].total_run_count == 7 and by["fresh"].overdue_s is None and by["fresh"].missed_runs == 0
    assert by["late"].overdue_s is not None and by["late"].missed_runs == 7  # dues at -20, -17, ..., -2
    assert "late" in (v.problem or "")
    # steady state: definitions are cached, one refresh is ZCARD/ZRANGE/GET/PTTL (+ EXISTS, TIME)
    v2 = mon.read(now + 0.5, worker_queues={"celery": 1})
    assert v2.commands <= 6
    r.delete("redbeat::lock")
    v3 = mon.read(now + 1, worker_queues={"celery": 0})
    assert v3.state == "dead" and "lock" in (v3.evidence or "")
    assert any(f.rule == "no-consumer" for f in v3.findings)
    assert json.dumps(v3.to_json())


def test_default_scheduler_from_results(redis_url: str) -> None:
    s = resolve_settings(broker=redis_url, env={})
    cfg = BeatConfig(schedule=(spec_from_schedule("tick", "demo_tasks.tasks.record", 2.0, "celery"),))
    mon = BeatMonitor(s, redis.Redis.from_url(redis_url), config=cfg)
    t0 = time.time()
    mon.tracker.watch_start = t0
    evs = [ResultEvent(f"id{i}", "SUCCESS", "demo_tasks.tasks.record", None, t0 + 2 * i) for i in range(3)]
    v = mon.read(t0 + 4.5, results=evs)
    assert v.state == "alive" and v.entries[0].missed_runs == 0
    v = mon.read(t0 + 8.5, results=[])
    assert v.state == "dead" and v.entries[0].missed_runs >= 1 and v.dead_since == t0 + 4
    v = mon.read(t0 + 9.0, results=[ResultEvent("id9", "SUCCESS", "demo_tasks.tasks.record", None, t0 + 9.0)])
    assert v.state == "alive"
    missed = v.entries[0].missed_runs
    v = mon.read(t0 + 10.5, results=[ResultEvent("id10", "SUCCESS", "demo_tasks.tasks.record", None, t0 + 11)])
    assert v.entries[0].missed_runs == missed


def test_nothing_configured_costs_one_check(redis_url: str) -> None:
    s = resolve_settings(broker=redis_url, env={})
    v = BeatMonitor(s, redis.Redis.from_url(redis_url), config=BeatConfig()).read()
    assert v.state == "off" and v.commands == 1
