"""``--read-only`` refuses every write path of the CLI, says so, exits 1 and leaves Redis byte-identical.

Checked for every write sub-command, with the flag before and after the sub-command and through
``TASKDASH_READ_ONLY``; Redis is compared key by key with DUMP before/after, and the server's command
statistics prove that not one write command (nor a PUBLISH of a control message) reached Redis.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
import redis
from click.testing import CliRunner

from collectors.core.config import Settings
from collectors.writes.actions import Actions
from taskdash.cli import cli

WRITE_COMMANDS = {
    "set", "del", "unlink", "lpush", "rpush", "lpop", "rpop", "brpop", "lmove", "rpoplpush", "lrem", "lset",
    "ltrim", "hset", "hdel", "hsetnx", "hmset", "zadd", "zrem", "zpopmin", "sadd", "srem", "rename", "expire",
    "pexpire", "publish", "eval", "evalsha", "multi", "exec", "incr", "flushdb", "flushall", "copy", "restore",
    "setex", "psetex", "getdel", "xadd", "sinterstore",
}


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> None:
    """kombu caches "already declared" bindings per pool; the test Redis is flushed between tests."""
    kombu.pools.reset()


def dump_all(r: redis.Redis) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key with its DUMP serialisation and TTL (test-side ground truth)."""
    return {k: (r.dump(k), r.pttl(k)) for k in r.scan_iter(count=1000)}


def write_calls(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {name[len("cmdstat_"):]: v["calls"] for name, v in stats.items()
            if name[len("cmdstat_"):] in WRITE_COMMANDS}


@pytest.fixture()
def loaded(redis_url: str, r: redis.Redis, demo_app: Any, tmp_path: Path) -> dict[str, Any]:
    """A broker with waiting messages, an orphaned unacked entry, a quarantined message and an export."""
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@x",))
    payload = {"body": "W10=", "content-type": "application/json", "content-encoding": "utf-8",
               "headers": {"id": "id-ro", "task": "demo_tasks.tasks.add", "argsrepr": "(1, 2)"},
               "properties": {"priority": 0, "delivery_tag": "tag-ro", "body_encoding": "base64",
                              "delivery_info": {"exchange": "", "routing_key": "celery"}}}
    r.hset("unacked", "tag-ro", json.dumps([payload, "", "celery"]))
    r.zadd("unacked_index", {"tag-ro": time.time() - 600})
    rw = Actions(Settings(broker_url=redis_url, audit_log=str(tmp_path / "rw-audit.jsonl")), r)
    first = json.loads(r.lindex("emails", 0))["headers"]["id"]
    rw.quarantine(task_ids=[first], queues=["emails"], reason="setup")
    qid = rw.list_quarantine()[0].id
    export = tmp_path / "export.jsonl"
    rw.export_quarantine(str(export))
    return {"qid": qid, "export": str(export), "task_id": first}


def write_invocations(loaded: dict[str, Any], tmp_path: Path) -> list[tuple[str, ...]]:
    """Every write sub-command of the CLI, each pointed at something it could really change."""
    return [
        ("requeue", "--tag", "tag-ro", "--force"),
        ("requeue", "--task-id", "id-ro"),
        ("requeue", "--orphaned"),
        ("quarantine", "--tag", "tag-ro"),
        ("quarantine", "--task-id", "id-ro", "--reason", "x"),
        ("replay", "--id", loaded["qid"]),
        ("quarantine-delete", loaded["qid"]),
        ("purge", "emails", "--include-unacked", "--export", str(tmp_path / "purge.jsonl")),
        ("restore", loaded["export"], "--force"),
        ("revoke", loaded["task_id"], "--terminate"),
        ("retry", loaded["task_id"]),
    ]


def test_every_write_subcommand_refused_before_and_after(loaded: dict[str, Any], redis_url: str,
                                                         r: redis.Redis, tmp_path: Path) -> None:
    audit = tmp_path / "ro-audit.jsonl"
    before = dump_all(r)
    assert len(before) >= 5
    r.config_resetstat()
    runner = CliRunner()
    invocations = write_invocations(loaded, tmp_path)
    for args in invocations:
        for position in ("before", "after", "env"):
            common = ["--broker", redis_url, "--audit-log", str(audit)]
            env = None
            if position == "before":
                argv = ["--read-only", *common, *args]
            elif position == "after":
                argv = [*args, "--yes", "--read-only", *common]
            else:
                argv = [*common, *args, "--yes"]
                env = {"TASKDASH_READ_ONLY": "1"}
            res = runner.invoke(cli, argv, env=env, input="y\n", catch_exceptions=False)
            assert res.exit_code == 1, (argv, res.exit_code, res.output)
            assert "read-only" in res.stderr and "refused" in res.stderr, (argv, res.stderr)
            assert res.stdout == "", (argv, res.stdout)  # no confirmation prompt, no result line
    assert write_calls(r) == {}, "a write command reached Redis in read-only mode"
    assert dump_all(r) == before
    assert not audit.exists()
    assert not (tmp_path / "purge.jsonl").exists()


def test_reads_still_work_in_read_only(loaded: dict[str, Any], redis_url: str, r: redis.Redis) -> None:
    """Read-only mode is not a broken mode: snapshot and the quarantine list work and write nothing."""
    before = dump_all(r)
    r.config_resetstat()
    runner = CliRunner()
    res = runner.invoke(cli, ["--read-only", "quarantine-list", "--json", "--broker", redis_url],
                        catch_exceptions=False)
    assert res.exit_code == 0 and json.loads(res.stdout.splitlines()[0])["id"] == loaded["qid"]
    res = runner.invoke(cli, ["snapshot", "--json", "--read-only", "--broker", redis_url], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    snap = json.loads(res.stdout)
    assert {q["name"]: q["messages"] for q in snap["queues"]}["emails"] == 2
    assert snap["unacked_total"] == 1
    # The snapshot's inspect broadcast is Celery's own control channel: it PUBLISHes to the pidbox fanout and
    # declares (then deletes) a temporary reply queue, whose expiry kombu 5.7 notes in
    # _kombu.binding_deadlines. Every other key must be byte-identical.
    def control(k: bytes) -> bool:
        return b"pidbox" in k or k == b"_kombu.binding_deadlines"

    assert all(b"pidbox" in m for m in r.zrange("_kombu.binding_deadlines", 0, -1))
    after = {k: v for k, v in dump_all(r).items() if not control(k)}
    assert after == {k: v for k, v in before.items() if not control(k)}
