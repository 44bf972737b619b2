"""Faults at the Collector/CLI level: Redis down, killed, restarted, slow, loading, busy; workers hung.

Every Redis here is a private ``RedisServer`` started by the test on a free port (so it can be killed
and restarted at will); the session ``redis_server`` fixture is only used by the worker test. A
``collect()`` must never raise and never block longer than the socket / inspect timeouts, and must
recover by itself within two refreshes of Redis coming back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collectors.collector import Collector
from collectors.core.config import resolve_settings
from collectors.core.models import Snapshot
from taskdash.procs import RedisServer, free_port
from tests.hostile_data import bind, envelope

SOCKET_TIMEOUT = 1.0
INTERVAL = 0.5


@pytest.fixture()
def servers(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Factory of private redis-servers (own port and data dir), all stopped at teardown."""
    made: list[RedisServer] = []

    def _make(*extra: str, start: bool = True) -> RedisServer:
        srv = RedisServer(workdir=tmp_path / f"redis{len(made)}", extra_args=extra)
        srv.workdir.mkdir(exist_ok=True)
        made.append(srv)
        return srv.start() if start else srv

    yield _make
    for srv in made:
        srv.stop()


def make_collector(broker: str, backend: str | None = None, *, background: bool = False, **kw: Any) -> Collector:
    kw.setdefault("inspect_timeout", 0.3)
    kw.setdefault("inspect_interval", 1.0)
    settings = resolve_settings(broker=broker, backend=backend, env={}, interval=INTERVAL,
                                socket_timeout=SOCKET_TIMEOUT, **kw)
    return Collector(settings, background=background)


def timed_collect(col: Collector, limit: float) -> Snapshot:
    t0 = time.monotonic()
    snap = col.collect()
    took = time.monotonic() - t0
    assert took < limit, f"collect() blocked {took:.2f}s (limit {limit}s)"
    return snap


def recovers(col: Collector, pred: Callable[[Snapshot], bool], refreshes: int = 2) -> Snapshot:
    """Redis is back: within ``refreshes`` refreshes (one interval apart) the snapshot is healthy again."""
    snap = None
    for i in range(refreshes):
        if i:
            time.sleep(INTERVAL)
        snap = timed_collect(col, SOCKET_TIMEOUT * 3 + 1)
        if snap.broker.ok and pred(snap):
            return snap
    raise AssertionError(f"not recovered after {refreshes} refreshes: {snap.broker if snap else None} "
                         f"{snap.errors if snap else None}")


def seed(r: redis.Redis, queue: str = "work", n: int = 3) -> None:
    bind(r, queue)
    r.rpush(queue, *[json.dumps(envelope(f"{queue}-{i}")) for i in range(n)])


def qcount(snap: Snapshot, name: str) -> int | None:
    return {q.name: q.messages for q in snap.queues}.get(name)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskdash", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


# ---- unreachable at start ----------------------------------------------------------------------------
def test_unreachable_at_start_cli_exit_2_one_masked_line() -> None:
    """Refused connection, and a port that accepts but never answers (a black hole): exit 2, one line."""
    port = free_port()
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # accepts (kernel backlog) and never replies
    try:
        for url, what in ((f"redis://bob:s3cr3t@127.0.0.1:{port}/0", "cannot connect"),
                          (f"redis://bob:s3cr3t@127.0.0.1:{hole.getsockname()[1]}/0", "timed out")):
            t0 = time.monotonic()
            res = run_cli("snapshot", "--json", "--broker", url)
            assert time.monotonic() - t0 < 30
            assert res.returncode == 2, res
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and res.stdout == "", res.stderr
            assert "s3cr3t" not in res.stderr and "bob:***@" in lines[0] and "Traceback" not in res.stderr
            assert what in lines[0], lines[0]
    finally:
        hole.close()


