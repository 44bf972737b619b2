"""``taskdash acl``: the minimal Redis 7 ``ACL SETUSER`` lines for a watching user and an operating user.

(a) **watch** (``taskdash-ro``): read commands only, on read-only key patterns (``%R~``) of the configured
``global_keyprefix`` (and the result backend's prefix), plus (P)SUBSCRIBE on exactly the channels taskdash
listens to (worker heartbeats/events, result state changes). No ``@write``, no ``@scripting``, no
``@admin``/``@dangerous``: with it, every panel reads through plain commands (Lua is an optimisation).
``--scripting`` adds ``EVAL_RO``/``EVALSHA_RO`` only: read-only scripts (Redis refuses a write inside them,
and ``%R~`` refuses it again), so the cheaper Lua reads work and still nothing can change.

(b) **operate** (``taskdash-ops``): (a) plus what the actions need — the write commands taskdash's
scripts and kombu's control/publish paths call, ``EVAL``/``EVALSHA``/``SCRIPT LOAD``, transactions,
``PUBLISH`` on the control channel — on read-write keys under the prefix.

Redis ACLs are not per database: the db only changes the event channel's name (``/<db>.celeryev/*``).
PSUBSCRIBE patterns are checked literally against the user's channel patterns (Redis 7), so the lines
carry taskdash's patterns exactly as it subscribes.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click

from collectors.core.config import Settings
from collectors.keyspace.keys import KeyLayout
from taskdash.cli import common_options, handle_errors, settings_for

READ_COMMANDS: tuple[str, ...] = (
    # connection (AUTH and HELLO are always allowed)
    "ping", "select", "echo", "quit", "reset", "client|setname", "client|getname", "client|id",
    # server facts (health: INFO sections; TIME for ages on the server's clock)
    "info", "time", "dbsize",
    # keyspace and values, read only
    "scan", "type", "exists", "ttl", "pttl",
    "llen", "lindex", "lrange",
    "hlen", "hget", "hmget", "hexists", "hscan", "hgetall",
    "zcard", "zrange", "zrangebyscore", "zscore", "zcount",
    "scard", "smembers", "sscan", "sismember",
    "get", "mget", "getrange", "strlen",
    # pub/sub: listen only (heartbeats, task events, result state changes); subscriber counts
    "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "pubsub|numsub", "pubsub|numpat",
    "pubsub|channels",
)
"""What the watching user may run. Every reader's plain-command path uses only these."""

READ_ONLY_SCRIPTING: tuple[str, ...] = ("eval_ro", "evalsha_ro")
"""``--scripting``: read-only scripts (Redis >= 7); the sha becomes known by the first EVAL_RO."""

WRITE_COMMANDS: tuple[str, ...] = (
    # taskdash's scripts (requeue, quarantine, replay, purge, restore) and their plain parts
    "lpush", "rpush", "lrem", "lpop", "rpop", "brpop", "ltrim", "rename", "del", "unlink", "expire", "pexpire",
    "hset", "hsetnx", "hdel", "zadd", "zrem", "set", "sadd", "srem",
    # atomic writes
    "eval", "evalsha", "script|load", "script|exists", "multi", "exec", "discard", "watch", "unwatch",
    # Celery control (inspect, revoke, worker commands) and retry: publish and the reply queue
    "publish",
)
"""What the operating user may run on top of READ_COMMANDS."""

OPTIONAL_COMMANDS: tuple[tuple[str, str], ...] = (
    ("client|list", "worker death proof from their Redis connections (else subscriber counts are used)"),
    ("config|get", "the RDB save schedule in `health` (CONFIG GET also shows requirepass: grant with care)"),
)


