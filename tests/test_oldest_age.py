"""Oldest waiting age from evidence (issue 21), against a real redis-server and real Celery producers.

Messages carry no enqueue time. A backlog found at start is a lower bound counted from the first sighting
(and says so), that first sighting survives a restart through the history store, and task-sent events,
an eta or an observed arrival give an exact age. None of it costs a Redis command.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
import redis

from collectors.analysis.history import History
from collectors.collector import Collector
from collectors.core.config import Settings, app_queue_names, resolve_settings
from collectors.core.models import SCHEMA_VERSION, QueueInfo, Snapshot, SourceStatus
from collectors.reads.broker import ARRIVAL_EXACT_S, BrokerReader, BrokerView
from collectors.serving.metrics import render_metrics


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> None:
    kombu.pools.reset()


def _q(view: BrokerView | Snapshot, name: str) -> QueueInfo:
    found = [q for q in view.queues if q.name == name]
    assert found, f"{name!r} not in {[q.name for q in view.queues]}"
    return found[0]


def _collector(url: str, history: History | None = None, *, background: bool = False) -> Collector:
    settings = resolve_settings(broker=url, env={}, interval=0.5, inspect_interval=1.0, inspect_timeout=0.5)
    return Collector(settings, background=background, history=history)


def _emails(demo_app: Any, n: int) -> None:
    for i in range(n):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@example.com",))


def test_backlog_found_at_start_is_a_lower_bound_never_a_small_exact_age(demo_app: Any, r: redis.Redis,
                                                                         redis_url: str) -> None:
    _emails(demo_app, 80)
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="drained")
    r.delete("drained")  # bound, empty
    time.sleep(2.0)  # the backlog waits before taskdash starts
    col = _collector(redis_url)
    try:
        snap = col.collect()
        q = _q(snap, "emails")
        assert q.messages == 80
        # the first sighting: 0 s at most, and it says it is only a lower bound
        assert q.oldest_age_s is not None and q.oldest_age_s < 2.0
        assert q.oldest_age_is_lower_bound is True and q.oldest_age_source == "first-seen"
        assert q.oldest_task_id and q.oldest_identity
        doc = json.loads(json.dumps(snap.to_json()))
        assert doc["schema"] == SCHEMA_VERSION >= 6
        emails = next(x for x in doc["queues"] if x["name"] == "emails")
        assert emails["oldest_age_is_lower_bound"] is True and emails["oldest_age_source"] == "first-seen"
        assert emails["oldest_task_id"] == q.oldest_task_id
        assert "oldest_identity" not in emails
        empty = next(x for x in doc["queues"] if x["name"] == "drained")
        assert empty["oldest_age_s"] is None and empty["oldest_age_is_lower_bound"] is False
        assert empty["oldest_age_source"] is None
        time.sleep(1.0)
        q2 = _q(col.collect(), "emails")
        assert q2.oldest_age_is_lower_bound and q2.oldest_age_s is not None and q2.oldest_age_s >= 1.0
        assert q2.oldest_since == q.oldest_since
    finally:
        col.close()
    text = render_metrics(snap, now=snap.taken_at)
    assert 'taskdash_queue_oldest_age_is_lower_bound{queue="emails"} 1' in text
    assert 'taskdash_queue_oldest_age_is_lower_bound{queue="drained"}' not in text  # no age, no flag


def test_restart_with_the_same_history_store_keeps_the_first_seen_age(demo_app: Any, r: redis.Redis,
                                                                      redis_url: str, tmp_path: Path) -> None:
    _emails(demo_app, 5)
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="slow")
    demo_app.send_task("demo_tasks.tasks.add", args=(3, 4), queue="slow")
    path = tmp_path / "history.sqlite3"
    with History(path, sample_s=0) as h1:
        col = _collector(redis_url, h1)
        try:
            first = col.collect()
        finally:
            col.close()
    seen_at = first.taken_at
    q1 = _q(first, "emails")
    assert q1.oldest_age_is_lower_bound and q1.oldest_since == pytest.approx(seen_at)
    time.sleep(2.0)
    r.rpop("slow")  # consumed while taskdash was down: the next message is a different one
    with History(path, sample_s=0) as h2:
        col = _collector(redis_url, h2)
        try:
            again = col.collect()
        finally:
            col.close()
    q2 = _q(again, "emails")
    # the same message at the head: its age counts from the first sighting before the restart
    assert q2.oldest_identity == q1.oldest_identity
    assert q2.oldest_since == pytest.approx(seen_at)
    assert q2.oldest_age_s == pytest.approx(again.taken_at - seen_at, abs=0.01) and q2.oldest_age_s >= 2.0
    assert q2.oldest_age_is_lower_bound and q2.oldest_age_source == "first-seen"
    # another message: no remembered sighting applies to it (never an age it did not earn)
    s2 = _q(again, "slow")
    assert s2.oldest_identity != _q(first, "slow").oldest_identity
    assert s2.oldest_age_s is not None and s2.oldest_age_s < 1.0 and s2.oldest_age_is_lower_bound
    # a third process on the same file sees it too (one row per queue)
    with History(path) as h3:
        assert h3.head_seen("emails", q1.oldest_identity or "")[:2] == pytest.approx((seen_at, seen_at))
        assert h3.head_seen("emails", "another-tag") is None
        assert h3.head_rows() == len([q for q in again.queues if q.oldest_identity])


def test_eta_gives_an_exact_age(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=120)
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="later", eta=past)
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="soon", countdown=300)
    reader = BrokerReader(Settings(broker_url=redis_url), r)
    now = time.time()
    view = reader.read(now=now)
    later, soon = _q(view, "later"), _q(view, "soon")
    assert later.oldest_age_s == pytest.approx(now - past.timestamp(), abs=0.01)
    assert later.oldest_age_is_lower_bound is False and later.oldest_age_source == "eta"
    # not due for 5 minutes: it has not waited yet, and that is exact too
    assert soon.oldest_age_s == 0.0 and soon.oldest_age_is_lower_bound is False and soon.oldest_age_source == "eta"
    later2 = _q(reader.read(now=now + 10), "later")
    assert later2.oldest_age_s == pytest.approx(now + 10 - past.timestamp(), abs=0.01)


def test_task_sent_events_give_an_exact_age(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    demo_app.conf.task_send_sent_event = True
    col = _collector(redis_url, background=True)
    try:
        col.collect()  # the event subscriber is up before anything is sent
        time.sleep(0.5)
        sent_at = time.time()
        _emails(demo_app, 3)
        time.sleep(2.5)  # waiting before taskdash looks at the queue's head for the first time
        snap = col.collect()
        q = _q(snap, "emails")
        assert q.oldest_age_source == "task-sent", q
        assert q.oldest_age_is_lower_bound is False
        assert q.oldest_since == pytest.approx(sent_at, abs=0.3)
        assert q.oldest_age_s is not None and q.oldest_age_s >= 2.4
        # the evidence stays when the same head is read again (no new event needed)
        q2 = _q(col.collect(), "emails")
        assert q2.oldest_age_source == "task-sent" and q2.oldest_since == q.oldest_since
    finally:
        col.close()
    assert 'taskdash_queue_oldest_age_is_lower_bound{queue="emails"} 0' in render_metrics(snap, now=snap.taken_at)


def test_sent_time_of_another_send_of_the_same_task_id_is_not_used(demo_app: Any, r: redis.Redis,
                                                                    redis_url: str) -> None:
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="dup", task_id="dup-1")
    reader = BrokerReader(Settings(broker_url=redis_url), r)
    t0 = time.time()
    assert _q(reader.read(now=t0), "dup").oldest_age_is_lower_bound
    reader.note_events([{"type": "task-sent", "uuid": "dup-1", "timestamp": t0 + 60}])  # later than the sighting
    q = _q(reader.read(now=t0 + 90), "dup")
    assert q.oldest_age_source == "first-seen" and q.oldest_age_s == pytest.approx(90)
    reader.note_events([{"type": "task-sent", "uuid": "dup-1", "timestamp": t0 - 30}])
    q = _q(reader.read(now=t0 + 91), "dup")
    assert (q.oldest_age_source, q.oldest_age_is_lower_bound) == ("task-sent", False)
    assert q.oldest_age_s == pytest.approx(121)


@pytest.mark.parametrize("mode", ["lua", "plain"])
def test_arrival_seen_after_an_empty_read_is_exact_and_a_head_moving_up_is_a_lower_bound(
        demo_app: Any, r: redis.Redis, redis_url: str, mode: str) -> None:
    settings = Settings(broker_url=redis_url, app_queues=app_queue_names(demo_app))
    reader = BrokerReader(settings, r)
    reader.mode = mode
    t0 = time.time()
    assert _q(reader.read(now=t0), "emails").oldest_age_s is None  # empty
    _emails(demo_app, 2)
    q = _q(reader.read(now=t0 + 1), "emails")  # arrived since the empty read 1 s before
    assert (q.oldest_age_source, q.oldest_age_is_lower_bound, q.oldest_age_s) == ("arrival", False, 0.0)
    q = _q(reader.read(now=t0 + 61), "emails")
    assert (q.oldest_age_source, q.oldest_age_is_lower_bound) == ("arrival", False)
    assert q.oldest_age_s == pytest.approx(60)
    # the head is consumed: the next one waited behind it for an unknown time ("1m43s -> 1s" was a lie)
    r.rpop("emails")
    q = _q(reader.read(now=t0 + 62), "emails")
    assert q.oldest_age_s == 0.0 and q.oldest_age_is_lower_bound and q.oldest_age_source == "first-seen"
    # an empty read long before is no evidence of a recent arrival
    r.rpop("emails")
    assert _q(reader.read(now=t0 + 63), "emails").oldest_age_s is None
    _emails(demo_app, 1)
    q = _q(reader.read(now=t0 + 63 + ARRIVAL_EXACT_S + 30), "emails")
    assert q.oldest_age_is_lower_bound and q.oldest_age_source == "first-seen"


def test_evidence_costs_no_redis_command(demo_app: Any, r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    for i in range(20):
        demo_app.send_task("demo_tasks.tasks.add", args=(i, i), queue=f"q{i % 5}", task_id=f"t{i}")
    settings = Settings(broker_url=redis_url)
    plain, rich = BrokerReader(settings, r), BrokerReader(settings, r)
    with History(tmp_path / "h.sqlite3", sample_s=0) as h:
        rich.remembered = h.head_seen
        t0 = time.time()
        for k in range(4):
            rich.note_events([{"type": "task-sent", "uuid": f"t{i}", "timestamp": t0 - 5} for i in range(20)])
            a, b = plain.read(now=t0 + k), rich.read(now=t0 + k)
            assert (a.round_trips, a.commands) == (b.round_trips, b.commands)
            assert all(q.oldest_age_source == "task-sent" for q in b.queues if q.messages)
            assert all(q.oldest_age_is_lower_bound for q in a.queues if q.messages)


def test_history_merges_heads_per_queue(tmp_path: Path) -> None:
    def snap(ts: float, *queues: QueueInfo) -> Snapshot:
        return Snapshot(taken_at=ts, broker=SourceStatus("redis://h/0", True), backend=SourceStatus("x", True),
                        queues=queues)

    def head(ident: str, since: float, source: str, ts: float) -> QueueInfo:
        return QueueInfo("q", 3, ((0, 3),), oldest_age_s=ts - since, oldest_age_is_lower_bound=source == "first-seen",
                         oldest_age_source=source, oldest_since=since, oldest_task_id="id-" + ident,  # type: ignore[arg-type]
                         oldest_identity=ident)

    t = time.time() - 1000.0
    path = tmp_path / "h.sqlite3"
    with History(path, sample_s=0) as h:
        h.record(snap(t + 100, head("a", t + 100, "first-seen", t + 100)))
        h.record(snap(t + 110, head("a", t + 105, "first-seen", t + 110)))  # a later sighting: the earlier one stays
    with History(path, sample_s=0) as h:
        assert h.head_seen("q", "a") == (t + 100, t + 100, "first-seen")
        h.record(snap(t + 120, head("a", t + 90, "task-sent", t + 120)))  # exact evidence wins
        assert h.head_seen("q", "a") == (t + 100, t + 90, "task-sent")
        h.record(snap(t + 130, head("a", t + 100, "first-seen", t + 130)))  # and is not lost to a lower bound
    with History(path, sample_s=0) as h:
        assert h.head_seen("q", "a") == (t + 100, t + 90, "task-sent")
        h.record(snap(t + 140, head("b", t + 140, "first-seen", t + 140)))  # a new head replaces the old one
        assert h.head_seen("q", "a") is None and h.head_seen("q", "b") == (t + 140, t + 140, "first-seen")
        assert h.head_rows() == 1
    with History(path, sample_s=0, max_age_s=60) as h:  # aged out on open
        assert h.head_rows() == 0 and h.head_seen("q", "b") is None
