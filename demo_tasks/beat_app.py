"""The demo app with a beat schedule (issue 16): ``celery -A demo_tasks.beat_app beat`` (default
scheduler) or ``... beat -S redbeat.RedBeatScheduler`` (celery-redbeat, state in the broker's Redis).

Environment (besides celery_app's): ``DEMO_BEAT_INTERVAL`` seconds between runs of the entry ``tick``
(``demo_tasks.tasks.record("beat")``, default 3).
"""

from __future__ import annotations

import os

from demo_tasks.celery_app import BROKER_URL, make_app

INTERVAL = float(os.environ.get("DEMO_BEAT_INTERVAL", "3"))

app = make_app()
app.conf.update(
    beat_schedule={
        "tick": {"task": "demo_tasks.tasks.record", "schedule": INTERVAL, "args": ("beat",)},
    },
    beat_max_loop_interval=1,
    redbeat_redis_url=BROKER_URL,
    redbeat_lock_timeout=5,
)
