"""The flags for every transport option taskdash otherwise reads from the ``-A`` app.

One table (collectors.core.config.APP_OPTIONS) gives each option its flag, its ``TASKDASH_*`` variable and
its context key; this module only turns it into click options for ``taskdash.cli.common_options``, so
taskdash can run in its own environment (pipx, uvx, a container) where the user's app cannot be imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from collectors.core.config import APP_OPTION_KEYS, APP_OPTIONS

__all__ = ["APP_OPTION_KEYS", "app_options"]

F = TypeVar("F", bound=Callable[..., Any])


def _none_if_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # a repeatable flag not given is (), which must not hide the same flag given before the sub-command
    return value or None


def app_options(f: F) -> F:
    """Add ``--global-keyprefix``, ``--sep``, ``--priority-steps``, ... (values are parsed and checked by
    ``resolve_settings``, which names the flag in its error)."""
    for opt in reversed(APP_OPTIONS):
        f = click.option(opt.flag, opt.key, default=None, metavar=opt.metavar, multiple=opt.multiple,
                         callback=_none_if_empty if opt.multiple else None,
                         help=f"{opt.help} [env {opt.env}]")(f)
    return f
