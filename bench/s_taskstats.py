"""Issue 15 benchmark: 50,000 task events per minute for 5 minutes through the per-name aggregator.

Usage::

    python bench/s_taskstats.py                 # 5 simulated minutes, updates bench/RESULTS.md's section
    python bench/s_taskstats.py --minutes 1 --out /tmp/r.md

The workload is what ``Collector.collect()`` does with the event feed at 1 refresh per second: every
simulated second, the events of that second (decoded JSON dicts as ``decode_event_message`` returns
them: task-sent, task-received, task-started, task-succeeded / task-failed, some task-retried) go to
``observe`` and one ``view(now)`` is built. 12,500 tasks/min over 60 busy names plus a long tail of
400 rare names (so the ``(other)`` cap is hit), lognormal runtimes, 5 % failures of 6 exception kinds
with tracebacks, 1 % retried, and tasks overlapping (started before earlier ones finish).

Clock: **simulated**. The aggregator is CPU-bound and never sleeps, so the events of 5 minutes are fed
as fast as the machine goes and CPU share = CPU seconds used / simulated seconds. That equals the share
of a core a live taskdash spends at that event rate (the subscriber thread's JSON decoding is the
worker monitor's, not measured here). Memory: ``tracemalloc`` in a second pass — what the aggregator
retains at the end (the 5-min window full) and the peak during the run (which includes one second's
batch of event dicts).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collectors.analysis.taskstats import TaskStatsAggregator  # noqa: E402

EVENTS_PER_MIN = 50_000
MARK_BEGIN = "<!-- taskstats:begin -->"
MARK_END = "<!-- taskstats:end -->"
EXCEPTIONS = ("ValueError('card 4242 declined')", "KeyError('customer')", "TimeoutError('gateway timeout')",
              "ConnectionError('db down')", "RuntimeError('quota exceeded for tenant 17')",
              "billing.errors.CardError('expired')")


class _Workload:
    """Generates each simulated second's events (about EVENTS_PER_MIN / 60 of them)."""

    def __init__(self, seed: int = 15) -> None:
        self.rng = random.Random(seed)
        self.names = [f"app.module{i // 10}.task_{i}" for i in range(60)]
        self.rare = [f"app.rare.task_{i}" for i in range(400)]
        self.pending: list[tuple[float, dict[str, Any]]] = []
        self.seq = 0
        self.carry = 0.0

    def second(self, t0: float) -> list[dict[str, Any]]:
        rng = self.rng
        out: list[dict[str, Any]] = []
        # 4 events per task (sent, received, started, succeeded/failed/retried): tasks/s for the target rate
        self.carry += EVENTS_PER_MIN / 60.0 / 4.0
        n, self.carry = int(self.carry), self.carry - int(self.carry)
        for _ in range(n):
            self.seq += 1
            uid = f"{self.seq:08x}-0000-4000-8000-{self.seq:012x}"
            name = self.rng.choice(self.rare) if rng.random() < 0.02 else self.names[int(rng.paretovariate(1.2)) % 60]
            ts = t0 + rng.random()
            host = f"celery@worker-{rng.randrange(20)}"
            out.append({"type": "task-sent", "uuid": uid, "name": name, "args": "(1, 2)", "kwargs": "{}",
                        "retries": 0, "eta": None, "expires": None, "queue": "celery", "exchange": "",
                        "routing_key": "celery", "root_id": uid, "parent_id": None, "hostname": "gen@producer",
                        "utcoffset": 0, "pid": 1, "clock": self.seq, "timestamp": ts, "local_received": ts})
            out.append({"type": "task-received", "uuid": uid, "name": name, "args": "(1, 2)", "kwargs": "{}",
                        "root_id": uid, "parent_id": None, "retries": 0, "eta": None, "expires": None,
                        "hostname": host, "utcoffset": 0, "pid": 7, "clock": self.seq, "timestamp": ts + 0.002,
                        "local_received": ts + 0.003})
            wait = rng.expovariate(20.0)
            runtime = math.exp(rng.gauss(-2.5, 1.0))
            self.pending.append((ts + wait, {"type": "task-started", "uuid": uid, "hostname": host, "pid": 9,
                                             "utcoffset": 0, "clock": self.seq, "timestamp": ts + wait}))
            end = ts + wait + runtime
            r = rng.random()
            if r < 0.05:
                exc = rng.choice(EXCEPTIONS)
                tb = ("Traceback (most recent call last):\n  File \"/app/tasks.py\", line 42, in run\n"
                      f"    charge(customer)\n{exc}\n")
                ev = {"type": "task-failed", "uuid": uid, "exception": exc, "traceback": tb, "hostname": host,
                      "utcoffset": 0, "pid": 9, "clock": self.seq, "timestamp": end}
            elif r < 0.06:
                ev = {"type": "task-retried", "uuid": uid, "exception": "RuntimeError('retry')", "traceback": "tb",
                      "hostname": host, "utcoffset": 0, "pid": 9, "clock": self.seq, "timestamp": end}
            else:
                ev = {"type": "task-succeeded", "uuid": uid, "result": "3", "runtime": runtime, "hostname": host,
                      "utcoffset": 0, "pid": 9, "clock": self.seq, "timestamp": end}
            self.pending.append((end, ev))
        due = t0 + 1.0
        keep = []
        for when, ev in self.pending:
            if when < due:
                out.append(ev)
            else:
                keep.append((when, ev))
        self.pending = keep
        return out


