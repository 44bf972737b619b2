"""taskdash benchmarks: what one refresh costs at scale, side by side with what users run today.

Usage::

    python bench/run.py                  # full run (S1/10, S1, S2, S3), writes bench/RESULTS.md (< 10 min)
    python bench/run.py --quick          # ~1/10 of the sizes, a couple of minutes
    python bench/run.py --preset smoke --out /tmp/r.md   # tiny, for tests/test_bench_smoke.py

Everything runs against private ``redis-server`` processes on free ports (never 6379) and real Celery
workers (``demo_tasks``); scenarios are written straight into Redis in kombu's layout
(``bench/scenarios.py``). Every taskdash measurement runs in a child process (``--child``) so its peak
RSS (``VmHWM``) is taskdash's alone; the alternatives are measured in the same run:

* Flower 2.2.0's queue-length path (``flower/utils/broker.py`` ``RedisBase.queues``: ONE pipeline with
  ``LLEN`` of every priority key of every queue) and its worker inspect (``flower/inspector.py``: one
  ``inspect(timeout=1.0).<method>()`` per method, run concurrently in a thread pool) — re-implemented
  from Flower's source (Flower itself is not installed).
* ``celery -A demo_tasks inspect active|reserved|scheduled|stats`` as four separate CLI runs.
* ``redis-cli`` fed the commands a user would type (``LLEN`` of every priority key, ``HLEN unacked``),
  one command at a time, in one process.

What is measured and how:

* round trips and bytes: counted at the client socket (``bench/netcount.py``) for Python clients; for
  redis-cli, round trips = commands and bytes = the server's ``total_net_*_bytes`` delta.
* Redis server time: on a Redis nobody else uses (broker refresh, S2), the ``INFO commandstats`` delta of
  the commands the client sent (learned from one refresh with every command in the SLOWLOG); with
  workers attached (inspect, Collector, S3), ``SLOWLOG`` at threshold 0 filtered by the client name each
  measured process sets on its connections. Commands run inside a Lua script are logged without a name
  and not counted twice (the script's time includes them), but logging them slows scripts down, so exact
  script costs come from the commandstats runs. ``Redis CPU`` columns are the server's ``INFO cpu``
  delta (execution + socket I/O); on a shared machine exec times (wall clock) can exceed CPU time.
* client wall time: ``time.perf_counter`` around the call; peak RSS: ``VmHWM`` of the child process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import netcount  # noqa: E402
from bench.scenarios import BrokerScenario, load_broker, load_results  # noqa: E402

_SUBCOMMANDS = {"script", "client", "config", "slowlog", "object", "memory", "function", "command",
                "acl", "latency", "pubsub", "xinfo", "cluster", "module"}
TD_NAME = "bench-measured"
"""Client name every connection of a measured process carries (SLOWLOG filter)."""
METER_NAME = "bench-meter"
SCRIPT_LOG_US = 500
"""SLOWLOG threshold while scripts are timed (commands run by Lua are not logged below it)."""


def _script_names() -> dict[str, str]:
    try:
        from collectors import broker

        return {sha: name for name, sha in broker._SHAS.items()}  # noqa: SLF001 - labels for the report
    except (ImportError, AttributeError):
        return {}


SCRIPT_NAMES = _script_names()


# ---- presets ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scale:
    """One broker scenario size."""

    label: str
    queues: int
    messages: int
    unacked: int
    workers: int


@dataclass(frozen=True, slots=True)
class Preset:
    """Sizes and repetitions of one benchmark run."""

    name: str
    scales: tuple[Scale, ...]
    results: int
    refreshes: int
    s3_seconds: float
    s3_rate: int
    cli_reps: int
    latency_samples: int
    paced_s: float = 40.0
    """The paced S2 loop runs this long; its time to a complete count is extrapolated from its rate."""


PRESETS: dict[str, Preset] = {
    "full": Preset("full", (Scale("S1/10", 100, 200_000, 10_000, 2), Scale("S1", 1000, 2_000_000, 100_000, 20)),
                   results=1_000_000, refreshes=15, s3_seconds=15, s3_rate=300, cli_reps=1, latency_samples=10),
    "quick": Preset("quick", (Scale("S1/100", 10, 20_000, 1_000, 1), Scale("S1/10", 100, 200_000, 10_000, 4)),
                    results=100_000, refreshes=8, s3_seconds=6, s3_rate=150, cli_reps=1, latency_samples=5),
    "smoke": Preset("smoke", (Scale("tiny/10", 5, 500, 50, 1), Scale("tiny", 20, 5_000, 300, 1)),
                    results=3_000, refreshes=3, s3_seconds=2, s3_rate=50, cli_reps=1, latency_samples=2),
}


# ---- small helpers ----------------------------------------------------------------------------------
def vm_hwm_mb() -> float:
    """Peak resident set size of this process (VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def vm_rss_mb() -> float:
    """Current resident set size of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def name_connections(name: str) -> None:
    """Give every redis-py connection opened from now on the client name ``name`` (unless set)."""
    import redis.connection as rc

    original = rc.AbstractConnection.__init__
    if getattr(original, "_bench_named", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("client_name"):
            kwargs["client_name"] = name
        original(self, *args, **kwargs)

    __init__._bench_named = True  # type: ignore[attr-defined]
    rc.AbstractConnection.__init__ = __init__  # type: ignore[method-assign]


class Meter:
    """Server-side view of one Redis: SLOWLOG per client name, CPU and network counters."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url, client_name=METER_NAME)

    def setup(self) -> None:
        """Log every command (threshold 0) with room for big pipelines."""
        self.r.config_set("slowlog-log-slower-than", 0)
        self.r.config_set("slowlog-max-len", 300_000)
        self.r.slowlog_reset()

    def take_slowlog(self, name: str = TD_NAME) -> dict[str, Any]:
        """Atomically read and clear the slowlog; totals of the top-level commands of clients ``name``."""
        pipe = self.r.pipeline(transaction=True)
        pipe.slowlog_get(-1)
        pipe.slowlog_reset()
        entries, _ = pipe.execute()
        usec = 0
        calls = 0
        by_cmd: dict[str, list[int]] = {}
        names: set[str] = set()
        for e in entries:
            cname = e.get("client_name") or b""
            if isinstance(cname, bytes):
                cname = cname.decode()
            if cname != name:
                continue
            cmd = e.get("command") or b""
            if isinstance(cmd, bytes):
                cmd = cmd.decode("utf-8", "replace")
            parts = cmd.split(" ", 2)
            word = parts[0].upper()
            if word == "EVALSHA" and len(parts) > 1:
                word = f"EVALSHA:{SCRIPT_NAMES.get(parts[1], parts[1][:8])}"
            calls += 1
            usec += int(e["duration"])
            slot = by_cmd.setdefault(word, [0, 0])
            slot[0] += 1
            slot[1] += int(e["duration"])
            low = parts[0].lower()
            if low in _SUBCOMMANDS and len(parts) > 1:
                low = f"{low}|{parts[1].lower()}"
            names.add(low)
        return {"calls": calls, "usec": usec, "by_cmd": by_cmd, "names": sorted(names)}

    def reset(self) -> None:
        """Clear the slowlog without reading it."""
        self.r.slowlog_reset()

    def threshold(self, usec: int) -> None:
        """Set ``slowlog-log-slower-than`` (0: every command; commands run by Lua are then logged too and
        the logging itself slows the script down, so exact script times are taken with a higher value)."""
        self.r.config_set("slowlog-log-slower-than", usec)

    def counters(self) -> dict[str, float]:
        """Redis process CPU seconds and total network bytes so far."""
        info = self.r.info("all")
        return {
            "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            "net_in": int(info["total_net_input_bytes"]),
            "net_out": int(info["total_net_output_bytes"]),
            "connections": int(info["total_connections_received"]),
            "commands": int(info["total_commands_processed"]),
        }

    def commandstats(self) -> dict[str, tuple[int, int]]:
        """cmd -> (calls, usec) from INFO commandstats."""
        out: dict[str, tuple[int, int]] = {}
        for k, v in self.r.info("commandstats").items():
            out[k.removeprefix("cmdstat_")] = (int(v["calls"]), int(v["usec"]))
        return out


def cs_delta(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]],
             names: list[str] | set[str]) -> tuple[int, int]:
    """(calls, usec) of the commands ``names`` between two commandstats readings."""
    calls = usec = 0
    for n in names:
        ca, ua = a.get(n, (0, 0))
        cb, ub = b.get(n, (0, 0))
        calls += cb - ca
        usec += ub - ua
    return calls, usec


