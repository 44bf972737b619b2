"""S2: a million stored results — the complete count (step() loop and background thread) and latency.

No SLOWLOG here (commands inside Lua would be logged and slow it down): Redis cost is the INFO cpu and
commandstats delta. Latency is a state change (SETEX + PUBLISH, as the result backend writes it) until
``ResultsMonitor`` and a ``Collector.collect()`` snapshot show it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import redis

from bench.harness import METER_NAME, Meter, log, run_child, settings_for, stats_of, vm_hwm_mb, vm_rss_mb
from bench.presets import Preset
from bench.scenarios import load_results


def child_results_scan(params: dict[str, Any]) -> dict[str, Any]:
    """ResultsMonitor.step() in a loop until one full pass (optionally paced), with Redis cost and RSS."""
    from collectors.core.config import redis_client
    from collectors.reads.results import ResultsMonitor

    settings = settings_for(params)
    meter = Meter(params["backend"])
    client = redis_client(params["backend"], settings)
    mon = ResultsMonitor(settings, client)
    pause = float(params.get("pause_s", 0.0))
    max_s = float(params.get("max_s", 300.0))
    cs0 = meter.commandstats()
    c0 = meter.counters()
    t0 = time.perf_counter()
    steps = 0
    rss_max = vm_rss_mb()
    step_ms: list[float] = []
    while mon.passes == 0 and time.perf_counter() - t0 < max_s:
        s0 = time.perf_counter()
        mon.step()
        step_ms.append((time.perf_counter() - s0) * 1000)
        steps += 1
        if steps % 20 == 0:
            rss_max = max(rss_max, vm_rss_mb())
        if pause:
            time.sleep(pause)
    elapsed = time.perf_counter() - t0
    c1 = meter.counters()
    cs1 = meter.commandstats()
    usec = sum(v[1] - cs0.get(k, (0, 0))[1] for k, v in cs1.items() if k not in ("info",))
    calls = sum(v[0] - cs0.get(k, (0, 0))[0] for k, v in cs1.items() if k not in ("info",))
    st = mon.stats()
    total = int(params.get("total") or 0)
    rate = st.scanned / elapsed if elapsed else 0.0
    return {"complete": st.complete, "elapsed_s": elapsed, "steps": steps, "scanned": st.scanned,
            "keys_per_s": rate, "to_complete_s": elapsed if st.complete else (total / rate if rate else None), "counted": sum(n for _, n in st.states),
            "states": dict(st.states), "redis_cpu_share": (c1["cpu"] - c0["cpu"]) / elapsed,
            "redis_usec_per_s": usec / elapsed, "redis_calls": calls,
            "bytes_per_s": (c1["net_out"] - c0["net_out"] + c1["net_in"] - c0["net_in"]) / elapsed,
            "step_ms": stats_of(step_ms), "table_mb": mon.memory_bytes() / 2**20,
            "rss_max_mb": max(rss_max, vm_rss_mb()), "rss_mb": vm_hwm_mb()}


def _publish_state(client: redis.Redis, tid: str, state: str) -> None:
    """What the Redis result backend does on a state change: SETEX + PUBLISH in one MULTI."""
    key = f"celery-task-meta-{tid}"
    value = json.dumps({"status": state, "result": {"step": 1}, "traceback": None, "children": [],
                        "date_done": None, "task_id": tid})
    pipe = client.pipeline(transaction=True)
    pipe.setex(key, 86400, value)
    pipe.publish(key, value)
    pipe.execute()


def child_results_background(params: dict[str, Any]) -> dict[str, Any]:
    """ResultsMonitor.start(): the paced background SCAN thread (as the Collector runs it) until one pass."""
    from collectors.core.config import redis_client
    from collectors.reads.results import ResultsMonitor

    settings = settings_for(params)
    meter = Meter(params["backend"])
    client = redis_client(params["backend"], settings)
    mon = ResultsMonitor(settings, client)
    max_s = float(params.get("max_s", 300.0))
    c0 = meter.counters()
    cs0 = meter.commandstats()
    t0 = time.perf_counter()
    rss_max = vm_rss_mb()
    shares: list[float] = []
    mon.start()
    last_c, last_t = c0, t0
    try:
        while not mon.stats().complete and time.perf_counter() - t0 < max_s:
            time.sleep(0.25)
            rss_max = max(rss_max, vm_rss_mb())
            if time.perf_counter() - last_t >= 5:
                c, t = meter.counters(), time.perf_counter()
                shares.append((c["cpu"] - last_c["cpu"]) / (t - last_t))
                last_c, last_t = c, t
        elapsed = time.perf_counter() - t0
        c1 = meter.counters()
        cs1 = meter.commandstats()
    finally:
        mon.stop()
    st = mon.stats()
    usec = sum(v[1] - cs0.get(k, (0, 0))[1] for k, v in cs1.items() if k not in ("info",))
    rate = st.scanned / elapsed if elapsed else 0.0
    total = int(params.get("total") or 0)
    return {"complete": st.complete, "elapsed_s": elapsed, "scanned": st.scanned, "keys_per_s": rate,
            "to_complete_s": elapsed if st.complete else (total / rate if rate else None),
            "counted": sum(n for _, n in st.states), "states": dict(st.states),
            "redis_cpu_share": (c1["cpu"] - c0["cpu"]) / elapsed, "redis_cpu_share_max_5s": max(shares) if shares else None,
            "redis_usec_per_s": usec / elapsed,
            "bytes_per_s": (c1["net_out"] - c0["net_out"] + c1["net_in"] - c0["net_in"]) / elapsed,
            "table_mb": mon.memory_bytes() / 2**20, "rss_max_mb": max(rss_max, vm_rss_mb()), "rss_mb": vm_hwm_mb(),
            "budget": mon.scan_budget}


def child_latency(params: dict[str, Any]) -> dict[str, Any]:
    """State change (SETEX+PUBLISH) -> ResultsMonitor.state_of / -> a Collector snapshot's counts."""
    from collectors.collector import Collector

    settings = settings_for(params)
    writer = redis.Redis.from_url(params["backend"], client_name=METER_NAME)
    n = int(params["samples"])
    mon_lat: list[float] = []
    snap_lat: list[float] = []
    collect_ms: list[float] = []
    rng = random.Random(5)
    with Collector(settings) as col:
        col.collect()
        results = col._results  # noqa: SLF001 - the bench reads the monitor the collector owns
        time.sleep(0.5)  # PSUBSCRIBE established
        for i in range(1, n + 1):
            tid = f"lat-{rng.getrandbits(64):016x}"
            seen_mon = threading.Event()
            t_pub = 0.0
            t_mon = 0.0

            def watch(tid: str = tid, seen: threading.Event = seen_mon) -> None:
                nonlocal t_mon
                end = time.perf_counter() + 5
                while time.perf_counter() < end:
                    if results.state_of(tid) == "PROGRESS":
                        t_mon = time.perf_counter()
                        seen.set()
                        return
                    time.sleep(0.0005)

            th = threading.Thread(target=watch, daemon=True)
            th.start()
            t_pub = time.perf_counter()
            _publish_state(writer, tid, "PROGRESS")
            t_snap = None
            end = time.perf_counter() + 5
            while time.perf_counter() < end:
                c0 = time.perf_counter()
                snap = col.collect()
                collect_ms.append((time.perf_counter() - c0) * 1000)
                if dict(snap.tasks.states).get("PROGRESS", 0) >= i:
                    t_snap = time.perf_counter()
                    break
            th.join(5)
            if seen_mon.is_set():
                mon_lat.append((t_mon - t_pub) * 1000)
            if t_snap is not None:
                snap_lat.append((t_snap - t_pub) * 1000)
            time.sleep(0.2)
    return {"monitor_ms": stats_of(mon_lat), "snapshot_ms": stats_of(snap_lat), "collect_ms": stats_of(collect_ms),
            "samples": n, "rss_mb": vm_hwm_mb()}


