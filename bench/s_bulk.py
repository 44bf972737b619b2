"""Bulk move (issue 18): time and Redis time per message of ``taskdash bulk move`` over a whole queue.

``n`` messages (kombu's envelope, ``bench/scenarios``-shaped via the demo app's template) wait in one
queue; the phase plans (dry run: LRANGE pages) and runs a bulk move to another queue in batches of
``BATCH`` (one LIST_BATCH script call each, with its export and audit line), and reads the server's
``INFO commandstats`` (reset first; nobody else uses this Redis) and ``INFO cpu`` deltas.

Standalone: ``python bench/s_bulk.py [--n 100000]`` on a private redis-server (never 6379).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _envelope(i: int, queue: str) -> bytes:
    tid = str(uuid.uuid4())
    msg = {"body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d",
           "content-encoding": "utf-8", "content-type": "application/json",
           "headers": {"lang": "py", "task": "demo_tasks.tasks.add", "id": tid, "shadow": None, "eta": None,
                       "expires": None, "group": None, "group_index": None, "retries": 0,
                       "timelimit": [None, None], "root_id": tid, "parent_id": None, "argsrepr": f"({i}, 2)",
                       "kwargsrepr": "{}", "origin": "gen1@bench", "ignore_result": False},
           "properties": {"correlation_id": tid, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
                          "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                          "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}}
    return json.dumps(msg).encode()


def _cmdstats(client: Any) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for name, v in client.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(v["calls"]), int(v["usec"]))
    return out


def _cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def phase_bulk(rs: Any, meter: Any = None, preset: Any = None, *, n: int | None = None,
               batch: int | None = None) -> dict[str, Any]:
    """A bulk move of ``n`` messages (default: a tenth of the preset's results, 100,000 in the full run)."""
    from collectors.core.config import Settings
    from collectors.writes.base import BATCH
    from collectors.writes.bulk import BulkActions

    n = int(n if n is not None else max(100, (preset.results if preset is not None else 1_000_000) // 10))
    batch = int(batch or BATCH)
    client = rs.client()
    client.flushall()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush("bulk_src", _envelope(i, "bulk_src"))
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(broker_url=rs.url, audit_log=str(Path(tmp) / "audit.jsonl"))
        actions = BulkActions(settings)
        client.config_resetstat()
        cpu0 = _cpu(client)
        t0 = time.perf_counter()
        plan = actions.plan("move", "in:queue:bulk_src", target="bulk_dst")
        plan_s = time.perf_counter() - t0
        st_plan = _cmdstats(client)
        t1 = time.perf_counter()
        res = actions.run(plan, batch=batch)
        run_s = time.perf_counter() - t1
        cpu1 = _cpu(client)
        st = _cmdstats(client)
        export_bytes = Path(res.details["export"]).stat().st_size if res.details.get("export") else 0
        audit_lines = len(Path(settings.audit_log).read_text().splitlines())
    moved_ok = client.llen("bulk_dst") == n and client.llen("bulk_src") == 0
    skip = {"info", "config|resetstat", "config"}
    run_us = sum(u for c, (_k, u) in st.items() if c not in skip) - sum(
        u for c, (_k, u) in st_plan.items() if c not in skip)
    plan_us = sum(u for c, (_k, u) in st_plan.items() if c not in skip)
    script = st.get("evalsha", (0, 0))
    out = {
        "messages": n, "batch": batch, "moved": res.count, "conserved": moved_ok,
        "plan_s": round(plan_s, 3), "run_s": round(run_s, 3),
        "client_us_per_message": round((plan_s + run_s) * 1e6 / n, 1),
        "redis_plan_us": plan_us, "redis_run_us": run_us,
        "redis_us_per_message": round((plan_us + run_us) / n, 2),
        "script_calls": script[0], "script_us_per_call": round(script[1] / max(1, script[0]), 1),
        "redis_cpu_s": round(cpu1 - cpu0, 3), "export_bytes": export_bytes, "audit_lines": audit_lines,
        "commands": {c: v[0] for c, v in st.items() if c not in skip},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args(argv)
    from taskdash.procs import RedisServer

    rs = RedisServer().start()
    try:
        print(json.dumps(phase_bulk(rs, n=args.n, batch=args.batch), indent=2))
    finally:
        rs.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
