"""Pause / resume a queue fleet-wide against real workers (issue 18): no new deliveries while paused with a
backlog waiting, exactly the cancelled consumers re-added on resume, a worker started later flagged."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from collectors.core.audit import read_audit
from collectors.core.config import Settings
from collectors.writes.pause import PauseControl
from taskdash.cli import cli


def runs(r: Any, tags: list[str]) -> int:
    return sum(int(v or 0) for v in r.mget([f"demo:runs:{t}" for t in tags]))


def wait_for(cond: Any, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_pause_stops_deliveries_and_resume_restarts_them(start_worker, demo_app, r, redis_url, tmp_path: Path) -> None:
    w1 = start_worker(("celery", "emails"), pool="threads", concurrency=2)
    w2 = start_worker(("emails",), pool="threads", concurrency=2)
    w3 = start_worker(("celery",), pool="threads", concurrency=2)
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"))
    pc = PauseControl(settings)
    res = pc.pause("emails")
    assert sorted(res.details["workers"]) == sorted([w1.hostname, w2.hostname])  # not w3: it never consumed it
    rec = json.loads(r.hget("taskdash.paused", "emails"))
    assert sorted(rec["workers"]) == sorted([w1.hostname, w2.hostname]) and rec["by"] and rec["since"] > 0
    cons = pc.consumers()
    assert all("emails" not in cons[h] for h in (w1.hostname, w2.hostname)) and "celery" in cons[w1.hostname]

    tags = [f"p{i}" for i in range(20)]
    for t in tags:
        demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), kwargs={"tag": t}, queue="emails")
    other = [f"c{i}" for i in range(5)]
    for t in other:
        demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), kwargs={"tag": t}, queue="celery")
    assert wait_for(lambda: runs(r, other) == 5)  # the other queue is still consumed
    time.sleep(3)
    assert r.llen("emails") == 20 and runs(r, tags) == 0 and r.hlen("unacked") == 0  # no delivery at all

    # the snapshot side: what the Queues view shows
    paused = pc.paused()["emails"]
    assert "paused by" in paused.line() and sorted(paused.workers) == sorted([w1.hostname, w2.hostname])
    from collectors.collector import Collector

    col = Collector(settings)
    try:
        snap = col.collect()
        q = next(q for q in snap.queues if q.name == "emails")
        assert q.paused_by == rec["by"] and q.paused_since == rec["since"] and q.messages == 20
        assert q.to_json()["paused_by"] == rec["by"] and q.consumed_while_paused == ()
        assert next(q for q in snap.queues if q.name == "celery").paused_by is None
    finally:
        col.close()

    # a worker that starts later and consumes the paused queue is flagged (and can be told to cancel it)
    w4 = start_worker(("emails",), pool="threads", concurrency=1, env={"DEMO_PREFETCH": "1"})
    late = pc.late_consumers(enforce=True)
    assert late == {"emails": [w4.hostname]}
    assert wait_for(lambda: "emails" not in pc.consumers().get(w4.hostname, ["emails"]), 10)
    ran_before_enforce = runs(r, tags)  # w4 may have taken a few between starting and being told

    res = pc.resume("emails")
    assert sorted(res.details["workers"]) == sorted([w1.hostname, w2.hostname, w4.hostname])
    assert r.hget("taskdash.paused", "emails") is None
    assert wait_for(lambda: runs(r, tags) == 20 and r.llen("emails") == 0, 30), (runs(r, tags), r.llen("emails"))
    assert all(int(v) == 1 for v in r.mget([f"demo:runs:{t}" for t in tags]))  # each exactly once
    cons = pc.consumers()
    assert all("emails" in cons[h] for h in (w1.hostname, w2.hostname, w4.hostname))
    assert "emails" not in cons[w3.hostname]  # exactly the cancelled consumers came back
    assert ran_before_enforce <= 20
    actions = [e["action"] for e in read_audit(settings.audit_log)]
    assert actions.count("pause") == 2 and actions.count("resume") == 1


def test_cli_pause_resume_paused(start_worker, r, redis_url, tmp_path: Path) -> None:
    w = start_worker(("celery", "emails"), pool="threads", concurrency=1)
    runner = CliRunner()
    common = ["--broker", redis_url, "--audit-log", str(tmp_path / "a.jsonl")]
    res = runner.invoke(cli, ["pause", "emails", "--yes", *common])
    assert res.exit_code == 0 and w.hostname in res.stdout, res.output
    res = runner.invoke(cli, ["paused", *common])
    assert res.exit_code == 0 and "emails: paused by" in res.stdout
    res = runner.invoke(cli, ["resume", "emails", "--yes", *common])
    assert res.exit_code == 0 and f"resumed emails on {w.hostname}" in res.stdout
    res = runner.invoke(cli, ["resume", "emails", "--yes", *common])
    assert res.exit_code == 1 and "not paused" in res.stderr
