"""What users run: the real Textual app on the real Collector at a 1 s refresh, and the results monitor's
steady-state Redis cost.

``child_tui`` runs ``TaskDashApp`` headless (``App.run_test``, 200x50) on ``collectors.collector.Collector``
against the loaded S1-shaped broker with live workers. Measured in that one process, in three windows
after a warm-up: the Overview (the first screen), the Queues view (every queue a row) and a window of
key presses:

* process CPU: ``getrusage(RUSAGE_SELF)`` over the window — the UI thread, the poll thread that runs
  ``collect()``, the results/heartbeat threads: everything the user's ``taskdash`` costs;
* screen age: every 100 ms, wall clock minus ``taken_at`` of the snapshot the last paint showed (what
  the status bar's "⟳ Ns ago" would say, but measured at the paint);
* key latency: a view key (``1`` ``2`` ``0`` ``3``) pressed while ``collect()`` is in flight, timed
  from the press to the first paint that shows the new view (paints are seen by wrapping
  ``App._display``);
* client time per collector refresh (``collect()`` wall time inside the app);
* Redis: the server time of this process's commands (SLOWLOG by client name, read by the parent) and
  the server's CPU delta over the windows (all clients: the idle workers' polling included).

``child_results_steady`` starts ``ResultsMonitor`` on the S2 backend (1M results), waits for the first
pass, then measures the Redis CPU share and the SCAN/GETRANGE/PTTL calls over a window, while a writer
stores results the way Celery does (SETEX + PUBLISH) at a modest rate.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import threading
import time
from typing import Any

import redis
from textual import events

from bench.harness import (
    METER_NAME,
    Meter,
    log,
    run_child,
    settings_for,
    start_workers,
    stats_of,
    stop_workers,
    vm_hwm_mb,
)
from bench.presets import Preset, Scale

KEYS = ("1", "2", "0", "3")
VIEW_OF = {"0": "overview", "1": "queues", "2": "unacked", "3": "workers"}


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread name (``/proc/self/task/*/stat``), the Textual main thread as "ui"."""
    import os

    names = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "ui" if int(tid) == main else names.get(int(tid), "other")
        name = name.split("-")[0] if name.startswith(("ThreadPoolExecutor", "Thread")) else name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child_tui(params: dict[str, Any]) -> dict[str, Any]:
    """The dashboard, headless, on the real Collector (see the module docstring)."""
    return asyncio.run(_tui(params))


async def _tui(params: dict[str, Any]) -> dict[str, Any]:
    from collectors.collector import Collector
    from tui.app import TaskDashApp

    settings = settings_for(params).with_(inspect_interval=float(params.get("inspect_interval", 5.0)),
                                          interval=1.0)
    window_s = float(params.get("window_s", 15.0))
    presses = int(params.get("presses", 12))
    size = tuple(params.get("size", (200, 50)))
    meter = Meter(params["broker"])
    collector = Collector(settings)
    collect_ms: list[float] = []
    collect_cpu_ms: list[float] = []
    """CPU time of the poll thread in each collect(): wall time also counts waits for the GIL (the UI
    thread paints meanwhile) and for Redis."""
    in_flight = threading.Event()
    original = collector.collect

    def timed_collect() -> Any:
        in_flight.set()
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return original()
        finally:
            collect_ms.append((time.perf_counter() - t0) * 1000)
            collect_cpu_ms.append((time.thread_time() - c0) * 1000)
            in_flight.clear()

    collector.collect = timed_collect  # type: ignore[method-assign]
    app = TaskDashApp(collector, interval=1.0, load_details=False, show_welcome=False)
    paints: list[tuple[float, float | None, str]] = []
    """(perf_counter at the paint, taken_at of the snapshot shown, view shown)."""
    display = app._display  # noqa: SLF001 - the one place every screen update goes through

    def painted(screen: Any, renderable: Any) -> None:
        display(screen, renderable)
        if renderable is not None and not app._batch_count:  # noqa: SLF001
            snap = app.snapshot
            try:
                view = app.current_view
            except Exception:  # noqa: BLE001 - before the dashboard exists
                view = ""
            paints.append((time.perf_counter(), snap.taken_at if snap else None, view))
            del paints[:-2000]

    app._display = painted  # type: ignore[method-assign]  # noqa: SLF001
    out: dict[str, Any] = {"size": list(size)}
    try:
        async with app.run_test(size=size) as pilot:
            t0 = time.perf_counter()
            while app.snapshot is None and time.perf_counter() - t0 < 120:
                await asyncio.sleep(0.1)
            out["first_snapshot_s"] = time.perf_counter() - t0
            await asyncio.sleep(3.0)  # warm-up: discovery passes, the first inspect
            steady: list[float] = []
            steady_cpu: list[float] = []
            for view in ("overview", "queues"):
                app.show_view(view)
                await asyncio.sleep(2.0)
                n0 = len(collect_ms)
                out[view] = await _window(app, paints, collect_ms, meter, window_s)
                steady += collect_ms[n0:]
                steady_cpu += collect_cpu_ms[n0:]
            # The refreshes of the two windows without input: what a refresh costs the user's taskdash.
            # The key window presses a key into nearly every refresh on purpose (its collect() waits
            # for the UI thread's key handling), so it is reported apart (collect_ms covers all).
            out["collect_steady_ms"] = stats_of(steady)
            out["collect_steady_cpu_ms"] = stats_of(steady_cpu)
            out["keys"] = await _keys(app, pilot, paints, in_flight, presses)
            snap = app.snapshot
            out["queues_shown"] = len(snap.queues) if snap else 0
            out["workers_shown"] = len(snap.workers) if snap else 0
            out["unacked_total"] = snap.unacked_total if snap else 0
            out["apply_ms_last"] = app.apply_ms
    finally:
        collector.close()
    out["collect_ms"] = stats_of(collect_ms[2:])
    out["collect_cpu_ms"] = stats_of(collect_cpu_ms[2:])
    out["rss_mb"] = vm_hwm_mb()
    return out


