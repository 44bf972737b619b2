"""Security: credentials masked in every output, rediss:// with certificate verification and an ACL user
against a real TLS redis-server, and Redis Sentinel (real sentinels) including a failover mid-session.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from collectors.collector import Collector, describe_error
from collectors.core.config import mask_text, mask_url, resolve_settings
from collectors.writes.actions import Actions
from taskdash.cli import cli
from taskdash.cmd_snapshot import render_tables
from taskdash.procs import RedisServer, find_redis_server, free_port
from tests.hostile_data import bind, envelope
from tests.tls_helpers import make_server_certs

SECRET = "s3cr3t-Pa55"
USER_ARGS = ("--user", "alice", "on", f">{SECRET}", "~*", "&*", "+@all")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "taskdash", *args], capture_output=True, text=True, env=full,
                          timeout=timeout)


def assert_no_secret(*texts: str, secret: str = SECRET) -> None:
    for text in texts:
        assert secret not in text, text
        assert "s3cr3t" not in text, text


# ---- masking everywhere ----------------------------------------------------------------------------
@pytest.fixture()
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private plain redis-server with an ACL user ``alice`` (password SECRET)."""
    srv = RedisServer(workdir=tmp_path / "acl", extra_args=USER_ARGS)
    srv.workdir.mkdir()
    srv.start()
    yield srv
    srv.stop()


def test_mask_helpers_cover_url_forms() -> None:
    for url, shown in (
        (f"redis://alice:{SECRET}@h:6379/0", "redis://alice:***@h:6379/0"),
        (f"redis://:{SECRET}@h/0", "redis://:***@h/0"),
        (f"redis://{SECRET}@h/0", "redis://***@h/0"),
        (f"rediss://h:1/0?password={SECRET}&ssl_cert_reqs=required", "rediss://h:1/0?password=***&ssl_cert_reqs=required"),
        (f"sentinel://:{SECRET}@h1:1;sentinel://:{SECRET}@h2:2", "sentinel://:***@h1:1;sentinel://:***@h2:2"),
    ):
        assert mask_url(url) == shown
    encoded = "redis://alice:p%40ss%3Aw%2Frd-long@h:1/0"
    text = f"error talking to {encoded}: AUTH p@ss:w/rd-long rejected"
    masked = mask_text(text, encoded)
    assert "p@ss:w/rd-long" not in masked and "p%40ss" not in masked and "alice:***@h:1/0" in masked


