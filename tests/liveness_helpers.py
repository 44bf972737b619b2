"""Waits shared by the tests that kill a worker and expect taskdash to prove it dead."""

from __future__ import annotations

import time
from typing import Any


def connections_recognised(monitor: Any) -> bool:
    """Has ``monitor`` (a WorkerMonitor) recognised a Redis connection of every worker it watches?

    A connection that no probe recognised while its worker spoke proves nothing when it goes (the safe
    side), so a test that kills a worker and expects its death proven waits for this first.
    """
    incarnations = monitor.view(time.time()).incarnations
    return bool(incarnations) and all(i.conn and i.conn.present for i in incarnations)
