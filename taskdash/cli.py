"""The ``taskdash`` command line (click, like Celery's own CLI).

``taskdash`` alone opens the TUI; sub-commands: snapshot, requeue, quarantine, replay, purge, restore,
revoke, demo. Connection and safety options are accepted before and after the sub-command.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from collectors.core.config import ConfigError, Settings, resolve_settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
EXIT_FOUND = 3

_COMMON = ("broker", "backend", "app", "read_only", "interval", "audit_log", "context")


def common_options(f: F) -> F:
    """Connection and safety options shared by the group and every sub-command."""
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
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def fail(message: str, code: int) -> None:
    """One clear line on stderr, then exit with ``code`` (no traceback)."""
    click.echo(f"taskdash: {message}", err=True)
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
            fail(str(exc), EXIT_UNREACHABLE)
        except Exception as exc:  # noqa: BLE001 - last line of defence, message stays masked
            from collectors.core.config import mask_text

            logging.getLogger("taskdash").debug("unhandled error", exc_info=True)
            fail(mask_text(f"{type(exc).__name__}: {exc}", *_known_urls()), EXIT_REFUSED)

    return wrapper  # type: ignore[return-value]


_COMMAND_MODULES = (
    "cmd_snapshot", "cmd_actions", "cmd_demo", "cmd_extra", "cmd_control", "cmd_metrics", "cmd_lint", "cmd_serve",
    "cmd_watch",
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
                self.add_command(command)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="taskdash")
@click.pass_context
def cli(ctx: click.Context, **opts: Any) -> None:
    """taskdash: see and fix Celery on Redis — queues, unacked messages, workers, poison loops.

    Without a sub-command, opens the live dashboard.
    """
    if ctx.invoked_subcommand is None:
        settings = settings_from(ctx)
        from tui import run_tui

        sys.exit(run_tui(settings))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="taskdash")
