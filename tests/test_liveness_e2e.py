"""End to end (issue 12): what requeue moves, by the CLI and with a dashboard's evidence, and that every
task runs exactly once — real redis-server, real workers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
import redis
from click.testing import CliRunner

from collectors.collector import Collector
from collectors.core.config import Settings, app_queue_names
from collectors.writes.actions import ActionError, Actions
from taskdash.cli import cli

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> None:
    kombu.pools.reset()


def wait_for(cond: Any, timeout: float = 40.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def runs(r: redis.Redis, tag: str) -> int:
    return int(r.get(f"demo:runs:{tag}") or 0)


def tags_of(r: redis.Redis, demo_ids: set[str]) -> dict[str, str]:
    import json

    out = {}
    for tag, raw in r.hgetall("unacked").items():
        tid = json.loads(raw)[0]["headers"]["id"]
        if tid in demo_ids:
            out[tid] = tag.decode()
    return out


def send(demo_app: Any, task: str, queue: str, tag: str, *args: Any) -> str:
    return str(demo_app.send_task(f"demo_tasks.tasks.{task}", args=args, kwargs={"tag": tag}, queue=queue).id)


def test_cli_requeue_orphaned_moves_exactly_the_dead_workers_messages(
        start_worker: Any, demo_app: Any, r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    demo_app.send_task("demo_tasks.tasks.add", args=(0, 0), queue="warmup")  # producer connected first
    other = start_worker(("celery",))
    time.sleep(2)
    dead = start_worker(("slow",))
    for i in range(3):
        send(demo_app, "slow", "slow", f"d{i}", 2.0)
    busy = send(demo_app, "slow", "celery", "busy", 30.0)
    wait_for(lambda: r.hlen("unacked") == 4, what="4 unacked")
    dead.kill9()
    time.sleep(2)
    start_worker(("slow",))  # the replacement: booted after the deliveries, so it cannot hold them
    audit = tmp_path / "audit.jsonl"

    def cli_run(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--broker", redis_url, "--audit-log", str(audit)],
                                  catch_exceptions=False)

    busy_tag = tags_of(r, {busy})[busy]
    refused = cli_run("requeue", "--tag", busy_tag, "--yes")
    assert refused.exit_code != 0 and "live worker" in refused.output, refused.output
    res = cli_run("requeue", "--orphaned", "--yes")
    assert res.exit_code == 0, res.output
    assert "requeued 3 orphaned" in res.output, res.output
    assert r.hexists("unacked", busy_tag)  # the responding worker's message stays
    shown = cli_run("worker", "show", other.hostname, "--observe", "4")
    assert "Liveness: responding — heartbeat" in shown.output, shown.output
    wait_for(lambda: all(runs(r, f"d{i}") for i in range(3)) and runs(r, "busy"), timeout=60, what="all ran")
    wait_for(lambda: r.hlen("unacked") == 0, timeout=20, what="all acked")
    time.sleep(1)
    assert [runs(r, f"d{i}") for i in range(3)] == [1, 1, 1] and runs(r, "busy") == 1
    assert other.proc.poll() is None


def test_dashboard_evidence_never_requeues_a_silent_workers_message(
        start_worker: Any, demo_app: Any, r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    demo_app.send_task("demo_tasks.tasks.add", args=(0, 0), queue="warmup")
    settings = Settings(broker_url=redis_url, app_queues=app_queue_names(demo_app), inspect_interval=1.0,
                        inspect_timeout=1.0, audit_log=str(tmp_path / "audit.jsonl"))
    with Collector(settings) as col:
        col.collect()
        # connections opened within ~2 s of a worker's start (here: this process's own clients) cannot be
        # told apart from that worker's in CLIENT LIST: start the workers clearly later
        time.sleep(3)
        quiet = start_worker(("celery",), pool="solo")
        # answering inspect: its pidbox consumer is up, so its gossip connection (opened before) is too
        wait_for(lambda: any(w.hostname == quiet.hostname and w.pool for w in col.collect().workers),
                 what="stats of the quiet worker")
        time.sleep(3)  # two workers started within ~3 s cannot be told apart in CLIENT LIST
        dead = start_worker(("slow",))
        spin = send(demo_app, "spin", "celery", "spin", 45.0)
        # 8 s: both must still be running when the worker is killed (waiting for its stats took over 2 s under
        # CI load, a 2 s task had finished and been acked, and only one was left to be orphaned)
        doomed = {send(demo_app, "slow", "slow", f"x{i}", 8.0) for i in range(2)}

        def states() -> dict[str, tuple[str, str | None]]:
            snap = col.collect()
            return {e.task_id or "": (e.state, e.state_reason) for e in snap.unacked}

        wait_for(lambda: len(states()) == 3, what="3 unacked")
        # its start time known from stats (the CLIENT LIST attribution's lower anchor) before it dies
        wait_for(lambda: any(w.hostname == dead.hostname and w.pool for w in col.collect().workers),
                 what="stats of the worker about to die")
        dead.kill9()
        last: list[Any] = []

        def classified() -> Any:
            s = states()
            last[:] = [s, [(w.hostname, w.liveness, w.liveness_evidence) for w in col.collect().workers]]
            ok = s.get(spin, ("",))[0] == "held-by-silent" and all(s.get(t, ("",))[0] == "orphaned" for t in doomed)
            return s if ok else None

        try:
            seen = wait_for(classified, timeout=30, what="held-by-silent + orphaned")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last}") from None
        snap = col.collect()
        workers = {w.hostname: w for w in snap.workers}
        assert workers[quiet.hostname].liveness == "silent"
        assert workers[dead.hostname].liveness == "dead"
        js = snap.to_json()
        assert js["schema"] >= 3
        row = next(w for w in js["workers"] if w["hostname"] == dead.hostname)
        assert row["liveness"] == "dead" and "no Redis connection" in row["liveness_evidence"]
        assert {e["state"] for e in js["unacked"]} == {"held-by-silent", "orphaned"}, seen

        actions = Actions(settings)
        actions.evidence = col.liveness
        spin_tag = tags_of(r, {spin})[spin]
        with pytest.raises(ActionError, match="may still be running it"):
            actions.requeue([spin_tag])
        res = actions.requeue_orphaned(older_than=0)
        assert res.count == 2 and res.details["held"] == [spin_tag], res
        assert r.hexists("unacked", spin_tag)
        start_worker(("slow",))
        wait_for(lambda: all(runs(r, f"x{i}") for i in range(2)) and runs(r, "spin"), timeout=90, what="all ran")
        wait_for(lambda: r.hlen("unacked") == 0, timeout=30, what="all acked")
        time.sleep(1)
        assert [runs(r, f"x{i}") for i in range(2)] == [1, 1] and runs(r, "spin") == 1
