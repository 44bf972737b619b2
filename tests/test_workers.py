"""WorkerMonitor against a real redis-server and real celery workers (ground truth: what we started)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import redis

from collectors.core.config import Settings, resolve_settings
from collectors.reads.workers import WorkerMonitor, WorkersView, decode_event_message
from taskdash.procs import free_port


def _settings(url: str, **kw: Any) -> Settings:
    kw.setdefault("inspect_timeout", 1.0)
    kw.setdefault("inspect_interval", 1.0)
    return resolve_settings(broker=url, env={}, **kw)


def _by_host(view: WorkersView) -> dict[str, Any]:
    return {w.hostname: w for w in view.workers}


def _envelope(body: Any, routing_key: str, hostname: str) -> bytes:
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": {"hostname": hostname},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": "t"},
    }).encode()


def test_workers_online_details_window_cost_and_kill9(redis_url: str, start_worker: Any, demo_app: Any) -> None:
    w1 = start_worker(("celery", "slow"), concurrency=2)
    w2 = start_worker(("emails",), concurrency=1, pool="solo")
    w3 = start_worker(("priority",), concurrency=1, pool="threads")
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.add", args=(i, 1)).get(timeout=30)
    mon = WorkerMonitor(_settings(redis_url))
    try:
        assert mon.view(time.time()).inspect_ok is None
        assert mon.view(time.time()).worker_queues is None
        mon.start()
        view = mon.wait_for(lambda v: v.inspect_ok is True and {w.hostname for w in v.workers if w.online}
                            >= {w1.hostname, w2.hostname, w3.hostname} and len(v.workers) == 3
                            and all(w.pool and w.sw_ver for w in v.workers), 20)
        hosts = _by_host(view)
        a, b, c = hosts[w1.hostname], hosts[w2.hostname], hosts[w3.hostname]
        assert (a.pool, a.concurrency, set(a.queues)) == ("prefork", 2, {"celery", "slow"})
        assert (b.pool, b.concurrency, b.queues) == ("solo", 1, ("emails",))
        assert (c.pool, c.concurrency, c.queues) == ("threads", 1, ("priority",))
        assert a.processed == 3 and b.processed == 0
        assert a.pid == w1.pid and len(a.pool_pids) == 2
        assert all(w.responding and w.sw_ver and w.last_seen_s is not None and w.last_seen_s < 5
                   for w in view.workers)
        assert a.visibility_timeout is None or a.visibility_timeout > 0
        assert dict(view.worker_queues or {}) == {"celery": 1, "slow": 1, "emails": 1, "priority": 1}
        assert view.error is None and view.inspected_at is not None

        # One window for 6 methods x 3 workers costs about one timeout (not 6 timeouts), also when
        # it has to wait the full timeout (no heartbeat knowledge: a fresh monitor).
        fresh = WorkerMonitor(_settings(redis_url))
        fresh.inspect_now()
        assert fresh.last_window_s is not None and fresh.last_window_s < 2.5 * fresh.settings.inspect_timeout
        fv = fresh.view(time.time())
        assert fv.inspect_ok and {w.hostname for w in fv.workers} == {w1.hostname, w2.hostname, w3.hostname}
        assert all(w.pool and w.queues for w in fv.workers)
        fresh.stop()
        durations = []
        for _ in range(3):
            mon.inspect_now()
            durations.append(mon.last_window_s or 0.0)
            assert mon.view(time.time()).inspect_ok is True
        # with heartbeats known the window ends as soon as every live worker answered everything
        assert max(durations) < 2.5 * mon.settings.inspect_timeout, durations
        assert min(durations) < mon.settings.inspect_timeout, durations

        # kill -9: shown offline with "last seen", never dropped; its queue loses its consumer.
        w2.kill9()
        view = mon.wait_for(lambda v: not _by_host(v)[w2.hostname].online, 15)
        dead = _by_host(view)[w2.hostname]
        assert not dead.online and not dead.responding
        assert dead.last_seen_s is not None and dead.last_seen_s >= 2.0
        assert (dead.pool, dead.queues) == ("solo", ("emails",))  # last known details kept
        assert _by_host(view)[w1.hostname].online
        view = mon.wait_for(lambda v: (v.worker_queues or {}).get("emails") is None, 10)
        assert dict(view.worker_queues or {}) == {"celery": 1, "slow": 1, "priority": 1}
        time.sleep(1.0)
        later = _by_host(mon.view(time.time()))[w2.hostname]
        assert later.last_seen_s is not None and later.last_seen_s > dead.last_seen_s
    finally:
        mon.stop()


def test_active_reserved_and_eta_claims(redis_url: str, start_worker: Any, demo_app: Any) -> None:
    w = start_worker(("celery", "slow"), concurrency=1, extra_args=("-E",))
    mon = WorkerMonitor(_settings(redis_url))
    mon.start()
    try:
        # subscribed once a heartbeat came through (events sent before that are lost by design)
        mon.wait_for(lambda v: any(x.sw_ver for x in v.workers), 10)
        running = demo_app.send_task("demo_tasks.tasks.slow", args=(6,), kwargs={"tag": "claims"})
        waiting = demo_app.send_task("demo_tasks.tasks.slow", args=(1,))  # prefetched behind the running one
        eta = demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), countdown=60, priority=3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mon.inspect_now()
            view = mon.view(time.time())
            if {running.id, waiting.id, eta.id} <= set(view.claims):
                break
            time.sleep(0.2)
        claims = view.claims
        assert claims[running.id].state == "active"
        assert claims[eta.id].state == "scheduled"
        assert claims[waiting.id].state == "reserved"
        act, sch = claims[running.id], claims[eta.id]
        assert act.hostname == w.hostname and act.name == "demo_tasks.tasks.slow" and act.queue == "slow"
        assert act.time_start and act.worker_pid in _by_host(view)[w.hostname].pool_pids
        assert act.argsrepr == "(6,)" and "claims" in (act.kwargsrepr or "")
        assert sch.eta and sch.priority == 3 and sch.queue == "celery"
        assert [r.task_id for r in view.active] == [running.id]
        info = _by_host(view)[w.hostname]
        assert (info.active, info.reserved, info.scheduled) == (1, 1, 1)
        # with -E the worker's task.multi events (JSON lists) reach drain_events
        received: set[str] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {running.id, waiting.id, eta.id} <= received:
            received |= {e["uuid"] for e in mon.drain_events() if e.get("type") == "task-received"}
            time.sleep(0.2)
        assert {running.id, waiting.id, eta.id} <= received
    finally:
        mon.stop()


def _old_unacked(r: redis.Redis, n: int, age_s: float) -> dict[bytes, bytes]:
    """Real-looking unacked entries (kombu's [envelope, exchange, routing_key]) reserved ``age_s`` ago."""
    now = time.time()
    for i in range(n):
        tag = f"00000000-0000-4000-8000-{i:012d}"
        env = {"body": base64.b64encode(b"[[1, 2], {}, {}]").decode(), "content-encoding": "utf-8",
               "content-type": "application/json",
               "headers": {"lang": "py", "task": "demo_tasks.tasks.add", "id": f"task-{i}", "retries": 0,
                           "argsrepr": "(1, 2)", "kwargsrepr": "{}", "eta": None},
               "properties": {"correlation_id": f"task-{i}", "delivery_mode": 2, "priority": 0,
                              "delivery_info": {"exchange": "", "routing_key": "celery"},
                              "body_encoding": "base64", "delivery_tag": tag}}
        r.hset("unacked", tag, json.dumps([env, "", "celery"]))
        r.zadd("unacked_index", {tag: now - age_s - i})
    return r.hgetall("unacked")


def test_reading_never_restores_unacked_entries(redis_url: str, r: redis.Redis, start_worker: Any) -> None:
    """Entries 2 h old (app VT 10 s) stay exactly in place through many inspect windows."""
    from demo_tasks.celery_app import make_app

    # The running worker's own sweep must not interfere: its visibility timeout is huge.
    start_worker(("celery",), env={"DEMO_VISIBILITY_TIMEOUT": "100000"})
    before_hash = _old_unacked(r, 50, 7200)
    before_index = r.zrange("unacked_index", 0, -1, withscores=True)
    short_vt_app = make_app(redis_url, redis_url, transport_options={"visibility_timeout": 10})
    settings = resolve_settings(broker=redis_url, env={}, inspect_timeout=0.3, inspect_interval=0.2,
                                transport_options={"visibility_timeout": 10})
    mon = WorkerMonitor(settings, app=short_vt_app)
    assert mon.transport_options()["ack_emulation"] is False
    try:
        for _ in range(12):
            mon.inspect_now()
        mon.start()  # the background threads and their own windows
        time.sleep(2.0)
        assert mon.view(time.time()).inspect_ok is True
        assert mon.windows >= 14
    finally:
        mon.stop()
    assert short_vt_app.conf.broker_transport_options["ack_emulation"] is False
    assert r.hgetall("unacked") == before_hash
    assert r.zrange("unacked_index", 0, -1, withscores=True) == before_index
    assert r.llen("celery") == 0

    # Control: the same read through a plain Celery client with ack emulation on DOES requeue them,
    # so this test would catch a regression.
    plain = make_app(redis_url, redis_url, transport_options={"visibility_timeout": 10})
    try:
        plain.control.inspect(timeout=0.3).active()
    finally:
        plain.close()
    assert r.hlen("unacked") < 50 and r.llen("celery") > 0


def test_many_collects_never_restore_unacked_entries(redis_url: str, r: redis.Redis, start_worker: Any) -> None:
    """The whole refresh path (Collector.collect) leaves 2-h-old entries in place."""
    import collectors.collector as collector_mod
    start_worker(("celery",), env={"DEMO_VISIBILITY_TIMEOUT": "100000"})
    before_hash = _old_unacked(r, 50, 7200)
    before_index = r.zrange("unacked_index", 0, -1, withscores=True)
    settings = resolve_settings(broker=redis_url, env={}, inspect_timeout=0.3, inspect_interval=0.2,
                                transport_options={"visibility_timeout": 10}, visibility_timeout=10.0)
    with collector_mod.Collector(settings) as collector:
        for _ in range(15):
            snap = collector.collect()
            time.sleep(0.1)
    assert snap.unacked_total == 50 and snap.inspect_ok
    assert r.hgetall("unacked") == before_hash
    assert r.zrange("unacked_index", 0, -1, withscores=True) == before_index
    assert r.llen("celery") == 0


def test_settings_app_is_loaded_with_ack_emulation_off(redis_url: str) -> None:
    settings = resolve_settings(broker=redis_url, env={}, app="demo_tasks", inspect_timeout=0.2)
    mon = WorkerMonitor(settings)
    assert mon.app.main == "demo_tasks"
    assert mon.app.conf.broker_transport_options["ack_emulation"] is False
    mon.inspect_now()
    view = mon.view(time.time())
    assert view.inspect_ok is True and view.workers == () and dict(view.worker_queues or {}) == {}
    mon.stop()


def test_heartbeat_only_worker_is_online_but_not_responding(redis_url: str, r: redis.Redis) -> None:
    """A worker that heartbeats but does not answer inspect; task events are buffered for poison."""
    mon = WorkerMonitor(_settings(redis_url, inspect_timeout=0.3))
    mon.start()
    try:
        mon.wait_for(lambda v: v.inspect_ok is True, 10)
        time.sleep(0.3)
        hb = {"hostname": "ghost@h", "pid": 4242, "freq": 2.0, "active": 3, "processed": 17,
              "sw_ver": "5.7.0", "timestamp": time.time(), "type": "worker-heartbeat"}
        r.publish("/0.celeryev/worker.heartbeat", _envelope(hb, "worker.heartbeat", "ghost@h"))
        multi = [{"hostname": "ghost@h", "uuid": "t1", "name": "x", "timestamp": time.time(),
                  "retries": 0, "type": "task-received"},
                 {"hostname": "ghost@h", "uuid": "t1", "timestamp": time.time(), "type": "task-started"}]
        r.publish("/0.celeryev/task.multi", _envelope(multi, "task.multi", "ghost@h"))
        r.publish("/3.celeryev/worker.heartbeat", _envelope({**hb, "hostname": "otherdb@h"},
                                                             "worker.heartbeat", "otherdb@h"))
        mon.request_inspect()
        view = mon.wait_for(lambda v: "ghost@h" in _by_host(v) and v.inspected_at is not None
                            and v.inspected_at > hb["timestamp"], 10)
        ghost = _by_host(view)["ghost@h"]
        assert ghost.online and not ghost.responding
        assert (ghost.active, ghost.processed, ghost.pid, ghost.sw_ver) == (3, 17, 4242, "5.7.0")
        assert "otherdb@h" not in _by_host(view)
        assert "ghost@h" not in view.claims.values()
        assert [e["type"] for e in mon.drain_events()] == ["task-received", "task-started"]
        assert mon.drain_events() == []
        # worker-offline: offline at once, still listed
        r.publish("/0.celeryev/worker.offline", _envelope({**hb, "type": "worker-offline"},
                                                          "worker.offline", "ghost@h"))
        view = mon.wait_for(lambda v: not _by_host(v)["ghost@h"].online, 5)
        assert not _by_host(view)["ghost@h"].online
    finally:
        mon.stop()


def test_key_prefixed_app(redis_url: str, r: redis.Redis, start_worker: Any) -> None:
    """global_keyprefix: heartbeats on ``myapp:/0.celeryev/*`` and inspect over the prefixed pidbox."""
    w = start_worker(("celery",), env={"DEMO_GLOBAL_KEYPREFIX": "myapp:"})
    mon = WorkerMonitor(resolve_settings(broker=redis_url, env={"TASKDASH_GLOBAL_KEYPREFIX": "myapp:"},
                                         inspect_timeout=0.5, inspect_interval=0.5))
    assert mon.event_pattern(0) == "myapp:/0.celeryev/*"
    mon.start()
    try:
        view = mon.wait_for(lambda v: bool(v.workers) and v.workers[0].sw_ver is not None
                            and v.workers[0].pool is not None, 15)
        (info,) = view.workers
        assert info.hostname == w.hostname and info.online and info.responding and info.queues == ("celery",)
        assert dict(view.worker_queues or {}) == {"celery": 1}
    finally:
        mon.stop()


def test_redis_down_is_reported_not_raised() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    mon = WorkerMonitor(resolve_settings(broker=url, env={}, inspect_timeout=0.2, socket_timeout=0.5))
    t0 = time.monotonic()
    mon.inspect_now()
    assert time.monotonic() - t0 < 5
    view = mon.view(time.time())
    assert view.inspect_ok is False and view.error and "hunter2" not in view.error
    assert view.workers == () and view.worker_queues is None
    mon.start()
    time.sleep(0.5)
    view = mon.view(time.time())
    assert view.inspect_ok is False and "hunter2" not in (view.error or "")
    mon.stop()


def test_event_decoding_and_channel_pattern() -> None:
    assert decode_event_message(_envelope({"type": "worker-heartbeat", "hostname": "a"}, "x", "a")) == [
        {"type": "worker-heartbeat", "hostname": "a"}]
    assert len(decode_event_message(_envelope([{"type": "task-received"}, {"type": "task-started"}, 5],
                                              "task.multi", "a"))) == 2
    assert decode_event_message(b"garbage") == []
    pickled = json.loads(_envelope({"type": "x"}, "x", "a"))
    pickled["content-type"] = "application/x-python-serialize"
    assert decode_event_message(json.dumps(pickled)) == []
    s = Settings(global_keyprefix="my*app:")
    assert WorkerMonitor(s).event_pattern(3) == "my\\*app:/3.celeryev/*"
    s2 = Settings(transport_options={"fanout_prefix": False, "fanout_patterns": False})
    assert WorkerMonitor(s2).event_pattern(0) == "celeryev"


def test_node_memory_is_bounded_and_gossip_ignored() -> None:
    from collectors.reads.workers import MAX_NODES

    mon = WorkerMonitor(Settings())
    mon._on_events([{"type": "worker-heartbeat", "hostname": f"old{i}@h", "freq": 2.0} for i in range(MAX_NODES)])
    for node in mon._nodes.values():
        node.last_hb = (node.last_hb or 0.0) - 3600  # all went silent an hour ago
    mon._on_events([{"type": "worker-elect", "hostname": "gossip@h"},
                    {"type": "worker-offline", "hostname": "never-seen@h"}])
    mon._on_events([{"type": "worker-online", "hostname": f"new{i}@h", "freq": 2.0} for i in range(10)])
    view = mon.view(time.time())
    hosts = _by_host(view)
    assert len(view.workers) == MAX_NODES
    assert all(hosts[f"new{i}@h"].online for i in range(10))
    assert "gossip@h" not in hosts and "never-seen@h" not in hosts
    old = [w for w in view.workers if w.hostname.startswith("old")]
    assert len(old) == MAX_NODES - 10
    assert all(not w.online and w.last_seen_s is not None and w.last_seen_s >= 3600 for w in old)