async def _window(app: Any, paints: list[tuple[float, float | None, str]], collect_ms: list[float],
                  meter: Meter, seconds: float) -> dict[str, Any]:
    """CPU share, screen ages and refreshes over ``seconds`` without input."""
    ages: list[float] = []
    refreshes0 = app._refreshes  # noqa: SLF001
    n_collect0 = len(collect_ms)
    c0 = meter.counters()
    threads0 = _thread_cpu()
    cpu0, t0 = _cpu(), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        await asyncio.sleep(0.1)
        shown = next((taken for _, taken, _ in reversed(paints) if taken is not None), None)
        if shown is not None:
            ages.append(max(0.0, time.time() - shown))
    elapsed = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    threads1 = _thread_cpu()
    c1 = meter.counters()
    by_thread = {k: (v - threads0.get(k, 0.0)) / elapsed for k, v in threads1.items()}
    return {"cpu_share": cpu / elapsed,
            "cpu_by_thread": {k: v for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v > 0.0005}, "screen_age_s": stats_of(ages), "elapsed_s": elapsed,
            "refreshes": app._refreshes - refreshes0, "collect_ms": stats_of(collect_ms[n_collect0:]),  # noqa: SLF001
            "redis_cpu_share_all_clients": (c1["cpu"] - c0["cpu"]) / elapsed, "apply_ms": app.apply_ms}


async def _keys(app: Any, pilot: Any, paints: list[tuple[float, float | None, str]], in_flight: threading.Event,
                presses: int) -> dict[str, Any]:
    """Keys pressed while a refresh is in flight, timed from the press to the first paint after it: the
    cursor keys in the Queues view (``down``/``up``: what a user does most) and, separately, view keys
    (``1 2 0 3``: the paint must show the new view, which re-lays out and re-styles the screen)."""
    rng = random.Random(14)
    cpu0, t_start = _cpu(), time.perf_counter()
    app.show_view("queues")
    await asyncio.sleep(0.5)
    out: dict[str, Any] = {}
    for kind in ("cursor", "view"):
        lat: list[float] = []
        during: list[bool] = []
        for i in range(presses):
            if kind == "cursor":
                key, target = ("down" if i % 4 < 2 else "up"), None
            else:
                key = KEYS[i % len(KEYS)]
                if VIEW_OF[key] == app.current_view:
                    key = KEYS[(i + 1) % len(KEYS)]
                target = VIEW_OF[key]
            deadline = time.perf_counter() + 3.0
            while not in_flight.is_set() and time.perf_counter() < deadline:
                await asyncio.sleep(0.002)
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            during.append(in_flight.is_set())
            t0 = time.perf_counter()
            # the press itself, not pilot.press (which also waits for animations and idle)
            app.post_message(events.Key(key, None))
            end = t0 + 5.0
            seen = None
            while time.perf_counter() < end and seen is None:
                seen = next((t for t, _, v in paints if t >= t0 and (target is None or v == target)), None)
                if seen is None:
                    await asyncio.sleep(0.001)
            if seen is not None:
                lat.append((seen - t0) * 1000)
            await asyncio.sleep(rng.uniform(0.3, 0.8))
        out[kind] = {"latency_ms": stats_of(lat), "presses": presses, "answered": len(lat),
                     "during_refresh": sum(during)}
    elapsed = time.perf_counter() - t_start
    out.update(out["cursor"])  # the headline key figure
    out["cpu_share"] = (_cpu() - cpu0) / elapsed
    return out


