"""``taskdash watch``: fire/resolve state, delivery with retries, and the real command against live systems.

A local HTTP receiver (http.server in a thread) stands in for Slack; real workers make a poison loop and
orphans; the watch runs as ``python -m taskdash watch`` exactly as under systemd.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collectors.analysis.alerts import AlertConfig, Evaluation, Finding
from taskdash.cmd_watch import (
    EXIT_CRITICAL,
    EXIT_WARNING,
    AlertState,
    DeliveryError,
    Dispatcher,
    mask_receiver,
)
from taskdash.procs import free_port

TOKEN = "T000/B000/s3cr3t-hook-token"


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, msg: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {msg}")


class Receiver:
    """A webhook receiver: records every JSON body POSTed to it (thread-safe); ``fail`` answers 503."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail = False
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.fail:
                    self.send_response(503)
                    self.end_headers()
                    return
                with outer._lock:
                    outer.bodies.append(json.loads(body))
                    outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/services/{TOKEN}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def of(self, rule: str, status: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [b for b in self.bodies if b["rule"] == rule and (status is None or b["status"] == status)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def receiver() -> Any:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture()
def watch(tmp_path: Path) -> Any:
    """Factory: ``taskdash watch ARGS`` in the background (stdout to a file); stopped with SIGTERM at teardown."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def _start(*args: str, config: str = "", env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        cfg = tmp_path / f"config{len(procs)}.toml"
        cfg.write_text(config)
        out = tmp_path / f"watch{len(procs)}.log"
        full = {**os.environ, "TASKDASH_CONFIG": str(cfg), **(env or {})}
        with open(out, "wb") as fh:
            p = subprocess.Popen([sys.executable, "-m", "taskdash", "watch", *args], stdout=fh,
                                 stderr=subprocess.STDOUT, env=full)
        procs.append((p, out))
        return p, out

    yield _start
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _context(url: str, alerts: str) -> str:
    return f'default = "t"\n[contexts.t]\nbroker = "{url}"\ninterval = 0.5\n[contexts.t.alerts]\n{alerts}\n'


def run_once(*args: str, config: str = "", tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "once.toml"
    cfg.write_text(config)
    return subprocess.run([sys.executable, "-m", "taskdash", "watch", "--once", *args], capture_output=True, text=True,
                          env={**os.environ, "TASKDASH_CONFIG": str(cfg)}, timeout=90)


# ---- pure: state machine and dispatcher ------------------------------------------------------------------
def _f(rule: str, subject: str = "s") -> Finding:
    return Finding(rule, subject, "warning", 1.0, "summary", "fix", "key")


def _ev(*findings: Finding, unknown: tuple[str, ...] = ()) -> Evaluation:
    return Evaluation(tuple(findings), frozenset(unknown), 0.0)


def test_state_for_cooldown_dedupe_and_resolve() -> None:
    st = AlertState(AlertConfig.from_layers({"for": {"orphaned_messages": 10}, "cooldown": 100, "resolve_after": 2}))
    o, p = _f("orphaned_messages", "unacked"), _f("poison_suspect", "tid")
    assert [s for s, *_ in st.update(_ev(o, p), 0)] == ["firing"]  # poison has for 0, orphans are pending
    assert st.update(_ev(o, p), 5) == []
    fired = st.update(_ev(o, p), 10)
    assert [(s, x.finding.rule, r) for s, x, r in fired] == [("firing", "orphaned_messages", False)]
    assert st.update(_ev(o, p), 50) == []  # dedupe: still firing, within the cooldown
    again = st.update(_ev(o, p), 101)
    assert [(x.finding.rule, r) for _, x, r in again] == [("poison_suspect", True)]  # reminder after the cooldown
    assert st.update(_ev(o, unknown=("poison_suspect",)), 102) == []  # cannot be judged: no resolve
    assert st.update(_ev(o), 103) == []  # one clear evaluation is not enough
    (res,) = st.update(_ev(o), 104)
    assert res[0] == "resolved" and res[1].finding.rule == "poison_suspect" and res[1].since == 0
    # pending (never fired) and gone: silently forgotten
    st.update(_ev(o, _f("worker_offline", "w")), 105)
    assert st.update(_ev(o), 106) == [] and ("worker_offline", "w") not in st.states


class FlakySink:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[str] = []
        self.calls = 0

    def deliver(self, body: bytes, payload: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise DeliveryError("connection refused")
        self.got.append(f"{payload['status']}:{payload['subject']}")


def test_dispatcher_retries_in_order_and_never_drops_a_resolve() -> None:
    sink = FlakySink(failures=3)
    d = Dispatcher([sink], retry_base=0.05, retry_max=0.2, max_queued=3).start()
    for status, subject in (("firing", "a"), ("firing", "b"), ("resolved", "a"), ("firing", "c"), ("resolved", "b")):
        d.submit({"status": status, "rule": "r", "subject": subject}, b"{}")
    assert d.drain(10)
    d.close(1)
    # outbox of 3: the two oldest firings made room, both resolves were kept, order preserved
    assert sink.got[-3:] == ["resolved:a", "firing:c", "resolved:b"]
    assert "resolved:a" in sink.got and "resolved:b" in sink.got
    assert sink.calls == len(sink.got) + 3


def test_mask_receiver() -> None:
    assert mask_receiver("https://hooks.slack.com/services/T0/B0/xyz") == "https://hooks.slack.com/***"
    assert mask_receiver("http://u:pw@127.0.0.1:8080/x?token=1") == "http://127.0.0.1:8080/***"
    assert mask_receiver("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


# ---- live ------------------------------------------------------------------------------------------------
def test_poison_loop_notifies_once_then_resolves_after_quarantine(
        watch: Any, receiver: Receiver, start_worker: Any, demo_app: Any, redis_url: str, r: Any) -> None:
    start_worker(("risky",), concurrency=1)
    config = _context(redis_url, 'poison_quiet_s = 4\ncooldown = 3600\nenabled = ["poison_suspect"]')
    proc, log = watch("--notify", receiver.url, config=config)
    res = demo_app.send_task("demo_tasks.tasks.poison")
    (fired,) = wait_for(lambda: receiver.of("poison_suspect"), 60, msg="poison notification")
    assert fired["status"] == "firing" and fired["subject"] == res.id and fired["severity"] == "critical"
    assert fired["fix"] == f"taskdash quarantine --task-id {res.id} --yes"
    assert fired["value"] >= 3 and fired["since"] <= time.time()
    assert res.id in fired["text"] and "FIRING" in fired["text"] and "quarantine" in fired["text"]
    assert receiver.paths[0] == f"/services/{TOKEN}"
    time.sleep(6)  # the loop goes on: still firing, and the cooldown (1 h) holds every repeat back
    assert len(receiver.of("poison_suspect")) == 1
    q = subprocess.run([sys.executable, "-m", "taskdash", "quarantine", "--task-id", res.id, "--yes",
                        "--broker", redis_url, "--reason", "poison"], capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr + q.stdout
    wait_for(lambda: receiver.of("poison_suspect", "resolved"), 60, msg="resolved after quarantine")
    time.sleep(2)
    assert [b["status"] for b in receiver.of("poison_suspect")] == ["firing", "resolved"]
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    text = log.read_text()
    assert "s3cr3t" not in text and "FIRING critical poison_suspect" in text and "RESOLVED" in text
    assert "http://127.0.0.1:" in text and "/***" in text


def test_orphans_after_kill9_notify_once_through_a_command(
        watch: Any, tmp_path: Path, start_worker: Any, demo_app: Any, redis_url: str, r: Any) -> None:
    victim = start_worker(("slow",), hostname="victim@watch", concurrency=2)
    start_worker(("celery",), hostname="bystander@watch")
    for _ in range(2):
        demo_app.send_task("demo_tasks.tasks.slow", args=(60,))
    wait_for(lambda: r.hlen("unacked") == 2, msg="2 unacked")
    sink = tmp_path / "notified.jsonl"
    config = _context(redis_url, 'enabled = ["orphaned_messages"]\n[contexts.t.alerts.for]\norphaned_messages = 0')
    proc, log = watch("--notify-cmd", f"cat >> {sink}; echo >> {sink}", config=config)
    wait_for(lambda: "taskdash watch on" in log.read_text(), 30, msg="watch started")
    time.sleep(3)
    assert not sink.exists()  # the holder is alive: nothing orphaned
    victim.kill9()

    def got() -> list[dict[str, Any]]:
        return [json.loads(line) for line in sink.read_text().splitlines() if line.strip()] if sink.exists() else []

    (n,) = wait_for(got, 60, msg="orphans notification")
    assert (n["rule"], n["status"], n["subject"], n["value"]) == ("orphaned_messages", "firing", "unacked", 2)
    assert n["fix"] == "taskdash requeue --orphaned --yes"
    time.sleep(5)
    assert len(got()) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_receiver_down_retried_no_crash_no_lost_resolve(
        watch: Any, demo_app: Any, redis_url: str, r: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/services/{TOKEN}"
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}",))
    config = _context(redis_url, 'enabled = ["backlog_no_consumer"]\n[contexts.t.alerts.for]\nbacklog_no_consumer = 0')
    proc, log = watch("--notify", url, "--retry-max", "1", config=config)
    wait_for(lambda: "notify http://127.0.0.1" in log.read_text() and "failed" in log.read_text(), 60,
             msg="a failed delivery")
    r.delete("emails")  # the backlog is gone: the alert resolves while the receiver is still down
    wait_for(lambda: "RESOLVED" in log.read_text(), 30, msg="resolved logged")
    time.sleep(2)
    assert proc.poll() is None  # no crash
    rec = Receiver(port)
    try:
        wait_for(lambda: len(rec.of("backlog_no_consumer")) >= 2, 30, msg="both delivered once the receiver is up")
        assert [(b["status"], b["subject"]) for b in rec.of("backlog_no_consumer")] == [
            ("firing", "emails"), ("resolved", "emails")]
    finally:
        rec.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    text = log.read_text()
    assert "retry in" in text and "after " in text and "failed attempt" in text
    assert "s3cr3t" not in text and "Traceback" not in text and "stopped" in text


def test_once_exit_codes(demo_app: Any, redis_url: str, tmp_path: Path, receiver: Receiver) -> None:
    ctx = f'[contexts.t]\nbroker = "{redis_url}"\n'
    ok = run_once("--context", "t", config=ctx, tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 finding(s)" in ok.stdout
    for i in range(2):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}",))
    crit = run_once("--context", "t", "--notify", receiver.url, config=ctx, tmp_path=tmp_path)
    assert crit.returncode == EXIT_CRITICAL == 7, crit.stdout + crit.stderr
    (b,) = receiver.of("backlog_no_consumer")
    assert b["status"] == "firing" and b["subject"] == "emails"
    warn = run_once("--context", "t", config=ctx + '[contexts.t.alerts.severity]\nbacklog_no_consumer = "warning"\n',
                    tmp_path=tmp_path)
    assert warn.returncode == EXIT_WARNING == 3, warn.stdout + warn.stderr
    info = run_once("--context", "t", config=ctx + '[contexts.t.alerts.severity]\nbacklog_no_consumer = "info"\n',
                    tmp_path=tmp_path)
    assert info.returncode == 0 and "backlog_no_consumer" in info.stdout
    off = run_once("--context", "t", config=ctx + '[contexts.t.alerts]\ndisabled = ["backlog_no_consumer"]\n',
                   tmp_path=tmp_path)
    assert off.returncode == 0, off.stdout
    down = run_once("--broker", f"redis://u:hunter2@127.0.0.1:{free_port()}/0", tmp_path=tmp_path)
    assert down.returncode == 2 and "hunter2" not in down.stdout + down.stderr
    bad = run_once("--context", "t", config=ctx + '[contexts.t.alerts]\nbogus = 1\n', tmp_path=tmp_path)
    assert bad.returncode != 0 and "bogus" in bad.stderr