# ---- killed and restarted ----------------------------------------------------------------------------
@pytest.mark.parametrize("background", [False, True], ids=["cli-like", "tui-like"])
def test_killed_mid_session_then_restarted_empty_and_with_data(servers: Any, background: bool) -> None:
    srv = servers("--dbfilename", "dump.rdb")
    seed(srv.client(), "work", 3)
    with make_collector(srv.url, background=background) as col:
        snap = timed_collect(col, 5)
        assert snap.broker.ok and qcount(snap, "work") == 3

        srv.client().save()  # an RDB to come back with later
        srv.stop()
        for _ in range(2):
            snap = timed_collect(col, SOCKET_TIMEOUT * 3 + 1)
            assert not snap.broker.ok and snap.broker.error
            assert "cannot connect" in snap.broker.error or "timed out" in snap.broker.error
            assert not snap.backend.ok
            assert {e.source for e in snap.errors} >= {"broker", "results"}
            json.dumps(snap.to_json())

        # restarted EMPTY on the same port (the RDB moved away): empty queues, scripts reloaded
        (srv.workdir / "dump.rdb").rename(srv.workdir / "saved.rdb")
        srv.start()
        snap = recovers(col, lambda s: qcount(s, "work") in (None, 0))
        assert snap.unacked_total == 0

        # killed again and restarted WITH its data (the RDB back in place)
        srv.stop()
        assert not timed_collect(col, SOCKET_TIMEOUT * 3 + 1).broker.ok
        (srv.workdir / "saved.rdb").rename(srv.workdir / "dump.rdb")
        srv.start()
        assert srv.client().llen("work") == 3
        snap = recovers(col, lambda s: qcount(s, "work") == 3)
        assert not [e for e in snap.errors if e.source == "broker"]


def test_slow_redis_debug_sleep_times_out_then_recovers(servers: Any) -> None:
    """DEBUG SLEEP from another connection, longer than the socket timeout and the refresh interval."""
    srv = servers("--enable-debug-command", "yes")
    seed(srv.client(), "work", 2)
    with make_collector(srv.url) as col:
        assert timed_collect(col, 5).broker.ok
        sleeper = threading.Thread(target=lambda: srv.client(socket_timeout=10).execute_command("DEBUG", "SLEEP", 3))
        sleeper.start()
        time.sleep(0.2)
        try:
            snap = timed_collect(col, SOCKET_TIMEOUT * 2 + 1)
            assert not snap.broker.ok and "timed out" in (snap.broker.error or ""), snap.broker
        finally:
            sleeper.join()
        snap = recovers(col, lambda s: qcount(s, "work") == 2)


def test_busy_script_and_loading_are_reported_not_misread(servers: Any, tmp_path: Path) -> None:
    """-BUSY (a runaway Lua script) and -LOADING (a dataset being loaded): 'not ready', then recovery."""
    srv = servers("--busy-reply-threshold", "100", "--dbfilename", "dump.rdb")
    seed(srv.client(), "work", 2)
    with make_collector(srv.url) as col:
        assert timed_collect(col, 5).broker.ok

        def runaway() -> None:
            try:
                srv.client(socket_timeout=30).eval("while true do end", 0)
            except redis.ResponseError:
                pass  # killed by SCRIPT KILL

        t = threading.Thread(target=runaway)
        t.start()
        time.sleep(0.4)
        try:
            snap = timed_collect(col, SOCKET_TIMEOUT * 2 + 1)
            assert not snap.broker.ok, snap
            assert "not ready" in (snap.broker.error or "") and "BUSY" in (snap.broker.error or ""), snap.broker
            assert not any(q.wrong_type for q in snap.queues), "a busy server is not a wrong-type key"
        finally:
            for _ in range(50):
                try:
                    srv.client(socket_timeout=2).script_kill()
                    break
                except redis.ResponseError:
                    time.sleep(0.1)
            t.join(10)
        recovers(col, lambda s: qcount(s, "work") == 2)

        # -LOADING: restart with a dataset whose loading is slowed down (key-load-delay, debug config)
        r = srv.client()
        r.config_set("key-load-delay", "100")  # microseconds per key
        r.config_set("loading-process-events-interval-bytes", "1024")
        pipe = r.pipeline(transaction=False)
        for i in range(10_000):
            pipe.set(f"filler:{i}", "x" * 20)
        pipe.execute()
        r.save()
        srv.stop()
        srv.extra_args += ["--key-load-delay", "100", "--loading-process-events-interval-bytes", "1024"]
        starter = threading.Thread(target=lambda: srv.start(timeout=30))
        starter.start()
        try:
            saw_loading = False
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and starter.is_alive():
                snap = timed_collect(col, SOCKET_TIMEOUT * 3 + 1)
                if not snap.broker.ok and "loading" in (snap.broker.error or "").lower():
                    saw_loading = True
                    assert "not ready" in (snap.broker.error or "")
                    break
                time.sleep(0.1)
            assert saw_loading, "never saw -LOADING while the dataset was loading"
        finally:
            starter.join(30)
        recovers(col, lambda s: qcount(s, "work") == 2)


