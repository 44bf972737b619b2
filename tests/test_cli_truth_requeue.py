"""``taskdash requeue --orphaned`` says what the messages it did not requeue are, says at once that it
watches the workers, and stops watching early only when no candidate could be orphaned (issue 21).

Real redis-server, real Celery workers; a SIGSTOPped worker is silent, never dead.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from click.testing import CliRunner

from collectors.core.config import Settings
from collectors.writes.requeue import OBSERVE_S
from tests.test_actions_requeue import wait_for


@pytest.fixture()
def settings(redis_url: str, tmp_path: Any) -> Settings:
    return Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=1.0)


def _cli(*args: str) -> Any:
    from taskdash.cli import cli

    return CliRunner().invoke(cli, list(args), env={"TASKDASH_CONFIG": "/nonexistent"})


def test_orphaned_names_what_it_left_and_watches_silent_workers_in_full(start_worker, demo_app, r,
                                                                        redis_url, tmp_path) -> None:
    start_worker(("slow",), concurrency=1)
    quiet = start_worker(("slow2",), concurrency=1)
    for i in range(2):
        demo_app.send_task("demo_tasks.tasks.slow", args=(60.0,), kwargs={"tag": f"busy{i}"}, queue="slow")
    demo_app.send_task("demo_tasks.tasks.slow", args=(60.0,), kwargs={"tag": "quiet"}, queue="slow2")
    wait_for(lambda: r.hlen("unacked") == 3, what="3 unacked entries")
    time.sleep(1.5)  # older than the grace
    assert quiet.proc is not None
    os.killpg(quiet.proc.pid, signal.SIGSTOP)  # silent: connections open, no heartbeat, no reply
    try:
        t0 = time.monotonic()
        res = _cli("requeue", "--orphaned", "--yes", "--broker", redis_url,
                   "--audit-log", str(tmp_path / "audit.jsonl"))
        took = time.monotonic() - t0
    finally:
        os.killpg(quiet.proc.pid, signal.SIGCONT)
    assert res.exit_code == 1, res.output
    out = res.stdout.strip()
    # never the bare "N refused": each group says what it is
    assert out.startswith("no orphaned unacked messages; 3 not requeued: 2 held by responding workers"), out
    assert "refused" not in out
    # the SIGSTOPped worker was never heard by this process: its message may be held by it
    assert ("1 may be held by a worker taskdash has not seen" in out or "1 may be held by silent" in out), out
    assert "unreported by responding" not in out, out  # the busy worker does not consume slow2
    err = res.stderr.splitlines()
    assert err[0].startswith("taskdash: asking the workers") and f"up to {OBSERVE_S:g} s" in err[0], res.stderr
    # a possible holder nobody heard from: silence is no proof, so the watch ran in full
    assert f"watched the full {OBSERVE_S:g} s" in res.stderr, res.stderr
    assert took >= OBSERVE_S
    assert r.hlen("unacked") == 3  # nothing moved


def test_orphaned_stops_watching_once_every_possible_holder_responds(start_worker, demo_app, r,
                                                                     redis_url, tmp_path) -> None:
    start_worker(("slow",), concurrency=1)
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.slow", args=(60.0,), kwargs={"tag": f"busy{i}"}, queue="slow")
    wait_for(lambda: r.hlen("unacked") == 3, what="3 unacked entries")
    time.sleep(1.5)
    t0 = time.monotonic()
    res = _cli("requeue", "--orphaned", "--yes", "--broker", redis_url, "--audit-log", str(tmp_path / "a.jsonl"))
    took = time.monotonic() - t0
    assert res.exit_code == 1, res.output
    assert "3 not requeued: 3 held by responding workers" in res.stdout, res.stdout
    assert "stopped early" in res.stderr, res.stderr
    # before: one inspect round + the full 6-s watch (~8 s); now the inspect round only
    assert took < OBSERVE_S, took
    assert r.hlen("unacked") == 3


def test_requeue_of_a_killed_workers_orphans_reports_the_live_one(start_worker, demo_app, r, settings) -> None:
    """Library level: the result message of requeue_orphaned groups what it did not move."""
    from collectors.writes.actions import Actions

    dead = start_worker(("slow",), concurrency=1)
    demo_app.send_task("demo_tasks.tasks.slow", args=(30.0,), kwargs={"tag": "orphan"})
    wait_for(lambda: r.hlen("unacked") == 1, what="1 unacked")
    dead.kill9()
    time.sleep(2)
    start_worker(("slow",), concurrency=2)
    live = demo_app.send_task("demo_tasks.tasks.slow", args=(40.0,), kwargs={"tag": "live"})
    actions = Actions(settings, r)
    wait_for(lambda: live.id in (actions.live_task_ids() or set()), what="live task reported")
    res = wait_for(lambda: (m := actions.requeue_orphaned(older_than=0)).count and m, timeout=20,
                   what="the orphan requeued")
    assert res.count == 1
    assert "1 not requeued: 1 held by responding workers (" in res.message, res.message
    assert "refused" not in res.message
    why = res.details["why"]
    assert set(why) == set(res.details["refused"]) and all(w["state"] in ("active", "reserved", "live")
                                                           for w in why.values())
