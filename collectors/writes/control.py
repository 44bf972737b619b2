"""Celery control broadcasts: revoke and retry of tasks, and worker remote control (what Flower's worker
pages do: pool, autoscale, consumers, limits, shutdown).

:class:`ControlWrites` (part of :class:`collectors.writes.actions.Actions`) revokes a task on every
worker and retries a FAILURE task from its stored arguments. :class:`WorkerControl` sends one worker
command at a time.

Every command goes out as a Celery remote-control broadcast (``app.control.broadcast(...,
reply=True, destination=[...])``) on a kombu connection opened with ``ack_emulation=False`` (the
same app/connection approach as :class:`collectors.reads.workers.WorkerMonitor`), so taskdash never runs
kombu's unacked restore sweep. Replies are accepted as JSON only (never unpickled).

Safety is the same as every write (:class:`collectors.writes.base.Guarded`):

* ``settings.read_only`` raises :class:`~collectors.writes.base.ReadOnlyError` before anything is sent
  and writes no audit line;
* each command that was sent appends exactly one audit line (``worker-<command>``) listing the
  destination and every worker's reply;
* failures raise :class:`~collectors.writes.base.ActionError` (or ``BrokerUnreachableError``) with
  credentials masked.

A worker that refuses a command answers ``{"error": "..."}`` (e.g. ``pool_restart`` without
``worker_pool_restarts=True``, or ``autoscale`` on a worker started without ``--autoscale``); the
result's ``details["replies"]`` keeps each reply and ``details["refused"]`` names the refusers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import redis

from collectors.core.config import Settings, mask_text, redis_client
from collectors.reads.workers import WorkerMonitor
from collectors.writes.base import (
    ActionError,
    ActionResult,
    BrokerUnreachableError,
    Guarded,
    ReadOnlyError,
    WriteBase,
)

__all__ = [
    "COMMANDS", "CONTROL_HELP", "REPLY_TIMEOUT", "ActionError", "ActionResult", "BrokerUnreachableError",
    "ControlCommand", "ControlWrites", "ReadOnlyError", "WorkerControl", "parse_command",
]

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 2.0
"""Seconds to wait for worker replies to one control command."""

COMMANDS: tuple[str, ...] = (
    "shutdown", "pool_restart", "pool_grow", "pool_shrink", "autoscale", "add_consumer",
    "cancel_consumer", "rate_limit", "time_limit",
)
"""Remote-control commands WorkerControl can send (Celery's names)."""


def _reply_text(reply: Any) -> str:
    """One line for one worker's reply (``ok`` text, ``error`` text or a repr)."""
    if isinstance(reply, Mapping):
        if "ok" in reply:
            return str(reply["ok"])
        if "error" in reply:
            return f"refused: {reply['error']}"
    return repr(reply)


def _is_error(reply: Any) -> bool:
    return isinstance(reply, Mapping) and "error" in reply and "ok" not in reply


class ControlWrites(WriteBase):
    """Task-level control of :class:`~collectors.writes.actions.Actions`: revoke, and retry from the backend."""

    def revoke(self, task_id: str, *, terminate: bool = False) -> ActionResult:
        """Revoke a task on every worker (``terminate`` also kills it if running) via Celery control."""
        self._guard("revoke")
        self._check_reachable("revoke")
        try:
            app = self._control_app()
            with self._connection() as conn:
                app.control.revoke(task_id, terminate=terminate, connection=conn)
        except Exception as exc:  # noqa: BLE001 - kombu raises many types; all are "unreachable" here
            raise BrokerUnreachableError(self._mask(f"revoke: {type(exc).__name__}: {exc}")) from exc
        self._record("revoke", task_id, 1, terminate=terminate)
        verb = "revoked and terminated" if terminate else "revoked"
        return ActionResult("revoke", 1, f"{verb} task {task_id} (sent to all workers)",
                            {"task_id": task_id, "terminate": terminate})

    def retry(self, task_id: str) -> ActionResult:
        """Send a FAILURE task again with its stored name/args/kwargs (needs ``result_extended``)."""
        self._guard("retry")
        backend = redis_client(self.settings.effective_backend_url, self.settings)
        try:
            raw = backend.get(self.keys.result_key(task_id))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnreachableError(self._mask(
                f"retry: cannot reach the result backend {self.settings.backend_masked}: {exc}")) from exc
        if raw is None:
            raise ActionError(f"retry: no stored result for task {task_id}")
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise ActionError(f"retry: the stored result of {task_id} is not JSON; not retried") from exc
        status = meta.get("status")
        if status != "FAILURE":
            raise ActionError(f"retry: task {task_id} is {status}, only FAILURE tasks are retried")
        name = meta.get("name")
        if not name or ("args" not in meta and "kwargs" not in meta):
            raise ActionError(f"retry: the backend has no name/args for {task_id} (enable result_extended)")
        args = list(meta.get("args") or [])
        kwargs = dict(meta.get("kwargs") or {})
        queue = meta.get("queue") or None
        self._check_reachable("retry")
        try:
            app = self._control_app()
            with self._connection() as conn:
                res = app.send_task(name, args=args, kwargs=kwargs, queue=queue, connection=conn)
        except Exception as exc:  # noqa: BLE001
            raise BrokerUnreachableError(self._mask(f"retry: {type(exc).__name__}: {exc}")) from exc
        self._record("retry", task_id, 1, new_task_id=res.id, task=name, queue=queue)
        return ActionResult("retry", 1, f"retried {name} as {res.id}" + (f" on {queue}" if queue else ""),
                            {"task_id": task_id, "new_task_id": res.id, "task": name, "queue": queue})


class WorkerControl(Guarded):
    """Sends Celery remote-control commands to workers, guarded (read-only) and audited.

    Args:
        settings: Connection, read-only flag, audit log path, control exchange.
        app: Celery app to use; by default ``settings.app`` is loaded or a bare app is made. Its
            ``broker_transport_options`` get ``ack_emulation=False`` (see WorkerMonitor.app).
        actor: ``user@host`` for the audit log (default: the current user).
        timeout: Seconds to wait for replies.
    """

    _refused: ClassVar[str] = "nothing was sent to the workers (run without --read-only to control workers)"

    def __init__(self, settings: Settings, app: Any | None = None, *, actor: str | None = None,
                 timeout: float = REPLY_TIMEOUT) -> None:
        self._init_guarded(settings, actor)
        self.timeout = timeout
        self._monitor = WorkerMonitor(settings, app)

    # ---- plumbing -------------------------------------------------------------------------------
    @property
    def app(self) -> Any:
        """The Celery app used for control (ack emulation off, JSON-only replies)."""
        app = self._monitor.app
        app.control.mailbox.accept = ["json"]
        return app

    @contextlib.contextmanager
    def _connection(self, action: str) -> Iterator[Any]:
        app = self.app
        conn = app.connection_for_write(
            self.settings.broker_url, transport_options=self._monitor.transport_options(),
            connect_timeout=min(self.settings.socket_timeout, 3.0),
        )
        try:
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, interval_max=0.5)
            except Exception as exc:  # noqa: BLE001 - kombu/redis raise many types
                raise BrokerUnreachableError(self._mask(
                    f"{action}: cannot reach the broker {self.settings.broker_masked}: "
                    f"{type(exc).__name__}: {exc}")) from exc
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.release()

    def broadcast(self, command: str, arguments: Mapping[str, Any] | None = None,
                  destination: Sequence[str] | None = None, *, reply: bool = True) -> dict[str, Any]:
        """Send one control command and collect ``{hostname: reply}`` (read-only: no guard here).

        Args:
            command: Celery remote-control command name.
            arguments: Its keyword arguments.
            destination: Worker hostnames (None or empty: every worker).
            reply: Wait for replies (``shutdown`` never replies).
        """
        dest = list(destination) if destination else None
        with self._connection(command) as conn:
            try:
                raw = self.app.control.broadcast(
                    command, arguments=dict(arguments or {}), destination=dest, connection=conn,
                    reply=reply, timeout=self.timeout,
                )
            except Exception as exc:  # noqa: BLE001
                raise BrokerUnreachableError(self._mask(f"{command}: {type(exc).__name__}: {exc}")) from exc
        replies: dict[str, Any] = {}
        for item in raw or ():
            if isinstance(item, Mapping):
                for host, value in item.items():
                    replies[str(host)] = value
        return replies

    def _run(self, action: str, command: str, arguments: Mapping[str, Any], destination: Sequence[str] | None,
             what: str, *, reply: bool = True) -> ActionResult:
        """Guard, send, audit, and summarise one write command."""
        self._guard(action)
        replies = self.broadcast(command, arguments, destination, reply=reply)
        dest = list(destination) if destination else []
        refused = sorted(h for h, v in replies.items() if _is_error(v))
        ok = sorted(h for h, v in replies.items() if not _is_error(v))
        silent = sorted(set(dest) - set(replies)) if reply else []
        try:
            self.audit.record(f"worker-{action}", dest or "*", len(ok) if reply else len(dest or ["*"]),
                              command=command, arguments=dict(arguments),
                              replies={h: _reply_text(v) for h, v in replies.items()},
                              refused=refused, no_reply=silent)
        except OSError as exc:
            raise ActionError(f"{action} sent but the audit log {self.audit.path} could not be written: "
                              f"{exc}") from exc
        if not reply:
            target = ", ".join(dest) if dest else "every worker"
            message = f"{what}: sent to {target} (workers do not reply to this command)"
            count = len(dest) or 1
        else:
            parts = [f"{h}: {_reply_text(replies[h])}" for h in sorted(replies)]
            parts += [f"{h}: no reply within {self.timeout:g}s" for h in silent]
            if not parts:
                parts = [f"no worker replied within {self.timeout:g}s"]
            message = f"{what} — " + "; ".join(parts)
            count = len(ok)
        return ActionResult(action, count, self._mask(message), {
            "command": command, "arguments": dict(arguments), "destination": dest,
            "replies": dict(replies), "refused": refused, "no_reply": silent,
        })

    # ---- the commands ---------------------------------------------------------------------------
    def enable_events(self, destination: Sequence[str] | None = None) -> ActionResult:
        """Celery's ``enable_events``: workers start sending task events (what Flower sends; issue 15)."""
        return self._run("enable_events", "enable_events", {}, destination, "enable task events")

    def shutdown(self, destination: Sequence[str] | None = None) -> ActionResult:
        """Warm shutdown: the worker stops consuming, finishes its running tasks and exits."""
        return self._run("shutdown", "shutdown", {}, destination, "warm shutdown", reply=False)

    def pool_restart(self, destination: Sequence[str] | None = None, *, modules: Sequence[str] | None = None,
                     reload: bool = False) -> ActionResult:
        """Restart the pool processes (the worker needs ``worker_pool_restarts=True``, else it refuses)."""
        args: dict[str, Any] = {"modules": list(modules) if modules else None, "reload": reload}
        res = self._run("pool-restart", "pool_restart", args, destination, "pool restart")
        if res.details.get("refused"):
            hint = " (enable worker_pool_restarts=True on the worker to allow pool restarts)"
            res = ActionResult(res.action, res.count, res.message + hint, res.details)
        return res

    def pool_grow(self, n: int = 1, destination: Sequence[str] | None = None) -> ActionResult:
        """Add ``n`` pool processes (refused by autoscaling workers)."""
        return self._run("pool-grow", "pool_grow", {"n": int(n)}, destination, f"pool grow by {int(n)}")

    def pool_shrink(self, n: int = 1, destination: Sequence[str] | None = None) -> ActionResult:
        """Remove ``n`` pool processes (refused by autoscaling workers)."""
        return self._run("pool-shrink", "pool_shrink", {"n": int(n)}, destination, f"pool shrink by {int(n)}")

    def autoscale(self, max_: int, min_: int, destination: Sequence[str] | None = None) -> ActionResult:
        """Set the autoscaler range (only workers started with ``--autoscale`` accept it)."""
        if int(min_) > int(max_):
            raise ActionError(f"autoscale: min ({min_}) is larger than max ({max_})")
        return self._run("autoscale", "autoscale", {"max": int(max_), "min": int(min_)}, destination,
                         f"autoscale max={int(max_)} min={int(min_)}")

    def add_consumer(self, queue: str, destination: Sequence[str] | None = None) -> ActionResult:
        """Make workers consume from ``queue`` too (exchange and routing key = the queue name)."""
        if not queue:
            raise ActionError("add-consumer: no queue given")
        return self._run("add-consumer", "add_consumer",
                         {"queue": queue, "exchange": None, "exchange_type": "direct", "routing_key": None,
                          "options": {}}, destination, f"add consumer {queue}")

    def cancel_consumer(self, queue: str, destination: Sequence[str] | None = None) -> ActionResult:
        """Stop workers consuming from ``queue``."""
        if not queue:
            raise ActionError("cancel-consumer: no queue given")
        return self._run("cancel-consumer", "cancel_consumer", {"queue": queue}, destination,
                         f"cancel consumer {queue}")

    def rate_limit(self, task_name: str, rate: str | int | None,
                   destination: Sequence[str] | None = None) -> ActionResult:
        """Set a task's rate limit (``"10/m"``, ``"2/s"``, a number per second; ``None``/``0`` = none)."""
        if not task_name:
            raise ActionError("rate-limit: no task name given")
        return self._run("rate-limit", "rate_limit", {"task_name": task_name, "rate_limit": rate}, destination,
                         f"rate limit {task_name}={rate}")

    def time_limit(self, task_name: str, soft: float | None, hard: float | None,
                   destination: Sequence[str] | None = None) -> ActionResult:
        """Set a task's soft and hard time limits in seconds (``None``: no limit)."""
        if not task_name:
            raise ActionError("time-limit: no task name given")
        if soft is not None and hard is not None and soft > hard:
            raise ActionError(f"time-limit: soft ({soft:g}) is larger than hard ({hard:g})")
        return self._run("time-limit", "time_limit", {"task_name": task_name, "soft": soft, "hard": hard},
                         destination, f"time limits {task_name} soft={soft} hard={hard}")

    # ---- reading --------------------------------------------------------------------------------
    def worker_details(self, hostname: str) -> dict[str, Any]:
        """Everything the worker detail screen shows, asked from one worker (read-only, never audited).

        Returns a dict with ``hostname``, ``online`` (answered anything), ``stats`` (pool, prefetch,
        rusage, broker incl. transport_options, totals), ``registered`` (task names), ``active_queues``,
        ``conf`` (``inspect conf``: the worker's non-default settings), ``revoked`` (ids) and ``errors``
        (``{method: text}`` for methods that failed or got no reply).
        """
        methods: tuple[tuple[str, dict[str, Any]], ...] = (
            ("stats", {}), ("registered", {"taskinfoitems": None}), ("active_queues", {}),
            ("conf", {"with_defaults": False}), ("revoked", {}),
        )
        out: dict[str, Any] = {"hostname": hostname, "online": False, "stats": {}, "registered": [],
                               "active_queues": [], "conf": {}, "revoked": [], "errors": {}}
        for method, args in methods:
            try:
                replies = self.broadcast(method, args, [hostname])
            except ActionError as exc:
                out["errors"][method] = str(exc)
                if isinstance(exc, BrokerUnreachableError):
                    break
                continue
            if hostname not in replies:
                out["errors"][method] = f"no reply within {self.timeout:g}s"
                if not out["online"]:
                    break  # a worker that ignored the first question will not answer the others
                continue
            out["online"] = True
            value = replies[hostname]
            if _is_error(value):
                out["errors"][method] = self._mask(str(value["error"]))
                continue
            if method == "registered":
                out[method] = sorted(str(t) for t in value) if isinstance(value, list) else []
            elif method == "revoked":
                out[method] = sorted(str(t) for t in value) if isinstance(value, list) else []
            elif method == "active_queues":
                out[method] = [dict(q) for q in value if isinstance(q, Mapping)] if isinstance(value, list) else []
            elif isinstance(value, Mapping):
                out[method] = _masked_tree(dict(value), self.settings)
        return out


