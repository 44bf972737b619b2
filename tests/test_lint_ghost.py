"""``taskdash lint``'s ghost-worker rule (issue 12): a worker heartbeating and answering but not consuming.

Pure: the rule on decided worker rows. Live (real redis-server, a real Celery worker): a ghost made the way
tests/test_liveness_workers.py makes one (its consumer of ``slow`` cancelled while it heartbeats, with a
backlog there) is reported with its evidence and the fix; once it consumes again, nothing is reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import kombu.pools
import pytest
import redis
from click.testing import CliRunner

from collectors.analysis.lint import lint, observe_ghost_after, run_lint
from collectors.core.config import Settings, resolve_settings
from collectors.core.models import WorkerInfo
from collectors.reads.workers import WorkerMonitor

pytestmark = pytest.mark.timeout(180)

GHOST_EVIDENCE = ("ghost: 'emails' has a backlog for 5m, processed flat at 12 for 5m, 0/4 slots busy; no longer "
                  "consuming 'emails' (not in active_queues)")


def _row(host: str, liveness: str, evidence: str) -> WorkerInfo:
    return WorkerInfo(host, liveness != "dead", "prefork", 4, queues=("emails",), liveness=liveness,  # type: ignore[arg-type]
                      liveness_evidence=evidence, liveness_since=1_780_000_000.0)


def test_rule_on_decided_rows() -> None:
    rows = [_row("g@x", "ghost", GHOST_EVIDENCE), _row("r@x", "responding", "heartbeat 1s ago"),
            _row("s@x", "silent", "no heartbeat or reply for 42s; nothing proves it gone"),
            _row("d@x", "dead", "worker-offline event")]
    found = [f for f in lint(Settings(broker_url="redis://x"), workers_liveness=rows) if f.rule == "ghost-worker"]
    assert len(found) == 1
    f = found[0]
    assert f.severity == "warning" and f.subject == "g@x"
    assert GHOST_EVIDENCE in f.message and "since" in f.message
    assert "restart the worker" in f.fix and "taskdash worker add-consumer emails -d g@x" in f.fix
    assert not [f for f in lint(Settings(broker_url="redis://x"), workers_liveness=rows[1:])
                if f.rule == "ghost-worker"]
    assert observe_ghost_after(12) == 9.0 and observe_ghost_after(40) == 30.0 and observe_ghost_after(1) == 3.0


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> None:
    kombu.pools.reset()


def _runs(r: redis.Redis, tag: str) -> int:
    return int(r.get(f"demo:runs:{tag}") or 0)


def test_real_ghost_is_reported_and_a_consuming_worker_is_not(
        redis_url: str, start_worker: Any, demo_app: Any, r: redis.Redis) -> None:
    settings = replace(resolve_settings(broker=redis_url, env={}), inspect_interval=1.0, inspect_timeout=0.5)
    mon = WorkerMonitor(settings)
    try:
        mon.start()
        wk = start_worker(("celery", "slow"))
        view = mon.wait_for(lambda v: any(w.hostname == wk.hostname and "slow" in w.queues for w in v.workers), 30)
        assert any(w.hostname == wk.hostname and "slow" in w.queues for w in view.workers)
        demo_app.control.cancel_consumer("slow", destination=[wk.hostname], reply=True, timeout=3)
        for i in range(3):
            demo_app.send_task("demo_tasks.tasks.slow", args=(0.1,), kwargs={"tag": f"lg{i}"}, queue="slow")

        report = run_lint(settings, monitor=mon, observe=12.0)  # the watching monitor knows it consumed 'slow'
        ghosts = [f for f in report.findings if f.rule == "ghost-worker"]
        assert [f.subject for f in ghosts] == [wk.hostname], [(f.rule, f.message) for f in report.findings]
        g = ghosts[0]
        assert g.severity == "warning" and report.warnings
        assert "'slow' has a backlog" in g.message and "no longer consuming 'slow'" in g.message, g.message
        assert f"taskdash worker add-consumer slow -d {wk.hostname}" in g.fix
        assert all(_runs(r, f"lg{i}") == 0 for i in range(3))  # linting moved nothing

        demo_app.control.add_consumer("slow", destination=[wk.hostname], reply=True, timeout=3)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (r.llen("slow") or any(_runs(r, f"lg{i}") == 0 for i in range(3))):
            time.sleep(0.2)
        assert [_runs(r, f"lg{i}") for i in range(3)] == [1, 1, 1]
        report = run_lint(settings, monitor=mon, observe=6.0)
        assert wk.hostname in report.workers
        assert not [f for f in report.findings if f.rule == "ghost-worker"], report.findings
    finally:
        mon.stop()

    # the CLI on its own fresh watch: a consuming worker is no ghost (and --observe is accepted)
    from taskdash.cli import cli

    res = CliRunner().invoke(cli, ["lint", "--broker", redis_url, "--json", "--observe", "4"], env={})
    assert res.exit_code in (0, 3), res.output
    doc = json.loads(res.output)
    assert wk.hostname in doc["workers"]
    assert not [f for f in doc["findings"] if f["rule"] == "ghost-worker"], doc["findings"]
