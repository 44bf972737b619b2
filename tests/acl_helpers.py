"""Helpers for the least-privilege tests: private redis-servers with ACL users made from ``taskdash acl``.

Never the Redis on 6379: every server here is a throw-away ``RedisServer`` on a free port.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import redis
from click.testing import CliRunner, Result

from taskdash.procs import RedisServer

PASSWORD = "s3cret-ro"
OPS_PASSWORD = "s3cret-ops"


def acl_output(*args: str, env: dict[str, str] | None = None) -> str:
    """``taskdash acl ARGS`` (in-process) → its stdout."""
    from taskdash.cli import cli

    res = CliRunner().invoke(cli, ["acl", *args], env={"TASKDASH_CONFIG": "/nonexistent", **(env or {})},
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def setuser_lines(output: str) -> list[list[str]]:
    """The ``ACL SETUSER`` lines of ``taskdash acl`` output, split the way redis-cli splits them."""
    return [shlex.split(line) for line in output.splitlines() if line.startswith("ACL SETUSER ")]


def apply_lines(admin: redis.Redis, output: str) -> list[str]:
    """Run every ACL SETUSER line of ``output`` exactly as printed; returns the user names made."""
    names: list[str] = []
    for argv in setuser_lines(output):
        assert admin.execute_command(*argv) in (b"OK", "OK", True)
        names.append(argv[2])
    return names


def make_user(admin: redis.Redis, name: str, *rules: str) -> None:
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", *rules)


def user_url(server: RedisServer, user: str, password: str, db: int = 0) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/{db}"


def acl_log(admin: redis.Redis) -> list[dict[str, Any]]:
    """``ACL LOG`` entries as dicts with str keys/values."""
    out: list[dict[str, Any]] = []
    for entry in admin.execute_command("ACL", "LOG"):
        if isinstance(entry, list):
            entry = dict(zip(entry[::2], entry[1::2], strict=False))
        out.append({(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                    for k, v in entry.items()})
    return out


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``python -m taskdash ARGS`` in a subprocess (the real exit code and stderr)."""
    import os

    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("TASKDASH_", "CELERY_"))} | {"TASKDASH_CONFIG": "/nonexistent"}
    full_env.update(env or {})
    full_env.setdefault("TASKDASH_AUDIT_LOG", os.environ.get("TASKDASH_AUDIT_LOG", "/tmp/taskdash-acl-audit.jsonl"))
    return subprocess.run([sys.executable, "-m", "taskdash", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def invoke(*args: str) -> Result:
    """``taskdash ARGS`` in-process (CliRunner)."""
    from taskdash.cli import cli

    return CliRunner().invoke(cli, list(args), env={"TASKDASH_CONFIG": "/nonexistent"})


def snapshot_json(url: str, *extra: str) -> tuple[int, dict[str, Any] | None, str]:
    res = invoke("snapshot", "--json", "--broker", url, *extra)
    doc = json.loads(res.stdout) if res.stdout.strip() else None
    return res.exit_code, doc, res.stderr


def seed_broker(admin: redis.Redis, queues: Sequence[str] = ("celery", "emails"), prefix: str = "") -> None:
    """A few queued messages and their binding rows (no workers), enough for the queue panel."""
    from collectors.core.config import Settings
    from collectors.keyspace.keys import KeyLayout

    layout = KeyLayout.from_settings(Settings(global_keyprefix=prefix))
    for i, q in enumerate(queues):
        admin.sadd(layout.binding(q), f"{q}{layout.sep}{layout.sep}{q}")
        body = json.dumps({"body": "", "headers": {"id": f"id-{q}", "task": f"t.{q}"},
                           "properties": {"delivery_tag": f"tag-{q}", "priority": 0,
                                          "delivery_info": {"exchange": q, "routing_key": q}},
                           "content-type": "application/json", "content-encoding": "utf-8"})
        for _ in range(i + 1):
            admin.lpush(layout.key(q), body)
