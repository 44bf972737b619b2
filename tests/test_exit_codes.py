"""Exit codes tell the truth (one table, ``collectors.core.errors.EXIT_CODES``), on real redis-servers.

Bad credentials are named as such (4, never "unreachable"); a refused read is 5 naming the permission;
2 stays "the broker did not answer" (click's usage errors are re-coded 64); ``--strict`` makes a partial
read 6.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from collectors.core.errors import (
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_CRITICAL,
    EXIT_FOUND,
    EXIT_PARTIAL,
    EXIT_PERMISSION,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Kind,
    classify,
    classify_text,
    exit_code_for,
)
from taskdash.procs import RedisServer, free_port
from tests.acl_helpers import (
    PASSWORD,
    acl_output,
    apply_lines,
    invoke,
    make_user,
    run_cli,
    seed_broker,
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
    return c


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_table_is_complete_and_distinct() -> None:
    codes = [e.code for e in EXIT_CODES]
    assert codes == sorted(set(codes)) and {0, 1, 2, 3, 4, 5, 6, 7, 64} == set(codes)
    assert EXIT_UNREACHABLE == 2 and EXIT_USAGE != 2
    # one table: watch --once's "critical" is the table's 7, its "warning" the table's 3 (found)
    from taskdash.cmd_watch import EXIT_CRITICAL as WATCH_CRITICAL
    from taskdash.cmd_watch import EXIT_WARNING

    assert WATCH_CRITICAL == EXIT_CRITICAL == 7 and EXIT_WARNING == EXIT_FOUND
    names = {e.code: e.name for e in EXIT_CODES}
    assert names[7] == "critical" and names[64] == "usage" and names[3] == "found"
    assert "forensics" in next(e.meaning for e in EXIT_CODES if e.code == EXIT_FOUND)


def test_classification_of_real_server_errors(server: RedisServer, admin: redis.Redis) -> None:
    make_user(admin, "ro", f">{PASSWORD}", "~*", "+@read", "+@connection")
    cases = {
        Kind.AUTH: lambda: redis.Redis(port=server.port, username="nobody", password="x",
                                       retry=Retry(NoBackoff(), 0)).ping(),
        Kind.UNREACHABLE: lambda: redis.Redis(port=free_port(), socket_connect_timeout=0.5,
                                              retry=Retry(NoBackoff(), 0)).ping(),
    }
    for kind, call in cases.items():
        with pytest.raises(redis.RedisError) as info:
            call()
        assert classify(info.value).kind is kind, info.value
    ro = redis.Redis(port=server.port, username="ro", password=PASSWORD)
    with pytest.raises(redis.RedisError) as info:
        ro.evalsha("0" * 40, 0)
    p = classify(info.value)
    assert p.kind is Kind.PERMISSION and p.command == "EVALSHA" and p.use_plain_commands
    pipe = ro.pipeline(transaction=False)
    pipe.llen("q")
    pipe.lpush("q", "x")
    with pytest.raises(redis.RedisError) as info:
        pipe.execute()
    assert classify(info.value).command == "LPUSH"
    with pytest.raises(redis.RedisError) as info:
        admin.evalsha("0" * 40, 0)
    assert classify(info.value).kind is Kind.NOSCRIPT
    # messages whose exception is gone (SourceError strings)
    assert classify_text("cannot connect: invalid username-password pair or user is disabled.").kind is Kind.AUTH
    assert classify_text("NOAUTH Authentication required.").kind is Kind.AUTH
    assert classify_text("Redis is not ready: LOADING Redis is loading the dataset in memory").kind is Kind.NOT_READY
    assert classify_text("BUSY Redis is busy running a script.").kind is Kind.NOT_READY
    p = classify_text("unknown command 'CONFIG', with args beginning with: 'GET' 'save'")
    assert p.kind is Kind.UNKNOWN_COMMAND and p.command == "CONFIG" and p.reason() == "CONFIG disabled or renamed"
    assert exit_code_for("this user has no permissions to run the 'evalsha' command") == EXIT_PERMISSION
    # kombu re-raises redis-py errors as OperationalError: the cause decides
    from kombu.exceptions import OperationalError

    try:
        try:
            redis.Redis(port=server.port, username="nobody", password="x", retry=Retry(NoBackoff(), 0)).ping()
        except redis.RedisError as exc:
            raise OperationalError(str(exc)) from exc
    except OperationalError as wrapped:
        assert classify(wrapped).kind is Kind.AUTH


@pytest.mark.parametrize("who", ["unknown user", "wrong password"])
def test_bad_credentials_exit_4_and_say_so(server: RedisServer, admin: redis.Redis, who: str) -> None:
    make_user(admin, "alice", f">{PASSWORD}", "~*", "+@all")
    url = (user_url(server, "nobody", "whatever") if who == "unknown user"
           else user_url(server, "alice", PASSWORD + "-wrong"))
    user = "nobody" if who == "unknown user" else "alice"
    res = run_cli("snapshot", "--json", "--broker", url)
    assert res.returncode == EXIT_AUTH, res.stderr
    line = _one_line(res.stderr)
    assert f"authentication failed for user {user} at redis://{user}:***@127.0.0.1:{server.port}/0" in line
    assert "unreachable" not in line and "whatever" not in line and PASSWORD not in line and res.stdout == ""
    # the same in the other read commands (one shared failure path)
    for argv in (["lint", "--broker", url], ["health", "--broker", url], ["requeue", "--orphaned", "--yes",
                                                                         "--broker", url]):
        r = invoke(*argv)
        assert r.exit_code == EXIT_AUTH, (argv, r.output)
        assert "authentication failed for user" in r.stderr and "unreachable" not in r.stderr, r.stderr


def test_password_required_but_none_given_is_auth() -> None:
    s = RedisServer().start()
    s.client().config_set("requirepass", PASSWORD)
    try:
        res = invoke("snapshot", "--json", "--broker", s.url)
        assert res.exit_code == EXIT_AUTH, res.output
        assert "authentication failed for user default" in res.stderr
    finally:
        s.cleanup()


def test_unreachable_is_2_and_usage_errors_are_64(server: RedisServer) -> None:
    res = run_cli("snapshot", "--json", "--broker", f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")
    assert res.returncode == EXIT_UNREACHABLE
    line = _one_line(res.stderr)
    assert "unreachable" in line and PASSWORD not in line
    for argv in (["snapshot", "--no-such-flag"], ["requeue", "--tag", "a", "--orphaned", "--broker", server.url],
                 ["snapshot", "--fail-on", "nonsense"]):
        r = invoke(*argv)
        assert r.exit_code == EXIT_USAGE, (argv, r.exit_code, r.output)
    assert "64" in invoke("--help").stdout  # the table is in the help


def test_user_that_cannot_read_the_broker_is_5_naming_the_permission(server: RedisServer,
                                                                        admin: redis.Redis) -> None:
    seed_broker(admin)
    make_user(admin, "pinger", f">{PASSWORD}", "+ping", "+info", "+select")
    code, doc, err = (lambda r: (r.exit_code, r.stdout, r.stderr))(
        invoke("snapshot", "--json", "--broker", user_url(server, "pinger", PASSWORD)))
    assert code == EXIT_PERMISSION, err
    assert "permission denied for user pinger" in err and "not permitted" in err
    doc_json = json.loads(doc)
    assert doc_json["broker"]["ok"] is False and doc_json["broker"]["error"]


def test_write_with_watch_user_is_5_and_changes_nothing(server: RedisServer, admin: redis.Redis,
                                                         tmp_path: object) -> None:
    apply_lines(admin, acl_output("--broker", server.url, "--password", PASSWORD, "--watch-only"))
    seed_broker(admin, queues=("work",))
    before = {k: admin.type(k) for k in admin.scan_iter()}
    url = user_url(server, "taskdash-ro", PASSWORD)
    res = invoke("purge", "work", "--yes", "--broker", url, "--export", f"{tmp_path}/x.jsonl",
                 "--audit-log", f"{tmp_path}/audit.jsonl")
    assert res.exit_code == EXIT_PERMISSION, res.output
    assert "permission denied for user taskdash-ro" in res.stderr and "EVALSHA" in res.stderr.upper()
    assert {k: admin.type(k) for k in admin.scan_iter()} == before and admin.llen("work") == 1


def test_strict_makes_a_partial_read_6(server: RedisServer, admin: redis.Redis) -> None:
    seed_broker(admin)
    dead_backend = f"redis://127.0.0.1:{free_port()}/0"
    res = invoke("snapshot", "--json", "--broker", server.url, "--backend", dead_backend)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["broker"]["ok"] and {e["source"] for e in doc["errors"]} >= {"results"}
    res = invoke("snapshot", "--json", "--strict", "--broker", server.url, "--backend", dead_backend)
    assert res.exit_code == EXIT_PARTIAL, res.output
    assert "partial read" in res.stderr and "results" in res.stderr
    res = invoke("snapshot", "--json", "--strict", "--broker", server.url)
    assert res.exit_code in (0, EXIT_PARTIAL)  # 6 only if a source (e.g. inspect with no workers) failed


USAGE_ERRORS = [
    ["worker", "show"],                                   # missing HOST (issue 21: was reported as 2)
    ["worker", "show", "--json"],
    ["worker", "no-such-subcommand"],
    ["worker", "autoscale", "1", "5", "--yes"],           # MIN > MAX: a UsageError from the callback
    ["worker", "time-limit", "t", "abc", "1", "--yes"],   # BadParameter from the callback
    ["no-such-command"],
    ["snapshot", "--observe", "-1"],
    ["snapshot", "--fail-on"],                            # option without its value
    ["--interval"],                                       # group option without its value
    ["search"],                                           # missing QUERY
    ["contexts", "--bogus"],
    ["requeue"],                                          # none of --tag/--task-id/--orphaned
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=[" ".join(a) for a in USAGE_ERRORS])
def test_click_usage_errors_exit_64_never_2(argv: list[str]) -> None:
    r = invoke(*argv, "--broker", f"redis://127.0.0.1:{free_port()}/0") if argv[0] not in (
        "--interval", "no-such-command") else invoke(*argv)
    assert r.exit_code == EXIT_USAGE, (argv, r.exit_code, r.output)
    assert "Traceback" not in r.output


def test_usage_error_exit_code_is_64_in_a_real_process() -> None:
    """Not only under CliRunner: the console script's own exit status."""
    res = run_cli("worker", "show")
    assert res.returncode == EXIT_USAGE, (res.returncode, res.stderr)
    assert "Missing argument 'HOST'" in res.stderr and res.stdout == ""
    res = run_cli("--broker", f"redis://127.0.0.1:{free_port()}/0", "worker", "show")
    assert res.returncode == EXIT_USAGE, (res.returncode, res.stderr)


