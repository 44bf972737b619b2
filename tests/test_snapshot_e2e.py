"""End to end: ``Collector.collect()`` and ``taskdash snapshot`` against real Redis and real workers.

Every figure is compared with ground truth read with plain redis commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from collectors.collector import Collector
from collectors.core.config import resolve_settings
from collectors.core.models import Snapshot
from taskdash.procs import free_port

SEP = "\x06\x16"


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2, msg: str = "") -> Any:
    """Poll ``pred`` until it returns something truthy; fail with ``msg`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {msg}")


def collector_for(url: str, **kw: Any) -> Collector:
    settings = resolve_settings(broker=url, env={}, interval=0.5, inspect_interval=1.0, inspect_timeout=0.5, **kw)
    return Collector(settings)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "taskdash", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def queue(snap: Snapshot, name: str) -> Any:
    found = [q for q in snap.queues if q.name == name]
    assert found, f"queue {name!r} not in {[q.name for q in snap.queues]}"
    return found[0]


def test_unreachable_broker_exits_2_with_masked_url() -> None:
    port = free_port()
    res = run_cli("snapshot", "--json", "--broker", f"redis://alice:hunter2@127.0.0.1:{port}/0")
    assert res.returncode == 2, res
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "hunter2" not in res.stderr and "Traceback" not in res.stderr
    assert f"redis://alice:***@127.0.0.1:{port}/0" in lines[0]


def test_priorities_backlog_without_consumer_and_json_contract(redis_url: str, r: redis.Redis, demo_app: Any) -> None:
    for p in (0, 1, 4, 5, 7, 9, 9):
        demo_app.send_task("demo_tasks.tasks.prioritized", args=(p,), priority=p)
    for i in range(5):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@example.com",))
    res = run_cli("snapshot", "--json", "-A", "demo_tasks",
                  env={"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url})
    assert res.returncode == 0, res.stderr
    snap = json.loads(res.stdout)
    for key in ("schema", "taken_at", "broker", "backend", "queues", "unacked", "unacked_total", "workers",
                "tasks", "poison"):
        assert key in snap
    assert snap["schema"] >= 2 and snap["broker"]["ok"] is True
    queues = {q["name"]: q for q in snap["queues"]}
    truth = {str(b): r.llen("priority" if b == 0 else f"priority{SEP}{b}") for b in (0, 3, 6, 9)}
    assert truth == {"0": 2, "3": 2, "6": 1, "9": 2}
    assert queues["priority"]["by_priority"] == truth
    assert queues["priority"]["messages"] == 7
    assert queues["emails"]["messages"] == r.llen("emails") == 5
    assert queues["emails"]["consumers"] == 0 and queues["emails"]["no_consumer"] is True
    assert {"celery", "slow", "risky"} <= set(queues)  # declared by the app, empty
    assert not any(".pidbox" in n or n.startswith("celeryev") for n in queues)
    assert snap["unacked_total"] == 0 and snap["poison"] == []
    for q in snap["queues"]:
        assert set(q) >= {"name", "messages", "by_priority", "oldest_age_s", "unacked", "consumers"}


def test_orphans_scheduled_and_dead_worker(redis_url: str, r: redis.Redis, demo_app: Any, start_worker: Any) -> None:
    """ETA tasks are 'scheduled' while their worker lives; after kill -9 everything it held is orphaned."""
    victim = start_worker(("slow",), hostname="victim@test", concurrency=2)
    start_worker(("celery",), hostname="bystander@test")
    running = [demo_app.send_task("demo_tasks.tasks.slow", args=(60,)).id for _ in range(2)]
    eta = demo_app.send_task("demo_tasks.tasks.slow", args=(1,), countdown=120).id
    wait_for(lambda: r.hlen("unacked") == 3, msg="3 unacked entries")
    with collector_for(redis_url) as col:
        def classified() -> Snapshot | None:
            col.inspect_soon()
            s = col.collect()
            states = {e.task_id: e.state for e in s.unacked}
            ok = all(states.get(t) == "active" for t in running) and states.get(eta) == "scheduled"
            return s if ok else None

        snap = wait_for(classified, msg="active + scheduled classification")
        assert snap.unacked_total == r.hlen("unacked") == 3
        assert {e.holder for e in snap.unacked} == {"victim@test"}
        assert all(e.queue == "slow" and not e.stale and not e.redelivered for e in snap.unacked)
        workers = {w.hostname: w for w in snap.workers}
        assert workers["victim@test"].online and workers["victim@test"].active == 2
        assert workers["victim@test"].scheduled == 1 and workers["victim@test"].queues == ("slow",)
        assert queue(snap, "slow").unacked == 3 and queue(snap, "slow").consumers == 1

        victim.kill9()

        def orphaned() -> Snapshot | None:
            col.inspect_soon()
            s = col.collect()
            w = {w.hostname: w for w in s.workers}.get("victim@test")
            ok = len(s.unacked) == 3 and all(e.state == "orphaned" for e in s.unacked) and w is not None and not w.online
            return s if ok else None

        snap = wait_for(orphaned, timeout=30, msg="orphans after kill -9 and victim offline")
        assert {e.task_id for e in snap.unacked} == {*running, eta}
        assert all(e.holder is None for e in snap.unacked)
        dead = {w.hostname: w for w in snap.workers}["victim@test"]
        assert dead.last_seen_s is not None and dead.last_seen_s > 0
        assert queue(snap, "slow").consumers == 0
        assert r.hlen("unacked") == 3  # reading changed nothing


def test_results_counts_and_failures(redis_url: str, r: redis.Redis, demo_app: Any, start_worker: Any) -> None:
    start_worker(("celery",), concurrency=2)
    ok = [demo_app.send_task("demo_tasks.tasks.add", args=(i, i)) for i in range(6)]
    bad = [demo_app.send_task("demo_tasks.tasks.fail", args=(f"boom {i}",)) for i in range(3)]
    for res in ok:
        res.get(timeout=30)
    for res in bad:
        with pytest.raises(ValueError):
            res.get(timeout=30, propagate=True)
    truth: dict[str, int] = {}
    for key in r.scan_iter("celery-task-meta-*"):
        state = json.loads(r.get(key))["status"]
        truth[state] = truth.get(state, 0) + 1
    assert truth == {"SUCCESS": 6, "FAILURE": 3}
    with collector_for(redis_url) as col:
        snap = wait_for(lambda: (s := col.collect()).tasks.complete and s, msg="complete result scan")
        assert dict(snap.tasks.states) == truth
        assert "PENDING" not in dict(snap.tasks.states)
        failures = {f.task_id: f for f in snap.tasks.recent_failures}
        assert set(failures) == {b.id for b in bad}
        f = failures[bad[0].id]
        assert "ValueError" in f.exception and "boom 0" in f.exception
        assert f.traceback and "ValueError" in f.traceback and f.task == "demo_tasks.tasks.fail"


def test_poison_loop_detected(redis_url: str, r: redis.Redis, demo_app: Any, start_worker: Any) -> None:
    start_worker(("risky",), hostname="risky@test", concurrency=1)
    tid = demo_app.send_task("demo_tasks.tasks.poison", args=("kill me",)).id
    with collector_for(redis_url, poison_threshold=3) as col:
        def suspect() -> Any:
            s = col.collect()
            return next((p for p in s.poison if p.task_id == tid), None)

        p = wait_for(suspect, timeout=45, interval=0.3, msg="poison suspect")
        assert p.deliveries >= 3 and p.task == "demo_tasks.tasks.poison" and p.queue == "risky"
        assert "risky@test" in p.workers
        assert p.last_seen >= p.first_seen


def test_prefixed_app_and_custom_priority_steps(redis_url: str, r: redis.Redis, start_worker: Any) -> None:
    from demo_tasks.celery_app import make_app

    opts = {"global_keyprefix": "myapp:", "priority_steps": [0, 5, 9]}
    app = make_app(redis_url, redis_url, transport_options=opts)
    for p in (0, 2, 5, 6, 9):
        app.send_task("demo_tasks.tasks.prioritized", args=(p,), priority=p)
    app.close()
    assert r.llen("myapp:priority") == 2 and r.llen(f"myapp:priority{SEP}5") == 2 and r.llen(f"myapp:priority{SEP}9") == 1
    env = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
           "DEMO_GLOBAL_KEYPREFIX": "myapp:", "DEMO_PRIORITY_STEPS": "0,5,9"}
    res = run_cli("snapshot", "--json", "-A", "demo_tasks", env=env)
    assert res.returncode == 0, res.stderr
    q = {q["name"]: q for q in json.loads(res.stdout)["queues"]}["priority"]
    assert q["by_priority"] == {"0": 2, "5": 2, "9": 1} and q["messages"] == 5


def test_reading_never_changes_the_broker(redis_url: str, r: redis.Redis, start_worker: Any) -> None:
    """An unacked entry far older than visibility_timeout stays put through many taskdash refreshes.

    A monitor whose kombu connection ran the restore sweep would requeue it (duplicate execution).
    The worker itself runs with a huge visibility_timeout so only taskdash could move the entry.
    """
    start_worker(("celery",), env={"DEMO_VISIBILITY_TIMEOUT": "1000000"})
    old = time.time() - 7200
    entries = {}
    for i in range(20):
        tag = f"tag-{i}"
        env = {"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8", "content-type": "application/json",
               "headers": {"task": "demo_tasks.tasks.add", "id": f"id-{i}", "argsrepr": "()"},
               "properties": {"delivery_tag": tag, "delivery_info": {"exchange": "", "routing_key": "celery"},
                              "priority": 0, "body_encoding": "base64"}}
        entries[tag] = json.dumps([env, "", "celery"])
        r.hset("unacked", tag, entries[tag])
        r.zadd("unacked_index", {tag: old + i})
    before_index = r.zrange("unacked_index", 0, -1, withscores=True)
    with collector_for(redis_url) as col:
        for _ in range(8):
            col.inspect_soon()
            snap = col.collect()
    assert snap.unacked_total == 20
    assert all(e.stale for e in snap.unacked)
    assert all(e.state == "orphaned" for e in snap.unacked)
    assert r.zrange("unacked_index", 0, -1, withscores=True) == before_index
    assert {k.decode(): v.decode() for k, v in r.hgetall("unacked").items()} == entries
    assert r.llen("celery") == 0
