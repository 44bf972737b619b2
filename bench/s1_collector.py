"""The full Collector snapshot once per second (S1 with workers, and S3 with taskdash attached)."""

from __future__ import annotations

import time
from typing import Any

from bench import netcount
from bench.harness import Meter, run_child, settings_for, vm_hwm_mb


def child_collector(params: dict[str, Any]) -> dict[str, Any]:
    """taskdash Collector: the full snapshot (broker + unacked + workers + results + poison) every second."""
    from collectors.collector import Collector

    settings = settings_for(params).with_(inspect_interval=float(params.get("inspect_interval", 5.0)))
    meter = Meter(params["broker"])
    n = int(params["refreshes"])
    interval = float(params.get("interval", 1.0))
    rows = []
    with Collector(settings) as col:
        t0 = time.perf_counter()
        snap = col.collect()  # first: waits for one inspect window
        first_ms = (time.perf_counter() - t0) * 1000
        # The slowlog is read by the parent after this process exits: parsing ~10^5 entries here would
        # inflate this process's peak RSS, which must be taskdash's alone.
        meter.reset()
        netcount.COUNTER.reset()
        c0 = meter.counters()
        start = time.perf_counter()
        for _ in range(n):
            tick = time.perf_counter()
            snap = col.collect()
            rows.append({"wall_ms": (time.perf_counter() - tick) * 1000, "round_trips": snap.cost.round_trips,
                         "queues": len(snap.queues), "workers": sum(1 for w in snap.workers if w.online),
                         "unacked_total": snap.unacked_total, "errors": [e.message for e in snap.errors]})
            time.sleep(max(0.0, interval - (time.perf_counter() - tick)))
        elapsed = time.perf_counter() - start
        meter.threshold(-1)  # stop logging: close() below is not part of the measured window
        c1 = meter.counters()
        net = netcount.COUNTER.snapshot()
        states: dict[str, int] = {}
        for e in snap.unacked:
            states[e.state] = states.get(e.state, 0) + 1
    return {"first_ms": first_ms, "rows": rows, "elapsed_s": elapsed, "per_s": {
        "round_trips": net["round_trips"] / elapsed, "bytes": (net["sent"] + net["received"]) / elapsed,
        "redis_cpu_ms_all_clients": (c1["cpu"] - c0["cpu"]) * 1000 / elapsed},
        "window_states": states, "rss_mb": vm_hwm_mb()}


def run_collector(meter: Meter, params: dict[str, Any]) -> dict[str, Any]:
    """child_collector, then its Redis time from the slowlog it left (read here, in the parent)."""
    meter.threshold(0)
    out = run_child("collector", params)
    srv = meter.take_slowlog()
    meter.threshold(0)
    el = out["elapsed_s"]
    out["per_s"].update({"server_usec": srv["usec"] / el, "server_calls": srv["calls"] / el})
    out["by_cmd"] = srv["by_cmd"]
    return out
