"""S1 broker + unacked refresh: taskdash's BrokerReader, Flower's queue-length pipeline, redis-cli as typed.

The two Python measurements run in child processes (``child_broker``, ``child_flower_queues``) on a Redis
nobody else uses, so Redis time is the ``INFO commandstats`` delta of the commands the client sent;
``redis_cli_user`` runs in the parent and feeds ``redis-cli`` one command per line.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import redis

from bench import netcount
from bench.harness import (
    SCRIPT_LOG_US,
    TD_NAME,
    Meter,
    cs_delta,
    cs_inner,
    settings_for,
    vm_hwm_mb,
)
from bench.scenarios import BrokerScenario


def child_broker(params: dict[str, Any]) -> dict[str, Any]:
    """taskdash BrokerReader at one scale: discovery, then steady refreshes (each metered)."""
    from collectors.core.config import redis_client
    from collectors.core.models import TaskRef
    from collectors.reads.broker import BrokerReader

    settings = settings_for(params)
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