def test_contexts_json_and_a_bad_config_is_64(tmp_path: object) -> None:
    from pathlib import Path

    from click.testing import CliRunner

    from taskdash.cli import cli

    cfg = Path(str(tmp_path)) / "config.toml"
    cfg.write_text('default = "prod"\n[contexts.prod]\nbroker = "redis://:s3cret@prod-redis:6379/0"\n'
                   'read_only = true\n[contexts.dev]\nbroker = "redis://localhost:6379/1"\n')
    res = CliRunner().invoke(cli, ["contexts", "--json"], env={"TASKDASH_CONFIG": str(cfg)})
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["file"] == str(cfg) and doc["default"] == "prod"
    assert {c["name"]: c["default"] for c in doc["contexts"]} == {"prod": True, "dev": False}
    assert "s3cret" not in res.stdout and all(c["description"] for c in doc["contexts"])
    text = CliRunner().invoke(cli, ["contexts"], env={"TASKDASH_CONFIG": str(cfg)})
    assert text.exit_code == 0 and "* prod" in text.stdout and "s3cret" not in text.stdout
    cfg.write_text("[[not toml")
    bad = CliRunner().invoke(cli, ["contexts", "--json"], env={"TASKDASH_CONFIG": str(cfg)})
    assert bad.exit_code == EXIT_USAGE, bad.output  # a configuration error, not "unreachable" (was 2)
    assert bad.stdout == "" and str(cfg) in bad.stderr