# ---- separate backend ----------------------------------------------------------------------------------
def test_backend_on_another_redis_each_down_while_the_other_is_up(servers: Any) -> None:
    broker_srv, backend_srv = servers(), servers()
    seed(broker_srv.client(), "work", 4)
    be = backend_srv.client()
    for i in range(3):
        be.set(f"celery-task-meta-ok{i}", json.dumps({"status": "SUCCESS", "result": i, "task_id": f"ok{i}"}))
    be.set("celery-task-meta-bad", json.dumps({"status": "FAILURE", "task_id": "bad", "traceback": "tb",
                                               "result": {"exc_type": "ValueError", "exc_message": ["x"]}}))
    assert broker_srv.client().dbsize() > 0 and not broker_srv.client().keys("celery-task-meta-*")
    with make_collector(broker_srv.url, backend_srv.url) as col:
        snap = timed_collect(col, 5)
        assert snap.broker.ok and snap.backend.ok
        assert qcount(snap, "work") == 4
        assert dict(snap.tasks.states) == {"SUCCESS": 3, "FAILURE": 1}

        backend_srv.stop()
        snap = timed_collect(col, SOCKET_TIMEOUT * 3 + 1)
        assert snap.broker.ok and qcount(snap, "work") == 4, "the broker still shows"
        assert not snap.backend.ok and snap.backend.error
        assert dict(snap.tasks.states) == {"SUCCESS": 3, "FAILURE": 1}, "last known counts are kept"

        backend_srv.start()
        be = backend_srv.client()
        be.set("celery-task-meta-new", json.dumps({"status": "SUCCESS", "task_id": "new"}))
        broker_srv.stop()
        deadline = time.monotonic() + 10
        while True:
            snap = timed_collect(col, SOCKET_TIMEOUT * 3 + 1)
            if snap.backend.ok and dict(snap.tasks.states).get("SUCCESS") == 1 and snap.tasks.complete:
                break  # the restarted backend was re-scanned: only the new key exists now
            assert time.monotonic() < deadline, (snap.backend, snap.tasks)
        assert not snap.broker.ok and snap.broker.error

        broker_srv.start()  # came back empty
        recovers(col, lambda s: s.backend.ok)
    # the CLI: backend down -> exit 0 with backend.ok false; broker down -> exit 2
    backend_srv.stop()
    res = run_cli("snapshot", "--json", "--broker", broker_srv.url, "--backend", backend_srv.url)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["broker"]["ok"] is True and out["backend"]["ok"] is False and out["backend"]["error"]


