"""collectors.reads.broker with real Celery workers: claimed entries, orphans after kill -9, a prefixed app,
and proof that reading never writes to the broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import kombu.pools
import pytest
import redis

from collectors.core.config import Settings, app_queue_names
from collectors.core.models import TaskRef
from collectors.keyspace.keys import KeyLayout
from collectors.reads.broker import BrokerReader, BrokerView
from demo_tasks.celery_app import make_app
from taskdash.procs import RedisServer


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> None:
    """kombu shares producer pools (and their "already declared" caches) between apps with the same URL;
    the test Redis is flushed between tests, so start from fresh pools or bindings are never re-declared."""
    kombu.pools.reset()


def wait_for(cond: Callable[[], bool], timeout: float = 25.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def claims_from_inspect(app: Any, hostname: str) -> dict[str, TaskRef]:
    insp = app.control.inspect(destination=[hostname], timeout=5)
    claims: dict[str, TaskRef] = {}
    for state, replies in (("active", insp.active()), ("reserved", insp.reserved())):
        for node, infos in (replies or {}).items():
            for info in infos:
                claims[info["id"]] = TaskRef(task_id=info["id"], name=info.get("name"), state=state, hostname=node)
    return claims


def by_name(view: BrokerView) -> dict[str, Any]:
    return {q.name: q for q in view.queues}


def key_dump(r: redis.Redis) -> dict[bytes, bytes | None]:
    return {k: r.dump(k) for k in r.keys("*")}  # ground truth only: tests may use KEYS


@pytest.fixture()
def own_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own: "reading never writes" compares the whole dataset and the dirty
    counter, and on the session server a thread another test left behind (an inspect still collecting
    replies declares its reply binding) could write between the two looks."""
    server = RedisServer().start()
    yield server
    server.cleanup()


def stable_dump(r: redis.Redis) -> tuple[dict[bytes, bytes | None], int]:
    """The dataset with the dirty counter that was current for the whole dump."""
    while True:
        dirty = int(r.info("persistence")["rdb_changes_since_last_save"])
        dump = key_dump(r)
        if int(r.info("persistence")["rdb_changes_since_last_save"]) == dirty:
            return dump, dirty
        time.sleep(0.05)


def test_claimed_then_orphaned_after_kill9_and_reading_never_writes(
        start_worker: Any, own_server: RedisServer) -> None:
    redis_url = own_server.url
    r = own_server.client()
    demo_app = make_app(redis_url, redis_url, transport_options={})
    try:
        _claimed_then_orphaned(start_worker, demo_app, r, redis_url)
    finally:
        demo_app.close()


def _claimed_then_orphaned(start_worker: Any, demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    w = start_worker(("slow",), concurrency=1, broker_url=redis_url)
    ids = [demo_app.send_task("demo_tasks.tasks.slow", args=(60,), kwargs={"tag": f"o{i}"}).id for i in range(3)]
    wait_for(lambda: r.hlen("unacked") == 3, what="3 unacked entries")
    settings = Settings(broker_url=redis_url, app_queues=app_queue_names(demo_app))
    reader = BrokerReader(settings, r)

    wait_for(lambda: len(claims_from_inspect(demo_app, w.hostname)) == 3, what="inspect sees 3 tasks")
    claims = claims_from_inspect(demo_app, w.hostname)
    inspected = time.time()
    view = reader.read(now=time.time(), worker_queues={"slow": 1}, claims=claims, inspected_at=inspected)
    assert view.unacked_total == 3 == len(view.unacked)
    assert {e.task_id for e in view.unacked} == set(ids)
    states = sorted((e.state, e.holder) for e in view.unacked)
    assert states == [("active", w.hostname), ("reserved", w.hostname), ("reserved", w.hostname)]
    slow = by_name(view)["slow"]
    assert (slow.messages, slow.unacked, slow.consumers, slow.no_consumer) == (0, 3, 1, False)
    assert not any(name.endswith(".pidbox") or name.startswith("celeryev") for name in by_name(view))

    w.kill9()
    killed_at = time.time()
    time.sleep(0.3)
    # inspect after the kill: nobody claims anything
    view = reader.read(now=time.time(), worker_queues={}, claims={}, inspected_at=killed_at + 0.2, grace_s=0.0)
    assert {e.task_id for e in view.unacked} == set(ids)
    for e in view.unacked:
        assert e.state == "orphaned" and e.holder is None
        assert e.queue == "slow" and e.task == "demo_tasks.tasks.slow"
        assert e.redelivered is False and e.stale is False
        assert e.reserved_at is not None and e.reserved_at < killed_at
        assert 0 <= e.age_s < 60 and abs(e.time_to_redelivery_s - (3600 - e.age_s)) < 1e-6
        assert e.argsrepr == "(60,)"
    assert by_name(view)["slow"].unacked == 3 and by_name(view)["slow"].consumers == 0
    # an inspect that ran before these were reserved cannot call them orphaned
    first = min(e.reserved_at for e in view.unacked)
    early = reader.read(now=time.time(), claims={}, inspected_at=first - 1)
    assert {e.state for e in early.unacked} == {"unknown"}

    # reading never writes: the dataset and the server's dirty counter are unchanged by 20 refreshes
    before, dirty = stable_dump(r)
    for _ in range(20):
        reader.read(now=time.time(), worker_queues={}, claims={}, inspected_at=time.time())
    fresh = BrokerReader(settings, r)
    fresh.read(now=time.time())
    assert int(r.info("persistence")["rdb_changes_since_last_save"]) == dirty
    assert key_dump(r) == before
    assert r.hlen("unacked") == 3


def test_key_prefixed_worker_and_producer(start_worker: Any, redis_url: str, r: redis.Redis) -> None:
    w = start_worker(("celery", "slow"), concurrency=1, env={"DEMO_GLOBAL_KEYPREFIX": "myapp:"})
    app = make_app(redis_url, redis_url, transport_options={"global_keyprefix": "myapp:"})
    try:
        assert app.send_task("demo_tasks.tasks.add", args=(2, 2)).get(timeout=20) == 4
        ids = {app.send_task("demo_tasks.tasks.slow", args=(60,)).id for _ in range(2)}
        for p in (0, 5, 9):
            app.send_task("demo_tasks.tasks.prioritized", args=(p,), priority=p)
        wait_for(lambda: r.hlen("myapp:unacked") == 2, what="2 prefixed unacked entries")
        assert not r.exists("unacked")
        settings = Settings(broker_url=redis_url, global_keyprefix="myapp:")  # bindings only, no -A
        reader = BrokerReader(settings, r)
        view = reader.read(now=time.time(), worker_queues={"celery": 1, "slow": 1})
        q = by_name(view)
        assert {"celery", "slow", "priority"} <= set(q)
        assert not any(n.endswith(".pidbox") or n.startswith("celeryev") for n in q)
        truth = {band: int(r.llen(key)) for band, key in KeyLayout.from_settings(settings).queue_keys("priority")}
        assert dict(q["priority"].by_priority) == truth == {0: 1, 3: 1, 6: 0, 9: 1}
        assert q["priority"].no_consumer and not q["slow"].no_consumer
        assert q["slow"].unacked == 2 and q["celery"].messages == 0
        assert view.unacked_total == 2 and {e.task_id for e in view.unacked} == ids
        assert {e.queue for e in view.unacked} == {"slow"}
        assert {e.state for e in view.unacked} == {"unknown"}  # claims=None: inspect unavailable
    finally:
        app.close()
        w.kill9()
