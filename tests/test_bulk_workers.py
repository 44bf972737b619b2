"""Bulk actions against real workers (issue 18): a bulk requeue racing a consuming worker and kombu's own
restore sweep conserves every message (each runs exactly once); bulk retry / revoke by query with
before/after counts; ctrl+c stops the CLI between batches."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kombu import Connection

from collectors.core.audit import read_audit
from collectors.core.config import Settings
from collectors.writes.bulk import BulkActions
from tests.test_actions_race import plant_orphans
from tests.test_bulk import fill, template


def wait_for(cond: Any, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_bulk_requeue_races_worker_and_restore_sweep(start_worker, demo_app, r, redis_url, tmp_path: Path) -> None:
    start_worker(("celery",), pool="threads", concurrency=4)
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=1.0)
    planted = plant_orphans(demo_app, r, 1200)
    stop = threading.Event()
    sweeps = [0]

    def sweeper() -> None:  # kombu's restore, as a worker runs it, but every few hundred ms
        # 60 s, not less: the planted orphans are 1000 s old, so every sweep races the bulk run for them, while a
        # message the worker took again (a fresh unacked_index score) is not swept back while it waits in the
        # worker's prefetch buffer: under CI load that wait passed 10 s, and kombu then delivers it twice by design.
        with Connection(redis_url, transport_options={"visibility_timeout": 60}) as conn:
            qos = conn.default_channel.qos
            rnd = random.Random(0)
            while not stop.is_set():
                qos.restore_visible(num=None, interval=1)
                sweeps[0] += 1
                time.sleep(rnd.uniform(0.05, 0.5))

    actions = BulkActions(settings)
    plan = actions.plan("requeue", "in:unacked name:record")
    assert plan.count == 1200
    t = threading.Timer(0.3, sweeper)  # starts while the bulk run is under way
    t.daemon = True
    t.start()
    try:
        # forced: the guard is not what this test is about; the compare-and-swap of every message is
        res = actions.run(plan, batch=20, force=True)
        assert res.count > 0, res.message
        assert wait_for(lambda: r.llen("celery") == 0 and r.hlen("unacked") == 0
                        and all(r.mget([f"demo:runs:{c}" for _, c in planted])), 60)
    finally:
        stop.set()
        t.join(10)
    runs = r.mget([f"demo:runs:{c}" for _, c in planted])
    bad = [(c, n) for (_, c), n in zip(planted, runs, strict=True) if int(n or 0) != 1]
    assert not bad, f"{len(bad)} messages not run exactly once, e.g. {bad[:10]}"
    assert sweeps[0] >= 1
    entries = read_audit(settings.audit_log)
    assert sum(e["count"] for e in entries if e["action"] == "requeue") == res.count


def test_bulk_retry_and_revoke_by_query(start_worker, demo_app, r, redis_url, tmp_path: Path) -> None:
    start_worker(("celery",), pool="threads", concurrency=4)
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=1.0)
    failed = [demo_app.send_task("demo_tasks.tasks.fail", args=(f"boom{i}",)) for i in range(8)]
    ok = [demo_app.send_task("demo_tasks.tasks.add", args=(1, i)) for i in range(4)]
    assert wait_for(lambda: all(r.get(f"celery-task-meta-{x.id}") for x in failed + ok), 30)
    actions = BulkActions(settings)
    plan = actions.plan("retry", "in:results state:failure since:1h")
    assert plan.count == 8 and {i.task_id for i in plan.items} == {x.id for x in failed}
    before = {k for k in r.scan_iter("celery-task-meta-*")}
    res = actions.run(plan, batch=3)
    assert res.count == 8
    assert wait_for(lambda: len(set(r.scan_iter("celery-task-meta-*")) - before) == 8, 30)  # 8 new runs
    retries = [e for e in read_audit(settings.audit_log) if e["action"] == "retry"]
    assert len(retries) == 8
    # revoke by query: waiting messages no worker will take (nobody consumes "parked")
    tpl = template(demo_app, r)
    ids = fill(r, tpl, "parked", 30, name="demo_tasks.tasks.add")
    plan = actions.plan("revoke", "in:queue:parked")
    assert plan.count == 30 and plan.keys == ("control broadcast: revoke",)
    res = actions.run(plan, batch=10)
    assert res.count == 30 and r.llen("parked") == 30  # revoke changes no list
    revokes = [e for e in read_audit(settings.audit_log) if e["action"] == "bulk-revoke"]
    assert len(revokes) == 3 and sorted(sum((e["target"] for e in revokes), [])) == sorted(ids)
    # the workers know them as revoked: moved to a consumed queue, none of them runs
    actions.run(actions.plan("move", "in:queue:parked", target="celery"))
    assert wait_for(lambda: r.llen("celery") == 0, 20)
    time.sleep(1)
    assert not any(r.mget([f"demo:runs:t{i}" for i in range(30)]))
    metas = [json.loads(r.get(f"celery-task-meta-{i}") or "{}").get("status") for i in ids]
    assert set(metas) == {"REVOKED"}, set(metas)


def test_cli_ctrl_c_stops_between_batches(demo_app, r, redis_url, tmp_path: Path) -> None:
    tpl = template(demo_app, r)
    ids = fill(r, tpl, "big", 10_000)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "taskdash", "bulk", "move", "in:queue:big", "--to", "other",
                             "--yes", "--batch", "20", "--broker", redis_url, "--audit-log",
                             str(tmp_path / "a.jsonl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert wait_for(lambda: r.llen("other") > 0, 30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert b"stopping after this batch" in err and b"stopped after" in out
    src = [json.loads(m)["headers"]["id"] for m in r.lrange("big", 0, -1)]
    dst = [json.loads(m)["headers"]["id"] for m in r.lrange("other", 0, -1)]
    assert 0 < len(dst) < 10_000 and len(dst) % 20 == 0  # whole batches only
    assert len(src) + len(dst) == 10_000 and set(src) | set(dst) == set(ids) and not set(src) & set(dst)
