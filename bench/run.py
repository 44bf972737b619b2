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

Layout: this file parses the options, runs the phases and dispatches ``--child`` processes;
``presets`` holds the sizes, ``harness`` the meter / child / worker helpers, ``s1_refresh``,
``s1_inspect``, ``s1_collector`` and ``s1_scale`` the S1 phases, ``s2_results`` S2, ``s3_load`` S3,
``report`` the verdicts and RESULTS.md, ``scenarios`` the Redis data, ``netcount`` the socket counter;
``s1_tui`` runs what users run (the Textual app headless on the real Collector at each scale, and the
results monitor's steady state on S2; ``--skip tui`` leaves it out); ``s_bulk`` a bulk move (issue 18),
``s_taskstats`` task events through the per-name aggregator (issue 15).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import netcount, report  # noqa: E402
from bench.harness import METER_NAME, TD_NAME, Meter, log, name_connections  # noqa: E402
from bench.presets import PRESETS, Scale  # noqa: E402
from bench.s1_collector import child_collector  # noqa: E402
from bench.s1_inspect import child_celery_cli, child_inspect_flower, child_inspect_taskdash  # noqa: E402
from bench.s1_plain import child_broker_mode, phase_plain  # noqa: E402
from bench.s1_refresh import child_broker, child_flower_queues  # noqa: E402
from bench.s1_scale import phase_scale, phase_scale_no_workers  # noqa: E402
from bench.s1_tui import child_results_steady, child_tui, phase_results_steady, phase_tui  # noqa: E402
from bench.s2_results import (  # noqa: E402
    child_latency,
    child_results_background,
    child_results_scan,
    phase_results,
)
from bench.s3_load import phase_load  # noqa: E402
from bench.s_bulk import phase_bulk  # noqa: E402
from bench.s_taskstats import phase_taskstats, write_section  # noqa: E402

CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "broker": child_broker, "flower_queues": child_flower_queues, "inspect_taskdash": child_inspect_taskdash,
    "inspect_flower": child_inspect_flower, "celery_cli": child_celery_cli, "collector": child_collector,
    "results_scan": child_results_scan, "latency": child_latency, "results_background": child_results_background,
    "broker_mode": child_broker_mode, "tui": child_tui, "results_steady": child_results_steady,
}


def child_main(kind: str, raw: str) -> None:
    """Entry point of a ``--child`` process: count sockets, name connections, run, print JSON."""
    netcount.install(exclude_names=frozenset({METER_NAME}))
    name_connections(TD_NAME)
    result = CHILDREN[kind](json.loads(sys.stdin.read() if raw == "-" else raw))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (preset 'quick')")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "RESULTS.md"))
    ap.add_argument("--json", default=None, help="also write the raw figures as JSON here")
    ap.add_argument("--skip", action="append", default=[], choices=["workers", "s2", "s3", "plain", "tui", "bulk",
                                                                       "taskstats"])
    ap.add_argument("--from-json", default=None, help="re-render the report from a --json file (no run)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PARAMS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(*args.child)
        return 0
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        report.finish(res)
        report.write(res, args.out)
        return 0
    preset = PRESETS[args.preset or ("quick" if args.quick else "full")]
    from taskdash.procs import RedisServer

    t_start = time.perf_counter()
    res: dict[str, Any] = {"preset": preset.name, "machine": report.machine_info(), "scales": []}
    with RedisServer() as rs:
        meter = Meter(rs.url)
        meter.setup()
        for scale in preset.scales:
            if "workers" in args.skip:
                scale = Scale(scale.label, scale.queues, scale.messages, scale.unacked, 0)
            res["scales"].append(phase_scale(rs, meter, scale, preset) if scale.workers else
                                 phase_scale_no_workers(rs, meter, scale, preset))
            if "tui" not in args.skip and scale.workers:  # the real app on the scenario just loaded
                res["scales"][-1]["tui"] = phase_tui(rs, meter, scale, preset)
        if "plain" not in args.skip:  # issue 13: the largest scale's refresh on each read path
            res["s1_plain"] = phase_plain(rs, meter, preset.scales[-1], preset)
        if "s2" not in args.skip:
            res["s2"] = phase_results(rs, meter, preset)
            if "tui" not in args.skip:
                res["s2"]["steady"] = phase_results_steady(rs, meter, preset)
        if "s3" not in args.skip and "workers" not in args.skip:
            res["s3"] = phase_load(rs, meter, preset)
        if "bulk" not in args.skip:  # issue 18: a bulk move of a tenth of the preset's results (100,000 in full)
            res["bulk"] = phase_bulk(rs, meter, preset)
    if "taskstats" not in args.skip:  # issue 15: 50,000 task events/min through the per-name aggregator
        res["taskstats"] = phase_taskstats({"full": 5.0, "quick": 1.0}.get(preset.name, 0.2))
    res["total_s"] = time.perf_counter() - t_start
    res["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report.finish(res)
    report.write(res, args.out, args.json)
    if "taskstats" in res:
        write_section(Path(args.out), res["taskstats"])
    log(f"wrote {args.out} ({res['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