@dataclass(frozen=True, slots=True)
class AclUser:
    """One ``ACL SETUSER`` for one Redis server."""

    name: str
    server: str
    """"broker", "backend" or "broker+backend" (same Redis)."""
    args: tuple[str, ...]
    purpose: str

    def line(self) -> str:
        return "ACL SETUSER " + " ".join(cli_quote(a) for a in (self.name, *self.args))

    def to_json(self) -> dict[str, Any]:
        return {"user": self.name, "server": self.server, "purpose": self.purpose, "args": list(self.args),
                "line": self.line()}


def cli_quote(arg: str) -> str:
    """Quote one argument the way redis-cli reads it (plain when it needs no quoting)."""
    if arg and re.fullmatch(r"[A-Za-z0-9_@|~%&+\-*>.:/=#,!^$<]+", arg):
        return arg
    out = []
    for ch in arg:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return '"' + "".join(out) + '"'


def _server(url: str) -> tuple[str, int | None, int]:
    try:
        p = urlsplit(url.split(";")[0].strip())
        db = int((p.path or "/0").strip("/") or 0)
        return p.hostname or "localhost", p.port, db
    except ValueError:
        return "localhost", None, 0


def _db(url: str) -> int:
    return _server(url)[2]


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def event_pattern(settings: Settings) -> str:
    """The PSUBSCRIBE pattern of worker heartbeats/events, exactly as the worker monitor subscribes."""
    opts = settings.transport_options
    fanout_prefix = opts.get("fanout_prefix", True)
    db = _db(settings.broker_url)
    keyprefix_fanout = f"/{db}." if fanout_prefix is True else (fanout_prefix if isinstance(fanout_prefix, str) else "")
    base = f"{settings.global_keyprefix}{keyprefix_fanout}{settings.event_exchange}"
    return _glob_escape(base) + ("/*" if opts.get("fanout_patterns", True) else "")


def control_channel_pattern(settings: Settings) -> str:
    """Channels a control broadcast (inspect, revoke, worker commands) is PUBLISHed on."""
    opts = settings.transport_options
    fanout_prefix = opts.get("fanout_prefix", True)
    db = _db(settings.broker_url)
    keyprefix_fanout = f"/{db}." if fanout_prefix is True else (fanout_prefix if isinstance(fanout_prefix, str) else "")
    layout = KeyLayout.from_settings(settings)
    return _glob_escape(f"{settings.global_keyprefix}{keyprefix_fanout}{layout.pidbox_exchange}") + "*"


def acl_users(settings: Settings, *, actions: bool = False, scripting: bool = False,
              user: str | None = None, password: str = "CHANGE-ME") -> list[AclUser]:
    """The ACL SETUSER argument lists for ``settings`` (one per Redis server taskdash talks to)."""
    layout = KeyLayout.from_settings(settings)
    name = user or ("taskdash-ops" if actions else "taskdash-ro")
    broker_keys = _glob_escape(settings.global_keyprefix) + "*"
    result_keys = _glob_escape(layout.result_prefix) + "*"
    result_channel = _glob_escape(layout.result_prefix) + "*"
    same_server = _server(settings.broker_url)[:2] == _server(settings.effective_backend_url)[:2]
    key_perm = "~" if actions else "%R~"
    commands = list(READ_COMMANDS)
    if scripting and not actions:
        commands += READ_ONLY_SCRIPTING
    if actions:
        commands += list(READ_ONLY_SCRIPTING) + list(WRITE_COMMANDS)
    cmd_args = ["-@all", *(f"+{c}" for c in commands)]
    base = ["reset", "on", f">{password}"]
    purpose = "watch and act" if actions else ("watch (read-only scripts allowed)" if scripting else "watch")
    users: list[AclUser] = []
    broker_channels = [f"&{event_pattern(settings)}"]
    if actions:
        broker_channels.append(f"&{control_channel_pattern(settings)}")
    if same_server:
        keys = [f"{key_perm}{broker_keys}"]
        if not _covers(broker_keys, result_keys):
            keys.append(f"%R~{result_keys}" if not actions else f"~{result_keys}")
        users.append(AclUser(name, "broker+backend", (*base, *keys, *broker_channels, f"&{result_channel}",
                                                       *cmd_args), purpose))
    else:
        users.append(AclUser(name, "broker", (*base, f"{key_perm}{broker_keys}", *broker_channels, *cmd_args),
                             purpose))
        backend_cmds = ["-@all", *(f"+{c}" for c in READ_COMMANDS)]
        if actions:  # retry reads the stored args; forget/delete of a result is a write
            backend_cmds += ["+del", "+unlink"]
        users.append(AclUser(name, "backend", (*base, f"{'~' if actions else '%R~'}{result_keys}",
                                               f"&{result_channel}", *backend_cmds), purpose))
    return users


