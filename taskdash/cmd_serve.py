"""``taskdash serve``: the same dashboard in a web browser, through textual-serve.

Every browser tab gets its own ``taskdash`` process (textual-serve runs the command per websocket
session). Safe by default: bound to 127.0.0.1, and the served dashboard is ``--read-only`` unless
``--allow-writes`` is given. The connection settings reach the served process through
``TASKDASH_*`` environment variables, never its command line, so passwords do not show in ``ps``,
in textual-serve's start-up banner or in the page title.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import sys
from typing import Any

import click

from taskdash.cli import EXIT_REFUSED, common_options, fail, handle_errors, settings_from

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_command(read_only: bool) -> str:
    """The shell command textual-serve starts for each browser session."""
    args = [sys.executable, "-m", "taskdash"]
    if read_only:
        args.append("--read-only")
    return shlex.join(args)


def served_environment(settings: Any, read_only: bool) -> dict[str, str]:
    """``TASKDASH_*`` variables that make the served process resolve the same settings."""
    env = {"TASKDASH_BROKER": settings.broker_url, "TASKDASH_INTERVAL": str(settings.interval)}
    if settings.backend_url:
        env["TASKDASH_BACKEND"] = settings.backend_url
    if settings.app:
        env["TASKDASH_APP"] = settings.app
    if settings.audit_log:
        env["TASKDASH_AUDIT_LOG"] = settings.audit_log
    if settings.global_keyprefix:
        env["TASKDASH_GLOBAL_KEYPREFIX"] = settings.global_keyprefix
    env["TASKDASH_VISIBILITY_TIMEOUT"] = str(settings.visibility_timeout)
    from collectors.core.config import settings_environment

    env.update(settings_environment(settings))  # sep, priority steps, every other transport option, --app-path
    env["TASKDASH_READ_ONLY"] = "1" if read_only else ""
    return env


SERVE_REQUIREMENT = "textual-serve>=1.1"
"""The ``serve`` extra of pyproject.toml (tests/test_cli_truth_help.py keeps the two equal)."""
SERVE_INSTALL = (f"from a checkout, pip install -e '.[serve]' (or pip install '/path/to/taskdash[serve]'); "
                 f"from a package index, pip install 'taskdash[serve]'; or add it to taskdash's environment: "
                 f"pip install '{SERVE_REQUIREMENT}'")
"""How to install the extra, said the same way as the README's ``taskdash serve`` paragraph."""


@click.command("serve", epilog=f"Needs the serve extra: {SERVE_INSTALL}.")
@common_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes the dashboard (no login!) to the network.")
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port.")
@click.option("--allow-writes", is_flag=True, default=False,
              help="Let browser users requeue/purge/... (the served dashboard is read-only otherwise).")
@click.option("--public-url", default=None, help="URL the browser uses when behind a proxy.")
@click.pass_context
@handle_errors
def serve_cmd(ctx: click.Context, host: str, port: int, allow_writes: bool, public_url: str | None,
              **opts: Any) -> None:
    """Serve the dashboard to a web browser (textual-serve), read-only unless --allow-writes."""
    try:
        from textual_serve.server import Server
    except ImportError:
        fail(f"taskdash serve needs textual-serve, the 'serve' extra: {SERVE_INSTALL}", EXIT_REFUSED)
    settings = settings_from(ctx, **opts)
    read_only = settings.read_only or not allow_writes
    os.environ.update(served_environment(settings, read_only))
    os.environ.pop("TASKDASH_CONTEXT", None)  # already resolved into the variables above
    if not is_loopback(host):
        click.echo(f"taskdash serve: WARNING: binding {host} makes the dashboard reachable from the network "
                   "without any login" + ("" if read_only else " — and writes are allowed"), err=True)
    url = public_url or f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    click.echo(f"taskdash serve: {url}  broker {settings.broker_masked}  "
               f"{'read-only' if read_only else 'WRITES ALLOWED'}  (Ctrl+C stops)", err=True)

    class _Server(Server):  # type: ignore[misc,valid-type]
        async def on_startup(self, app: Any) -> None:  # textual-serve prints the raw command: don't
            return None

    server = _Server(served_command(read_only), host=host, port=port, title="taskdash", public_url=url)
    server.serve()


COMMANDS = [serve_cmd]