_SECRET_KEY = re.compile(r"PASS|SECRET|TOKEN|API_?KEY|SIGNATURE|CREDENTIAL|PRIVATE", re.IGNORECASE)
"""Setting names whose values are never shown (like Celery's own HIDDEN_SETTINGS, minus plain KEY)."""


def _masked_tree(value: Any, settings: Settings) -> Any:
    """A copy of a JSON tree with credentials hidden: URL passwords masked, secret-named settings replaced."""
    if isinstance(value, Mapping):
        return {str(k): ("********" if _SECRET_KEY.search(str(k)) and v not in (None, "", False)
                         else _masked_tree(v, settings)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked_tree(v, settings) for v in value]
    if isinstance(value, str):
        return mask_text(value, settings.broker_url, settings.backend_url)
    return value


# ---- one-line commands (for a TUI prompt) -------------------------------------------------------------
CONTROL_HELP = """\
Worker control (sent to the selected worker(s); confirmation first, refused in --read-only):

  grow N                     add N pool processes            shrink N        remove N
  autoscale MAX MIN          set the autoscaler range        restart         restart the pool
  add-consumer QUEUE         start consuming QUEUE           cancel-consumer QUEUE
  rate-limit TASK RATE       10/m, 2/s, 100/h; 0 or none removes it
  time-limit TASK SOFT HARD  seconds; none removes one       shutdown        warm shutdown
"""
"""Syntax of :func:`parse_command`, for the TUI's prompt and help."""


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """A parsed one-line worker command: which WorkerControl method, its arguments, a description."""

    method: str
    args: tuple[Any, ...]
    description: str

    def run(self, control: WorkerControl, destination: Sequence[str] | None) -> ActionResult:
        """Send it with ``control`` to ``destination`` (guarded and audited like every write)."""
        return getattr(control, self.method)(*self.args, destination=destination)


_ALIASES = {
    "grow": "pool_grow", "pool-grow": "pool_grow", "shrink": "pool_shrink", "pool-shrink": "pool_shrink",
    "restart": "pool_restart", "pool-restart": "pool_restart", "autoscale": "autoscale",
    "add-consumer": "add_consumer", "add": "add_consumer", "cancel-consumer": "cancel_consumer",
    "cancel": "cancel_consumer", "rate-limit": "rate_limit", "rate": "rate_limit", "time-limit": "time_limit",
    "time": "time_limit", "shutdown": "shutdown",
}


_USAGE = {
    "pool_grow": "grow [N]", "pool_shrink": "shrink [N]", "pool_restart": "restart", "shutdown": "shutdown",
    "autoscale": "autoscale MAX MIN", "add_consumer": "add-consumer QUEUE", "cancel_consumer": "cancel-consumer QUEUE",
    "rate_limit": "rate-limit TASK RATE", "time_limit": "time-limit TASK SOFT HARD",
}


def _seconds(text: str) -> float | None:
    if text.lower() in ("none", "0", "-"):
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise ActionError(f"{text!r} is not a number of seconds (or 'none')") from exc
    if value < 0:
        raise ActionError(f"{text!r}: a time limit cannot be negative")
    return value


def _count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise ActionError(f"{what}: {text!r} is not a whole number") from exc
    if value < 0:
        raise ActionError(f"{what}: {text!r} cannot be negative")
    return value


def parse_command(text: str) -> ControlCommand:
    """Parse one line of :data:`CONTROL_HELP` syntax (``grow 2``, ``rate-limit app.add 10/m``, ...).

    Raises:
        ActionError: unknown command or wrong arguments (the message says what is expected).
    """
    words = text.split()
    if not words:
        raise ActionError("no command given")
    name, rest = words[0].lower().replace("_", "-"), words[1:]
    method = _ALIASES.get(name)
    if method is None:
        raise ActionError(f"unknown worker command {words[0]!r}")
    expect = {"pool_grow": (0, 1), "pool_shrink": (0, 1), "pool_restart": (0, 0), "shutdown": (0, 0),
              "autoscale": (2, 2), "add_consumer": (1, 1), "cancel_consumer": (1, 1), "rate_limit": (2, 2),
              "time_limit": (3, 3)}[method]
    if not expect[0] <= len(rest) <= expect[1]:
        raise ActionError(f"{name}: wrong arguments (usage: {_USAGE[method]})")
    if method in ("pool_grow", "pool_shrink"):
        n = _count(rest[0], name) if rest else 1
        if n < 1:
            raise ActionError(f"{name}: N must be at least 1")
        return ControlCommand(method, (n,), f"{'grow' if method == 'pool_grow' else 'shrink'} the pool by {n}")
    if method == "autoscale":
        mx, mn = _count(rest[0], name), _count(rest[1], name)
        if mn > mx:
            raise ActionError(f"autoscale: MIN ({mn}) is larger than MAX ({mx})")
        return ControlCommand(method, (mx, mn), f"autoscale max={mx} min={mn}")
    if method in ("add_consumer", "cancel_consumer"):
        verb = "start" if method == "add_consumer" else "stop"
        return ControlCommand(method, (rest[0],), f"{verb} consuming from {rest[0]}")
    if method == "rate_limit":
        rate = None if rest[1].lower() in ("0", "none") else rest[1]
        return ControlCommand(method, (rest[0], rate), f"rate limit of {rest[0]} = {rate or 'none'}")
    if method == "time_limit":
        soft, hard = _seconds(rest[1]), _seconds(rest[2])
        if soft is not None and hard is not None and soft > hard:
            raise ActionError(f"time-limit: SOFT ({soft:g}) is larger than HARD ({hard:g})")
        return ControlCommand(method, (rest[0], soft, hard), f"time limits of {rest[0]}: soft={soft} hard={hard}")
    if method == "pool_restart":
        return ControlCommand(method, (), "restart the pool processes")
    return ControlCommand(method, (), "warm shutdown (finish running tasks, then exit)")
