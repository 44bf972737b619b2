"""``taskdash acl`` lines on a real redis-server 7: they apply as printed and grant exactly what they say.

The users are created with exactly the printed lines (split as redis-cli splits them), then probed with
real commands: reads and the exact (P)SUBSCRIBE patterns taskdash uses work, writes and scripts do not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from collectors.core.config import Settings
from collectors.reads.health import redis_health
from collectors.reads.workers import WorkerMonitor
from taskdash.cmd_acl import READ_COMMANDS, event_pattern
from taskdash.procs import RedisServer
from tests.acl_helpers import (
    OPS_PASSWORD,
    PASSWORD,
    acl_log,
    acl_output,
    apply_lines,
    invoke,
    seed_broker,
    setuser_lines,
    user_url,
)


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
    c.execute_command("ACL", "LOG", "RESET")
    return c


def _client(server: RedisServer, user: str, password: str, db: int = 0) -> redis.Redis:
    return redis.Redis(port=server.port, username=user, password=password, db=db, socket_timeout=5)


def test_lines_apply_as_printed_for_both_users(server: RedisServer, admin: redis.Redis) -> None:
    out = acl_output("--broker", server.url, "--password", PASSWORD)
    assert "(a) watching only" in out and "(b) watching plus actions" in out
    names = apply_lines(admin, out)
    assert names == ["taskdash-ro", "taskdash-ops"]
    ro = admin.execute_command("ACL", "GETUSER", "taskdash-ro")
    text = repr(ro)
    assert "%R~*" in text and "&/0.celeryev/*" in text and "&celery-task-meta-*" in text
    # --json carries the same argument lists, unquoted
    doc = json.loads(acl_output("--broker", server.url, "--password", PASSWORD, "--json"))
    assert [u["line"] for u in doc["watch"] + doc["operate"]] == [
        line for line in out.splitlines() if line.startswith("ACL SETUSER")]


def test_watch_user_reads_but_never_writes_or_scripts(server: RedisServer, admin: redis.Redis) -> None:
    apply_lines(admin, acl_output("--broker", server.url, "--password", PASSWORD, "--watch-only"))
    seed_broker(admin)
    admin.hset("unacked", "tag", "x")
    admin.zadd("unacked_index", {"tag": 1.0})
    admin.set("celery-task-meta-1", "{}")
    ro = _client(server, "taskdash-ro", PASSWORD)
    # every read command of the plain path is permitted
    assert ro.llen("celery") == 1 and ro.lindex("emails", -1)
    assert ro.hlen("unacked") == 1 and ro.hmget("unacked", ["tag"]) == [b"x"]
    assert ro.zrange("unacked_index", 0, 10, withscores=True) == [(b"tag", 1.0)]
    assert ro.hscan("unacked", 0)[1] == {b"tag": b"x"}
    assert ro.sscan("_kombu.binding.celery", 0)[1]
    assert ro.getrange("celery-task-meta-1", 0, 10) == b"{}" and ro.get("celery-task-meta-1") == b"{}"
    assert ro.scan(0, count=100)[1]
    assert ro.info("server")["redis_version"].startswith("7")
    for argv in (["LPUSH", "celery", "x"], ["DEL", "celery"], ["SET", "k", "v"], ["HDEL", "unacked", "tag"],
                 ["EVAL", "return 1", "0"], ["SCRIPT", "LOAD", "return 1"], ["EVAL_RO", "return 1", "0"],
                 ["PUBLISH", "/0.celery.pidbox", "x"], ["CONFIG", "GET", "save"], ["CLIENT", "KILL", "ID", "1"],
                 ["FLUSHALL"], ["KEYS", "*"]):
        with pytest.raises(redis.exceptions.NoPermissionError):
            ro.execute_command(*argv)
    assert admin.llen("celery") == 1 and admin.hlen("unacked") == 1
    # the exact pattern the worker monitor subscribes to, and the results pattern
    settings = Settings(broker_url=user_url(server, "taskdash-ro", PASSWORD))
    pattern = WorkerMonitor(settings).event_pattern(0)
    assert pattern == event_pattern(settings)
    ps = ro.pubsub()
    ps.psubscribe(pattern, "celery-task-meta-*")
    admin.publish("/0.celeryev/worker.heartbeat", "hb")
    got = [ps.get_message(timeout=1.0) for _ in range(4)]
    assert any(m and m["type"] == "pmessage" and m["data"] == b"hb" for m in got), got
    ps.close()
    ps = ro.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):  # the reply to PSUBSCRIBE is read here
        ps.psubscribe("*")
        ps.get_message(timeout=1.0)
    ps.close()
    # nothing in the plain read list is a write or a script command
    assert not {"eval", "evalsha", "script|load", "lpush", "del", "publish", "config|get"} & set(READ_COMMANDS)


def test_prefix_and_db_narrow_keys_and_channels(server: RedisServer, admin: redis.Redis) -> None:
    url = server.url_db(3)
    out = acl_output("--broker", url, "--password", PASSWORD, "--watch-only")
    assert "&/3.celeryev/*" in [a for argv in setuser_lines(out) for a in argv]
    # the prefix comes from the transport options (here via the environment; -A gives the app's)
    out = acl_output("--broker", url, "--password", PASSWORD, "--watch-only",
                     env={"TASKDASH_GLOBAL_KEYPREFIX": "app:"})
    args = [a for argv in setuser_lines(out) for a in argv]
    assert "%R~app:*" in args and "&app:/3.celeryev/*" in args and "%R~celery-task-meta-*" in args
    apply_lines(admin, out)
    admin3 = server.client(db=3)
    admin3.lpush("app:celery", "m")
    admin3.lpush("other", "m")
    ro = _client(server, "taskdash-ro", PASSWORD, db=3)
    assert ro.llen("app:celery") == 1
    with pytest.raises(redis.exceptions.NoPermissionError):
        ro.llen("other")
    ps = ro.pubsub()
    ps.psubscribe("app:/3.celeryev/*")
    assert ps.get_message(timeout=1.0)["type"] == "psubscribe"
    ps.close()


def test_scripting_variant_runs_read_only_scripts_only(server: RedisServer, admin: redis.Redis) -> None:
    out = acl_output("--broker", server.url, "--password", PASSWORD, "--watch-only", "--scripting")
    assert "+eval_ro" in out and "+evalsha_ro" in out and "+eval " not in out
    apply_lines(admin, out)
    admin.lpush("celery", "a", "b")
    ro = _client(server, "taskdash-ro", PASSWORD)
    script = "return redis.call('LLEN', KEYS[1])"
    assert ro.execute_command("EVAL_RO", script, 1, "celery") == 2
    import hashlib

    sha = hashlib.sha1(script.encode()).hexdigest()
    assert ro.execute_command("EVALSHA_RO", sha, 1, "celery") == 2  # cached by the EVAL_RO above
    with pytest.raises(redis.exceptions.ResponseError):
        ro.execute_command("EVAL_RO", "return redis.call('LPUSH', KEYS[1], 'x')", 1, "celery")
    for argv in (["EVAL", script, "1", "celery"], ["SCRIPT", "LOAD", script], ["EVALSHA", sha, "1", "celery"]):
        with pytest.raises(redis.exceptions.NoPermissionError):
            ro.execute_command(*argv)
    assert admin.llen("celery") == 2


def test_ops_user_can_act_without_denials(server: RedisServer, admin: redis.Redis, tmp_path: object) -> None:
    out = acl_output("--broker", server.url, "--password", OPS_PASSWORD, "--actions")
    assert setuser_lines(out)[0][2] == "taskdash-ops"
    apply_lines(admin, out)
    seed_broker(admin, queues=("work",))
    url = user_url(server, "taskdash-ops", OPS_PASSWORD)
    export = f"{tmp_path}/purged.jsonl"
    res = invoke("purge", "work", "--yes", "--broker", url, "--export", export,
                 "--audit-log", f"{tmp_path}/audit.jsonl")
    assert res.exit_code == 0, res.output
    assert admin.llen("work") == 0
    res = invoke("restore", export, "--yes", "--broker", url, "--audit-log", f"{tmp_path}/audit.jsonl")
    assert res.exit_code == 0, res.output
    assert admin.llen("work") == 1
    denied = [e for e in acl_log(admin) if e.get("username") == "taskdash-ops"]
    assert not denied, denied


def test_health_with_watch_user_names_each_unreadable_field(server: RedisServer, admin: redis.Redis) -> None:
    apply_lines(admin, acl_output("--broker", server.url, "--password", PASSWORD, "--watch-only"))
    h = redis_health(_client(server, "taskdash-ro", PASSWORD))
    assert h.error is None and h.version and h.maxmemory_policy == "noeviction" and h.keys is not None
    assert h.why_unreadable("rdb_enabled") == "NOPERM CONFIG|GET"
    assert h.why_unreadable("pubsub_clients") == "NOPERM CLIENT|LIST"
    assert h.why_unreadable("used_memory") is None
    doc = h.to_json()
    assert doc["unreadable"] == {"pubsub_clients": "NOPERM CLIENT|LIST", "rdb_enabled": "NOPERM CONFIG|GET"}
    # with INFO refused too, INFO fields say so and the key count still comes from DBSIZE
    admin.execute_command("ACL", "SETUSER", "taskdash-ro", "-info")
    h = redis_health(_client(server, "taskdash-ro", PASSWORD))
    assert h.error is None and h.version is None and h.keys == 0
    assert h.why_unreadable("version") == "NOPERM INFO" and h.why_unreadable("keys") is None


def test_health_with_config_and_client_renamed() -> None:
    s = RedisServer(extra_args=["--rename-command", "CONFIG", "", "--rename-command", "CLIENT", "",
                                "--maxmemory", "10mb"]).start()
    try:
        h = redis_health(s.client())
        assert h.error is None and h.maxmemory_policy == "noeviction" and h.policy_source == "info"
        assert h.why_unreadable("rdb_enabled") == "CONFIG disabled or renamed"
        assert h.why_unreadable("pubsub_clients") == "CLIENT disabled or renamed"
        res = invoke("health", "--broker", s.url, "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["unreadable"]["rdb_enabled"] == "CONFIG disabled or renamed"
        # the broker reads need neither: the snapshot is complete and exits 0
        seed_broker(s.client())
        res = invoke("snapshot", "--json", "--broker", s.url)
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["broker"]["ok"] and {q["name"]: q["messages"] for q in doc["queues"]} == {"celery": 1, "emails": 2}
    finally:
        s.cleanup()
