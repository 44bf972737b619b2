"""One S1-shaped scale: load the broker scenario, then refresh, inspect and Collector measurements."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Meter, log, run_child, start_workers, stop_workers
from bench.presets import Preset, Scale
from bench.s1_collector import run_collector
from bench.s1_inspect import celery_cli_runs
from bench.s1_refresh import redis_cli_user
from bench.scenarios import load_broker


def phase_scale(rs: Any, meter: Meter, scale: Scale, preset: Preset) -> dict[str, Any]:
    """S1-shaped scenario at one scale: broker refresh, alternatives, then workers and inspect."""
    r0 = rs.client()
    r0.flushall()
    log(f"{scale.label}: loading {scale.queues} queues, {scale.messages} messages, {scale.unacked} unacked")
    sc = load_broker(r0, n_queues=scale.queues, n_messages=scale.messages, n_unacked=scale.unacked)
    out: dict[str, Any] = {"scale": {
        "label": scale.label, "queues": scale.queues, "messages": scale.messages, "unacked": scale.unacked,
        "workers": scale.workers}, "setup_s": sc.setup_s,
        "redis_used_mb": int(r0.info("memory")["used_memory"]) / 2**20}
    backend = rs.url_db(1)
    held = [list(h) for h in sc.held]
    log(f"{scale.label}: taskdash broker refresh")
    out["taskdash"] = run_child("broker", {"broker": rs.url, "backend": backend, "held": held,
                                           "queues": scale.queues, "refreshes": preset.refreshes})
    log(f"{scale.label}: flower queue lengths")
    out["flower"] = run_child("flower_queues", {"broker": rs.url, "names": sc.queues,
                                                "refreshes": preset.refreshes})
    log(f"{scale.label}: redis-cli")
    out["redis_cli"] = redis_cli_user(rs.port, sc, meter)
    out["expected_messages"] = sc.messages

    log(f"{scale.label}: starting {scale.workers} workers")
    t0 = time.perf_counter()
    workers = start_workers(rs, scale.workers, backend)
    out["workers_start_s"] = time.perf_counter() - t0
    try:
        from demo_tasks.celery_app import make_app

        app = make_app(rs.url, backend)
        for i in range(scale.workers):
            app.send_task("demo_tasks.tasks.slow", args=(3600,), kwargs={"tag": f"held{i}"}, queue="bench.held")
        time.sleep(2.0)
        log(f"{scale.label}: inspect (taskdash, flower, celery CLI)")
        out["inspect_taskdash"] = run_child("inspect_taskdash", {"broker": rs.url, "workers": scale.workers,
                                                                 "reps": 3})
        out["inspect_flower"] = run_child("inspect_flower", {
            "broker": rs.url, "reps": 2, "methods": ["stats", "active_queues", "registered", "conf"]})
        out["inspect_flower_tasks"] = run_child("inspect_flower", {
            "broker": rs.url, "reps": 2, "methods": ["stats", "active_queues", "registered", "scheduled",
                                                     "active", "reserved", "revoked", "conf"]})
        out["celery_cli"] = celery_cli_runs(rs.url, meter)
        log(f"{scale.label}: full Collector snapshots")
        out["collector"] = run_collector(meter, {"broker": rs.url, "backend": backend,
                                                 "refreshes": preset.refreshes, "interval": 1.0})
    finally:
        stop_workers(workers)
    return out


def phase_scale_no_workers(rs: Any, meter: Meter, scale: Scale, preset: Preset) -> dict[str, Any]:
    """phase_scale without starting workers (``--skip workers``)."""
    r0 = rs.client()
    r0.flushall()
    sc = load_broker(r0, n_queues=scale.queues, n_messages=scale.messages, n_unacked=scale.unacked)
    out: dict[str, Any] = {"scale": {"label": scale.label, "queues": scale.queues, "messages": scale.messages,
                                     "unacked": scale.unacked, "workers": 0},
                           "setup_s": sc.setup_s, "redis_used_mb": int(r0.info("memory")["used_memory"]) / 2**20}
    held = [list(h) for h in sc.held]
    out["taskdash"] = run_child("broker", {"broker": rs.url, "backend": rs.url_db(1), "held": held,
                                           "queues": scale.queues, "refreshes": preset.refreshes})
    out["flower"] = run_child("flower_queues", {"broker": rs.url, "names": sc.queues, "refreshes": preset.refreshes})
    out["redis_cli"] = redis_cli_user(rs.port, sc, meter)
    return out
