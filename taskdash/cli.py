"""The ``taskdash`` command line (click, like Celery's own CLI).

``taskdash`` alone opens the TUI; sub-commands: snapshot, requeue, quarantine, replay, purge, restore,
revoke, demo. Connection and safety options are accepted before and after the sub-command.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from collectors.core.config import ConfigError, Settings, mask_url, resolve_settings
from collectors.core.errors import (  # noqa: F401 - the exit-code table, re-exported for the cmd_* modules
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_CRITICAL,
    EXIT_FOUND,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_PERMISSION,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Kind,
    RedisProblem,
    classify,
    classify_text,
    exit_code_summary,
    user_of,
)
from taskdash.app_options import APP_OPTION_KEYS, app_options

F = TypeVar("F", bound=Callable[..., Any])

_COMMON = ("broker", "backend", "app", "read_only", "interval", "audit_log", "context", *APP_OPTION_KEYS)


def common_options(f: F) -> F:
    """Connection and safety options shared by the group and every sub-command."""
    f = app_options(f)  # transport options without -A (--global-keyprefix, --sep, ..., --app-path)
    f = click.option("--context", "context", default=None,
                     help="Named broker/app from ~/.config/taskdash/config.toml ($TASKDASH_CONFIG).")(f)
    f = click.option("--audit-log", "audit_log", default=None, help="Audit log file (JSON lines).")(f)
    f = click.option("--interval", type=float, default=None, help="Refresh interval in seconds (default 1).")(f)
    f = click.option("--read-only", "read_only", is_flag=True, default=None,
                     help="Refuse every write (requeue, purge, ...).")(f)
    f = click.option("-A", "--app", "app", default=None, help="Celery app (module or module:attr) to read config from.")(f)
    f = click.option("--backend", default=None, envvar=None, help="Result backend URL (default: the broker).")(f)
    f = click.option("--broker", "-b", default=None, help="Broker URL (default redis://localhost:6379/0).")(f)
    return f


strict_option = click.option(
    "--strict", is_flag=True, default=False,
    help=f"Exit {EXIT_PARTIAL} when any source could only be read partly (default: exit 0 and list it in errors).")
"""``--strict``: a partial read (any entry in ``errors``) is a failure, not a note."""

yes_option = click.option("--yes", "-y", is_flag=True, help="Do it without asking for confirmation.")
"""``--yes``: the CLI form of a confirmation dialog's "Yes" (every write command has it)."""


def settings_for(ctx: click.Context, opts: dict[str, Any], **extra: Any) -> Settings:
    """Settings for a sub-command from its ``**opts`` (connection/safety options only) plus ``extra``."""
    return settings_from(ctx, **{k: opts.get(k) for k in _COMMON}, **extra)


def settings_from(ctx: click.Context, **sub: Any) -> Settings:
    """Merge group-level and sub-command-level options (sub-command wins) and resolve Settings."""
    merged: dict[str, Any] = {}
    c: click.Context | None = ctx
    chain: list[click.Context] = []
    while c is not None:
        chain.append(c)
        c = c.parent
    for c in reversed(chain):  # root first, so the innermost wins
        for k in _COMMON:
            v = c.params.get(k)
            if v is not None:
                merged[k] = v
    for k in _COMMON:
        if sub.get(k) is not None:
            merged[k] = sub[k]
    extra = {k: v for k, v in sub.items() if k not in _COMMON and v is not None}
    try:
        return resolve_settings(
            broker=merged.get("broker"), backend=merged.get("backend"), app=merged.get("app"),
            read_only=merged.get("read_only"), interval=merged.get("interval"),
            audit_log=merged.get("audit_log"), context=merged.get("context"), **extra,
            **{k: merged[k] for k in APP_OPTION_KEYS if k in merged},
        )
    except ConfigError as exc:
        err = click.ClickException(str(exc))
        err.exit_code = EXIT_USAGE
        raise err from exc


def attach_history(collector: Any) -> None:
    """Give a command's Collector the dashboard's history file: the first sightings of queue heads it
    remembers make ``oldest_age_s`` count from when any taskdash first saw the message, not from this
    run's start. A history that cannot be opened (read-only home, locked file) is skipped, never fatal."""
    try:
        from collectors.analysis.history import History

        collector.attach(forensics=collector.forensics, history=History())
    except Exception as exc:  # noqa: BLE001 - the command works without it (ages then start at this run)
        logging.getLogger(__name__).debug("history unavailable: %s", exc)


def fail(message: str, code: int, *, exc: BaseException | None = None) -> NoReturn:
    """One clear line on stderr, then exit with ``code`` (no traceback).

    The exit-code table is kept true here for every caller: when ``code`` is the generic "unreachable" or
    "refused" and the failure (``exc``, else the exception being handled, else the message text) is in
    fact an authentication failure or a permission/disabled-command refusal, the code becomes 4 or 5
    and a message that blamed the network names the credentials or the missing permission instead.
    """
    if code in (EXIT_UNREACHABLE, EXIT_REFUSED):
        problem = classify(exc if exc is not None else sys.exc_info()[1])
        if (problem is None or problem.kind is Kind.OTHER) and code == EXIT_UNREACHABLE:
            problem = classify_text(message)
        if problem is not None and problem.kind in (Kind.AUTH, Kind.PERMISSION, Kind.UNKNOWN_COMMAND):
            code = problem.exit_code
            url = _first_url(message)
            if problem.kind is Kind.AUTH or _BLAMES_NETWORK.search(message):
                role = "backend" if re.search(r"\bbackend\b", message) else "broker"
                message = problem.describe(url, role=role)
            elif "permission denied" not in message:
                message = f"{message} (permission denied for user {user_of(url)}: {problem.reason()})"
    click.echo(f"taskdash: {message}", err=True)
    sys.exit(code)


