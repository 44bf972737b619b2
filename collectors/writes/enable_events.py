"""``--enable-events``: Celery's ``enable_events`` broadcast now and on a slow cadence (issue 15).

Workers started without ``-E`` send no task events, so the per-task-name analytics have nothing to
count. Like Flower, taskdash can ask every worker to turn them on; a worker started later (or
restarted) gets the command at the next repeat. Never by default: the CLI sends it only with
``--enable-events``. It is a write: refused in read-only mode (``ReadOnlyError`` from ``start()``
before anything is sent), and each broadcast appends one audit line (``worker-enable_events``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from collectors.writes.base import ActionResult

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
"""Seconds between two broadcasts (a new worker gets events within a minute)."""


class EventsEnabler:
    """Sends ``enable_events`` at ``start()`` and every ``interval_s`` from its own daemon thread."""

    def __init__(self, control: Any, interval_s: float = DEFAULT_INTERVAL_S,
                 on_result: Callable[[ActionResult | None, str | None], None] | None = None) -> None:
        """``control`` is a :class:`collectors.writes.control.WorkerControl` (guarded and audited)."""
        self.control = control
        self.interval_s = max(5.0, float(interval_s))
        self.on_result = on_result
        self.sent = 0
        self.last_error: str | None = None
        self.last_result: ActionResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send_once(self) -> ActionResult | None:
        """One broadcast; errors other than read-only are kept in ``last_error`` (the next repeat retries)."""
        from collectors.writes.base import ReadOnlyError

        try:
            result = self.control.enable_events()
        except ReadOnlyError:
            raise
        except Exception as exc:  # noqa: BLE001 - broker down: try again at the next repeat
            self.last_error = str(exc)
            log.info("enable_events: %s", exc)
            if self.on_result:
                self.on_result(None, self.last_error)
            return None
        self.sent += 1
        self.last_error = None
        self.last_result = result
        if self.on_result:
            self.on_result(result, None)
        return result

    def start(self) -> EventsEnabler:
        """Send now (raises ``ReadOnlyError`` in read-only mode), then repeat in the background."""
        self.send_once()
        self._thread = threading.Thread(target=self._run, name="taskdash-enable-events", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.send_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
