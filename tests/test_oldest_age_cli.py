"""`taskdash snapshot` counts an oldest age from the first sighting any taskdash remembered (issue 21).

Two real `taskdash snapshot --json` processes on the same state directory (the history file): the second
one, run 3 s later, reports the backlog's head as waiting at least those 3 s (a lower bound), instead of
starting again from 0 as a one-shot without history did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis


def _snap(redis_url: str, state: Path) -> dict[str, Any]:
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    env.pop("TASKDASH_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "taskdash", "snapshot", "--json", "--broker", redis_url],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_second_snapshot_remembers_the_first_sighting(demo_app: Any, r: redis.Redis, redis_url: str,
                                                      tmp_path: Path) -> None:
    for i in range(5):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}",), queue="emails")
    first = {q["name"]: q for q in _snap(redis_url, tmp_path)["queues"]}["emails"]
    assert first["messages"] == 5 and first["oldest_age_is_lower_bound"] is True
    time.sleep(3.0)
    second = {q["name"]: q for q in _snap(redis_url, tmp_path)["queues"]}["emails"]
    assert second["oldest_age_is_lower_bound"] is True and second["oldest_age_source"] == "first-seen"
    assert second["oldest_age_s"] >= 3.0, second
    # another state directory has no such memory: it starts at its own first sighting
    other = {q["name"]: q for q in _snap(redis_url, tmp_path / "other")["queues"]}["emails"]
    assert other["oldest_age_s"] < 3.0 and other["oldest_age_is_lower_bound"] is True
