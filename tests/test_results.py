"""Result backend reader against a real redis-server and a real worker; ground truth by plain GET."""

from __future__ import annotations

import json
import pickle
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from collectors.core.config import Settings
from collectors.reads.results import PICKLED, ResultsMonitor, _StateTable, parse_value
from taskdash.procs import RedisServer, free_port


def _ground_truth(client: redis.Redis, ids: list[str], prefix: str = "") -> Counter[str]:
    out: Counter[str] = Counter()
    for tid in ids:
        raw = client.get(f"{prefix}celery-task-meta-{tid}")
        if raw is not None:
            out[json.loads(raw)["status"]] += 1
    return out


def _full_pass(mon: ResultsMonitor, limit: int = 1000) -> None:
    start = mon.passes
    for _ in range(limit):
        mon.step()
        if mon.passes > start:
            return
    raise AssertionError("SCAN pass did not finish")


def _wait(cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_counts_failures_and_live_updates_with_a_real_worker(
    redis_server: RedisServer, redis_url: str, start_worker: Any,
) -> None:
    """A backend on another db than the broker: SCAN counts = ground truth, live PUBLISH without SCAN."""
    from demo_tasks.celery_app import make_app

    backend_url = redis_server.url_db(2)
    backend = redis_server.client(db=2)
    backend.flushdb()
    app = make_app(redis_url, backend_url, transport_options={})
    worker = start_worker(("celery",), concurrency=2, backend_url=backend_url)
    settings = Settings(broker_url=redis_url, backend_url=backend_url, scan_count=7)
    mon = ResultsMonitor(settings)
    try:
        # Phase 1: results exist before taskdash looks; counts come from the SCAN.
        ok = [app.send_task("demo_tasks.tasks.add", args=(i, i)) for i in range(12)]
        bad = [app.send_task("demo_tasks.tasks.fail", args=(f"boom-{i}",)) for i in range(3)]
        for res in ok:
            assert res.get(timeout=30) is not None
        for res in bad:
            res.get(timeout=30, propagate=False)
        # a RETRY that stays RETRY (written the way the backend does) and a pickled value
        retry_id = "retry-0000"
        backend.set(f"celery-task-meta-{retry_id}", json.dumps(
            {"status": "RETRY", "result": {"exc_type": "RuntimeError", "exc_message": ["again"]},
             "traceback": "Traceback ...", "children": [], "date_done": None, "task_id": retry_id}))
        backend.set("celery-task-meta-pickled-1", pickle.dumps({"status": "SUCCESS", "result": 1}))
        # the broker db holds a result-looking key of another app: never counted
        redis_server.client(db=0).set("celery-task-meta-other-db", json.dumps({"status": "FAILURE"}))
        ids = [r.id for r in ok + bad] + [retry_id]
        truth = _ground_truth(backend, ids)
        assert truth == Counter({"SUCCESS": 12, "FAILURE": 3, "RETRY": 1})

        stats = mon.stats()
        assert stats.states == () and not stats.complete  # nothing invented before reading
        mon.step()
        assert 0 < mon.stats().scanned <= 17 or mon.stats().complete
        _full_pass(mon)
        stats = mon.stats()
        assert stats.complete and stats.passes == 1
        assert dict(stats.states) == {**truth, PICKLED: 1}
        assert "PENDING" not in dict(stats.states)
        assert stats.scanned == 17

        # failures carry exception, traceback and the result_extended fields
        assert len(stats.recent_failures) == 3
        by_id = {f.task_id: f for f in stats.recent_failures}
        for res in bad:
            f = by_id[res.id]
            assert f.exception.startswith("ValueError: boom-")
            assert f.traceback and "ValueError" in f.traceback and "raise ValueError" in f.traceback
            assert f.task == "demo_tasks.tasks.fail"
            assert f.worker == worker.hostname
            assert f.queue == "celery"
            assert f.args and "boom-" in f.args
        dates = [f.date_done for f in stats.recent_failures]
        assert dates == sorted(dates, reverse=True)

        # Phase 2: live updates arrive through PUBLISH, no SCAN step in between.
        mon.start(scan=False)
        _wait(lambda: mon._thread is not None and mon.live_error is None and mon.live_messages == 0, 5)
        time.sleep(0.3)  # PSUBSCRIBE registered
        more = [app.send_task("demo_tasks.tasks.add", args=(1, 1)) for _ in range(5)]
        more_bad = app.send_task("demo_tasks.tasks.fail", args=("live-boom",))
        for res in more:
            res.get(timeout=30)
        more_bad.get(timeout=30, propagate=False)
        truth = _ground_truth(backend, ids + [r.id for r in more] + [more_bad.id])
        assert truth == Counter({"SUCCESS": 17, "FAILURE": 4, "RETRY": 1})
        _wait(lambda: dict(mon.stats().states) == {**truth, PICKLED: 1}, 10, "live counts")
        live_fail = mon.stats().recent_failures[0]
        assert live_fail.task_id == more_bad.id and "live-boom" in live_fail.exception
        assert live_fail.traceback and "ValueError" in live_fail.traceback
        assert mon.passes == 1  # no SCAN happened

        # A publish from another db on the same server is ignored (pub/sub ignores db numbers).
        before = mon.live_messages
        other = redis_server.client(db=5)
        other.set("celery-task-meta-foreign", json.dumps({"status": "FAILURE"}))
        other.publish("celery-task-meta-foreign", json.dumps({"status": "FAILURE", "task_id": "foreign"}))
        marker = app.send_task("demo_tasks.tasks.add", args=(2, 2))
        marker.get(timeout=30)
        _wait(lambda: mon.state_of(marker.id) == "SUCCESS", 10, "marker")
        assert mon.state_of("foreign") is None
        assert mon.live_messages > before

        # A new full pass agrees with ground truth as well; deleted keys disappear after it.
        backend.delete(f"celery-task-meta-{ok[0].id}", f"celery-task-meta-{bad[0].id}")
        _full_pass(mon)
        truth = _ground_truth(backend, ids + [r.id for r in more] + [more_bad.id, marker.id])
        assert dict(mon.stats().states) == {**truth, PICKLED: 1}
        assert bad[0].id not in {f.task_id for f in mon.stats().recent_failures}
    finally:
        mon.stop()
        app.close()


def test_compressed_prefixed_odd_values_and_worker_lost(redis_server: RedisServer, redis_url: str,
                                                        r: redis.Redis) -> None:
    """Raw values as Celery writes them: result_compression, global_keyprefix, WorkerLostError."""
    from celery.backends.base import compress_payload

    prefix = "myres_"
    settings = Settings(broker_url=redis_url, result_keyprefix=prefix, scan_count=3)
    meta = {"status": "SUCCESS", "result": "x" * 5000, "traceback": None, "children": [],
            "date_done": "2026-11-25T16:34:07.736482+00:00", "task_id": "c1"}
    r.set(f"{prefix}celery-task-meta-c1", compress_payload(json.dumps(meta).encode(), "gzip"))
    lost = {"status": "FAILURE", "result": {"exc_type": "WorkerLostError", "exc_message":
            ["Worker exited prematurely: signal 9 (SIGKILL) Job: 1."], "exc_module": "billiard.exceptions"},
            "traceback": "Traceback (most recent call last): ...", "children": [],
            "date_done": "2026-11-25T16:40:00+00:00", "task_id": "lost1", "name": "demo_tasks.tasks.slow",
            "worker": "w1@h", "queue": "slow", "args": [5], "kwargs": {}}
    r.set(f"{prefix}celery-task-meta-lost1", json.dumps(lost))
    # key order differs from Celery's: status is not in the first bytes
    r.set(f"{prefix}celery-task-meta-odd", json.dumps({"result": "y" * 600, "status": "REVOKED"}))
    r.set(f"{prefix}celery-task-meta-garbage", b"\x01\x02not a result")
    r.set("celery-task-meta-unprefixed", json.dumps({"status": "SUCCESS"}))  # other prefix: ignored
    r.set(f"{prefix}celery-task-meta-pickled", pickle.dumps({"status": "FAILURE"}))
    mon = ResultsMonitor(settings, client=r)
    _full_pass(mon)
    stats = mon.stats()
    expected = {"SUCCESS": 1, "FAILURE": 1, "REVOKED": 1, "(unknown)": 1, PICKLED: 1}
    assert dict(stats.states) == expected
    (f,) = stats.recent_failures
    assert f.exception == "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 1."
    assert (f.task, f.worker, f.queue, f.args) == ("demo_tasks.tasks.slow", "w1@h", "slow", "[5]")
    got = mon.worker_lost()
    assert [(t, n, w) for t, n, w, _ in got] == [("lost1", "demo_tasks.tasks.slow", "w1@h")]
    assert abs(got[0][3] - 1795624800.0) < 1
    assert mon.worker_lost() == []
    _full_pass(mon)  # seen again by the next pass: not reported twice
    assert mon.worker_lost() == []


def test_backend_down_keeps_last_values_and_masks_the_url(redis_url: str, r: redis.Redis) -> None:
    r.set("celery-task-meta-a", json.dumps({"status": "SUCCESS"}))
    mon = ResultsMonitor(Settings(broker_url=redis_url))
    _full_pass(mon)
    assert dict(mon.stats().states) == {"SUCCESS": 1} and mon.ok
    # point the same monitor at a dead server with a password in its URL
    dead = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    mon2 = ResultsMonitor(Settings(broker_url=redis_url, backend_url=dead, socket_timeout=0.5))
    assert mon2.step() == 0
    assert mon2.last_error and "s3cret-pw" not in mon2.last_error and not mon2.ok
    assert mon2.stats().states == ()
    mon._client = redis.Redis.from_url(dead, socket_timeout=0.5, socket_connect_timeout=0.5)
    assert mon.step() == 0
    assert mon.last_error and dict(mon.stats().states) == {"SUCCESS": 1}
    mon2.start()  # the live thread retries quietly with backoff and stops promptly
    time.sleep(0.3)
    t0 = time.monotonic()
    mon2.stop()
    assert time.monotonic() - t0 < 3.5 and mon2.live_error and "s3cret-pw" not in mon2.live_error


@pytest.mark.parametrize("n", [50_000])
def test_state_table_matches_a_dict_and_stays_small(n: int) -> None:
    rnd = random.Random(7)
    table = _StateTable()
    ref: dict[str, int] = {}
    ids = [f"{rnd.getrandbits(128):032x}" for _ in range(n)]
    for i, tid in enumerate(ids):
        code = rnd.randint(1, 31)
        prev = table.set(_StateTable.hash_of(tid), code)
        assert prev == ref.get(tid, 0)
        ref[tid] = code
        if i % 7 == 0:  # updates of existing ids
            other = ids[rnd.randrange(i + 1)]
            code = rnd.randint(1, 31)
            table.set(_StateTable.hash_of(other), code)
            ref[other] = code
    assert table.size == len(ref)
    assert all(table.get(_StateTable.hash_of(t)) == c for t, c in ref.items())
    assert table.get(_StateTable.hash_of("missing")) == 0
    assert Counter(ref.values()) == Counter({c: n for c, n in enumerate(table.counts) if n})
    # 8 bytes per slot, load factor <= 0.5: 1M results -> 16 MB (32 MB while a pass rebuilds)
    assert table.nbytes() <= 16 * len(ref) * 2
    assert table.nbytes() * (1_000_000 / n) < 40 * 1024 * 1024


def test_parse_value_never_unpickles() -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (exec, ("raise SystemExit('unpickled!')",))

    assert parse_value(pickle.dumps(Boom())).state == PICKLED
    assert parse_value(b'{"status": "STARTED", "result": {"pid": 1}}').state == "STARTED"
    assert parse_value(b"[1, 2]").state == "(unknown)"
    assert parse_value(None) is None


def test_background_scan_counts_everything_paced_by_its_redis_budget(r: redis.Redis, redis_url: str) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(3000):
        state = ("SUCCESS", "FAILURE", "RETRY")[i % 3]
        pipe.set(f"celery-task-meta-bg{i}", json.dumps({"status": state, "result": None, "task_id": f"bg{i}"}))
    pipe.execute()
    mon = ResultsMonitor(Settings(broker_url=redis_url, scan_count=500), client=r)
    mon.scan_budget = 0.01  # estimated ≈ 2.65 ms of Redis per 500-key step -> one step per ≈ 0.27 s
    t0 = time.monotonic()
    mon.start()
    try:
        assert mon.scanning
        _wait(lambda: mon.stats().complete, 30, "background pass")
        elapsed = time.monotonic() - t0
        assert dict(mon.stats().states) == {"SUCCESS": 1000, "FAILURE": 1000, "RETRY": 1000}
        assert mon.passes == 1 and mon.ok
        # ~6 SCAN steps, each followed by a budget pause (an unpaced loop takes well under 0.5 s)
        assert elapsed > 0.9, elapsed
        # step() stays usable synchronously while the thread runs
        assert mon.step() >= 0
    finally:
        mon.stop()
    assert not mon.scanning
