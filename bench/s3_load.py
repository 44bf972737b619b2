"""S3: steady load through real workers, without and with taskdash refreshing every second."""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.harness import Meter, log, start_workers, stop_workers
from bench.presets import Preset
from bench.s1_collector import run_collector


def _load_thread(app: Any, rate: int, seconds: float, tag: str, stop: threading.Event) -> dict[str, Any]:
    sent = 0
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        while not stop.is_set():
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
            due = int(elapsed * rate) + 1
            while sent < due:
                app.send_task("demo_tasks.tasks.add", args=(sent, 1), kwargs={"tag": tag}, producer=producer)
                sent += 1
            time.sleep(0.005)
    return {"sent": sent, "seconds": time.perf_counter() - t0}


def phase_load(rs: Any, meter: Meter, preset: Preset) -> dict[str, Any]:
    """S3: steady load through real workers, without and with taskdash refreshing every second."""
    from demo_tasks.celery_app import make_app

    rs.client().flushall()
    backend = rs.url_db(1)
    log("S3: starting 2 workers (threads pool, 4 threads each)")
    workers = start_workers(rs, 2, backend, queue="celery", concurrency=4, extra=("-O", "fair"))
    out: dict[str, Any] = {"workers": "2 x celery worker -P threads -c 4", "target_rate": preset.s3_rate}
    app = make_app(rs.url, backend)
    r0 = rs.client()
    try:
        for label, with_td in (("without", False), ("with", True)):
            tag = f"s3{label}"
            stop = threading.Event()
            box: dict[str, Any] = {}
            child: dict[str, Any] = {}
            c0 = meter.counters()
            td_thread = None
            if with_td:
                def run_td(child: dict[str, Any] = child) -> None:
                    child.update(run_collector(meter, {"broker": rs.url, "backend": backend,
                                                       "refreshes": int(preset.s3_seconds), "interval": 1.0}))
                td_thread = threading.Thread(target=run_td, daemon=True)
                td_thread.start()
                time.sleep(2.5)  # child imports + first inspect window
            done0 = int(r0.get(f"demo:runs:{tag}") or 0)
            t0 = time.perf_counter()
            box.update(_load_thread(app, preset.s3_rate, preset.s3_seconds, tag, stop))
            elapsed = time.perf_counter() - t0
            done = int(r0.get(f"demo:runs:{tag}") or 0) - done0
            c1 = meter.counters()
            backlog = int(r0.llen("celery"))
            out[label] = {"sent_per_s": box["sent"] / elapsed, "done_per_s": done / elapsed, "backlog_end": backlog,
                          "redis_cpu_share": (c1["cpu"] - c0["cpu"]) / (time.perf_counter() - t0 + 1e-9)}
            if td_thread is not None:
                td_thread.join(120)
                out[label]["taskdash"] = child
            # drain before the next phase
            end = time.monotonic() + 30
            while r0.llen("celery") and time.monotonic() < end:
                time.sleep(0.2)
    finally:
        stop_workers(workers)
    return out
