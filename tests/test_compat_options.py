"""Without -A: every transport option taskdash reads from an app, as a flag, a ``TASKDASH_*`` variable and a
context key, changes what taskdash reads on a real redis-server (README, "Configuration").

The messages are written by a real Celery client configured with the same options (the installed
Celery/kombu: the compatibility job runs this file on 5.3 to 5.7), and taskdash runs as a subprocess in an
environment where that app is not importable, as it would from pipx, uvx or a container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collectors.core.config import ConfigError, resolve_settings, settings_environment
from taskdash.procs import find_redis_server, free_port
from tests.hostile_data import envelope
from tests.tls_helpers import make_server_certs

LAYOUT = {"global_keyprefix": "billing:", "sep": ":", "priority_steps": [0, 5, 9]}
LAYOUT_FLAGS = ("--global-keyprefix", "billing:", "--sep", ":", "--priority-steps", "0,5,9")
LAYOUT_ENV = {"TASKDASH_GLOBAL_KEYPREFIX": "billing:", "TASKDASH_SEP": ":", "TASKDASH_PRIORITY_STEPS": "0,5,9"}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``python -m taskdash ARGS`` with none of the caller's TASKDASH_*/CELERY_* settings and no config file."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TASKDASH_", "CELERY_", "DEMO_"))}
    full["TASKDASH_CONFIG"] = "/nonexistent/taskdash.toml"
    full["TASKDASH_AUDIT_LOG"] = os.environ.get("TASKDASH_AUDIT_LOG", "/tmp/taskdash-test-audit.jsonl")
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "taskdash", *args], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=timeout)


def snapshot(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict[str, Any]:
    res = run_cli("snapshot", "--json", *args, env=env, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def queues(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in snap["queues"]}


def send(redis_url: str, transport_options: dict[str, Any], priorities: tuple[int, ...] = (0, 2, 5, 6, 9),
         **conf: Any) -> None:
    """Publish ``demo_tasks.tasks.prioritized`` once per priority through a real Celery client."""
    from demo_tasks.celery_app import make_app

    app = make_app(redis_url, redis_url, transport_options=transport_options, **conf)
    try:
        for p in priorities:
            app.send_task("demo_tasks.tasks.prioritized", args=(p,), priority=p)
    finally:
        app.close()


def write_config(tmp_path: Path, body: str) -> dict[str, str]:
    path = tmp_path / "taskdash.toml"
    path.write_text(body)
    return {"TASKDASH_CONFIG": str(path)}


# ---- key layout: global_keyprefix, sep, priority_steps ------------------------------------------------
def test_key_layout_by_flags_env_and_context(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    send(redis_url, LAYOUT)
    # ground truth, as kombu wrote it: the prefix, ":" between queue and band, bands 0/5/9
    assert r.llen("billing:priority") == 2 and r.llen("billing:priority:5") == 2 and r.llen("billing:priority:9") == 1
    want = {"0": 2, "5": 2, "9": 1}

    plain = queues(snapshot("--broker", redis_url))
    assert "priority" not in plain or plain["priority"]["messages"] == 0, plain  # kombu's defaults miss them

    by_flags = queues(snapshot("--broker", redis_url, *LAYOUT_FLAGS))["priority"]
    assert by_flags["by_priority"] == want and by_flags["messages"] == 5
    by_env = queues(snapshot("--broker", redis_url, env=LAYOUT_ENV))["priority"]
    assert by_env["by_priority"] == want
    cfg = write_config(tmp_path, f'[contexts.billing]\nbroker = "{redis_url}"\nglobal_keyprefix = "billing:"\n'
                                 'sep = ":"\npriority_steps = [0, 5, 9]\n')
    by_ctx = queues(snapshot("--context", "billing", env=cfg))["priority"]
    assert by_ctx["by_priority"] == want
    # half right is visibly wrong: with the prefix but kombu's default sep, the bindings do not parse
    prefix_only = queues(snapshot("--broker", redis_url, "--global-keyprefix", "billing:"))
    assert prefix_only.get("priority", {}).get("messages", 0) != 5, prefix_only


def test_sep_accepts_kombus_default_as_escapes(redis_url: str, r: redis.Redis) -> None:
    send(redis_url, {"priority_steps": [0, 5, 9]}, priorities=(0, 9))
    got = queues(snapshot("--broker", redis_url, "--sep", "\\x06\\x16", "--priority-steps", "0,5,9"))["priority"]
    assert got["by_priority"] == {"0": 1, "5": 0, "9": 1}
    res = run_cli("snapshot", "--json", "--broker", redis_url, "--priority-steps", "0,high")
    assert res.returncode == 64 and "--priority-steps" in res.stderr and "Traceback" not in res.stderr


# ---- visibility_timeout -------------------------------------------------------------------------------
def test_visibility_timeout_moves_the_redelivery_time(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    msg = envelope("vt-1", queue="celery", tag="tag-vt")
    r.hset("unacked", "tag-vt", json.dumps([msg, "", "celery"]))
    r.zadd("unacked_index", {"tag-vt": time.time() - 100})

    def ttr(snap: dict[str, Any]) -> float:
        (entry,) = snap["unacked"]
        return float(entry["time_to_redelivery_s"])

    default = snapshot("--broker", redis_url)
    assert default["visibility_timeout"] == 3600 and 3400 < ttr(default) < 3510
    flag = snapshot("--broker", redis_url, "--visibility-timeout", "1000")
    assert flag["visibility_timeout"] == 1000 and 850 < ttr(flag) < 910
    env = snapshot("--broker", redis_url, env={"TASKDASH_VISIBILITY_TIMEOUT": "400"})
    assert 250 < ttr(env) < 310
    cfg = write_config(tmp_path, f'[contexts.x]\nbroker = "{redis_url}"\nvisibility_timeout = 150\n')
    assert 0 <= ttr(snapshot("--context", "x", env=cfg)) < 60
    # a flag beats the environment, which beats the context chosen by default
    cfg_default = write_config(tmp_path, f'default = "x"\n[contexts.x]\nbroker = "{redis_url}"\n'
                                         "visibility_timeout = 150\n")
    assert snapshot(env={**cfg_default, "TASKDASH_VISIBILITY_TIMEOUT": "400"})["visibility_timeout"] == 400
    assert snapshot("--visibility-timeout", "900", env={**cfg_default, "TASKDASH_VISIBILITY_TIMEOUT": "400"}
                    )["visibility_timeout"] == 900


# ---- result backend key prefix ------------------------------------------------------------------------
def test_result_keyprefix_by_flag_env_and_context(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    from demo_tasks.celery_app import make_app

    app = make_app(redis_url, redis_url, transport_options={})
    app.conf.result_backend_transport_options = {"global_keyprefix": "billing-results"}
    try:
        app.backend.store_result("r-ok", 42, "SUCCESS")
        app.backend.store_result("r-bad", ValueError("x"), "FAILURE")
    finally:
        app.close()
    keys = {k.decode() for k in r.keys("*celery-task-meta-*")}
    if keys != {"billing-results_celery-task-meta-r-ok", "billing-results_celery-task-meta-r-bad"}:
        pytest.skip(f"this Celery does not prefix result keys (result_backend_transport_options): {keys}")
    want = {"SUCCESS": 1, "FAILURE": 1}
    assert snapshot("--broker", redis_url)["tasks"]["states"] == {}
    assert snapshot("--broker", redis_url, "--result-keyprefix", "billing-results")["tasks"]["states"] == want
    assert snapshot("--broker", redis_url, env={"TASKDASH_RESULT_KEYPREFIX": "billing-results"}
                    )["tasks"]["states"] == want
    cfg = write_config(tmp_path, f'[contexts.x]\nbroker = "{redis_url}"\nresult_keyprefix = "billing-results"\n')
    assert snapshot("--context", "x", env=cfg)["tasks"]["states"] == want


# ---- any other transport option: unacked_key / unacked_index_key ----------------------------------------
def test_generic_transport_option_flag_env_and_context_table(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    msg = envelope("u-1", queue="celery", tag="tag-u")
    r.hset("billing_unacked", "tag-u", json.dumps([msg, "", "celery"]))
    r.zadd("billing_unacked_index", {"tag-u": time.time() - 30})
    assert snapshot("--broker", redis_url)["unacked_total"] == 0
    flags = ("--transport-option", "unacked_key=billing_unacked",
             "--transport-option", "unacked_index_key=billing_unacked_index")
    got = snapshot("--broker", redis_url, *flags)
    assert got["unacked_total"] == 1 and got["unacked"][0]["task_id"] == "u-1"
    env = {"TASKDASH_TRANSPORT_OPTIONS": json.dumps({"unacked_key": "billing_unacked",
                                                     "unacked_index_key": "billing_unacked_index"})}
    assert snapshot("--broker", redis_url, env=env)["unacked_total"] == 1
    cfg = write_config(tmp_path, f'[contexts.x]\nbroker = "{redis_url}"\n'
                                 '[contexts.x.transport_options]\nunacked_key = "billing_unacked"\n'
                                 'unacked_index_key = "billing_unacked_index"\n')
    assert snapshot("--context", "x", env=cfg)["unacked_total"] == 1
    res = run_cli("snapshot", "--json", "--broker", redis_url, "--transport-option", "novalue")
    assert res.returncode == 64 and "KEY=VALUE" in res.stderr


# ---- queue_order_strategy -----------------------------------------------------------------------------
def test_queue_order_strategy_reaches_the_kombu_channel_taskdash_opens(redis_url: str, tmp_path: Path) -> None:
    """taskdash reads nothing that depends on the consumers' queue order; the option is taken so that the
    kombu connections it opens (writes, inspect) are configured like the app's, and checked early."""
    from collectors.writes.actions import Actions

    settings = resolve_settings(broker=redis_url, env={"TASKDASH_QUEUE_ORDER_STRATEGY": "priority"})
    assert settings.queue_order_strategy == "priority"
    assert resolve_settings(broker=redis_url, env={}).queue_order_strategy == "round_robin"
    with Actions(settings)._connection() as conn:
        assert type(conn.default_channel.qos).__name__ and conn.default_channel.queue_order_strategy == "priority"
    cfg = write_config(tmp_path, f'[contexts.x]\nbroker = "{redis_url}"\nqueue_order_strategy = "sorted"\n')
    assert resolve_settings(context="x", env=cfg).transport_options["queue_order_strategy"] == "sorted"
    res = run_cli("snapshot", "--json", "--broker", redis_url, "--queue-order-strategy", "fifo")
    assert res.returncode == 64 and "--queue-order-strategy" in res.stderr and "round_robin" in res.stderr