_BLAMES_NETWORK = re.compile(r"unreachable|cannot reach|cannot connect", re.I)
_URL_RE = re.compile(r"\b(?:rediss?|redis\+socket|unix|sentinels?)://[^\s,;)'\"]+")


def _first_url(message: str) -> str | None:
    m = _URL_RE.search(message)
    if m:
        return m.group(0).rstrip(":.")
    urls = _known_urls()
    return mask_url(urls[0]) if urls else None


def fail_redis(problem: BaseException | str | None, settings: Settings, *, role: str = "broker",
               default: int = EXIT_UNREACHABLE) -> NoReturn:
    """Exit for a failed connection/read of the broker (or backend) with the table's code and a message
    that names what really failed: "authentication failed for user X at <masked url>", "permission
    denied ...", "... unreachable: ...". ``problem`` is the exception, or a reason whose exception is gone."""
    url = settings.broker_url if role == "broker" else settings.effective_backend_url
    p = classify(problem) if isinstance(problem, BaseException) else classify_text(problem)
    if p is None:
        p = RedisProblem(Kind.UNREACHABLE, "no answer")
    from collectors.core.config import mask_text

    text = p.describe(url, role=role)
    text = mask_text(text, settings.broker_url, settings.backend_url)
    code = p.exit_code if p.kind is not Kind.OTHER else default
    if p.kind is Kind.OTHER and default == EXIT_UNREACHABLE:
        text = f"{role} {mask_url(url)} unreachable: {mask_text(p.detail, settings.broker_url, settings.backend_url)}"
    click.echo(f"taskdash: {text}", err=True)
    sys.exit(code)


def _known_urls() -> list[str]:
    """Every broker/backend URL given to this invocation (flags at any level, environment), so an
    error message can be masked even where it quotes a password without its URL."""
    import os

    urls: list[str] = []
    c = click.get_current_context(silent=True)
    while c is not None:
        for key in ("broker", "backend"):
            v = c.params.get(key)
            if isinstance(v, str) and v:
                urls.append(v)
        c = c.parent
    for name in ("TASKDASH_BROKER", "TASKDASH_BACKEND", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        if os.environ.get(name):
            urls.append(os.environ[name])
    return urls


def handle_errors(f: F) -> F:
    """Turn unexpected exceptions into one masked line on stderr instead of a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        except Exception as exc:  # noqa: BLE001 - last line of defence, message stays masked
            from collectors.core.config import mask_text

            logging.getLogger("taskdash").debug("unhandled error", exc_info=True)
            urls = _known_urls()
            problem = classify(exc)
            if problem is not None and problem.kind is not Kind.OTHER:
                fail(mask_text(problem.describe(urls[0] if urls else None), *urls), problem.exit_code)
            fail(mask_text(f"{type(exc).__name__}: {exc}", *urls), EXIT_REFUSED)

    return wrapper  # type: ignore[return-value]


_COMMAND_MODULES = (
    "cmd_snapshot", "cmd_actions", "cmd_demo", "cmd_extra", "cmd_control", "cmd_metrics", "cmd_lint", "cmd_serve",
    "cmd_acl", "cmd_watch", "cmd_bulk",
)


class LazyGroup(click.Group):
    """Loads sub-commands from ``taskdash.cmd_*`` modules on first use (each exposes ``COMMANDS``).

    Lazy loading keeps ``taskdash --help`` fast and avoids import cycles (the modules import this one).
    """

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import importlib

        for modname in _COMMAND_MODULES:
            try:
                mod = importlib.import_module(f"taskdash.{modname}")
            except ModuleNotFoundError as exc:
                if exc.name != f"taskdash.{modname}":
                    raise
                continue
            for command in getattr(mod, "COMMANDS", ()):
                _add_exit_epilog(command)
                self.add_command(command)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, cmd_name)

    # Click exits 2 on a usage error, the code that means "unreachable" here: re-code them as 64.
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise


def _add_exit_epilog(command: click.Command) -> None:
    """Every sub-command's help ends with the exit-code table in one line (the group's help explains
    each code); a command's own epilog comes first."""
    line = COMMAND_EXIT_EPILOG
    if line not in (command.epilog or ""):
        command.epilog = f"{command.epilog}\n\n{line}" if command.epilog else line
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_exit_epilog(sub)


COMMAND_EXIT_EPILOG = ("\b\nExit codes (every command; `taskdash --help` says what each means):\n  "
                       + exit_code_summary())


def _exit_code_epilog() -> str:
    return "\b\nExit codes (every command):\n" + "\n".join(f"  {e.code:>2}  {e.meaning}" for e in EXIT_CODES)


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_exit_code_epilog())
@common_options
@click.option("--enable-events", "enable_events", is_flag=True, default=False,
              help="Dashboard: send Celery's enable_events broadcast now and every 60 s (workers without -E send "
                   "task events; audited, refused with --read-only). snapshot/metrics take it too.")
@click.version_option(package_name="taskdash")
@click.pass_context
def cli(ctx: click.Context, enable_events: bool = False, **opts: Any) -> None:
    """taskdash: see and fix Celery on Redis — queues, unacked messages, workers, poison loops.

    Without a sub-command, opens the live dashboard.
    """
    if ctx.invoked_subcommand is None:
        settings = settings_from(ctx)
        from tui import run_tui

        if enable_events:  # issue 15: per-task-name analytics need task events
            from taskdash.events_option import start_enabler

            start_enabler(settings)  # daemon thread: repeats while the dashboard runs

        sys.exit(run_tui(settings))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="taskdash")