def test_credentials_masked_in_json_tables_logs_errors_and_audit(acl_server: RedisServer, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://alice:{SECRET}@127.0.0.1:{acl_server.port}/0"
    dead_backend = f"redis://bob:{SECRET}@127.0.0.1:{free_port()}/1"
    r = acl_server.client()
    bind(r, "work")
    r.rpush("work", *[json.dumps(envelope(f"w{i}", queue="work")) for i in range(3)])

    # a live collector with a dead backend: errors, log records and the snapshot never show the secret
    caplog.set_level(logging.DEBUG)
    settings = resolve_settings(broker=url, backend=dead_backend, env={}, interval=0.5, inspect_timeout=0.2,
                                socket_timeout=1.0)
    with Collector(settings, background=True) as col:
        snap = col.collect()
        time.sleep(1.0)  # let the background threads fail and log a few times
        snap = col.collect()
    assert snap.broker.ok and not snap.backend.ok
    assert_no_secret(repr(settings), str(settings))  # a Settings in a log line or a traceback
    assert snap.broker.url == f"redis://alice:***@127.0.0.1:{acl_server.port}/0"
    assert snap.backend.url.startswith("redis://bob:***@")
    blob = json.dumps(snap.to_json())
    assert_no_secret(blob, render_tables(snap), repr(snap))
    logs = [rec.getMessage() for rec in caplog.records]
    logs += [logging.Formatter().formatException(rec.exc_info) for rec in caplog.records if rec.exc_info]
    assert_no_secret(*logs)

    # the CLI: JSON and tables
    runner = CliRunner()
    for extra in (["--json"], []):
        res = runner.invoke(cli, ["snapshot", *extra, "--broker", url, "--backend", dead_backend],
                            catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert_no_secret(res.output)
        assert "alice:***@" in res.output
    # CLI errors: wrong password (4: authentication failed), unreachable (2), malformed URL, password in the query
    wrong = f"redis://alice:{SECRET}-wrong@127.0.0.1:{acl_server.port}/0"
    for bad, code in ((wrong, 4), (f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0", 2),
                      (f"redis://alice:{SECRET}@127.0.0.1:notaport/0", 64),  # bad configuration
                      (f"redis://127.0.0.1:{free_port()}/0?password={SECRET}", 2)):
        res = run_cli("snapshot", "--json", "--broker", bad)
        assert res.returncode == code, (bad, res.returncode, res.stderr)
        assert_no_secret(res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and res.stderr.strip()

    # the audit log of a real write, and the action's own result message
    audit = tmp_path / "audit.jsonl"
    res = runner.invoke(cli, ["purge", "work", "--yes", "--broker", url, "--audit-log", str(audit),
                              "--export", str(tmp_path / "purged.jsonl")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert_no_secret(res.output, audit.read_text())
    assert "alice:***@" in audit.read_text()
    assert r.llen("work") == 0

    # exceptions carrying the URL (as kombu/redis-py may word them) are masked by describe_error
    exc = redis.exceptions.ConnectionError(f"Error connecting to {url}: AUTH {SECRET} failed")
    assert_no_secret(describe_error(exc, settings))
    unreachable = Actions(resolve_settings(broker=f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0", env={},
                                           audit_log=str(audit)))
    with pytest.raises(Exception) as info:
        unreachable.purge("work", export_path=str(tmp_path / "x.jsonl"))
    assert_no_secret(str(info.value))


# ---- TLS + ACL ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TLS-only redis-server (cert signed by a throw-away CA) with the ACL user alice; default user off."""
    d = tmp_path_factory.mktemp("tls")
    make_server_certs(d, ("ca", "wrong-ca"))
    port = free_port()
    binary = find_redis_server()
    assert binary
    proc = subprocess.Popen([binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
                             "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no",
                             "--save", "", "--appendonly", "no", "--dir", str(d), "--logfile", str(d / "redis.log"),
                             *USER_ARGS, "--user", "default", "off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = (f"rediss://alice:{SECRET}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
           f"&ssl_ca_certs={d / 'ca.pem'}")
    client = redis.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "redis.log").read_text()
            time.sleep(0.1)
    try:
        yield {"url": url, "port": port, "dir": d, "client": client}
    finally:
        proc.terminate()
        proc.wait(10)


def test_rediss_with_verification_and_acl_user(tls_server: dict[str, Any], start_worker: Any) -> None:
    url, r = tls_server["url"], tls_server["client"]
    r.flushall()
    bind(r, "celery")
    r.rpush("celery", *[json.dumps(envelope(f"t{i}")) for i in range(2)])
    r.set("celery-task-meta-done", json.dumps({"status": "SUCCESS", "task_id": "done", "result": 1}))
    # a worker on the TLS broker too, so inspect (kombu, same ssl options from the URL) must really answer
    start_worker(("other",), broker_url=url, hostname="tls@test")
    res = run_cli("snapshot", "--json", "--broker", url, "--observe", "1")
    assert res.returncode == 0, res.stderr
    assert_no_secret(res.stdout, res.stderr)
    snap = json.loads(res.stdout)
    assert snap["broker"]["ok"] and snap["backend"]["ok"], snap["errors"]
    assert snap["broker"]["url"].startswith("rediss://alice:***@127.0.0.1:")
    assert {q["name"]: q["messages"] for q in snap["queues"]}["celery"] == 2
    assert snap["tasks"]["states"].get("SUCCESS") == 1
    workers = {w["hostname"]: w for w in snap["workers"]}
    assert workers["tls@test"]["online"] and workers["tls@test"]["queues"] == ["other"], snap["workers"]
    assert snap["inspect_ok"] is True


def test_rediss_wrong_ca_or_password_fails_clearly_and_masked(tls_server: dict[str, Any]) -> None:
    url = tls_server["url"]
    wrong_ca = url.replace("ca.pem", "wrong-ca.pem")
    no_ca = url.split("&ssl_ca_certs=")[0]
    plain = f"redis://alice:{SECRET}@127.0.0.1:{tls_server['port']}/0"
    for bad, expect in ((wrong_ca, "certificate verify failed"), (no_ca, "certificate verify failed"),
                        (url.replace(SECRET, SECRET + "x"), "invalid username-password"),
                        (plain, "")):
        t0 = time.monotonic()
        res = run_cli("snapshot", "--json", "--broker", bad)
        assert time.monotonic() - t0 < 30
        auth = expect == "invalid username-password"
        assert res.returncode == (4 if auth else 2), (bad, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and res.stdout == "" and "Traceback" not in res.stderr, res.stderr
        assert ("authentication failed for user alice" if auth else "unreachable") in lines[0], lines[0]
        assert "alice:***@" in lines[0]
        assert expect in lines[0].lower() or expect in lines[0], lines[0]
        assert_no_secret(res.stderr)


# ---- Sentinel --------------------------------------------------------------------------------------------
@pytest.fixture()
def sentinel_setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A master, a replica and two real sentinels (quorum 1) monitoring ``mymaster``."""
    master = RedisServer(workdir=tmp_path / "m")
    master.workdir.mkdir()
    master.start()
    replica = RedisServer(workdir=tmp_path / "r", extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    replica.workdir.mkdir()
    replica.start()
    binary = find_redis_server()
    assert binary
    sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []
    for i in range(2):
        port = free_port()
        conf = tmp_path / f"sentinel{i}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 5000\n"
        )
        proc = subprocess.Popen([binary, str(conf), "--sentinel", "--logfile", str(tmp_path / f"s{i}.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        sentinels.append((port, proc))
    deadline = time.monotonic() + 20
    for port, _p in sentinels:
        s = redis.Redis(port=port, socket_timeout=1)
        while True:
            try:
                if s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"):
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
    while replica.client().info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    url = ";".join(f"sentinel://127.0.0.1:{port}" for port, _p in sentinels)
    try:
        yield {"url": url, "master": master, "replica": replica, "sentinels": [p for p, _ in sentinels]}
    finally:
        for _port, proc in sentinels:
            proc.terminate()
            proc.wait(10)
        replica.stop()
        master.stop()


def _master_port(sentinel_port: int) -> int:
    addr = redis.Redis(port=sentinel_port, socket_timeout=1).execute_command(
        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    return int(addr[1])


def test_sentinel_snapshot_and_failover_mid_session(sentinel_setup: dict[str, Any]) -> None:
    url, master, replica = sentinel_setup["url"], sentinel_setup["master"], sentinel_setup["replica"]
    m = master.client()
    bind(m, "work")
    m.rpush("work", *[json.dumps(envelope(f"s{i}")) for i in range(3)])
    m.set("celery-task-meta-x", json.dumps({"status": "SUCCESS", "task_id": "x"}))
    m.wait(1, 2000)

    # the CLI, master name from TASKDASH_MASTER_NAME (no -A app)
    res = run_cli("snapshot", "--json", "--broker", url, env={"TASKDASH_MASTER_NAME": "mymaster"})
    assert res.returncode == 0, res.stderr
    snap = json.loads(res.stdout)
    assert snap["broker"]["ok"] and {q["name"]: q["messages"] for q in snap["queues"]}["work"] == 3
    assert snap["tasks"]["states"] == {"SUCCESS": 1} and snap["inspect_ok"] is True, snap["errors"]
    # the master name from the -A app's broker_transport_options (how kombu itself is configured)
    appdir = Path(master.workdir).parent / "app"
    appdir.mkdir()
    (appdir / "sentapp.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('sentapp', broker={url!r}, backend={url!r})\n"
        "app.conf.broker_transport_options = {'master_name': 'mymaster'}\n"
        "app.conf.result_backend_transport_options = {'master_name': 'mymaster'}\n")
    res = run_cli("snapshot", "--json", "-A", "sentapp",
                  env={"PYTHONPATH": f"{appdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                       "TASKDASH_MASTER_NAME": "", "CELERY_BROKER_URL": "", "CELERY_RESULT_BACKEND": ""})
    assert res.returncode == 0, res.stderr
    snap = json.loads(res.stdout)
    assert {q["name"]: q["messages"] for q in snap["queues"]}["work"] == 3 and snap["backend"]["ok"]
    # without a master name: a clear message, not a traceback
    res = run_cli("snapshot", "--json", "--broker", url, env={"TASKDASH_MASTER_NAME": ""})
    assert res.returncode != 0 and "master_name" in res.stderr and "Traceback" not in res.stderr

    settings = resolve_settings(broker=url, env={"TASKDASH_MASTER_NAME": "mymaster"}, interval=0.5,
                                inspect_timeout=0.2, socket_timeout=1.0)
    with Collector(settings, background=True) as col:
        snap = col.collect()
        assert snap.broker.ok and {q.name: q.messages for q in snap.queues}["work"] == 3

        redis.Redis(port=sentinel_setup["sentinels"][0]).execute_command("SENTINEL", "FAILOVER", "mymaster")
        deadline = time.monotonic() + 20
        while _master_port(sentinel_setup["sentinels"][0]) != replica.port:
            assert time.monotonic() < deadline, "failover did not happen"
            time.sleep(0.1)
        new = replica.client()
        while True:  # the promoted replica accepts writes once the failover is done
            try:
                new.rpush("work", json.dumps(envelope("after-failover")))
                break
            except redis.ReadOnlyError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        master.stop()  # the old master is gone: taskdash must now read the new one

        deadline = time.monotonic() + 15
        while True:
            t0 = time.monotonic()
            snap = col.collect()
            assert time.monotonic() - t0 < 5, "collect() blocked during the failover"
            if snap.broker.ok and {q.name: q.messages for q in snap.queues}.get("work") == 4:
                break
            assert time.monotonic() < deadline, (snap.broker, snap.errors)
            time.sleep(0.5)
        assert snap.backend.ok
        # the kombu connection used for inspect follows the failover too
        deadline = time.monotonic() + 10
        while True:
            col.inspect_soon()
            snap = col.collect()
            if snap.inspect_ok:
                break
            assert time.monotonic() < deadline, [e.message for e in snap.errors]
            time.sleep(0.3)


def test_unhandled_errors_are_masked_even_without_their_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's last line of defence masks a password quoted alone (e.g. an AUTH error echo)."""
    import click

    from taskdash.cli import common_options, handle_errors

    @click.command()
    @common_options
    @handle_errors
    def boom(**opts: Any) -> None:
        raise RuntimeError(f"server said: AUTH {SECRET} rejected; env one: AUTH env-{SECRET}-x")

    monkeypatch.setenv("CELERY_RESULT_BACKEND", f"redis://:env-{SECRET}-x@h/1")
    res = CliRunner().invoke(boom, ["--broker", f"redis://alice:{SECRET}@127.0.0.1:1/0"])
    assert res.exit_code == 1 and "RuntimeError" in res.stderr and "***" in res.stderr
    assert_no_secret(res.output)


def test_rediss_tls_options_from_the_app_broker_use_ssl(tls_server: dict[str, Any], tmp_path: Path) -> None:
    """TLS configured the Celery way (``broker_use_ssl`` / ``redis_backend_use_ssl`` in the -A app, a bare
    rediss:// URL): broker reads, results and inspect all verify against the app's CA."""
    r = tls_server["client"]
    r.flushall()
    bind(r, "celery")
    r.rpush("celery", json.dumps(envelope("app-tls")))
    r.set("celery-task-meta-a", json.dumps({"status": "FAILURE", "task_id": "a", "result": {"exc_type": "E"}}))
    bare = f"rediss://alice:{SECRET}@127.0.0.1:{tls_server['port']}/0"
    ca = tls_server["dir"] / "ca.pem"
    (tmp_path / "tlsapp.py").write_text(
        "import ssl\nfrom celery import Celery\n"
        f"app = Celery('tlsapp', broker={bare!r}, backend={bare!r})\n"
        f"opts = {{'ssl_cert_reqs': ssl.CERT_REQUIRED, 'ssl_ca_certs': {str(ca)!r}}}\n"
        "app.conf.broker_use_ssl = opts\napp.conf.redis_backend_use_ssl = opts\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "CELERY_BROKER_URL": "", "CELERY_RESULT_BACKEND": ""}
    res = run_cli("snapshot", "--json", "-A", "tlsapp", env=env)
    assert res.returncode == 0, res.stderr
    snap = json.loads(res.stdout)
    assert snap["broker"]["ok"] and snap["backend"]["ok"] and snap["inspect_ok"] is True, snap["errors"]
    assert {q["name"]: q["messages"] for q in snap["queues"]}["celery"] == 1
    assert snap["tasks"]["states"] == {"FAILURE": 1}
    assert_no_secret(res.stdout, res.stderr)