def phase_results(rs: Any, meter: Meter, preset: Preset) -> dict[str, Any]:
    """S2: 1M results; complete count via a step() loop (flat out) and the background thread, cost, RSS, latency."""
    rs.client().flushall()
    meter.threshold(-1)  # no slowlog during S2: Lua-internal GETRANGEs would be logged and cost Redis time
    log(f"S2: loading {preset.results} results")
    r1 = rs.client(db=1)
    sc = load_results(r1, preset.results)
    out: dict[str, Any] = {"total": sc.total, "states": sc.states, "avg_bytes": sc.bytes / max(1, sc.total),
                           "setup_s": sc.setup_s, "redis_used_mb": int(r1.info("memory")["used_memory"]) / 2**20}
    params = {"broker": rs.url, "backend": rs.url_db(1), "max_s": 240, "total": sc.total}
    log("S2: results scan, step() loop flat out")
    out["unpaced"] = run_child("results_scan", params)
    log("S2: results scan, background thread (as in the Collector)")
    out["background"] = run_child("results_background", {**params, "max_s": 180})
    log("S2: state change -> snapshot latency")
    out["latency"] = run_child("latency", {"broker": rs.url, "backend": rs.url_db(1),
                                           "samples": preset.latency_samples, "inspect_timeout": 0.3})
    meter.threshold(0)
    return out
