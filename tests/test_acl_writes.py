"""A write the Redis user may not make fails before it touches anything, naming the missing permission.

Real redis-server 7 and ACL users: the watching user of ``taskdash acl`` (no scripting, no writes), and
users that may do part of a write (scripts and renames but no DEL; SET but no RPUSH), which without the
pre-check would leave purge's temporary lists or restore's "already restored" marker behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collectors.core.config import Settings
from collectors.core.errors import EXIT_PERMISSION
from collectors.writes.actions import Actions
from collectors.writes.base import PermissionDeniedError
from taskdash.procs import RedisServer
from tests.acl_helpers import OPS_PASSWORD, PASSWORD, acl_output, apply_lines, invoke, make_user, seed_broker
from tests.hostile_data import envelope, plant_unacked


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    yield s
    s.cleanup()


@pytest.fixture()
def admin(server: RedisServer) -> redis.Redis:
    c = server.client()
    c.flushall()
    for name in c.execute_command("ACL", "USERS"):
        name = name.decode() if isinstance(name, bytes) else name
        if name != "default":
            c.execute_command("ACL", "DELUSER", name)
    return c


def _state(r: redis.Redis) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for k in sorted(r.scan_iter()):
        t = r.type(k)
        out[k] = (t, r.lrange(k, 0, -1) if t == b"list" else r.hgetall(k) if t == b"hash" else
                  r.zrange(k, 0, -1, withscores=True) if t == b"zset" else r.smembers(k) if t == b"set" else r.get(k))
    return out


def _actions(server: RedisServer, user: str, password: str, tmp_path: Path) -> Actions:
    return Actions(Settings(broker_url=f"redis://{user}:{password}@127.0.0.1:{server.port}/0",
                            audit_log=str(tmp_path / "audit.jsonl")))


def _seed(r: redis.Redis) -> None:
    seed_broker(r, queues=("work",))
    plant_unacked(r, "tag-1", json.dumps(envelope("id-1", tag="tag-1", queue="work")).encode(), queue="work")


def test_watch_user_writes_fail_first_and_change_nothing(server: RedisServer, admin: redis.Redis,
                                                         tmp_path: Path) -> None:
    apply_lines(admin, acl_output("--broker", server.url, "--password", PASSWORD, "--watch-only"))
    _seed(admin)
    export = tmp_path / "export.jsonl"
    ops = _actions(server, "default", "x", tmp_path)  # the admin (nopass) makes a real export to restore
    before = _state(admin)
    ro = _actions(server, "taskdash-ro", PASSWORD, tmp_path)
    for name, call in (("requeue", lambda: ro.requeue(["tag-1"], force=True)),
                       ("quarantine", lambda: ro.quarantine(tags=["tag-1"], reason="test")),
                       ("purge", lambda: ro.purge("work", export_path=str(export)))):
        with pytest.raises(PermissionDeniedError) as info:
            call()
        msg = str(info.value)
        assert "permission denied for user taskdash-ro" in msg and "NOPERM" in msg, (name, msg)
        assert _state(admin) == before, name
    assert not (tmp_path / "audit.jsonl").exists() or "taskdash-ro" not in (tmp_path / "audit.jsonl").read_text()
    # a real export (by an allowed user), then a restore attempt by the watching user: no marker is left
    ops.purge("work", export_path=str(export))
    before = _state(admin)
    with pytest.raises(Exception) as info:  # noqa: PT011 - SET is refused: the first write of a restore
        ro.restore(str(export))
    assert "taskdash-ro" in str(info.value) or "NOPERM" in str(info.value).upper() or "permission" in str(
        info.value).lower()
    assert _state(admin) == before
    res = invoke("restore", str(export), "--yes", "--broker",
                 f"redis://taskdash-ro:{PASSWORD}@127.0.0.1:{server.port}/0", "--audit-log",
                 str(tmp_path / "a.jsonl"))
    assert res.exit_code == EXIT_PERMISSION, res.output
    assert _state(admin) == before


def test_partial_rights_are_refused_before_purge_or_restore_start(server: RedisServer, admin: redis.Redis,
                                                                  tmp_path: Path) -> None:
    _seed(admin)
    # may run scripts and rename lists, but not delete: a purge would leave its temporary lists
    make_user(admin, "nodel", f">{PASSWORD}", "~*", "&*", "+@all", "-del", "-unlink")
    before = _state(admin)
    with pytest.raises(PermissionDeniedError, match="NOPERM DEL on taskdash.purging"):
        _actions(server, "nodel", PASSWORD, tmp_path).purge("work", export_path=str(tmp_path / "x.jsonl"))
    assert _state(admin) == before and not any(k.startswith(b"taskdash.purging") for k in admin.scan_iter())
    # may SET the marker but not push the messages back: a restore would leave "already restored"
    export = tmp_path / "e.jsonl"
    _actions(server, "default", "x", tmp_path).purge("work", export_path=str(export))
    make_user(admin, "nopush", f">{PASSWORD}", "~*", "&*", "+@all", "-rpush", "-lpush")
    before = _state(admin)
    with pytest.raises(PermissionDeniedError, match="NOPERM RPUSH"):
        _actions(server, "nopush", PASSWORD, tmp_path).restore(str(export))
    assert _state(admin) == before and not any(k.startswith(b"taskdash.restored") for k in admin.scan_iter())


def test_ops_user_passes_the_pre_check(server: RedisServer, admin: redis.Redis, tmp_path: Path) -> None:
    apply_lines(admin, acl_output("--broker", server.url, "--password", OPS_PASSWORD, "--actions"))
    _seed(admin)
    ops = _actions(server, "taskdash-ops", OPS_PASSWORD, tmp_path)
    res = ops.quarantine(tags=["tag-1"], reason="test")
    assert res.count == 1 and admin.hlen("unacked") == 0
    export = tmp_path / "p.jsonl"
    assert ops.purge("work", export_path=str(export)).count == 1
    assert ops.restore(str(export)).count == 1 and admin.llen("work") == 1
