"""The write sub-commands: confirmation, --yes, one result line, exit codes 0/1/2, masked URLs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from collectors.core.audit import read_audit
from taskdash.cli import cli
from taskdash.procs import free_port


@pytest.fixture()
def run(redis_url: str, tmp_path: Path) -> Any:
    audit = tmp_path / "audit.jsonl"

    def _run(*args: str, input: str | None = None) -> Any:
        runner = CliRunner()
        return runner.invoke(cli, [*args, "--broker", redis_url, "--audit-log", str(audit)], input=input,
                             catch_exceptions=False)

    _run.audit = audit  # type: ignore[attr-defined]
    return _run


def plant(r: Any, tag: str, queue: str = "work", age: float = 120.0) -> None:
    payload = {"body": "W10=", "headers": {"id": f"id-{tag}", "task": "t"},
               "properties": {"priority": 0, "delivery_tag": tag,
                              "delivery_info": {"exchange": "", "routing_key": queue}}}
    r.hset("unacked", tag, json.dumps([payload, "", queue]))
    r.zadd("unacked_index", {tag: time.time() - age})


def test_requeue_asks_first_and_reports_one_line(run, r) -> None:
    plant(r, "tag-1")
    res = run("requeue", "--tag", "tag-1", input="n\n")
    assert res.exit_code == 1 and "Requeue 1 unacked message(s) of tag(s) tag-1" in res.stderr
    assert "cancelled" in res.stderr and r.hexists("unacked", "tag-1")
    assert not run.audit.exists()

    res = run("requeue", "--task-id", "id-tag-1", "--force", input="y\n")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip().splitlines() == ["requeued 1 message(s) to work"]
    assert r.llen("work") == 1 and not r.hexists("unacked", "tag-1")
    assert [e["action"] for e in read_audit(run.audit)] == ["requeue"]

    res = run("requeue", "--task-id", "id-tag-1", "--yes")
    assert res.exit_code == 1 and "no unacked message for task id-tag-1" in res.stderr

    plant(r, "tag-2", age=300)
    plant(r, "tag-3", age=300)
    res = run("requeue", "--orphaned", "--older-than", "60", "--yes")
    assert res.exit_code == 0, res.stderr
    assert "requeued 2 orphaned message(s)" in res.stdout and r.llen("work") == 3
    res = run("requeue", "--orphaned", "--yes")
    assert res.exit_code == 1 and "no orphaned" in res.stdout
    res = run("requeue", "--tag", "a", "--orphaned")
    assert res.exit_code == 64 and "exactly one" in res.stderr  # usage error (64: 2 means unreachable)


def test_purge_restore_quarantine_replay_cli(run, r, demo_app, tmp_path: Path) -> None:
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@x",))
    before = r.lrange("emails", 0, -1)
    export = tmp_path / "purge.jsonl"
    res = run("purge", "emails", "--export", str(export), input="y\n")
    assert res.exit_code == 0, res.stderr
    assert "Purge 3 message(s) from emails (priority 0: 3)" in res.stderr
    assert res.stdout.strip().startswith("purged 3 message(s) from emails")
    assert r.llen("emails") == 0
    res = run("purge", "emails", "--yes")
    assert res.exit_code == 1  # nothing to purge
    assert run("restore", str(export), "--yes").exit_code == 0
    assert r.lrange("emails", 0, -1) == before
    res = run("restore", str(export), "--yes")
    assert res.exit_code == 1 and "already restored" in res.stderr

    task_id = json.loads(before[0])["headers"]["id"]
    res = run("quarantine", "--task-id", task_id, "--reason", "bad", "--queue", "emails", "--yes")
    assert res.exit_code == 0, res.stderr
    res = run("quarantine-list", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout.strip())["task_id"] == task_id
    res = run("replay", "--task-id", task_id, "--yes")
    assert res.exit_code == 0 and "replayed 1 message(s) to emails" in res.stdout
    assert sorted(r.lrange("emails", 0, -1)) == sorted(before)
    res = run("replay", "--task-id", task_id, "--yes")
    assert res.exit_code == 1 and "nothing matched" in res.stderr
    assert run("revoke", "some-task", "--yes").exit_code == 0
    res = run("retry", "no-such-task", "--yes")
    assert res.exit_code == 1 and "no stored result" in res.stderr
    assert [e["action"] for e in read_audit(run.audit)] == ["purge", "restore", "quarantine", "replay", "revoke"]


def test_read_only_refuses_without_touching(run, r) -> None:
    plant(r, "tag-ro")
    for i, args in enumerate((("requeue", "--tag", "tag-ro", "--yes"), ("purge", "work", "--yes"),
                              ("quarantine", "--tag", "tag-ro", "--yes"), ("revoke", "x", "--yes"),
                              ("retry", "x", "--yes"), ("replay", "--id", "x", "--yes"),
                              ("restore", __file__, "--yes"), ("quarantine-delete", "x", "--yes"))):
        # the flag works before and after the sub-command
        res = run("--read-only", *args) if i % 2 else run(*args, "--read-only")
        assert res.exit_code == 1 and "read-only" in res.stderr, (args, res.stderr)
    assert r.hexists("unacked", "tag-ro") and not run.audit.exists()


def test_unreachable_broker_exit_2_masked_no_traceback(tmp_path: Path) -> None:
    url = f"redis://admin:hunter2@127.0.0.1:{free_port()}/0"
    for args in (["purge", "q", "--yes"], ["requeue", "--orphaned", "--yes"], ["requeue", "--tag", "t", "--yes"]):
        proc = subprocess.run([sys.executable, "-m", "taskdash", *args, "--broker", url,
                               "--audit-log", str(tmp_path / "a.jsonl")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "hunter2" not in proc.stderr and "admin:***@" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_redis_and_user_text_is_printed_escaped(run, r, redis_url: str, tmp_path: Path) -> None:
    """Queue/task names with ESC/BEL and undecodable bytes reach the terminal as ``\\xNN``, never raw."""
    evil = "evil\x1b[2J"
    plant(r, "tag-e", queue=evil, age=300)
    res = run("requeue", "--orphaned", "--force", input="n\n")
    assert res.exit_code == 1 and "(evil\\x1b[2J: 1)" in res.stderr, res.stderr
    res = run("requeue", "--orphaned", "--force", "--yes")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == "requeued 1 orphaned message(s) to evil\\x1b[2J", res.stdout
    assert r.llen(evil) == 1

    env = {"body": "W10=", "headers": {"id": "qx", "task": "t\x1b]0;pwned\x07"},
           "properties": {"priority": 0, "delivery_tag": "d", "delivery_info": {"exchange": "", "routing_key": evil}}}
    r.rpush(evil, json.dumps(env))
    res = run("quarantine", "--task-id", "qx", "--queue", evil, "--reason", "bad\x1b[31m", "--yes")
    assert res.exit_code == 0, res.stderr
    res = run("quarantine-list")
    line = res.stdout.strip()
    assert "evil\\x1b[2J" in line and "t\\x1b]0;pwned\\x07" in line and "bad\\x1b[31m" in line, line
    for out in (res.output, run("quarantine", "--task-id", "nope\x1b[2J", "--queue", evil, "--yes").output):
        assert "\x1b" not in out and "\x07" not in out, out

    # a binary queue name, given as raw argv bytes to the real CLI (Python keeps them as surrogates)
    name = b"\xffbin\x1b[2J"
    r.rpush(name, b"m1", b"m2")
    proc = subprocess.run([sys.executable, "-m", "taskdash", "purge", name, "--yes", "--broker", redis_url,
                           "--export", str(tmp_path / "bin.jsonl"), "--audit-log", str(run.audit)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"purged 2 message(s) from \\xffbin\\x1b[2J; export: "), proc.stdout
    assert b"\x1b" not in proc.stdout + proc.stderr and r.llen(name) == 0
