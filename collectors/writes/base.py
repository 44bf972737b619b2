"""The guarded base every write shares, the result and error types, and the ``unacked`` entry helpers.

Every write taskdash makes goes through :class:`Guarded` (via :class:`WriteBase` for broker writes,
directly for :class:`collectors.writes.control.WorkerControl`):

* :meth:`Guarded._guard` raises :class:`ReadOnlyError` (nothing touched, no audit line) in read-only mode;
* :meth:`Guarded._mask` hides every credential of the broker/backend URLs in user-facing text;
* one audit line per write (:class:`collectors.core.audit.AuditLog`).

:class:`WriteBase` adds the broker client, the key layout, error masking of Redis failures
(:meth:`WriteBase._errors`), the audit helper :meth:`WriteBase._record`, the reachability check and the
Celery control app/connection (always with ``ack_emulation=False``, so taskdash never runs kombu's
visibility restore itself).

The module-level helpers parse ``unacked`` entries and encode Redis values byte-exactly for exports.
Message bodies are never deserialized: only the JSON envelope (headers, properties) is read.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import redis

from collectors.core.audit import AuditLog, audit_path, default_actor
from collectors.core.config import Settings, mask_text, redis_client
from collectors.keyspace.keys import KeyLayout

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("collectors.writes.actions")

BATCH = 200
"""Messages handled per batch (and per hold of kombu's ``unacked_mutex``)."""
FRESH_MARGIN = 1.0
"""Seconds before asking the workers after which a delivery may be unknown to their answer."""


class ActionError(Exception):
    """An action was refused or failed; the message is user-facing and has credentials masked."""


class ReadOnlyError(ActionError):
    """A write was attempted in read-only mode; nothing was changed."""


class BrokerUnreachableError(ActionError):
    """Redis (or the Celery control channel) cannot be reached; the CLI exits 2 on this one."""


class PermissionDeniedError(ActionError):
    """The Redis user may not make this write (ACL); raised before anything was touched (CLI exit 5)."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a write did, for a TUI notification or the CLI's one result line."""

    action: str
    count: int
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


# ---- small helpers ----------------------------------------------------------------------------------

def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _s(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _enc(value: bytes | str, name: str = "raw") -> dict[str, str]:
    """JSON-safe, byte-exact form of a Redis value: ``{name: text}`` or ``{name_b64: base64}``."""
    data = _b(value)
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode("ascii")}


def _dec(obj: Mapping[str, Any], name: str = "raw") -> bytes | None:
    """Inverse of :func:`_enc`."""
    if isinstance(obj.get(name), str):
        return str(obj[name]).encode("utf-8")
    if isinstance(obj.get(f"{name}_b64"), str):
        return base64.b64decode(str(obj[f"{name}_b64"]))
    return None


def _dec_strict(obj: Mapping[str, Any], name: str = "raw") -> bytes:
    """:func:`_dec` for an export being restored: a missing value or bad base64 raises ValueError."""
    if isinstance(obj.get(name), str):
        return str(obj[name]).encode("utf-8")
    if isinstance(obj.get(f"{name}_b64"), str):
        return base64.b64decode(str(obj[f"{name}_b64"]), validate=True)
    raise ValueError(f"no '{name}' or '{name}_b64'")


def _finite(value: Any, name: str) -> float:
    """A float from an export field; ValueError if it is not a finite number."""
    if isinstance(value, bool):
        raise ValueError(f"bad {name!r}")
    out = float(value)
    if out != out or out in (float("inf"), float("-inf")):
        raise ValueError(f"bad {name!r}")
    return out


def _line_ranges(lines: Sequence[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2-4, 7"``."""
    runs: list[list[int]] = []
    for n in sorted(lines):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _kombu_dumps(obj: Any) -> str:
    """Serialize a restored envelope exactly the way kombu's own restore does."""
    from kombu.utils.json import dumps

    return str(dumps(obj))


def _task_id_of(payload: Mapping[str, Any]) -> str | None:
    headers = payload.get("headers") or {}
    tid = headers.get("id") if isinstance(headers, Mapping) else None
    if not tid:
        props = payload.get("properties") or {}
        tid = props.get("correlation_id") if isinstance(props, Mapping) else None
    return str(tid) if tid else None


def _task_name_of(payload: Mapping[str, Any]) -> str | None:
    headers = payload.get("headers") or {}
    name = headers.get("task") if isinstance(headers, Mapping) else None
    return str(name) if name else None


def _priority_of(payload: Mapping[str, Any]) -> int:
    """``properties.priority`` clamped to 0..9 as kombu's ``_get_message_priority`` does (default 0)."""
    props = payload.get("properties") or {}
    try:
        pri = int(props.get("priority") or 0) if isinstance(props, Mapping) else 0
    except (TypeError, ValueError):
        pri = 0
    return max(0, min(9, pri))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "queue"


@dataclass(slots=True)
class _Entry:
    """One parsed ``unacked`` hash entry."""

    tag: str
    raw: bytes
    score: float | None
    payload: dict[str, Any]
    exchange: str
    routing_key: str

    @property
    def task_id(self) -> str | None:
        return _task_id_of(self.payload)

    @property
    def task(self) -> str | None:
        return _task_name_of(self.payload)


def _parse_entry(tag: str, raw: bytes | None, score: float | None) -> _Entry | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        payload, exchange, routing_key = value[0], value[1], value[2]
        if not isinstance(payload, dict):
            return None
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return _Entry(tag, _b(raw), score, payload, str(exchange or ""), str(routing_key or ""))


def _restored_payload(entry: _Entry) -> str:
    """The message kombu's ``restore_by_tag`` would push back: the envelope with ``redelivered`` set."""
    payload = json.loads(entry.raw)[0]  # a fresh copy: the entry keeps what was read
    headers = payload.get("headers")
    if isinstance(headers, dict):
        headers["redelivered"] = True
    props = payload.get("properties")
    if isinstance(props, dict) and isinstance(props.get("delivery_info"), dict):
        props["delivery_info"]["redelivered"] = True
    return _kombu_dumps(payload)


# ---- the guarded bases ------------------------------------------------------------------------------

class Guarded:
    """What every writer shares: settings, the audit log, the read-only refusal and credential masking.

    Subclasses say in :attr:`_refused` what "nothing happened" means for them (the read-only message).
    """

    _refused: ClassVar[str] = "nothing was changed (run without --read-only to change the broker)"
    """The tail of the read-only refusal: what was not done, and how to do it."""

    settings: Settings
    audit: AuditLog

    def _init_guarded(self, settings: Settings, actor: str | None) -> str:
        """Set ``settings`` and ``audit``; returns the actor written to the audit log."""
        self.settings = settings
        who = actor or default_actor()
        self.audit = AuditLog(audit_path(settings), who, settings.broker_url)
        return who

    def _guard(self, action: str) -> None:
        if self.settings.read_only:
            raise ReadOnlyError(f"read-only mode: {action} refused, {self._refused}")

    def _mask(self, text: str) -> str:
        return mask_text(text, self.settings.broker_url, self.settings.backend_url)


class WriteBase(Guarded):
    """The broker side of every write: client, key layout, error masking, audit, Celery control app.

    Args:
        settings: Connection, key layout, read-only flag, audit log path.
        client: A redis-py client on the broker db (bytes responses); built from settings when None.
        app: A Celery app used for control (revoke, inspect) and send_task (retry); a minimal app on
            ``settings.broker_url`` is built when None. Control always runs on a connection with
            ``ack_emulation=False`` so taskdash never triggers kombu's visibility restore itself.
        actor: ``user@host`` written to the audit log (default: the current user).
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None, *, app: Celery | None = None,
                 actor: str | None = None) -> None:
        self.actor = self._init_guarded(settings, actor)
        self.keys = KeyLayout.from_settings(settings)
        self.client: Any = client if client is not None else redis_client(settings.broker_url, settings)
        self._app = app
        self._own_app: Any = None

    @property
    def quarantine_hash(self) -> str:
        """The quarantine hash key (``id -> record JSON``), prefix-aware."""
        return self.keys.quarantine

    @property
    def quarantine_index(self) -> str:
        """The quarantine index zset key (``id -> quarantined_at``), prefix-aware."""
        return self.keys.quarantine_index

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn connection failures into BrokerUnreachableError with a masked message."""
        try:
            yield
        except ActionError:
            raise
        except (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError) as exc:
            raise BrokerUnreachableError(self._mask(
                f"{action}: cannot reach the broker {self.settings.broker_masked}: {exc}")) from exc
        except redis.RedisError as exc:
            raise ActionError(self._mask(f"{action} failed: {type(exc).__name__}: {exc}")) from exc
        except OSError as exc:  # export/audit files
            raise ActionError(self._mask(f"{action} failed: {exc}")) from exc

    def _record(self, action: str, target: Any, count: int, **details: Any) -> None:
        try:
            self.audit.record(action, target, count, **details)
        except OSError as exc:  # the write happened; do not hide that, but say the log failed
            log.error("audit log %s not writable: %s", self.audit.path, exc)
            raise ActionError(f"{action} done ({count}) but the audit log {self.audit.path} "
                              f"could not be written: {exc}") from exc

    def _control_app(self) -> Any:
        if self._app is not None:
            return self._app
        if self._own_app is None:
            from celery import Celery

            app = Celery("taskdash-actions", broker=self.settings.broker_url, set_as_current=False)
            app.conf.update(
                broker_transport_options=self._transport_options(),
                control_exchange=self.settings.control_exchange,
                accept_content=["json"], result_accept_content=["json"],
                task_serializer="json", broker_connection_retry_on_startup=False,
            )
            self._own_app = app
        return self._own_app

    def _transport_options(self) -> dict[str, Any]:
        opts = {k: v for k, v in dict(self.settings.transport_options).items()}
        opts["ack_emulation"] = False  # never put our own deliveries in unacked / never sweep it
        opts.setdefault("max_retries", 1)
        opts.setdefault("socket_timeout", self.settings.socket_timeout)
        opts.setdefault("socket_connect_timeout", min(self.settings.socket_timeout, 3.0))
        if self.settings.global_keyprefix:
            opts["global_keyprefix"] = self.settings.global_keyprefix
        return opts

    def _connection(self) -> Any:
        from kombu import Connection

        return Connection(self.settings.broker_url, transport_options=self._transport_options(),
                          connect_timeout=min(self.settings.socket_timeout, 3.0))

    def _check_reachable(self, action: str) -> None:
        with self._errors(action):
            self.client.ping()
        self._check_permissions(action)

    def _permission_checks(self, action: str) -> list[list[str]]:
        """The (command, args...) a write runs, on stand-in keys of the same key patterns (a queue list
        under the prefix, the ledger, the quarantine, purge temporaries, restore markers)."""
        k = self.keys
        q = k.key("taskdash.permission-probe")
        tmp = k.purge_temp("permission-probe", 0)
        script = ["evalsha", "0" * 40, "0"]
        moves = [["hdel", k.unacked, "t"], ["zrem", k.unacked_index, "t"], ["lpush", q, "m"], ["rpush", q, "m"]]
        to_quarantine = [["hset", k.quarantine, "i", "r"], ["zadd", k.quarantine_index, "1", "i"]]
        from_quarantine = [["hdel", k.quarantine, "i"], ["zrem", k.quarantine_index, "i"]]
        return {
            "requeue": [script, *moves],
            "orphaned": [script, *moves],
            "quarantine": [script, *moves, ["lrem", q, "1", "m"], *to_quarantine],
            "replay": [script, *from_quarantine, ["lpush", q, "m"], ["rpush", q, "m"]],
            "delete": [script, *from_quarantine, ["hdel", k.unacked, "t"], ["zrem", k.unacked_index, "t"]],
            "purge": [script, ["rename", q, tmp], ["rename", tmp, q], ["lrange", tmp, "0", "-1"], ["del", tmp]],
            "restore": [["set", k.restored_marker("permission-probe"), "1", "NX"],
                        ["del", k.restored_marker("permission-probe")], ["rpush", q, "m"],
                        ["hsetnx", k.unacked, "t", "v"], ["zadd", k.unacked_index, "NX", "1", "t"],
                        ["hsetnx", k.quarantine, "i", "r"], ["zadd", k.quarantine_index, "NX", "1", "i"]],
        }.get(action, [])

    def _check_permissions(self, action: str) -> None:
        """Refuse ``action`` before it touches anything when the Redis user may not run one of its
        commands (ACL), naming the first missing permission. Asked with a read-only script
        (``redis.acl_check_cmd``), so the check itself writes nothing; a user that may not even run
        scripts cannot run the script-based writes either and is refused with the NOPERM Redis gave."""
        checks = self._permission_checks(action)
        if not checks:
            return
        from collectors.core.errors import classify, user_of
        from collectors.keyspace import scripts

        who = f"user {user_of(self.settings.broker_url)} at {self.settings.broker_masked}"
        hint = "nothing was changed; the operating user of `taskdash acl --actions` may do it"
        try:
            refused = scripts.acl_probe(self.client, checks)
        except redis.RedisError as exc:
            problem = classify(exc)
            if problem is None or not problem.use_plain_commands:
                log.debug("permission pre-check unavailable: %s", exc)  # e.g. Redis < 7: no acl_check_cmd
                return
            if checks[0][0] != "evalsha":
                return  # a write without scripts: its first command is refused before anything changes
            raise PermissionDeniedError(self._mask(
                f"{action}: permission denied for {who}: it needs scripting ({problem.reason()}); {hint}")) from exc
        if refused:
            cmd = checks[refused - 1]
            raise PermissionDeniedError(self._mask(
                f"{action}: permission denied for {who}: NOPERM {cmd[0].upper()}"
                f"{' on ' + cmd[1] if len(cmd) > 1 and cmd[0] != 'evalsha' else ''}; {hint}"))
