"""S1 worker state: taskdash's single inspect window vs Flower's per-method inspect vs four celery CLI runs.

Workers are attached here, so Redis time is the SLOWLOG of the measured client name (``TD_NAME``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import netcount
from bench.harness import Meter, run_child, settings_for, vm_hwm_mb


def child_inspect_taskdash(params: dict[str, Any]) -> dict[str, Any]:
    """taskdash WorkerMonitor: one inspect window for ping/stats/active/reserved/scheduled/active_queues."""
    from collectors.reads.workers import WorkerMonitor

    settings = settings_for(params)
    meter = Meter(params["broker"])
    mon = WorkerMonitor(settings)
    n = int(params["workers"])
    mon.start()  # heartbeats (PSUBSCRIBE); the periodic inspect runs once at start (interval 3600 s)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        v = mon.view(time.time())
        if sum(1 for w in v.workers if w.online) >= n:
            break
        time.sleep(0.2)
    time.sleep(3.0)  # heartbeats seen for > 2.5 s: the window may end as soon as every worker answered
    meter.reset()
    rows = []
    view = None
    for _ in range(int(params["reps"])):
        netcount.COUNTER.reset()
        t0 = time.perf_counter()
        mon.inspect_now()
        wall = time.perf_counter() - t0
        view = mon.view(time.time())
        srv = meter.take_slowlog()
        answered = sum(1 for w in view.workers if w.online)
        rows.append({"wall_ms": wall * 1000, **netcount.COUNTER.snapshot(), "server_usec": srv["usec"],
                     "server_calls": srv["calls"], "workers": answered, "claims": len(view.claims),
                     "inspect_ok": view.inspect_ok})
    mon.stop()
    return {"rows": rows, "rss_mb": vm_hwm_mb()}


def child_inspect_flower(params: dict[str, Any]) -> dict[str, Any]:
    """Flower 2.2.0 Inspector._inspect_all: each method its own ``inspect(timeout).method()``, concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    from celery import Celery

    app = Celery("flowerbench", broker=params["broker"], set_as_current=False)
    meter = Meter(params["broker"])
    methods = tuple(params["methods"])

    def one(method: str) -> int:
        insp = app.control.inspect(timeout=float(params.get("timeout", 1.0)))
        result = insp.active(safe=True) if method == "active" else getattr(insp, method)()
        return len(result or {})

    rows = []
    with ThreadPoolExecutor(max_workers=len(methods)) as pool:
        list(pool.map(one, methods))  # warm-up: connections and pools exist, as in a running Flower
        meter.reset()
        for _ in range(int(params["reps"])):
            netcount.COUNTER.reset()
            t0 = time.perf_counter()
            answered = list(pool.map(one, methods))
            wall = time.perf_counter() - t0
            srv = meter.take_slowlog()
            rows.append({"wall_ms": wall * 1000, **netcount.COUNTER.snapshot(), "server_usec": srv["usec"],
                         "server_calls": srv["calls"], "workers": min(answered) if answered else 0})
    return {"rows": rows, "rss_mb": vm_hwm_mb(), "methods": list(methods)}


def child_celery_cli(params: dict[str, Any]) -> dict[str, Any]:
    """``celery -A demo_tasks inspect <method>`` exactly as the CLI runs it, with socket counting."""
    import atexit

    out = params["out"]
    t0 = time.perf_counter()

    def dump() -> None:
        Path(out).write_text(json.dumps({**netcount.COUNTER.snapshot(), "wall_in_process_ms":
                                         (time.perf_counter() - t0) * 1000, "rss_mb": vm_hwm_mb()}))

    atexit.register(dump)
    os.environ["CELERY_BROKER_URL"] = params["broker"]
    sys.argv = ["celery", "-A", "demo_tasks", "inspect", params["method"], "--timeout", "1.0"]
    from celery.__main__ import main

    try:
        main()
    except SystemExit:
        pass
    return {"ok": True}


def celery_cli_runs(broker: str, meter: Meter) -> dict[str, Any]:
    """``celery inspect active|reserved|scheduled|stats`` as four CLI processes, each with its Redis time."""
    cli: dict[str, Any] = {}
    for method in ("active", "reserved", "scheduled", "stats"):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            path = tf.name
        meter.take_slowlog()
        t1 = time.perf_counter()
        run_child("celery_cli", {"broker": broker, "method": method, "out": path})
        wall = (time.perf_counter() - t1) * 1000
        srv = meter.take_slowlog()
        data = json.loads(Path(path).read_text())
        os.unlink(path)
        cli[method] = {"wall_ms": wall, **data, "server_usec": srv["usec"], "server_calls": srv["calls"]}
    return cli