# ---- precedence and the round trip for child processes ------------------------------------------------
def test_flags_beat_env_beat_app(tmp_path: Path, redis_url: str) -> None:
    proj = tmp_path / "proj"
    (proj / "shop").mkdir(parents=True)
    (proj / "shop" / "__init__.py").write_text("")
    (proj / "shop" / "celery.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('shop', broker={redis_url!r})\n"
        "app.conf.broker_transport_options = {'global_keyprefix': 'app:', 'priority_steps': [0, 4],\n"
        "                                     'visibility_timeout': 120, 'sep': '|'}\n")
    s = resolve_settings(app="shop.celery", app_path=str(proj), env={})
    assert (s.global_keyprefix, s.priority_steps, s.visibility_timeout, s.sep) == ("app:", (0, 4), 120.0, "|")
    s = resolve_settings(app="shop.celery", app_path=str(proj), env={"TASKDASH_GLOBAL_KEYPREFIX": "env:",
                                                                     "TASKDASH_PRIORITY_STEPS": "0,7"})
    assert (s.global_keyprefix, s.priority_steps, s.sep) == ("env:", (0, 7), "|")
    s = resolve_settings(app="shop.celery", app_path=str(proj), env={"TASKDASH_GLOBAL_KEYPREFIX": "env:"},
                         global_keyprefix="flag:")
    assert s.global_keyprefix == "flag:" and s.transport_options["global_keyprefix"] == "flag:"
    # a dedicated option beats the same key inside the generic mapping of its own source
    s = resolve_settings(broker=redis_url, env={}, transport_options=("sep=\"x\"", "visibility_timeout=5"),
                         sep="y")
    assert s.sep == "y" and s.visibility_timeout == 5.0
    # what `taskdash serve` hands to the process it starts per browser resolves to the same layout
    s = resolve_settings(broker=redis_url, env={}, sep="\x06\x16", priority_steps="0,5,9", global_keyprefix="p:",
                         visibility_timeout="77", transport_options=("unacked_key=u",), result_keyprefix="rk")
    again = resolve_settings(broker=redis_url, env=settings_environment(s))
    for name in ("sep", "priority_steps", "global_keyprefix", "visibility_timeout", "unacked_key", "result_keyprefix"):
        assert getattr(again, name) == getattr(s, name), name