def phase_tui(rs: Any, meter: Meter, scale: Scale, preset: Preset) -> dict[str, Any]:
    """The TUI child on the broker the scale phase left loaded, with ``scale.workers`` live workers."""
    backend = rs.url_db(1)
    n = max(1, scale.workers)
    log(f"{scale.label}: TUI (headless Textual app on the real Collector), starting {n} workers")
    workers = start_workers(rs, n, backend)
    try:
        from demo_tasks.celery_app import make_app

        app = make_app(rs.url, backend)
        for i in range(n):
            app.send_task("demo_tasks.tasks.slow", args=(3600,), kwargs={"tag": f"held{i}"}, queue="bench.held")
        time.sleep(2.0)
        meter.threshold(0)
        meter.reset()
        window_s = max(5.0, float(preset.refreshes))
        out = run_child("tui", {"broker": rs.url, "backend": backend, "window_s": window_s,
                                # 45 presses of each kind in the full preset: a p95 of 15 was the
                                # slowest press or the one before it (one GC pause decided the verdict)
                                "presses": max(6, 3 * preset.refreshes), "inspect_timeout": 1.0},
                        timeout=600)
        srv = meter.take_slowlog()
        measured = 2 * window_s + 40  # rough span the slowlog covered (warm-up and key window included)
        out["redis_server_share"] = srv["usec"] / 1e6 / measured
        out["redis_by_cmd"] = srv["by_cmd"]
    finally:
        stop_workers(workers)
    return out


# ---- results steady state ------------------------------------------------------------------------
def _store(client: redis.Redis, tid: str, state: str, ttl: int) -> None:
    key = f"celery-task-meta-{tid}"
    value = json.dumps({"status": state, "result": 1, "traceback": None, "children": [],
                        "date_done": None, "task_id": tid})
    pipe = client.pipeline(transaction=True)
    pipe.setex(key, ttl, value)
    pipe.publish(key, value)
    pipe.execute()


def child_results_steady(params: dict[str, Any]) -> dict[str, Any]:
    """ResultsMonitor after its first pass: Redis CPU share and scan calls while results keep arriving."""
    from collectors.core.config import redis_client
    from collectors.reads.results import ResultsMonitor

    settings = settings_for(params)
    meter = Meter(params["backend"])
    writer = redis.Redis.from_url(params["backend"], client_name=METER_NAME)
    client = redis_client(params["backend"], settings)
    mon = ResultsMonitor(settings, client)
    rate = float(params.get("rate", 20.0))
    window = float(params.get("window_s", 30.0))
    t0 = time.perf_counter()
    mon.start()
    try:
        while not mon.stats().complete and time.perf_counter() - t0 < float(params.get("max_s", 300)):
            time.sleep(0.25)
        first_pass_s = time.perf_counter() - t0
        time.sleep(1.0)
        # baseline: the writer alone costs Redis too (measured with the monitor's feed included)
        cs0, c0 = meter.commandstats(), meter.counters()
        w0 = time.perf_counter()
        rng = random.Random(3)
        sent = 0
        while time.perf_counter() - w0 < window:
            _store(writer, f"steady-{rng.getrandbits(64):016x}", "SUCCESS", 86400)
            sent += 1
            time.sleep(1.0 / rate)
        elapsed = time.perf_counter() - w0
        cs1, c1 = meter.commandstats(), meter.counters()
        calls = {k: cs1.get(k, (0, 0))[0] - cs0.get(k, (0, 0))[0] for k in ("scan", "getrange", "pttl", "get",
                                                                             "setex", "publish", "exists")}
        usec = {k: cs1.get(k, (0, 0))[1] - cs0.get(k, (0, 0))[1] for k in ("scan", "getrange", "pttl", "get")}
        st = mon.stats()
        writer_usec = sum(cs1.get(k, (0, 0))[1] - cs0.get(k, (0, 0))[1] for k in ("setex", "publish", "multi", "exec"))
        return {"first_pass_s": first_pass_s, "complete": st.complete, "steady": mon.steady,
                "passes": st.passes, "window_s": elapsed, "written": sent, "calls": calls,
                "monitor_usec_per_s": sum(usec.values()) / elapsed,
                "redis_cpu_share_all": (c1["cpu"] - c0["cpu"]) / elapsed,
                "writer_usec_per_s": writer_usec / elapsed, "due": mon.due_count, "expired": mon.expired,
                "counted": sum(n for _, n in st.states), "rss_mb": vm_hwm_mb()}
    finally:
        mon.stop()