def cs_inner(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]],
             exclude: list[str] | set[str]) -> dict[str, list[int]]:
    """Commands that ran between two readings but were not sent by the client (i.e. ran inside Lua)."""
    skip = set(exclude) | {"info", "slowlog|get", "slowlog|reset", "config|set", "multi", "exec", "ping"}
    out: dict[str, list[int]] = {}
    for n, (cb, ub) in b.items():
        ca, ua = a.get(n, (0, 0))
        if n not in skip and cb > ca:
            out[n] = [cb - ca, ub - ua]
    return out


def diff_counters(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """b - a for every counter."""
    return {k: b[k] - a[k] for k in a}


def stats_of(values: list[float]) -> dict[str, float]:
    """median / p95 / max of a non-empty list."""
    if not values:
        return {"median": 0.0, "p95": 0.0, "max": 0.0, "n": 0}
    s = sorted(values)
    return {"median": statistics.median(s), "p95": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
            "max": s[-1], "n": len(s)}


# ---- child processes ---------------------------------------------------------------------------------
def run_child(kind: str, params: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; returns the JSON it printed last."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, "-"],
        input=json.dumps(params), capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} failed (rc={proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _settings(params: dict[str, Any]) -> Any:
    from collectors.core.config import Settings

    return Settings(broker_url=params["broker"], backend_url=params.get("backend"),
                    inspect_timeout=float(params.get("inspect_timeout", 1.0)),
                    inspect_interval=float(params.get("inspect_interval", 3600.0)))


def child_broker(params: dict[str, Any]) -> dict[str, Any]:
    """taskdash BrokerReader at one scale: discovery, then steady refreshes (each metered)."""
    from collectors.core.config import redis_client
    from collectors.core.models import TaskRef
    from collectors.reads.broker import BrokerReader

    settings = _settings(params)
    meter = Meter(params["broker"])
    client = redis_client(settings.broker_url, settings)
    reader = BrokerReader(settings, client)
    claims = {tid: TaskRef(task_id=tid, name=None, state="active", hostname=f"w{i % 20}@bench")
              for i, (tid, _tag, _q) in enumerate(params["held"])}
    n_queues = int(params["queues"])
    meter.reset()
    meter.threshold(0)
    first: dict[str, Any] = {}
    reads_to_all = None
    for i in range(1, 101):
        netcount.COUNTER.reset()
        t0 = time.perf_counter()
        view = reader.read(now=time.time(), claims=claims, inspected_at=time.time())
        wall = time.perf_counter() - t0
        if i == 1:
            first = {"wall_ms": wall * 1000, "round_trips": view.round_trips, **netcount.COUNTER.snapshot(),
                     "server": meter.take_slowlog(), "queues_seen": len(view.queues)}
            meter.threshold(-1)
        if len(view.queues) >= n_queues and view.discovery_passes >= 1:
            reads_to_all = i
            break
    # one refresh with every command logged: which commands the reader sends at top level
    meter.reset()
    meter.threshold(0)
    view = reader.read(now=time.time(), claims=claims, inspected_at=time.time())
    learned = meter.take_slowlog()
    meter.threshold(SCRIPT_LOG_US)  # from here on only commands >= 0.5 ms: no logging inside scripts
    top = learned["names"]
    rows: list[dict[str, Any]] = []
    c0 = meter.counters()
    for _ in range(int(params["refreshes"])):
        cs0 = meter.commandstats()
        netcount.COUNTER.reset()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        view = reader.read(now=time.time(), claims=claims, inspected_at=time.time())
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        net = netcount.COUNTER.snapshot()
        cs1 = meter.commandstats()
        calls, usec = cs_delta(cs0, cs1, top)
        srv = meter.take_slowlog()
        rows.append({"wall_ms": wall * 1000, "cpu_ms": cpu * 1000, "round_trips_view": view.round_trips,
                     "commands_view": view.commands, **net, "server_usec": usec,
                     "server_calls": calls, "by_cmd": srv["by_cmd"], "inner": cs_inner(cs0, cs1, top)})
    c1 = meter.counters()
    assert view is not None
    states: dict[str, int] = {}
    for e in view.unacked:
        states[e.state] = states.get(e.state, 0) + 1
    total_msgs = sum(q.messages for q in view.queues)
    meter.threshold(0)
    return {
        "first": first, "reads_to_all_queues": reads_to_all, "rows": rows, "learned": learned,
        "redis_cpu_ms_per_refresh": (c1["cpu"] - c0["cpu"]) * 1000 / max(1, len(rows)),
        "queues_seen": len(view.queues), "messages_seen": total_msgs, "unacked_total": view.unacked_total,
        "window": len(view.unacked), "window_states": states, "counts_exact": view.unacked_counts_exact,
        "rss_mb": vm_hwm_mb(),
    }


def child_flower_queues(params: dict[str, Any]) -> dict[str, Any]:
    """Flower 2.2.0 ``RedisBase.queues(names)``: one MULTI pipeline of LLEN over every priority key."""
    sep, steps = "\x06\x16", (0, 3, 6, 9)
    meter = Meter(params["broker"])
    client = redis.Redis.from_url(params["broker"], socket_timeout=2.0)
    names = list(params["names"])
    top = ["multi", "llen", "exec"]
    meter.threshold(SCRIPT_LOG_US)
    rows = []
    total = 0
    c0 = meter.counters()
    for _ in range(int(params["refreshes"])):
        cs0 = meter.commandstats()
        netcount.COUNTER.reset()
        t0 = time.perf_counter()
        with client.pipeline() as pipe:  # Flower: `async with self.redis.pipeline() as pipeline`
            for name in names:
                for pri in steps:
                    pipe.llen(f"{name}{sep}{pri}" if pri else name)
            lengths = iter(pipe.execute())
        stats = [{"name": n, "messages": sum(next(lengths) for _ in steps)} for n in names]
        wall = time.perf_counter() - t0
        net = netcount.COUNTER.snapshot()
        total = sum(s["messages"] for s in stats)
        calls, usec = cs_delta(cs0, meter.commandstats(), top)
        rows.append({"wall_ms": wall * 1000, **net, "server_usec": usec, "server_calls": calls})
    meter.threshold(0)
    c1 = meter.counters()
    return {"rows": rows, "messages_seen": total,
            "redis_cpu_ms_per_refresh": (c1["cpu"] - c0["cpu"]) * 1000 / max(1, len(rows)),
            "rss_mb": vm_hwm_mb()}


def child_inspect_taskdash(params: dict[str, Any]) -> dict[str, Any]:
    """taskdash WorkerMonitor: one inspect window for ping/stats/active/reserved/scheduled/active_queues."""
    from collectors.reads.workers import WorkerMonitor

    settings = _settings(params)
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


def child_collector(params: dict[str, Any]) -> dict[str, Any]:
    """taskdash Collector: the full snapshot (broker + unacked + workers + results + poison) every second."""
    from collectors.collector import Collector

    settings = _settings(params).with_(inspect_interval=float(params.get("inspect_interval", 5.0)))
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


def child_results_scan(params: dict[str, Any]) -> dict[str, Any]:
    """ResultsMonitor.step() in a loop until one full pass (optionally paced), with Redis cost and RSS."""
    from collectors.core.config import redis_client
    from collectors.reads.results import ResultsMonitor

    settings = _settings(params)
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

    settings = _settings(params)
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

    settings = _settings(params)
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


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "broker": child_broker, "flower_queues": child_flower_queues, "inspect_taskdash": child_inspect_taskdash,
    "inspect_flower": child_inspect_flower, "celery_cli": child_celery_cli, "collector": child_collector,
    "results_scan": child_results_scan, "latency": child_latency, "results_background": child_results_background,
}


def child_main(kind: str, raw: str) -> None:
    """Entry point of a ``--child`` process: count sockets, name connections, run, print JSON."""
    netcount.install(exclude_names=frozenset({METER_NAME}))
    name_connections(TD_NAME)
    result = CHILDREN[kind](json.loads(sys.stdin.read() if raw == "-" else raw))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# ---- parent-side phases ------------------------------------------------------------------------------
def log(msg: str) -> None:
    """Progress line on stderr (the CLI's only output besides RESULTS.md)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def redis_cli_user(url_port: int, sc: BrokerScenario, meter: Meter) -> dict[str, Any]:
    """redis-cli fed LLEN of every priority key + HLEN unacked, one command at a time (as typed)."""
    lines = [f"CLIENT SETNAME {TD_NAME}"]
    sep = "\\x06\\x16"
    for q in sc.queues:
        for band in (0, 3, 6, 9):
            key = q if band == 0 else f'"{q}{sep}{band}"'
            lines.append(f"LLEN {key}")
    lines.append("HLEN unacked")
    text = "\n".join(lines) + "\n"
    meter.threshold(SCRIPT_LOG_US)
    cs0 = meter.commandstats()
    c0 = meter.counters()
    t0 = time.perf_counter()
    proc = subprocess.run(["redis-cli", "-p", str(url_port)], input=text, capture_output=True, text=True,
                          timeout=300)
    wall = time.perf_counter() - t0
    c1 = meter.counters()
    calls, usec = cs_delta(cs0, meter.commandstats(), ["llen", "hlen", "client|setname"])
    meter.threshold(0)
    srv = {"usec": usec, "calls": calls}
    outs = proc.stdout.split()
    values = [int(x) for x in outs if x.lstrip("-").isdigit()]
    total = sum(values[:-1]) if values else 0
    return {"wall_ms": wall * 1000, "round_trips": len(lines), "commands": len(lines),
            "bytes": (c1["net_in"] - c0["net_in"]) + (c1["net_out"] - c0["net_out"]),
            "server_usec": srv["usec"], "server_calls": srv["calls"], "messages_seen": total,
            "redis_cpu_ms": (c1["cpu"] - c0["cpu"]) * 1000}


def start_workers(rs: Any, n: int, backend: str, queue: str = "bench.held",
                  pool: str = "threads", concurrency: int = 1, extra: tuple[str, ...] = ()) -> list[Any]:
    """Start ``n`` real celery workers (small footprint) and wait until they are all ready."""
    from taskdash.procs import CeleryWorker

    workers = []
    for i in range(n):
        w = CeleryWorker(rs.url, queues=(queue,), hostname=f"bench{i}@taskdash", concurrency=concurrency,
                         pool=pool, backend_url=backend, extra_args=("--prefetch-multiplier", "1", *extra))
        w.start(wait=False)
        workers.append(w)
    for w in workers:
        w.wait_ready(timeout=180)
    return workers


def stop_workers(workers: list[Any]) -> None:
    """SIGKILL every worker group (the scenario is flushed afterwards; a warm stop would wait for tasks)."""
    for w in workers:
        w.kill9()


def summarize_rows(rows: list[dict[str, Any]], *keys: str) -> dict[str, dict[str, float]]:
    """stats_of for each key over the rows."""
    return {k: stats_of([float(r[k]) for r in rows]) for k in keys}


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
        cli: dict[str, Any] = {}
        for method in ("active", "reserved", "scheduled", "stats"):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
                path = tf.name
            meter.take_slowlog()
            t1 = time.perf_counter()
            run_child("celery_cli", {"broker": rs.url, "method": method, "out": path})
            wall = (time.perf_counter() - t1) * 1000
            srv = meter.take_slowlog()
            data = json.loads(Path(path).read_text())
            os.unlink(path)
            cli[method] = {"wall_ms": wall, **data, "server_usec": srv["usec"], "server_calls": srv["calls"]}
        out["celery_cli"] = cli
        log(f"{scale.label}: full Collector snapshots")
        out["collector"] = run_collector(meter, {"broker": rs.url, "backend": backend,
                                                 "refreshes": preset.refreshes, "interval": 1.0})
    finally:
        stop_workers(workers)
    return out


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


# ---- report ------------------------------------------------------------------------------------------
def _f(x: float | None, nd: int = 1) -> str:
    if x is None:
        return "—"
    return f"{x:,.{nd}f}"


def _kb(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"


def machine_info() -> dict[str, str]:
    """Machine, load and versions for the report."""
    import celery
    import kombu

    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    redis_ver = next((v.split("=")[1] for v in ver if v.startswith("v=")), "?")
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "collectors"], capture_output=True, text=True,
                           cwd=ROOT).stdout.split()
    dirty_files = [d for d in dirty if d.endswith(".py")]
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": f"{os.cpu_count()} x {cpu}",
            "taskdash": f"git {rev or '?'}" + (f" + uncommitted {', '.join(dirty_files)}" if dirty_files else ""),
            "memory": mem, "python": platform.python_version(), "redis-server": redis_ver,
            "redis-py": redis.__version__, "celery": celery.__version__, "kombu": kombu.__version__,
            "os": platform.platform(), "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


@dataclass
class Verdict:
    """One target line of the report."""

    target: str
    figure: str
    met: bool | None
    why: str = ""


def verdicts(res: dict[str, Any]) -> list[Verdict]:
    """Targets from issue 6 evaluated on the biggest scale measured."""
    out: list[Verdict] = []
    big = res["scales"][-1]
    td = big["taskdash"]
    s = summarize_rows(td["rows"], "wall_ms", "server_usec", "round_trips", "round_trips_view")
    rt = s["round_trips"]["max"]
    out.append(Verdict(f"{big['scale']['label']}: broker+unacked refresh ≤ 3 round trips",
                       f"{rt:.0f} (counted at the socket; BrokerView says {s['round_trips_view']['max']:.0f})",
                       rt <= 3))
    srv_ms = s["server_usec"]["median"] / 1000
    out.append(Verdict(f"{big['scale']['label']}: ≤ 2 ms Redis server time per refresh",
                       f"{srv_ms:.2f} ms median, {s['server_usec']['p95'] / 1000:.2f} ms p95", srv_ms <= 2.0))
    wall = s["wall_ms"]["median"]
    out.append(Verdict(f"{big['scale']['label']}: ≤ 25 ms client time per refresh",
                       f"{wall:.1f} ms median, {s['wall_ms']['p95']:.1f} ms p95", wall <= 25.0))
    it = big.get("inspect_taskdash")
    if it:
        w = stats_of([r["wall_ms"] for r in it["rows"]])
        ans = min(r["workers"] for r in it["rows"])
        out.append(Verdict(f"{big['scale']['label']}: worker state for {big['scale']['workers']} workers in one "
                           "inspect window (~1 s timeout)",
                           f"{w['median']:.0f} ms median window, {ans}/{big['scale']['workers']} workers answered",
                           w["max"] <= 1500 and ans >= big["scale"]["workers"]))
    s2 = res.get("s2")
    if s2:
        bg = s2["background"]
        bg_t = bg["to_complete_s"] or float("inf")
        out.append(Verdict(f"S2 ({s2['total']:,} results) counted completely in the background ≤ 60 s",
                           f"background thread (as in the Collector): {'' if bg['complete'] else '≈'}{bg_t:.0f} s; "
                           f"step() loop flat out: {s2['unpaced']['elapsed_s']:.0f} s", bg["complete"] and bg_t <= 60))
        out.append(Verdict("S2 scan Redis cost < ~10 % of a core",
                           f"{bg['redis_cpu_share'] * 100:.1f} % average over the background pass"
                           + (f" (max 5 s window {bg['redis_cpu_share_max_5s'] * 100:.1f} %)"
                              if bg.get("redis_cpu_share_max_5s") is not None else "")
                           + f"; {s2['unpaced']['redis_cpu_share'] * 100:.1f} % flat out",
                           bg["redis_cpu_share"] < 0.10))
        rss = max(bg["rss_mb"], s2["unpaced"]["rss_mb"], s2["latency"]["rss_mb"])
        col_rss = max([x["collector"]["rss_mb"] for x in res["scales"] if x.get("collector")] or [0.0])
        s3_rss = (res.get("s3") or {}).get("with", {}).get("taskdash", {}).get("rss_mb", 0.0)
        out.append(Verdict("taskdash RSS ≤ 150 MB throughout",
                           f"{rss:.0f} MB peak during the S2 scan/latency runs; Collector: {col_rss:.0f} MB at "
                           f"{big['scale']['label']}, {s3_rss:.0f} MB under the S3 load",
                           max(rss, col_rss, s3_rss) <= 150))
        lat = s2["latency"]["snapshot_ms"]
        out.append(Verdict("state change → snapshot ≤ 0.5 s",
                           f"{lat['median']:.0f} ms median, {lat['max']:.0f} ms max "
                           f"(monitor: {s2['latency']['monitor_ms']['median']:.1f} ms)", lat["max"] <= 500))
    return out


def render(res: dict[str, Any]) -> str:
    """RESULTS.md text."""
    m = res["machine"]
    L: list[str] = []
    L.append("# taskdash benchmark results\n")
    L.append(f"Generated by `python bench/run.py{' --preset ' + res['preset'] if res['preset'] != 'full' else ''}` "
             f"on {m['date']} in {res['total_s']:.0f} s.\n")
    L.append("## Headline\n")
    L.extend(res.get("headline", []))
    L.append("")
    L.append("## Targets (issue 6)\n")
    L.append("| target | figure | met? |")
    L.append("|---|---|---|")
    for v in res["verdicts"]:
        met = "—" if v.met is None else ("**met**" if v.met else "**NOT met**")
        L.append(f"| {v.target} | {v.figure} | {met} |")
    L.append("")
    L.append("## Broker + unacked refresh (steady state, per refresh)\n")
    L.append("Median over the refreshes (p95 in brackets). *Server* = Redis execution time of the commands the "
             "measured client sent (INFO commandstats delta per refresh; a script's time includes the commands "
             "it runs); *Redis CPU* = the server process's CPU time (INFO cpu) per refresh including socket "
             "I/O. Nothing else talks to this Redis during these runs. taskdash covers queues + priority bands + oldest-message age + unacked total + a "
             "decoded 500-entry window + per-queue unacked counts; Flower and redis-cli only give depths "
             "(and HLEN for redis-cli).\n")
    L.append("| scale | tool | round trips | commands | server | Redis CPU | client wall | bytes | messages seen | RSS |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for sc in res["scales"]:
        lab = sc["scale"]["label"]
        td = sc["taskdash"]
        s = summarize_rows(td["rows"], "wall_ms", "server_usec", "round_trips", "sent", "received",
                           "server_calls")
        by = {}
        for r in td["rows"]:
            by = r["by_cmd"]
        L.append(f"| {lab} | taskdash | {s['round_trips']['median']:.0f} | {s['server_calls']['median']:.0f} top-level "
                 f"| {s['server_usec']['median'] / 1000:.2f} ms ({s['server_usec']['p95'] / 1000:.2f}) "
                 f"| {td['redis_cpu_ms_per_refresh']:.1f} ms "
                 f"| {s['wall_ms']['median']:.1f} ms ({s['wall_ms']['p95']:.1f}) "
                 f"| {_kb(s['sent']['median'] + s['received']['median'])} "
                 f"| {td['messages_seen']:,} | {td['rss_mb']:.0f} MB |")
        wi = sc.get("whatif")
        if wi:
            w = summarize_rows(wi["rows"], "wall_ms", "server_usec", "round_trips", "sent", "received",
                               "server_calls")
            L.append(f"| {lab} | *what-if: fixes 1–4 (prototype)* | {w['round_trips']['median']:.0f} "
                     f"| {w['server_calls']['median']:.0f} "
                     f"| {w['server_usec']['median'] / 1000:.2f} ms ({w['server_usec']['p95'] / 1000:.2f}) | — "
                     f"| {w['wall_ms']['median']:.1f} ms ({w['wall_ms']['p95']:.1f}) "
                     f"| {_kb(w['sent']['median'] + w['received']['median'])} | {wi['messages_seen']:,} "
                     f"| {wi['rss_mb']:.0f} MB |")
        fl = sc["flower"]
        f = summarize_rows(fl["rows"], "wall_ms", "server_usec", "round_trips", "sent", "received", "server_calls")
        L.append(f"| {lab} | Flower 2.2 queues | {f['round_trips']['median']:.0f} | {f['server_calls']['median']:.0f} "
                 f"| {f['server_usec']['median'] / 1000:.2f} ms ({f['server_usec']['p95'] / 1000:.2f}) "
                 f"| {fl['redis_cpu_ms_per_refresh']:.1f} ms "
                 f"| {f['wall_ms']['median']:.1f} ms ({f['wall_ms']['p95']:.1f}) "
                 f"| {_kb(f['sent']['median'] + f['received']['median'])} | {fl['messages_seen']:,} "
                 f"| {fl['rss_mb']:.0f} MB |")
        rc = sc["redis_cli"]
        L.append(f"| {lab} | redis-cli (as typed) | {rc['round_trips']:,} | {rc['server_calls']:,} "
                 f"| {rc['server_usec'] / 1000:.2f} ms | {rc['redis_cpu_ms']:.1f} ms | {rc['wall_ms']:.0f} ms "
                 f"| {_kb(rc['bytes'])} | {rc['messages_seen']:,} | — |")
        inner: dict[str, list[int]] = {}
        for r in td["rows"]:
            inner = r.get("inner", {})
        n_rows = 1
        L.append(f"|  | *taskdash, top-level commands ≥ 0.5 ms (last refresh)* | | "
                 f"{', '.join(f'{k} {v[0]}×/{v[1] / n_rows:,.0f} µs' for k, v in sorted(by.items()))} | | | | | | |")
        L.append(f"|  | *taskdash, commands run inside its scripts (last refresh)* | | "
                 f"{', '.join(f'{k} {v[0]}×/{v[1]:,} µs' for k, v in sorted(inner.items()))} | | | | | | |")
    L.append("")
    L.append("First read and discovery (taskdash, no app given: queue names come from the incremental SCAN of "
             "binding tables):\n")
    L.append("| scale | first read | round trips | bytes | queues after first read | reads until all queues "
             "known | unacked window states | per-queue unacked counts exact |")
    L.append("|---|---|---|---|---|---|---|---|")
    for sc in res["scales"]:
        td = sc["taskdash"]
        fr = td["first"]
        L.append(f"| {sc['scale']['label']} | {fr['wall_ms']:.0f} ms, {fr['server']['usec'] / 1000:.1f} ms server "
                 f"| {fr['round_trips']} | {_kb(fr['sent'] + fr['received'])} | {fr['queues_seen']} "
                 f"| {td['reads_to_all_queues']} | {td['window_states']} | {td['counts_exact']} |")
    L.append("")
    L.extend(where_time_goes(res))
    L.append("## Worker state (inspect)\n")
    L.append("taskdash: one window for ping/stats/active/reserved/scheduled/active_queues (ends early once every "
             "worker with a fresh heartbeat answered everything). Flower: each method its own "
             "`inspect(timeout=1.0)` call, run concurrently (its dashboard methods; with the task lists it "
             "adds when a worker page is opened). celery CLI: four separate processes, each waits the whole "
             "`--timeout 1.0`.\n")
    L.append("| scale | tool | wall | round trips | connections | bytes | server | workers answered | RSS |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for sc in res["scales"]:
        lab = f"{sc['scale']['label']} ({sc['scale']['workers']} workers)"
        it = sc.get("inspect_taskdash")
        if not it:
            continue
        for name, data in (("taskdash (6 methods)", it), ("Flower (4 methods)", sc["inspect_flower"]),
                           ("Flower (8 methods)", sc["inspect_flower_tasks"])):
            s = summarize_rows(data["rows"], "wall_ms", "round_trips", "connects", "sent", "received", "server_usec")
            L.append(f"| {lab} | {name} | {s['wall_ms']['median']:.0f} ms | {s['round_trips']['median']:.0f} "
                     f"| {s['connects']['median']:.0f} | {_kb(s['sent']['median'] + s['received']['median'])} "
                     f"| {s['server_usec']['median'] / 1000:.2f} ms "
                     f"| {min(r['workers'] for r in data['rows'])} | {data['rss_mb']:.0f} MB |")
        cli = sc["celery_cli"]
        tot_wall = sum(v["wall_ms"] for v in cli.values())
        each = ", ".join(f"{k} {v['wall_ms']:.0f}" for k, v in cli.items())
        L.append(f"| {lab} | celery inspect ×4 (CLI) | {tot_wall:.0f} ms total ({each}) "
                 f"| {sum(v['round_trips'] for v in cli.values())} | {sum(v['connects'] for v in cli.values())} "
                 f"| {_kb(sum(v['sent'] + v['received'] for v in cli.values()))} "
                 f"| {sum(v['server_usec'] for v in cli.values()) / 1000:.2f} ms | — "
                 f"| {max(v['rss_mb'] for v in cli.values()):.0f} MB |")
    L.append("")
    L.append("## Full Collector snapshot (broker + unacked + workers + results + poison), one per second\n")
    L.append("Per-second costs include the background threads (heartbeat PSUBSCRIBE, periodic inspect every 5 s, "
             "results PSUBSCRIBE). Server time here comes from SLOWLOG at threshold 0 (the only way to "
             "separate taskdash's commands from the 20 workers'); at that threshold Redis also logs every "
             "command a script runs, which makes scripts slower — compare the broker table above for exact "
             "script costs. The slowlog is read by the parent, so the RSS is the Collector's.\n")
    L.append("| scale | first snapshot | collect() wall | round trips/s | bytes/s | server time/s | Redis CPU/s (all "
             "clients) | window states | RSS |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for sc in res["scales"]:
        c = sc.get("collector")
        if not c:
            continue
        w = stats_of([r["wall_ms"] for r in c["rows"]])
        p = c["per_s"]
        L.append(f"| {sc['scale']['label']} | {c['first_ms']:.0f} ms | {w['median']:.1f} ms (p95 {w['p95']:.1f}) "
                 f"| {p['round_trips']:.1f} | {_kb(p['bytes'])} | {p['server_usec'] / 1000:.2f} ms "
                 f"| {p['redis_cpu_ms_all_clients']:.1f} ms | {c['window_states']} | {c['rss_mb']:.0f} MB |")
    L.append("")
    if len(res["scales"]) >= 2:
        a, b = res["scales"][0], res["scales"][-1]
        L.append(f"## Growth from {a['scale']['label']} to {b['scale']['label']} "
                 f"(×{b['scale']['queues'] / a['scale']['queues']:.0f} queues, messages and unacked)\n")
        L.append("| figure | " + a["scale"]["label"] + " | " + b["scale"]["label"] + " | ratio |")
        L.append("|---|---|---|---|")

        def row(name: str, x: float, y: float, unit: str = "") -> None:
            ratio = (y / x) if x else float("nan")
            L.append(f"| {name} | {x:,.2f}{unit} | {y:,.2f}{unit} | ×{ratio:.1f} |")

        for tool, key in (("taskdash", "taskdash"), ("Flower", "flower")):
            sa = summarize_rows(a[key]["rows"], "wall_ms", "server_usec", "round_trips", "sent", "received")
            sb = summarize_rows(b[key]["rows"], "wall_ms", "server_usec", "round_trips", "sent", "received")
            row(f"{tool} round trips", sa["round_trips"]["median"], sb["round_trips"]["median"])
            row(f"{tool} server time", sa["server_usec"]["median"] / 1000, sb["server_usec"]["median"] / 1000, " ms")
            row(f"{tool} client wall", sa["wall_ms"]["median"], sb["wall_ms"]["median"], " ms")
            row(f"{tool} bytes", (sa["sent"]["median"] + sa["received"]["median"]) / 1024,
                (sb["sent"]["median"] + sb["received"]["median"]) / 1024, " KiB")
        ta = summarize_rows(a["taskdash"]["rows"], "server_usec", "wall_ms")
        tb = summarize_rows(b["taskdash"]["rows"], "server_usec", "wall_ms")
        growth_note = (
            f"taskdash's round trips stay flat; its Redis time grows ×"
            f"{tb['server_usec']['median'] / max(1.0, ta['server_usec']['median']):.1f} and its client time ×"
            f"{tb['wall_ms']['median'] / max(1e-9, ta['wall_ms']['median']):.1f} for ×"
            f"{b['scale']['queues'] / a['scale']['queues']:.0f}: one plain LLEN per existing list key is O(queues) "
            "by nature (the depths of every queue are shown each refresh); everything else (binding tables, head "
            "probes, band discovery, the unacked window and HSCAN step) is a bounded slice per refresh. "
            "Flower and redis-cli grow linearly; the inspect window grows with the number of workers (replies "
            "to parse) but stays one window.")
        row("redis-cli commands", a["redis_cli"]["commands"], b["redis_cli"]["commands"])
        row("redis-cli wall", a["redis_cli"]["wall_ms"], b["redis_cli"]["wall_ms"], " ms")
        row("taskdash RSS", a["taskdash"]["rss_mb"], b["taskdash"]["rss_mb"], " MB")
        if a.get("inspect_taskdash") and b.get("inspect_taskdash"):
            ia = stats_of([r["wall_ms"] for r in a["inspect_taskdash"]["rows"]])
            ib = stats_of([r["wall_ms"] for r in b["inspect_taskdash"]["rows"]])
            row(f"taskdash inspect window ({a['scale']['workers']}→{b['scale']['workers']} workers)",
                ia["median"], ib["median"], " ms")
        L.append("")
        L.append(growth_note)
        L.append("")
    s2 = res.get("s2")
    if s2:
        L.append(f"## S2: {s2['total']:,} stored results (avg {s2['avg_bytes']:.0f} B; {s2['states']})\n")
        L.append("`ResultsMonitor.step()`: one SCAN COUNT 2000 step plus one plain pipeline of `GETRANGE key 0 47` "
                 "(the status is the first JSON field; full GET only for FAILUREs and odd values). *step() loop*: "
                 "called back to back until one complete pass (what `taskdash` one-shot commands do). "
                 "*background*: `ResultsMonitor.start()`, the thread the Collector runs: after each step it "
                 "sleeps so that the step's estimated Redis time stays at `scan_budget` "
                 f"({s2['background'].get('budget', 0.09) * 100:.0f} %) of one core.\n")
        L.append("| loop | time to complete count | Redis CPU share | Redis exec µs/s | bytes/s | counted "
                 "| state table | peak RSS |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name, label in (("unpaced", "step() loop, flat out"), ("background", "background thread (Collector)")):
            x = s2[name]
            when = (f"{x['elapsed_s']:.1f} s" if x["complete"] else
                    f"≈{x['to_complete_s'] or 0:.0f} s (extrapolated: {x['scanned']:,} keys in {x['elapsed_s']:.0f} s)")
            share = f"{x['redis_cpu_share'] * 100:.1f} %"
            if name == "background" and x.get("redis_cpu_share_max_5s") is not None:
                share += f" (max 5 s window {x['redis_cpu_share_max_5s'] * 100:.1f} %)"
            L.append(f"| {label} | {when} | {share} | {x['redis_usec_per_s']:,.0f} | {_kb(x['bytes_per_s'])} "
                     f"| {x['counted']:,} | {x['table_mb']:.1f} MB | {x['rss_mb']:.0f} MB |")
        un = s2["unpaced"]
        cur_cpu = un["redis_cpu_share"] * un["elapsed_s"]
        L.append(f"\nRedis CPU per key (SCAN + GETRANGE pipeline, INFO cpu incl. socket I/O): "
                 f"{cur_cpu / max(1, s2['total']) * 1e6:.1f} µs (the Lua status script it replaced: 9.5 µs in the "
                 "previous run of this benchmark). Inside the Collector, `collect()` no longer steps the scan; it "
                 "only PINGs the backend so the snapshot says whether it answers.\n")
        lat = s2["latency"]
        L.append(f"State change (SETEX + PUBLISH in one MULTI, as the backend does) with {s2['total']:,} results "
                 f"stored, {lat['samples']} samples: visible in `ResultsMonitor` after "
                 f"**{lat['monitor_ms']['median']:.1f} ms** median ({lat['monitor_ms']['max']:.1f} ms max); "
                 f"in a `Collector.collect()` snapshot polled back to back after "
                 f"**{lat['snapshot_ms']['median']:.0f} ms** median ({lat['snapshot_ms']['max']:.0f} ms max; "
                 f"one collect() takes {lat['collect_ms']['median']:.0f} ms here). With the TUI's 1 s refresh the "
                 "change is on screen at the next refresh.\n")
    s3 = res.get("s3")
    if s3:
        L.append(f"## S3: steady load ({s3['workers']}, target {s3['target_rate']} tasks/s of `add`)\n")
        L.append("| run | sent/s | completed/s | backlog at end | Redis CPU share (all clients) | taskdash "
                 "collect() wall | taskdash round trips/s | taskdash server time/s | taskdash RSS |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for label in ("without", "with"):
            x = s3.get(label)
            if not x:
                continue
            td = x.get("taskdash")
            if td:
                w = stats_of([r["wall_ms"] for r in td["rows"]])
                extra = (f"{w['median']:.1f} ms (p95 {w['p95']:.1f}) | {td['per_s']['round_trips']:.1f} "
                         f"| {td['per_s']['server_usec'] / 1000:.2f} ms | {td['rss_mb']:.0f} MB")
            else:
                extra = "— | — | — | —"
            L.append(f"| {label} taskdash | {x['sent_per_s']:.0f} | {x['done_per_s']:.0f} | {x['backlog_end']} "
                     f"| {x['redis_cpu_share'] * 100:.1f} % | {extra} |")
        L.append("")
        wo, wi = s3.get("without"), s3.get("with")
        if wo and wi:
            L.append(f"The load generator runs in the benchmark process on the same 2 cores as the workers, Redis "
                     f"and taskdash, so taskdash's client CPU (one collect() per second) competes with the "
                     f"producer: sent {wo['sent_per_s']:.0f}/s without and {wi['sent_per_s']:.0f}/s with taskdash. "
                     f"Redis CPU share (all clients): {wo['redis_cpu_share'] * 100:.1f} % without, "
                     f"{wi['redis_cpu_share'] * 100:.1f} % with. Round trips/s with taskdash are mostly the "
                     "results live feed (one EXISTS pipeline per batch of published results it did not know yet).\n")
    L.append(FIXES)
    L.append("## Setup\n")
    for sc in res["scales"]:
        L.append(f"- {sc['scale']['label']}: {sc['scale']['queues']:,} queues (bindings in `_kombu.binding.<q>` + "
                 f"`_kombu.binding_permanent.<q>`), {sc['scale']['messages']:,} waiting messages (Zipf-like depths, "
                 f"a quarter of the queues use priority bands 3/6/9), {sc['scale']['unacked']:,} unacked entries "
                 f"(30 % passed to taskdash as live-held claims, the rest orphaned), loaded in {sc['setup_s']:.0f} s, "
                 f"Redis used memory {sc['redis_used_mb']:,.0f} MB; {sc['scale']['workers']} real workers "
                 f"(`celery worker -P threads -c 1 --prefetch-multiplier 1`, each holding one `slow` task) started in "
                 f"{sc.get('workers_start_s', 0):.0f} s.")
    if s2:
        L.append(f"- S2: loaded in {s2['setup_s']:.0f} s, Redis used memory {s2['redis_used_mb']:,.0f} MB.")
    L.append("")
    L.append("Method notes: see the docstring of `bench/run.py`. Flower was not installed: its two code paths "
             "(Redis queue lengths, inspector) are re-implemented line for line from flower 2.2.0's "
             "`flower/utils/broker.py` and `flower/inspector.py`. The 20 workers use the threads pool with one "
             "thread (the solo pool cannot answer inspect while it runs the held task).\n")
    L.append("## Machine\n")
    for k, v in m.items():
        L.append(f"- {k}: {v}")
    L.append(f"- loadavg_end: {res.get('loadavg_end', '?')}")
    L.append("- The 2 cores were shared with other agents' test runs during this benchmark (see the load "
             "averages): client wall times, and Redis execution times (which are wall-clock durations), are "
             "inflated by that contention; Redis CPU times (INFO cpu) are not. In S3 the load generator, the "
             "workers, Redis and taskdash all compete for the same 2 cores.")
    L.append("")
    return "\n".join(L)


FIXES = """## What changed for issue 6, and what is still missed

The previous run of this benchmark (git ec46fce, same machine, same scenarios) measured at S1: 2 round
trips, 78.9 ms Redis time, 257 ms client time, 924 KiB per refresh, and ≈500 s to count S2 inside the
Collector. Its causes and the fixes now shipped:

1. **Queue probe** (was 51 ms of Redis time: a Lua `LLEN` of all 4 band keys of every queue + `LINDEX` of
   every head on every refresh). Now a plain pipelined `LLEN` of band 0 and of the band keys that existed at
   the last read; absent bands are re-checked with one `EXISTS` per queue for a round-robin slice of 32
   queues. The head-probe script (tag extraction, big messages never transferred whole) runs only for new
   queues, queues whose depths changed or whose head was never seen; a round-robin slice of 16 others is
   re-read with a plain `LINDEX key -1` when the head seen last was at most 4 KiB (the script otherwise).
2. **Binding tables** (was 9.7 ms: `SSCAN` of every table every refresh). Now plain `SSCAN` of new tables at
   once, of tables in the middle of a pass, and of a round-robin slice of 32 known ones. The keyspace SCAN
   step for new tables drops from COUNT 1000 to COUNT 50 once its first pass is complete.
3. **Per-queue unacked counts** (was 21 ms: `HSCAN COUNT 2000` returning 256-byte tails). Now one Lua
   `HSCAN COUNT 32` step that aggregates the routes inside Redis and returns ONE short bulk string. A
   100,000-entry ledger takes ~3,100 refreshes per pass (the first pass shows scaled estimates; HLEN, the
   total, is always exact; `unacked_counts_exact` says so). Even at COUNT 32 this Lua step is the second
   largest Redis cost: converting ~1 KiB values into Lua strings costs ~4 µs per entry before any work.
4. **Unacked window** (was 5.8 ms: 500 `HEXISTS` + 1,000 ARGV). The window is fingerprinted by its last
   entry (`ZRANGE idx N-1 N-1 WITHSCORES`) and read again only when that entry moved (or every 30 reads);
   only tags whose (tag, score) was not decoded yet are fetched, `HEXISTS` only when `HLEN != ZCARD`.
5. **S2 in the Collector.** `ResultsMonitor.start()` runs the SCAN steps on its own thread, paced by an
   estimated Redis-time budget (9.2 % of a core; measured share ≈ 1.05 × the estimate), with a plain `GETRANGE key 0 47` pipeline instead of the Lua
   status script; `collect()` only PINGs the backend while that thread runs.

**S2: the two targets meet only at the edge.** One pass over 1,000,000 results costs Redis 5.6–6.3 s of
CPU on this machine (SCAN + `GETRANGE` pipeline, INFO cpu; it varies run to run with the contention), so
counting it in ≤ 60 s needs 9.3–10.5 % of a core on average. The pacing estimates Redis time from a per-key
cost (it cannot measure its own share without `INFO`), aims at 9.2 %, and measured 9.1–10.9 % and 56–61 s
over the last four runs: either target can be kept strictly by moving `scan_budget`, not both on every run.

**Still missed: client time.** What is left of a refresh at S1 is ≈35 ms inside redis-py (pure-Python
packing and parsing of ~1,800 pipelined commands, ~20 µs each on this loaded machine; ~1,700 of them are
the `LLEN`s) and ≈30 ms of taskdash's own Python (1,000 `QueueInfo` and 500 `UnackedEntry` objects per
refresh, planning the slices). Ways below 25 ms, each with a cost the lead should decide on: the optional
`hiredis` parser (a new dependency; redis-py uses it automatically), one Lua call returning all depths as
one string (≈4 µs of Redis time per key instead of ≈0.5 µs: breaks the 2 ms server budget at S1), or a
pre-packed raw `LLEN` batch on a dedicated connection (one more round trip, bypasses redis-py internals).
Flower's depth-only pipeline of 4,000 `LLEN` costs about the same client time on this machine.
"""
"""Analysis of the misses (written from the measurements of this benchmark; see the tables above it)."""


def where_time_goes(res: dict[str, Any]) -> list[str]:
    """Per-script Redis time and the reply volume of one taskdash refresh at the biggest scale."""
    big = res["scales"][-1]
    td = big["taskdash"]
    rows = td["rows"]
    L = [f"### Where one taskdash refresh spends Redis time at {big['scale']['label']} (mean over the "
         "steady refreshes)\n",
         "| script / command | calls per refresh | Redis time per refresh |", "|---|---|---|"]
    agg: dict[str, list[float]] = {}
    for r in rows:
        for k, (n, us) in r["by_cmd"].items():
            a = agg.setdefault(k, [0.0, 0.0])
            a[0] += n / len(rows)
            a[1] += us / len(rows)
    for k, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        L.append(f"| {k} | {n:.1f} | {us / 1000:.2f} ms |")
    inner: dict[str, list[float]] = {}
    for r in rows:
        for k, (n, us) in r.get("inner", {}).items():
            a = inner.setdefault(k, [0.0, 0.0])
            a[0] += n / len(rows)
            a[1] += us / len(rows)
    L.append("")
    L.append("Commands those scripts ran inside Redis (their own execution time, included in the script times "
             "above; the rest of a script's time is Lua overhead — each `redis.call` costs several µs more "
             "than the command itself): " + ", ".join(
                 f"{k} {n:,.0f}× / {us / 1000:.2f} ms" for k, (n, us) in sorted(inner.items(), key=lambda kv: -kv[1][1])) + ".")
    L.append("")
    return L


def headline(res: dict[str, Any]) -> list[str]:
    """A short paragraph with the main ratios."""
    big = res["scales"][-1]
    td = summarize_rows(big["taskdash"]["rows"], "wall_ms", "server_usec", "round_trips", "sent", "received")
    fl = summarize_rows(big["flower"]["rows"], "wall_ms", "server_usec", "round_trips", "sent", "received")
    rc = big["redis_cli"]
    lines = [
        f"At {big['scale']['label']} ({big['scale']['queues']:,} queues, {big['scale']['messages']:,} waiting, "
        f"{big['scale']['unacked']:,} unacked) one taskdash broker+unacked refresh takes "
        f"{td['round_trips']['median']:.0f} round trips, {td['server_usec']['median'] / 1000:.2f} ms of Redis "
        f"execution time and {td['wall_ms']['median']:.0f} ms client time "
        f"({_kb(td['sent']['median'] + td['received']['median'])} on the wire). "
        f"Flower's queue-length pipeline (depths only): {fl['round_trips']['median']:.0f} round trip, "
        f"{fl['server_usec']['median'] / 1000:.2f} ms server, {fl['wall_ms']['median']:.0f} ms client. "
        f"The same depths with redis-cli one command at a time: {rc['round_trips']:,} round trips, "
        f"{rc['wall_ms'] / 1000:.1f} s.",
    ]
    it = big.get("inspect_taskdash")
    if it:
        w = stats_of([r["wall_ms"] for r in it["rows"]])["median"]
        cli = sum(v["wall_ms"] for v in big["celery_cli"].values())
        lines.append(f"Worker state of {big['scale']['workers']} workers: taskdash {w:.0f} ms for six methods in "
                     f"one window vs {cli / 1000:.1f} s for the four `celery inspect` commands (×{cli / w:.0f}).")
    col = big.get("collector")
    if col:
        lines.append(f"The whole Collector (every source, background threads included) stays at "
                     f"{col['rss_mb']:.0f} MB RSS at {big['scale']['label']}.")
    s2 = res.get("s2")
    if s2:
        bg = s2["background"]
        lines.append(f"{s2['total']:,} results are counted in {s2['unpaced']['elapsed_s']:.0f} s flat out "
                     f"({s2['unpaced']['redis_cpu_share'] * 100:.0f} % of a Redis core) and in "
                     f"{'' if bg['complete'] else '≈'}{bg['to_complete_s'] or 0:.0f} s by the Collector's paced "
                     f"background thread ({bg['redis_cpu_share'] * 100:.1f} % of a Redis core); "
                     f"a state change reaches a snapshot in {s2['latency']['snapshot_ms']['median']:.0f} ms.")
    return [" ".join(lines)]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (preset 'quick')")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "RESULTS.md"))
    ap.add_argument("--json", default=None, help="also write the raw figures as JSON here")
    ap.add_argument("--skip", action="append", default=[], choices=["workers", "s2", "s3"])
    ap.add_argument("--from-json", default=None, help="re-render the report from a --json file (no run)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PARAMS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(*args.child)
        return 0
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        res["verdicts"] = verdicts(res)
        res["headline"] = headline(res)
        Path(args.out).write_text(render(res))
        return 0
    preset = PRESETS[args.preset or ("quick" if args.quick else "full")]
    from taskdash.procs import RedisServer

    t_start = time.perf_counter()
    res: dict[str, Any] = {"preset": preset.name, "machine": machine_info(), "scales": []}
    with RedisServer() as rs:
        meter = Meter(rs.url)
        meter.setup()
        for scale in preset.scales:
            if "workers" in args.skip:
                scale = Scale(scale.label, scale.queues, scale.messages, scale.unacked, 0)
            res["scales"].append(phase_scale(rs, meter, scale, preset) if scale.workers else
                                 _phase_scale_no_workers(rs, meter, scale, preset))
        if "s2" not in args.skip:
            res["s2"] = phase_results(rs, meter, preset)
        if "s3" not in args.skip and "workers" not in args.skip:
            res["s3"] = phase_load(rs, meter, preset)
    res["total_s"] = time.perf_counter() - t_start
    res["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res["verdicts"] = verdicts(res)
    res["headline"] = headline(res)
    text = render(res)
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, default=lambda o: o.__dict__, indent=1))
    log(f"wrote {args.out} ({res['total_s']:.0f} s)")
    return 0


def _phase_scale_no_workers(rs: Any, meter: Meter, scale: Scale, preset: Preset) -> dict[str, Any]:
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


if __name__ == "__main__":
    sys.exit(main())
