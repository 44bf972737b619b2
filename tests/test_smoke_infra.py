"""The test infrastructure itself: private redis-server and a real worker running demo_tasks."""

from __future__ import annotations

import time


def test_worker_runs_a_task(start_worker, demo_app, r) -> None:
    start_worker(("celery",))
    res = demo_app.send_task("demo_tasks.tasks.add", args=(2, 3), kwargs={"tag": "smoke"})
    assert res.get(timeout=20) == 5
    assert int(r.get("demo:runs:smoke")) == 1
    assert r.connection_pool.connection_kwargs["port"] != 6379
    time.sleep(0)