def _covers(pattern: str, other: str) -> bool:
    """True when the key pattern ``pattern`` (``prefix*``) matches every key of ``other`` (``prefix2*``)."""
    return pattern == "*" or (pattern.endswith("*") and "\\" not in pattern
                              and other.startswith(pattern[:-1]))


def connection_url(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password`` as its credentials (the URL to give taskdash for that user)."""
    p = urlsplit(url.split(";")[0].strip())
    host = p.hostname or "localhost"
    netloc = f"{user}:{password}@{host}" + (f":{p.port}" if p.port else "")
    return p._replace(netloc=netloc).geturl()


@click.command("acl")
@click.option("--actions/--watch-only", "actions", default=None,
              help="Print only the operating user (--actions) or only the watching user (--watch-only).")
@click.option("--scripting", is_flag=True, help="Let the watching user run read-only scripts (EVAL_RO).")
@click.option("--user", "user", default=None, help="User name (default taskdash-ro / taskdash-ops).")
@click.option("--password", default=None,
              help="Password to put in the lines (default: a new random one, printed once).")
@click.option("--json", "as_json", is_flag=True, help="The users as JSON (argument lists, unquoted).")
@common_options
@click.pass_context
@handle_errors
def acl_cmd(ctx: click.Context, actions: bool | None, scripting: bool, user: str | None, password: str | None,
            as_json: bool, **opts: Any) -> None:
    """Print the minimal Redis ACL SETUSER lines for a watching user and an operating user.

    For the configured global_keyprefix, result prefix, db and channels (use -A / --broker / --context as
    for any command). Run the lines with redis-cli as an admin; nothing is sent to Redis by this command.
    """
    settings = settings_for(ctx, opts)
    kinds = [False, True] if actions is None else [bool(actions)]
    groups = [(a, acl_users(settings, actions=a, scripting=scripting, user=user if len(kinds) == 1 else None,
                            password=password or secrets.token_urlsafe(18))) for a in kinds]
    if as_json:
        click.echo(json.dumps({
            "watch" if not a else "operate": [u.to_json() for u in users] for a, users in groups}, indent=2))
        return
    for i, (a, users) in enumerate(groups):
        if i:
            click.echo("")
        title = ("(b) watching plus actions" if a else
                 "(a) watching only" + (", read-only scripts" if scripting else ""))
        click.echo(f"# {title}: user {users[0].name}")
        for u in users:
            if len(users) > 1 or u.server != "broker+backend":
                click.echo(f"# on the {u.server} Redis ({_redacted(settings, u.server)})")
            click.echo(u.line())
        click.echo(f"# then: taskdash --broker {connection_url(settings.broker_url, users[0].name, '<password>')}"
                   + (" --read-only" if not a else ""))
    click.echo("")
    click.echo("# optional, for the watching user too (each field says when it could not be read):")
    for cmd, why in OPTIONAL_COMMANDS:
        click.echo(f"#   +{cmd}: {why}")


def _redacted(settings: Settings, server: str) -> str:
    from collectors.core.config import mask_url

    return mask_url(settings.broker_url if server.startswith("broker") else settings.effective_backend_url)


COMMANDS = [acl_cmd]