def _run(seconds: int, *, trace: bool) -> dict[str, Any]:
    work = _Workload()
    t0 = 1_800_000_000.0
    agg = TaskStatsAggregator(now=t0)
    cpu = 0.0
    events = 0
    views = 0
    if trace:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    for s in range(seconds):
        batch = work.second(t0 + s)
        events += len(batch)
        now = t0 + s + 1.0
        c0 = time.process_time()
        agg.observe_many(batch, now)
        agg.view(now)
        cpu += time.process_time() - c0
        views += 1
        del batch
    out: dict[str, Any] = {"seconds": seconds, "events": events, "views": views, "cpu_s": cpu,
                           "names": len(agg._names), "pending": agg.pending()}
    if trace:
        work.pending = []
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["retained_mb"] = (cur - base) / 1e6
        out["peak_mb"] = (peak - base) / 1e6
    view = agg.view(t0 + seconds)
    out["window_events"] = sum(sum(t.counts) for t in view.tasks)
    return out


def phase_taskstats(minutes: float = 5.0) -> dict[str, Any]:
    """Both passes; ``cpu_share`` = CPU seconds / simulated seconds."""
    seconds = int(minutes * 60)
    timed = _run(seconds, trace=False)
    mem = _run(seconds, trace=True)
    return {"minutes": minutes, "events": timed["events"], "events_per_min": timed["events"] * 60.0 / seconds,
            "cpu_s": round(timed["cpu_s"], 3), "cpu_share": timed["cpu_s"] / seconds,
            "per_event_us": timed["cpu_s"] / max(timed["events"], 1) * 1e6, "views": timed["views"],
            "retained_mb": round(mem["retained_mb"], 2), "peak_mb": round(mem["peak_mb"], 2),
            "names": timed["names"], "pending": timed["pending"], "window_events": timed["window_events"]}


def render(res: dict[str, Any]) -> str:
    cpu_ok = res["cpu_share"] <= 0.05
    mem_ok = res["peak_mb"] <= 30
    return "\n".join([
        MARK_BEGIN,
        "## Task analytics: 50,000 events/min through the per-name aggregator (issue 15)",
        "",
        f"`python bench/s_taskstats.py` — {res['minutes']:g} simulated minutes, {res['events']:,} task events "
        f"({res['events_per_min']:,.0f}/min), one `view()` per simulated second ({res['views']:,}), "
        f"{res['names']} name buckets (60 busy names + a 400-name tail: 200 names kept, the rest in `(other)`). Simulated clock: the "
        "events are fed as fast as the machine goes; CPU share = CPU seconds / simulated seconds.",
        "",
        "| measure | value | budget | verdict |",
        "|---|---|---|---|",
        f"| CPU | {res['cpu_s']:.2f} s for {res['minutes'] * 60:.0f} s of events = **{res['cpu_share']:.1%} of a core** "
        f"({res['per_event_us']:.1f} µs/event incl. views) | ≤ 5 % | {'ok' if cpu_ok else 'OVER'} |",
        f"| memory retained (window full) | {res['retained_mb']:.1f} MB | | |",
        f"| memory peak (tracemalloc, incl. one second's event batch) | **{res['peak_mb']:.1f} MB** | ≤ 30 MB | "
        f"{'ok' if mem_ok else 'OVER'} |",
        f"| pending uuid entries at the end | {res['pending']:,} (cap 20,000) | | |",
        "",
        MARK_END,
    ]) + "\n"


def write_section(path: Path, res: dict[str, Any]) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md."""
    text = path.read_text() if path.exists() else ""
    section = render(res)
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        _, tail = rest.split(MARK_END, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "RESULTS.md"))
    args = ap.parse_args(argv)
    res = phase_taskstats(args.minutes)
    print(render(res))
    write_section(Path(args.out), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