def phase_results_steady(rs: Any, meter: Meter, preset: Preset) -> dict[str, Any]:
    """On the S2 backend the results phase left loaded: the monitor's cost once the first pass is done."""
    meter.threshold(-1)
    log("S2: results monitor steady state (after the first pass)")
    out = run_child("results_steady", {"broker": rs.url, "backend": rs.url_db(1), "max_s": 240,
                                       "window_s": max(10.0, 2.0 * preset.refreshes)}, timeout=600)
    meter.threshold(0)
    return out


# ---- standalone: only this phase, spliced into RESULTS.md ------------------------------------------
def _broker_child(rs: Any, sc: Any, preset: Preset, *, hiredis: bool) -> dict[str, Any]:
    """``child_broker`` (the broker+unacked refresh) with redis-py's hiredis parser on or off."""
    import os
    import subprocess
    import sys
    import tempfile

    from bench.harness import ROOT, RUN_PY

    params = {"broker": rs.url, "backend": rs.url_db(1), "held": [list(h) for h in sc.held],
              "queues": len(sc.queues), "refreshes": max(10, preset.refreshes)}
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if not hiredis:  # a module that fails to import: redis-py falls back to its pure-Python parser
            with open(os.path.join(tmp, "hiredis.py"), "w") as f:
                f.write("raise ImportError('disabled by bench/s1_tui.py')\n")
            env["PYTHONPATH"] = tmp + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, str(RUN_PY), "--child", "broker", "-"], input=json.dumps(params),
                              capture_output=True, text=True, timeout=600, cwd=str(ROOT), env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"broker child failed: {proc.stderr[-2000:]}")
    out = json.loads(lines[-1])
    return {"wall_ms": stats_of([r["wall_ms"] for r in out["rows"]]),
            "cpu_ms": stats_of([r["cpu_ms"] for r in out["rows"]])}


SMALL = Scale("S1/100", 10, 20_000, 1_000, 1)
"""The small deployment of issue 14's "≤ 3 % of a core" (10 queues, 20,000 waiting, 1,000 unacked, one
worker): measured first in every preset that does not already start there."""


def tui_scales(preset: Preset) -> tuple[Scale, ...]:
    """The scales this phase runs: the preset's, after the small deployment."""
    if any(s.label == SMALL.label for s in preset.scales) or preset.name == "smoke":
        return preset.scales
    return (SMALL, *preset.scales)


def main(argv: list[str] | None = None) -> int:
    """``python bench/s1_tui.py [--preset P] [--splice bench/RESULTS.md]``: this phase alone."""
    import argparse
    import os
    import sys
    from pathlib import Path

    from bench import report
    from bench.presets import PRESETS
    from bench.scenarios import load_broker, load_results
    from taskdash.procs import RedisServer

    ap = argparse.ArgumentParser(description="the TUI users run and the results steady state (issue 14)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--splice", default=None, help="update only the issue-14 block of this RESULTS.md")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    t_start = time.perf_counter()
    res: dict[str, Any] = {"preset": preset.name, "scales": [], "machine": report.machine_info()}
    with RedisServer() as rs:
        meter = Meter(rs.url)
        meter.setup()
        for scale in tui_scales(preset):
            r0 = rs.client()
            r0.flushall()
            log(f"{scale.label}: loading {scale.queues} queues, {scale.messages} messages, {scale.unacked} unacked")
            sc = load_broker(r0, n_queues=scale.queues, n_messages=scale.messages, n_unacked=scale.unacked)
            entry: dict[str, Any] = {"scale": {"label": scale.label, "queues": scale.queues,
                                               "messages": scale.messages, "unacked": scale.unacked,
                                               "workers": scale.workers}}
            log(f"{scale.label}: broker refresh with and without hiredis")
            meter.threshold(-1)
            entry["parser"] = {"hiredis": _broker_child(rs, sc, preset, hiredis=True),
                               "python": _broker_child(rs, sc, preset, hiredis=False)}
            meter.threshold(0)
            entry["tui"] = phase_tui(rs, meter, scale, preset)
            res["scales"].append(entry)
        rs.client().flushall()
        log(f"S2: loading {preset.results} results")
        load_results(rs.client(db=1), preset.results)
        res["s2"] = {"total": preset.results, "steady": phase_results_steady(rs, meter, preset)}
    res["total_s"] = time.perf_counter() - t_start
    res["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    block = report.issue14_block(res)
    if args.splice:
        report.splice_issue14(args.splice, block)
        log(f"updated the issue-14 block of {args.splice} ({res['total_s']:.0f} s)")
    else:
        sys.stdout.write("\n".join(block) + "\n")
    return 0


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