def test_non_redis_result_backend_still_shows_the_broker(servers: Any) -> None:
    """rpc:// or a database backend (common in -A apps): the broker is shown, the backend says why not."""
    srv = servers()
    seed(srv.client(), "work", 2)
    from click.testing import CliRunner

    from taskdash.cli import cli

    for backend in ("rpc://", "db+postgresql://scott:tiger-pw@db.example/celery"):
        res = CliRunner().invoke(cli, ["snapshot", "--json", "--broker", srv.url, "--backend", backend],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["broker"]["ok"] and {q["name"]: q["messages"] for q in out["queues"]}["work"] == 2
        assert out["backend"]["ok"] is False and "not Redis" in out["backend"]["error"]
        assert "tiger-pw" not in res.stdout + res.stderr


# ---- workers that hang or vanish ------------------------------------------------------------------------
def test_hung_worker_shown_unresponsive_collect_never_blocks(redis_url: str, start_worker: Any) -> None:
    """SIGSTOP a worker (heartbeats and inspect replies stop): shown offline, every refresh stays fast."""
    w = start_worker(("celery",), hostname="hang@test")
    col = make_collector(redis_url, background=True, inspect_timeout=0.5, inspect_interval=1.0)
    stopped = False
    try:
        deadline = time.monotonic() + 20
        while True:
            snap = timed_collect(col, 3)
            mine = {x.hostname: x for x in snap.workers}.get("hang@test")
            if mine and mine.online and mine.responding:
                break
            assert time.monotonic() < deadline, snap.workers
            time.sleep(0.3)

        os.killpg(w.proc.pid, signal.SIGSTOP)
        stopped = True
        deadline = time.monotonic() + 15
        while True:
            col.inspect_soon()  # ask for an inspect on every refresh: still bounded by inspect_timeout
            snap = timed_collect(col, 0.5 + 1.5)
            mine = {x.hostname: x for x in snap.workers}["hang@test"]  # never dropped
            if not mine.online and not mine.responding:
                break
            assert time.monotonic() < deadline, mine
            time.sleep(0.3)
        assert mine.last_seen_s is not None  # "last seen" is kept for an offline worker

        os.killpg(w.proc.pid, signal.SIGCONT)
        stopped = False
        deadline = time.monotonic() + 20
        while True:
            snap = timed_collect(col, 3)
            mine = {x.hostname: x for x in snap.workers}["hang@test"]
            if mine.online and mine.responding:
                break
            assert time.monotonic() < deadline, mine
            time.sleep(0.3)

        # vanished (kill -9) and restarted under the same name
        w.kill9()
        start_worker(("celery",), hostname="hang@test")
        deadline = time.monotonic() + 20
        while True:
            col.inspect_soon()
            snap = timed_collect(col, 3)
            mine = {x.hostname: x for x in snap.workers}["hang@test"]
            if mine.online and mine.responding and mine.pid != w.pid:
                break
            assert time.monotonic() < deadline, mine
            time.sleep(0.3)
    finally:
        if stopped:
            os.killpg(w.proc.pid, signal.SIGCONT)
        col.close()


# ---- an action in flight ---------------------------------------------------------------------------------
def test_actions_fail_cleanly_on_busy_or_stalled_redis(servers: Any, tmp_path: Path) -> None:
    """A write attempted while Redis is busy (-BUSY) or stalled (DEBUG SLEEP): a clear, masked failure,
    no audit line, nothing changed (not even kombu's unacked mutex left behind)."""
    from collectors.writes.actions import ActionError, Actions
    from tests.hostile_data import plant_unacked

    srv = servers("--enable-debug-command", "yes", "--busy-reply-threshold", "100",
                  "--user", "alice", "on", ">fault-pw-123", "~*", "&*", "+@all")
    r = srv.client()
    bind(r, "work")
    r.rpush("work", *[json.dumps(envelope(f"q{i}", queue="work")) for i in range(3)])
    tags = [f"u{i}" for i in range(4)]
    for tag in tags:
        plant_unacked(r, tag, json.dumps(envelope(f"id-{tag}", tag=tag, queue="work")).encode(), age=900,
                      queue="work")
    before = {k: r.dump(k) for k in r.scan_iter()}
    audit = tmp_path / "audit.jsonl"
    url = f"redis://alice:fault-pw-123@127.0.0.1:{srv.port}/0"
    actions = Actions(resolve_settings(broker=url, env={}, socket_timeout=SOCKET_TIMEOUT, audit_log=str(audit)))
    attempts: dict[str, Callable[[], Any]] = {
        "requeue": lambda: actions.requeue(tags, force=True),
        "purge": lambda: actions.purge("work", export_path=str(tmp_path / "purge.jsonl")),
        "quarantine": lambda: actions.quarantine(tags=tags[:1], reason="fault"),
    }

    def runaway() -> None:
        try:
            srv.client(socket_timeout=30).eval("while true do end", 0)
        except redis.ResponseError:
            pass

    def stall() -> None:
        srv.client(socket_timeout=10).execute_command("DEBUG", "SLEEP", 2)

    for fault, target, expect in ((runaway, "busy", "BUSY"), (stall, "stalled", "")):
        for name, attempt in attempts.items():
            t = threading.Thread(target=fault)
            t.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            try:
                with pytest.raises(ActionError) as info:
                    attempt()
                assert time.monotonic() - t0 < SOCKET_TIMEOUT * 4 + 2, f"{name} blocked on a {target} Redis"
                msg = str(info.value)
                assert "fault-pw-123" not in msg and expect in msg, (name, target, msg)
            finally:
                if target == "busy":
                    for _ in range(100):
                        try:
                            srv.client(socket_timeout=2).script_kill()
                            break
                        except redis.ResponseError:
                            time.sleep(0.05)
                t.join(15)
            after = {k: r.dump(k) for k in r.scan_iter()}
            assert after == before, f"{name} on a {target} Redis changed something: {set(after) ^ set(before)}"
            assert not audit.exists(), f"{name} on a {target} Redis wrote an audit line"
    # and once Redis is fine again the same action works (nothing was left locked)
    res = actions.requeue(tags, force=True)
    assert res.count == 4 and r.llen("work") == 7 and r.hlen("unacked") == 0
