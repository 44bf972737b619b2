"""Worker remote control against real workers: each command's reply AND its observable effect.

One prefork worker is shared by the module (its own Redis db on the session server, so the per-test
FLUSHALL of other modules' fixtures does not matter while it runs); shutdown gets its own worker.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from collectors.core.audit import read_audit
from collectors.core.config import Settings
from collectors.writes.actions import ActionError, BrokerUnreachableError, ReadOnlyError
from collectors.writes.control import CONTROL_HELP, ControlCommand, WorkerControl, parse_command
from taskdash.cli import cli
from taskdash.procs import CeleryWorker, RedisServer, free_port

DB = 3


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """One prefork worker (concurrency 1, queue celery) on db 3 for the whole module."""
    url = redis_server.url_db(DB)
    w = CeleryWorker(url, queues=("celery",), concurrency=1, hostname=f"ctl{free_port()}@taskdash",
                     logfile=tmp_path_factory.mktemp("ctl") / "worker.log")
    w.start(wait=True)
    yield w
    w.stop(timeout=5)


@pytest.fixture()
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return Settings(broker_url=redis_server.url_db(DB), audit_log=str(tmp_path / "audit.jsonl"),
                    inspect_timeout=1.0)


def _poll(fn: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    value = fn()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = fn()
    return value


def _procs(ctl: WorkerControl, host: str) -> int:
    stats = ctl.broadcast("stats", {}, [host]).get(host) or {}
    return len(stats.get("pool", {}).get("processes", []))


def test_pool_grow_and_shrink_change_the_pool(worker: CeleryWorker, settings: Settings) -> None:
    ctl = WorkerControl(settings)
    host = worker.hostname
    assert _procs(ctl, host) == 1
    res = ctl.pool_grow(2, [host])
    assert res.count == 1 and res.details["replies"][host] == {"ok": "pool will grow"}
    assert host in res.message and "pool will grow" in res.message
    assert _poll(lambda: _procs(ctl, host), lambda n: n == 3) == 3
    res = ctl.pool_shrink(2, [host])
    assert res.details["replies"][host] == {"ok": "pool will shrink"}
    assert _poll(lambda: _procs(ctl, host), lambda n: n == 1) == 1
    audit = read_audit(settings.audit_log or "")
    assert [e["action"] for e in audit] == ["worker-pool-grow", "worker-pool-shrink"]
    assert audit[0]["target"] == [host] and audit[0]["arguments"] == {"n": 2}
    assert audit[0]["replies"] == {host: "pool will grow"} and audit[0]["count"] == 1


def test_consumer_add_and_cancel_change_active_queues(worker: CeleryWorker, settings: Settings) -> None:
    ctl = WorkerControl(settings)
    host = worker.hostname
    res = ctl.add_consumer("extra-q", [host])
    assert res.details["replies"][host] == {"ok": "add consumer extra-q"}
    details = _poll(lambda: ctl.worker_details(host),
                    lambda d: "extra-q" in [q["name"] for q in d["active_queues"]])
    assert {q["name"] for q in details["active_queues"]} == {"celery", "extra-q"}
    res = ctl.cancel_consumer("extra-q", [host])
    assert res.details["replies"][host] == {"ok": "no longer consuming from extra-q"}
    queues = _poll(lambda: [q["name"] for q in ctl.broadcast("active_queues", {}, [host])[host]],
                   lambda names: "extra-q" not in names)
    assert queues == ["celery"]


def test_rate_and_time_limits_are_applied(worker: CeleryWorker, settings: Settings) -> None:
    ctl = WorkerControl(settings)
    host = worker.hostname
    res = parse_command("rate-limit demo_tasks.tasks.add 7/m").run(ctl, [host])
    assert res.details["replies"][host] == {"ok": "new rate limit set successfully"}
    res = ctl.time_limit("demo_tasks.tasks.add", 11, 22, [host])
    assert res.details["replies"][host] == {"ok": "time limits set successfully"}
    reg = ctl.broadcast("registered", {"taskinfoitems": ["rate_limit", "soft_time_limit", "time_limit"]},
                        [host])[host]
    line = next(t for t in reg if t.startswith("demo_tasks.tasks.add "))
    assert "rate_limit=7/m" in line and "soft_time_limit=11" in line and "time_limit=22" in line
    # unknown task: the worker refuses, we say so
    res = ctl.rate_limit("no.such.task", "1/s", [host])
    assert res.count == 0 and res.details["refused"] == [host] and "refused" in res.message
    ctl.rate_limit("demo_tasks.tasks.add", None, [host])
    reg = ctl.broadcast("registered", {"taskinfoitems": ["rate_limit"]}, [host])[host]
    assert "demo_tasks.tasks.add" in reg  # no rate_limit attribute shown any more


def test_pool_restart_and_autoscale_refusals_are_reported(worker: CeleryWorker, settings: Settings) -> None:
    ctl = WorkerControl(settings)
    host = worker.hostname
    res = ctl.pool_restart([host])
    assert res.count == 0 and res.details["refused"] == [host]
    assert "Pool restarts not enabled" in res.message and "worker_pool_restarts" in res.message
    res = ctl.autoscale(4, 1, [host])
    assert res.details["refused"] == [host] and "Autoscale not enabled" in res.message
    with pytest.raises(ActionError, match="min"):
        ctl.autoscale(1, 4, [host])
    res = ctl.pool_grow(1, ["nobody@nowhere"])
    assert res.count == 0 and res.details["no_reply"] == ["nobody@nowhere"] and "no reply" in res.message
    assert [e["action"] for e in read_audit(settings.audit_log or "")] == [
        "worker-pool-restart", "worker-autoscale", "worker-pool-grow"]


def test_worker_details(worker: CeleryWorker, settings: Settings) -> None:
    ctl = WorkerControl(settings)
    d = ctl.worker_details(worker.hostname)
    assert d["online"] and d["errors"] == {}
    assert d["stats"]["pool"]["max-concurrency"] == 1 and "prefetch_count" in d["stats"]
    assert "rusage" in d["stats"] and "transport_options" in d["stats"]["broker"]
    assert "demo_tasks.tasks.add" in d["registered"] and "demo_tasks.tasks.slow" in d["registered"]
    assert [q["name"] for q in d["active_queues"]] == ["celery"]
    assert d["conf"].get("result_extended") is True
    assert isinstance(d["revoked"], list)
    gone = ctl.worker_details("nobody@nowhere")
    assert gone["online"] is False and list(gone["errors"]) == ["stats"]


def test_read_only_refuses_and_sends_nothing(worker: CeleryWorker, settings: Settings) -> None:
    ro = WorkerControl(settings.with_(read_only=True))
    host = worker.hostname
    for call in (lambda: ro.pool_grow(1, [host]), lambda: ro.shutdown([host]), lambda: ro.add_consumer("x", [host]),
                 lambda: ro.rate_limit("demo_tasks.tasks.add", "1/s", [host]),
                 lambda: ro.time_limit("demo_tasks.tasks.add", 1, 2, [host]), lambda: ro.autoscale(2, 1, [host]),
                 lambda: ro.pool_restart([host]), lambda: ro.cancel_consumer("celery", [host]),
                 lambda: ro.pool_shrink(1, [host])):
        with pytest.raises(ReadOnlyError):
            call()
    assert not Path(settings.audit_log or "").exists()
    assert _procs(WorkerControl(settings), host) == 1
    # the details screen is a read: allowed
    assert ro.worker_details(host)["online"]
    runner = CliRunner()
    out = runner.invoke(cli, ["worker", "pool-grow", "1", "-d", host, "--yes", "--read-only",
                              "--broker", settings.broker_url])
    assert out.exit_code == 1 and "read-only" in out.output


def test_cli_control_and_show(worker: CeleryWorker, settings: Settings) -> None:
    runner = CliRunner()
    host = worker.hostname
    base = ["--broker", settings.broker_url, "--audit-log", settings.audit_log or ""]
    out = runner.invoke(cli, ["worker", "add-consumer", "cli-q", "-d", host, *base], input="n\n")
    assert out.exit_code == 1 and "cancelled" in out.output
    out = runner.invoke(cli, ["worker", "add-consumer", "cli-q", "-d", host, "--yes", *base])
    assert out.exit_code == 0, out.output
    assert "add consumer cli-q" in out.output
    out = runner.invoke(cli, ["worker", "cancel-consumer", "cli-q", "--destination", host, "--yes", *base])
    assert out.exit_code == 0 and "no longer consuming from cli-q" in out.output
    out = runner.invoke(cli, ["worker", "show", host, "--json", *base])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["hostname"] == host and "demo_tasks.tasks.add" in data["registered"]
    out = runner.invoke(cli, ["worker", "show", host, *base])
    assert out.exit_code == 0 and "Registered tasks" in out.output and "demo_tasks.tasks.add" in out.output
    out = runner.invoke(cli, ["worker", "pool-restart", "-d", host, "--yes", *base])
    assert out.exit_code == 1 and "worker_pool_restarts" in out.output
    out = runner.invoke(cli, ["worker", "show", "nobody@nowhere", *base])
    assert out.exit_code == 1
    actions = [e["action"] for e in read_audit(settings.audit_log or "")]
    assert actions == ["worker-add-consumer", "worker-cancel-consumer", "worker-pool-restart"]


def test_shutdown_makes_the_worker_exit(redis_server: RedisServer, settings: Settings, tmp_path: Path) -> None:
    w = CeleryWorker(redis_server.url_db(DB), queues=("celery",), concurrency=1, pool="solo",
                     hostname=f"down{free_port()}@taskdash", logfile=tmp_path / "down.log")
    w.start(wait=True)
    try:
        ctl = WorkerControl(settings)
        assert w.hostname in ctl.broadcast("ping", {}, [w.hostname])
        res = ctl.shutdown([w.hostname])
        assert res.action == "shutdown" and w.hostname in res.message
        assert w.proc is not None
        w.proc.wait(15)
        assert w.proc.returncode == 0
        assert "Got shutdown from remote" in w.log_text()
        assert read_audit(settings.audit_log or "")[-1]["action"] == "worker-shutdown"
    finally:
        w.stop(timeout=5)


def test_unreachable_broker_is_masked(tmp_path: Path) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    ctl = WorkerControl(Settings(broker_url=url, audit_log=str(tmp_path / "a.jsonl"), socket_timeout=1.0))
    with pytest.raises(BrokerUnreachableError) as info:
        ctl.pool_grow(1, ["x@y"])
    assert "s3cret" not in str(info.value)
    assert not (tmp_path / "a.jsonl").exists()


def test_autoscale_and_pool_restart_on_a_worker_that_allows_them(redis_server: RedisServer, settings: Settings,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "restartable_app.py").write_text(
        "from demo_tasks.celery_app import app\napp.conf.worker_pool_restarts = True\n")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)}
    w = CeleryWorker(redis_server.url_db(DB), app="restartable_app", queues=("celery",), concurrency=1,
                     hostname=f"auto{free_port()}@taskdash", logfile=tmp_path / "auto.log", env=env,
                     extra_args=["--autoscale", "2,1"])
    w.start(wait=True)
    try:
        ctl = WorkerControl(settings)
        host = w.hostname

        def stats() -> dict[str, Any]:
            return ctl.broadcast("stats", {}, [host]).get(host) or {}

        pids = stats()["pool"]["processes"]
        res = ctl.autoscale(3, 2, [host])
        assert res.count == 1 and res.details["replies"][host] == {"ok": "autoscale now max=3 min=2"}
        auto = stats()["autoscaler"]
        assert (auto["max"], auto["min"]) == (3, 2)
        res = ctl.pool_grow(1, [host])  # an autoscaling worker refuses a manual grow
        assert res.count == 0 and "autoscale" in res.message
        res = ctl.pool_restart([host])
        assert res.count == 1 and res.details["replies"][host] == {"ok": "reload started"}
        new = _poll(lambda: stats()["pool"]["processes"], lambda p: bool(p) and not set(p) & set(pids), timeout=15)
        assert new and not set(new) & set(pids), (pids, new)
        assert [e["action"] for e in read_audit(settings.audit_log or "")] == [
            "worker-autoscale", "worker-pool-grow", "worker-pool-restart"]
    finally:
        w.stop(timeout=5)


def test_parse_command() -> None:
    assert parse_command("grow").args == (1,) and parse_command("pool-grow 3").method == "pool_grow"
    assert parse_command("shrink 2") == ControlCommand("pool_shrink", (2,), "shrink the pool by 2")
    assert parse_command("autoscale 8 2").args == (8, 2)
    assert parse_command("add-consumer emails").args == ("emails",)
    assert parse_command("cancel emails").method == "cancel_consumer"
    assert parse_command("rate-limit app.add 10/m").args == ("app.add", "10/m")
    assert parse_command("rate-limit app.add none").args == ("app.add", None)
    assert parse_command("time-limit app.add 10 none").args == ("app.add", 10.0, None)
    assert parse_command("restart").method == "pool_restart" and parse_command("SHUTDOWN").method == "shutdown"
    for bad, msg in (("", "no command"), ("explode", "unknown"), ("autoscale 1", "usage: autoscale MAX MIN"),
                     ("autoscale 1 4", "MIN"), ("grow x", "whole number"), ("grow 0", "at least 1"),
                     ("time-limit t 20 10", "SOFT"), ("time-limit t -1 10", "negative"),
                     ("shutdown now", "usage: shutdown")):
        with pytest.raises(ActionError, match=msg):
            parse_command(bad)
    for line in ("grow N", "autoscale MAX MIN", "add-consumer QUEUE", "rate-limit TASK RATE",
                 "time-limit TASK SOFT HARD", "shutdown", "restart"):
        assert line in CONTROL_HELP


def test_details_never_show_credentials() -> None:
    from collectors.writes.control import _masked_tree

    s = Settings(broker_url="redis://:hunter22@h:6379/0")
    tree = {"broker_url": "redis://:hunter22@h:6379/0", "other": "redis://u:zzsecretzz@x/1",
            "broker_transport_options": {"password": "pw-123", "global_keyprefix": "app:"},
            "security_key": None, "aws_secret_access_key": "AKIA-very", "list": ["redis://:hunter22@h/1"]}
    text = json.dumps(_masked_tree(tree, s))
    for secret in ("hunter22", "zzsecretzz", "pw-123", "AKIA-very"):
        assert secret not in text
    assert '"global_keyprefix": "app:"' in text and '"security_key": null' in text
