"""Issue 12 benchmark: the extra cost per refresh of the worker liveness evidence, at 20 workers.

Usage::

    python bench/s_liveness.py                  # 20 real workers, updates bench/RESULTS.md's section
    python bench/s_liveness.py --workers 5 --out /tmp/r.md

What liveness adds to a refresh (``collectors.reads.workers`` / ``collectors.analysis.liveness``):

* **the connection probe** — ONE Redis command, at most once a second while some worker is silent or
  young (first seen < 20 s ago), else once per inspect interval (5 s by default): ``CLIENT LIST`` where
  permitted (the reply lists every client: ~5 connections per Celery worker), else a ``PUBLISH`` of a
  no-op pidbox message whose reply counts the pidbox subscribers. Measured on a private redis-server
  with 20 real Celery workers (``demo_tasks``, threads pool, concurrency 1) attached, on taskdash's
  monitor connected as the dashboard connects. Redis time: the ``INFO commandstats`` delta of
  ``client|list`` / ``publish`` (usec per call, this server only). Client time: ``perf_counter``
  around ``WorkerMonitor.probe_connections()`` (round trip, reply parsing, attribution of connections
  to workers).
* **the decision** — ``liveness_view`` (decide every incarnation, ghost rule), ``annotate_workers`` and
  ``classify_unacked`` of an unacked window (``--unacked`` entries, spread over the workers' queues), per
  refresh, client CPU only (no Redis command).

Per refresh = decision + one probe (worst case: a silent or young worker, probe every second at the
1-s refresh); steady state = decision + probe / inspect_interval.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import log, start_workers, stats_of, stop_workers  # noqa: E402

MARK_BEGIN = "<!-- liveness:begin -->"
MARK_END = "<!-- liveness:end -->"


def _cmdstat(r: Any, name: str) -> tuple[int, int]:
    v = r.info("commandstats").get(f"cmdstat_{name}") or {}
    return int(v.get("calls", 0)), int(v.get("usec", 0))


def _probe_series(mon: Any, r: Any, n: int, cmd: str) -> dict[str, Any]:
    """``n`` probes on ``mon`` (its mode already chosen): client wall per probe, Redis usec per call."""
    c0, u0 = _cmdstat(r, cmd)
    wall: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        mon.probe_connections()
        wall.append((time.perf_counter() - t) * 1e3)
        time.sleep(0.05)
    c1, u1 = _cmdstat(r, cmd)
    calls = max(c1 - c0, 1)
    return {"client_ms": stats_of(wall), "redis_us": (u1 - u0) / calls, "calls": c1 - c0}


def _unacked(workers: list[Any], n: int, now: float) -> tuple[Any, ...]:
    from collectors.core.models import UnackedEntry

    out = []
    queues = sorted({q for w in workers for q in w.queues}) or ["bench.held"]
    for i in range(n):
        age = 5.0 + (i % 600)
        out.append(UnackedEntry(
            delivery_tag=f"tag-{i}", task_id=f"{i:08x}-0000-4000-8000-{i:012x}", task="demo_tasks.tasks.slow",
            queue=queues[i % len(queues)], priority=0, reserved_at=now - age, age_s=age, redelivered=False,
            state="unknown", holder=None, stale=False, time_to_redelivery_s=3600.0 - age, argsrepr="(1,)"))
    return tuple(out)


def phase_liveness(rs: Any | None = None, *, n_workers: int = 20, probes: int = 40, refreshes: int = 200,
                   n_unacked: int = 1000) -> dict[str, Any]:
    """Start ``n_workers`` real workers on ``rs`` (a private one when None) and measure; see the docstring."""
    import redis

    from collectors.analysis.liveness import BacklogClock, annotate_workers, classify_unacked, liveness_view
    from collectors.core.config import Settings
    from collectors.reads.workers import WorkerMonitor
    from taskdash.procs import RedisServer

    own = rs is None
    server = RedisServer().start() if own else rs
    workers: list[Any] = []
    mons: list[Any] = []
    try:
        r = redis.Redis.from_url(server.url)
        log(f"liveness: starting {n_workers} workers")
        t0 = time.perf_counter()
        workers = start_workers(server, n_workers, server.url_db(1))
        started_s = time.perf_counter() - t0
        settings = Settings(broker_url=server.url, inspect_interval=5.0, inspect_timeout=1.0)
        mon = WorkerMonitor(settings)
        mons.append(mon)
        mon.start()
        view = mon.wait_for(lambda v: sum(1 for w in v.workers if w.online) >= n_workers, 60)
        time.sleep(3.0)  # a heartbeat of every worker and a few probes: connections attributed
        clients = len(r.client_list())
        out0 = int(r.info("stats")["total_net_output_bytes"])
        r.execute_command("CLIENT LIST")
        reply_bytes = int(r.info("stats")["total_net_output_bytes"]) - out0  # incl. the INFO reply (~1 kB)
        log(f"liveness: {sum(1 for w in view.workers if w.online)} workers online, {clients} clients")
        mon.stop()  # its own probe thread would interleave: the series below are the only probes
        mon = WorkerMonitor(settings)
        mons.append(mon)
        mon.inspect_now()
        client_list = _probe_series(mon, r, probes, "client|list")
        assert mon._probe_mode == "client", mon._probe_mode  # noqa: SLF001
        pub = WorkerMonitor(settings)
        mons.append(pub)
        pub.inspect_now()
        pub._probe_mode = "publish"  # noqa: SLF001 - what a client refused CLIENT LIST does
        publish = _probe_series(pub, r, probes, "publish")

        # the decision, per refresh, over this monitor's real incarnations
        now = time.time()
        wv = mon.view(now)
        entries = _unacked(list(wv.workers), n_unacked, now)
        clock = BacklogClock()
        backlog = clock.observe((), now)
        per: list[float] = []
        decide_ms: list[float] = []
        cpu0 = time.process_time()
        for i in range(refreshes):
            t = time.perf_counter()
            at = now + i * 0.001
            wv = mon.view(at)
            lv = liveness_view(wv, at, settings, backlog)
            annotate_workers(wv.workers, lv.decided)
            t1 = time.perf_counter()
            classify_unacked(entries, lv.decided, lv.claims, at, unknown_workers=lv.unknown_workers,
                             evidence_source=lv.source)
            t2 = time.perf_counter()
            per.append((t2 - t) * 1e3)
            decide_ms.append((t1 - t) * 1e3)
        decision_cpu_ms = (time.process_time() - cpu0) / refreshes * 1e3
        decided = {d.liveness for _, d in lv.decided}
        out = {"workers": n_workers, "online": sum(1 for w in wv.workers if w.online), "clients": clients,
               "client_list_bytes": reply_bytes, "workers_start_s": round(started_s, 1),
               "client_list": client_list, "publish": publish, "probes": probes,
               "decision_ms": stats_of(per), "decision_cpu_ms": decision_cpu_ms,
               "decide_ms": stats_of(decide_ms), "refreshes": refreshes,
               "unacked": n_unacked, "states": sorted(s for s in decided if s),
               "inspect_interval": settings.inspect_interval}
        return out
    finally:
        for m in mons:
            try:
                m.stop()
            except Exception:  # noqa: BLE001
                pass
        stop_workers(workers)
        if own:
            server.cleanup()


def render(res: dict[str, Any]) -> str:
    cl, pb, dec = res["client_list"], res["publish"], res["decision_ms"]
    worst_cl = cl["client_ms"]["median"] + dec["median"]
    steady_cl = cl["client_ms"]["median"] / res["inspect_interval"] + dec["median"]
    return "\n".join([
        MARK_BEGIN,
        f"## Worker liveness evidence: extra cost per refresh at {res['workers']} workers (issue 12)",
        "",
        f"`python bench/s_liveness.py` — {res['workers']} real Celery workers on a private redis-server "
        f"({res['online']} online, {res['clients']} Redis clients; a CLIENT LIST reply of "
        f"~{res['client_list_bytes']:,} bytes), {res['probes']} probes of each kind, {res['refreshes']} decisions "
        f"over a {res['unacked']:,}-entry unacked window (states seen: {', '.join(res['states']) or '–'}). "
        "Redis time: INFO commandstats usec per call; client time: wall clock around the probe (round trip, "
        "parsing, attribution) and around the decision (CPU only, no Redis command).",
        "",
        "| per refresh | Redis time | client time (median / p95) | how often |",
        "|---|---|---|---|",
        f"| connection probe, CLIENT LIST | **{cl['redis_us']:.0f} µs** | **{cl['client_ms']['median']:.2f} ms** / "
        f"{cl['client_ms']['p95']:.2f} ms | 1/s while a worker is silent or young, else 1 per inspect interval "
        f"({res['inspect_interval']:g} s) |",
        f"| connection probe, PUBLISH count (CLIENT LIST refused) | **{pb['redis_us']:.0f} µs** | "
        f"**{pb['client_ms']['median']:.2f} ms** / {pb['client_ms']['p95']:.2f} ms | same |",
        f"| decision (view + decide + annotate + classify {res['unacked']:,} unacked) | 0 | "
        f"**{dec['median']:.2f} ms** / {dec['p95']:.2f} ms ({res['decision_cpu_ms']:.2f} ms CPU; of which "
        f"view + decide + annotate {res['decide_ms']['median']:.2f} ms) | every refresh |",
        f"| **total, worst case** (a probe every 1-s refresh, CLIENT LIST) | {cl['redis_us']:.0f} µs | "
        f"**{worst_cl:.2f} ms** | |",
        f"| total, steady (all responding) | {cl['redis_us'] / res['inspect_interval']:.0f} µs/refresh | "
        f"{steady_cl:.2f} ms/refresh | |",
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
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--probes", type=int, default=40)
    ap.add_argument("--unacked", type=int, default=1000)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "RESULTS.md"))
    ap.add_argument("--json", default=None, help="also write the raw figures as JSON here")
    args = ap.parse_args(argv)
    res = phase_liveness(n_workers=args.workers, probes=args.probes, n_unacked=args.unacked)
    print(render(res))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(res, indent=2))
    write_section(Path(args.out), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
