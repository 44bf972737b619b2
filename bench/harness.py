"""Shared benchmark machinery: the server-side meter, child processes, workers and small statistics.

Every phase module (``s1_*``, ``s2_results``, ``s3_load``) measures through these helpers: ``Meter``
reads one Redis server's SLOWLOG, ``INFO commandstats``, CPU and network counters; ``run_child`` runs a
measurement in a fresh ``python bench/run.py --child KIND -`` process so its peak RSS is its own;
``start_workers``/``stop_workers`` drive real Celery workers (``demo_tasks``). How each figure is taken
is described in the docstring of ``bench/run.py``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RUN_PY = Path(__file__).resolve().parent / "run.py"
"""The entry point every ``--child`` process runs."""

import redis  # noqa: E402

_SUBCOMMANDS = {"script", "client", "config", "slowlog", "object", "memory", "function", "command",
                "acl", "latency", "pubsub", "xinfo", "cluster", "module"}
TD_NAME = "bench-measured"
"""Client name every connection of a measured process carries (SLOWLOG filter)."""
METER_NAME = "bench-meter"
SCRIPT_LOG_US = 500
"""SLOWLOG threshold while scripts are timed (commands run by Lua are not logged below it)."""


def _script_names() -> dict[str, str]:
    try:
        from collectors.reads import broker

        return {sha: name for name, sha in broker._SHAS.items()}  # noqa: SLF001 - labels for the report
    except (ImportError, AttributeError):
        return {}


SCRIPT_NAMES = _script_names()


# ---- process memory and connection names --------------------------------------------------------
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


# ---- the server-side meter -----------------------------------------------------------------------
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


def summarize_rows(rows: list[dict[str, Any]], *keys: str) -> dict[str, dict[str, float]]:
    """stats_of for each key over the rows."""
    return {k: stats_of([float(r[k]) for r in rows]) for k in keys}


# ---- child processes ----------------------------------------------------------------------------
def run_child(kind: str, params: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; returns the JSON it printed last."""
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--child", kind, "-"],
        input=json.dumps(params), capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} failed (rc={proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def settings_for(params: dict[str, Any]) -> Any:
    """taskdash Settings for a child: broker/backend URLs and the inspect timing from ``params``."""
    from collectors.core.config import Settings

    return Settings(broker_url=params["broker"], backend_url=params.get("backend"),
                    inspect_timeout=float(params.get("inspect_timeout", 1.0)),
                    inspect_interval=float(params.get("inspect_interval", 3600.0)))


# ---- parent side: progress, workers --------------------------------------------------------------
def log(msg: str) -> None:
    """Progress line on stderr (the CLI's only output besides RESULTS.md)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


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
