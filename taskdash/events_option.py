"""``--enable-events`` (issue 15): ask workers started without ``-E`` to send task events.

Sends Celery's ``enable_events`` broadcast (like Flower) when the command starts and every
``--enable-events-interval`` seconds while it runs (default 60 s, so a new worker is covered within a
minute). Never by default; refused in read-only mode (exit 1, nothing sent); each broadcast is a write
with one audit line (``worker-enable_events``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from collectors.core.config import Settings
from collectors.writes.enable_events import DEFAULT_INTERVAL_S, EventsEnabler

F = TypeVar("F", bound=Callable[..., Any])


def enable_events_option(f: F) -> F:
    """``--enable-events`` and ``--enable-events-interval``."""
    f = click.option("--enable-events-interval", "enable_events_interval", type=float, default=DEFAULT_INTERVAL_S,
                     show_default=True, help="Seconds between two enable_events broadcasts.")(f)
    f = click.option("--enable-events", "enable_events", is_flag=True, default=False,
                     help="Send Celery's enable_events broadcast now and on a slow cadence (workers without -E "
                          "start sending task events; a write: audited, refused with --read-only).")(f)
    return f


def start_enabler(settings: Settings, interval_s: float = DEFAULT_INTERVAL_S,
                  collector: Any | None = None) -> EventsEnabler:
    """Send ``enable_events`` now and keep repeating (exits with the read-only message when refused)."""
    from collectors.writes.base import ReadOnlyError
    from collectors.writes.control import WorkerControl
    from taskdash.cli import EXIT_REFUSED, fail

    if settings.read_only:
        fail("read-only mode: --enable-events refused, nothing was sent to the workers", EXIT_REFUSED)
    enabler = EventsEnabler(WorkerControl(settings), interval_s)
    try:
        enabler.start()
    except ReadOnlyError as exc:
        fail(str(exc), EXIT_REFUSED)
    stats = getattr(collector, "task_stats", None)
    if stats is not None:
        stats.enable_events = True
    return enabler