def test_app_path_imports_the_app_from_a_project_folder(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    send(redis_url, LAYOUT)
    proj = tmp_path / "billing-project"
    (proj / "billing").mkdir(parents=True)
    (proj / "billing" / "__init__.py").write_text("")
    (proj / "billing" / "celery.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('billing', broker={redis_url!r}, backend={redis_url!r})\n"
        f"app.conf.broker_transport_options = {LAYOUT!r}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_cli("snapshot", "--json", "-A", "billing.celery", cwd=elsewhere, env={"PYTHONPATH": ""})
    assert res.returncode == 64 and "cannot load Celery app 'billing.celery'" in res.stderr
    got = queues(snapshot("--app-path", str(proj), "-A", "billing.celery", cwd=elsewhere))["priority"]
    assert got["by_priority"] == {"0": 2, "5": 2, "9": 1}
    got = queues(snapshot(cwd=elsewhere, env={"TASKDASH_APP_PATH": str(proj), "TASKDASH_APP": "billing.celery"}))
    assert got["priority"]["messages"] == 5
    cfg = write_config(tmp_path, f'[contexts.b]\napp = "billing.celery"\napp_path = "{proj}"\n')
    assert queues(snapshot("--context", "b", cwd=elsewhere, env=cfg))["priority"]["messages"] == 5
    res = run_cli("snapshot", "--json", "--app-path", str(tmp_path / "missing"), "-A", "x", cwd=elsewhere)
    assert res.returncode == 64 and "is not a folder" in res.stderr
    with pytest.raises(ConfigError, match="needs -A"):
        resolve_settings(broker=redis_url, env={}, app_path=str(proj))


# ---- TLS --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TLS-only redis-server whose certificate is signed by a throw-away CA."""
    d = tmp_path_factory.mktemp("tls-compat")
    make_server_certs(d, ("ca", "other-ca"))
    port, binary = free_port(), find_redis_server()
    assert binary
    proc = subprocess.Popen([binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
                             "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no",
                             "--save", "", "--appendonly", "no", "--dir", str(d), "--logfile", str(d / "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(d / "ca.pem"), socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "redis.log").read_text()
            time.sleep(0.1)
    try:
        yield {"url": f"rediss://127.0.0.1:{port}/0", "ca": str(d / "ca.pem"), "other_ca": str(d / "other-ca.pem"),
               "client": client}
    finally:
        proc.terminate()
        proc.wait(10)


def test_tls_options_by_flags_env_and_context_reach_reads_inspect_and_writes(
        tls_redis: dict[str, Any], start_worker: Any, tmp_path: Path) -> None:
    url, ca, r = tls_redis["url"], tls_redis["ca"], tls_redis["client"]
    r.flushall()
    tls_flags = ("--ssl-cert-reqs", "required", "--ssl-ca-certs", ca)
    # the worker is configured the Celery way (its own URL query); taskdash only gets the flags
    start_worker(("other",), broker_url=f"{url}?ssl_cert_reqs=required&ssl_ca_certs={ca}", hostname="tls@compat")
    r.sadd("_kombu.binding.celery", "celery\x06\x16\x06\x16celery")
    r.rpush("celery", *[json.dumps(envelope(f"t{i}")) for i in range(3)])

    res = run_cli("snapshot", "--json", "--broker", url)
    assert res.returncode == 2 and "certificate verify failed" in res.stderr.lower(), res.stderr
    res = run_cli("snapshot", "--json", "--broker", url, "--ssl-cert-reqs", "required", "--ssl-ca-certs",
                  tls_redis["other_ca"])
    assert res.returncode == 2 and "certificate verify failed" in res.stderr.lower(), res.stderr

    snap = snapshot("--broker", url, "--observe", "1", *tls_flags)
    assert snap["broker"]["ok"] and snap["backend"]["ok"] and queues(snap)["celery"]["messages"] == 3
    assert snap["inspect_ok"] is True and "tls@compat" in {w["hostname"] for w in snap["workers"]}, snap["errors"]
    env = {"TASKDASH_SSL_CERT_REQS": "required", "TASKDASH_SSL_CA_CERTS": ca}
    assert queues(snapshot("--broker", url, env=env))["celery"]["messages"] == 3
    cfg = write_config(tmp_path, f'[contexts.tls]\nbroker = "{url}"\nssl_cert_reqs = "required"\n'
                                 f'ssl_ca_certs = "{ca}"\n')
    assert queues(snapshot("--context", "tls", env=cfg))["celery"]["messages"] == 3
    # a write goes through taskdash's own kombu connection: it must verify against the same CA
    export = tmp_path / "purged.jsonl"
    res = run_cli("purge", "celery", "--yes", "--export", str(export), "--broker", url, *tls_flags)
    assert res.returncode == 0, res.stderr
    assert r.llen("celery") == 0 and len(export.read_text().splitlines()) >= 3
