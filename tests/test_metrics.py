"""Prometheus endpoint: output parsed with prometheus_client's parser and checked against Redis ground truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import kombu.pools
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors.collector import Collector
from collectors.core.config import resolve_settings
from collectors.core.models import (
    QueueInfo,
    Snapshot,
    SourceError,
    SourceStatus,
    TaskStats,
    UnackedEntry,
    WorkerInfo,
)
from collectors.keyspace.keys import KeyLayout
from collectors.serving.metrics import MetricsServer, render_metrics
from taskdash.procs import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a scrape, via the official parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _entry(tag: str, state: str, stale: bool = False) -> UnackedEntry:
    return UnackedEntry(delivery_tag=tag, task_id=tag, task="t", queue="q", priority=0, reserved_at=1.0,
                        age_s=5.0, redelivered=False, state=state, holder=None, stale=stale,  # type: ignore[arg-type]
                        time_to_redelivery_s=None, argsrepr=None)


def test_render_is_parseable_and_exact() -> None:
    weird = 'we"ird\\q\nx'
    snap = Snapshot(
        taken_at=100.0, broker=SourceStatus("redis://***@h/0", True), backend=SourceStatus("x", False, "down"),
        queues=(QueueInfo("celery", 7, ((0, 5), (3, 2)), oldest_age_s=12.5, unacked=1, consumers=2),
                QueueInfo(weird, 0, ((0, 0),), consumers=None)),
        unacked=(_entry("a", "orphaned", True), _entry("b", "orphaned"), _entry("c", "active")),
        unacked_total=40,
        workers=(WorkerInfo("w1@h", True, active=2), WorkerInfo("w2@h", False)),
        tasks=TaskStats(states=(("SUCCESS", 10), ("FAILURE", 3)), scanned=13, complete=True),
        errors=(SourceError("results", "down"), SourceError("results", "again")),
    )
    got = samples(render_metrics(snap, scrape_duration_s=0.25, scrape_errors=2, now=103.0))
    assert got[("taskdash_queue_messages", (("priority", "0"), ("queue", "celery")))] == 5
    assert got[("taskdash_queue_messages", (("priority", "3"), ("queue", "celery")))] == 2
    assert got[("taskdash_queue_depth", (("queue", weird),))] == 0
    assert got[("taskdash_queue_oldest_age_seconds", (("queue", "celery"),))] == 12.5
    assert ("taskdash_queue_consumers", (("queue", weird),)) not in got
    assert got[("taskdash_unacked_messages", ())] == 40
    assert got[("taskdash_unacked_window_messages", (("state", "orphaned"),))] == 2
    assert got[("taskdash_unacked_window_messages", (("state", "reserved"),))] == 0
    assert got[("taskdash_orphaned_messages", ())] == 2 and got[("taskdash_unacked_stale_messages", ())] == 1
    assert got[("taskdash_workers", (("state", "offline"),))] == 1 and got[("taskdash_workers_online", ())] == 1
    assert got[("taskdash_worker_up", (("worker", "w2@h"),))] == 0
    assert got[("taskdash_worker_active_tasks", (("worker", "w1@h"),))] == 2
    assert got[("taskdash_task_states", (("state", "FAILURE"),))] == 3
    assert got[("taskdash_up", (("source", "backend"),))] == 0
    assert got[("taskdash_source_errors", (("source", "results"),))] == 2
    assert got[("taskdash_scrape_errors_total", ())] == 2 and got[("taskdash_scrape_duration_seconds", ())] == 0.25
    assert got[("taskdash_snapshot_age_seconds", ())] == 3.0
    # nothing collected yet: only the scrape families, still valid
    assert samples(render_metrics(None, scrape_errors=1)) == {("taskdash_scrape_errors_total", ()): 1.0}


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode("utf-8")


def _orphans(r: Any, demo_app: Any, n: int) -> None:
    """n unacked entries exactly as kombu's QoS.append writes them, old enough to be orphaned."""
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="risky")
    env = json.loads(r.rpop("risky"))
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        env["properties"]["delivery_tag"] = f"orph-{i}"
        env["headers"]["id"] = f"orph-id-{i}"
        pipe.zadd("unacked_index", {f"orph-{i}": time.time() - 600 - i})
        pipe.hset("unacked", f"orph-{i}", json.dumps([env, "", "risky"]))
    pipe.execute()


def test_endpoint_against_ground_truth(start_worker: Any, demo_app: Any, r: Any, redis_url: str) -> None:
    worker = start_worker(("celery",), concurrency=1)
    assert demo_app.send_task("demo_tasks.tasks.add", args=(1, 1)).get(timeout=30) == 2
    with pytest.raises(Exception, match="m-1"):
        demo_app.send_task("demo_tasks.tasks.fail", kwargs={"message": "m-1"}).get(timeout=30)
    for pri in (0, 0, 4, 9, 9, 9):
        demo_app.send_task("demo_tasks.tasks.prioritized", args=(pri,), priority=pri)
    for i in range(5):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}",))
    _orphans(r, demo_app, 3)

    settings = resolve_settings(broker=redis_url, env={}, interval=0.5, inspect_interval=1.0, inspect_timeout=0.5,
                                app_queues=("celery", "priority", "emails", "risky"))
    collector = Collector(settings)
    server = MetricsServer(collector.collect, port=0, cache_s=30.0).start()
    try:
        assert server.host == "127.0.0.1"
        # concurrent scrapes share ONE collect
        texts: list[str] = []
        threads = [threading.Thread(target=lambda: texts.append(_scrape(server.url))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(texts) == 6 and server.collects == 1 and server.scrapes == 6
        got = samples(texts[0])

        for queue in ("priority", "emails", "celery"):
            total = 0
            for band, key in KeyLayout.from_settings(settings).queue_keys(queue):
                truth = r.llen(key)
                total += truth
                assert got.get(("taskdash_queue_messages", (("priority", str(band)), ("queue", queue))), 0) == truth
            assert got[("taskdash_queue_depth", (("queue", queue),))] == total
        assert got[("taskdash_queue_depth", (("queue", "priority"),))] == 6
        assert got[("taskdash_queue_messages", (("priority", "9"), ("queue", "priority")))] == 3
        assert got[("taskdash_queue_oldest_age_seconds", (("queue", "emails"),))] >= 0
        assert got[("taskdash_unacked_messages", ())] == r.hlen("unacked") == 3
        assert got[("taskdash_orphaned_messages", ())] == 3
        assert got[("taskdash_unacked_window_messages", (("state", "orphaned"),))] == 3
        assert got[("taskdash_workers_online", ())] == 1
        assert got[("taskdash_worker_up", (("worker", worker.hostname),))] == 1
        assert got[("taskdash_queue_consumers", (("queue", "celery"),))] == 1
        assert got[("taskdash_poison_suspects", ())] == 0
        truth_states: dict[str, int] = {}
        for key in r.scan_iter("celery-task-meta-*"):
            st = json.loads(r.get(key))["status"]
            truth_states[st] = truth_states.get(st, 0) + 1
        assert truth_states == {"SUCCESS": 1, "FAILURE": 1}
        assert got[("taskdash_tasks_scan_complete", ())] == 1
        assert {lbl[0][1]: v for (n, lbl), v in got.items() if n == "taskdash_task_states"} == truth_states
        assert got[("taskdash_up", (("source", "broker"),))] == 1
        assert got[("taskdash_scrape_errors_total", ())] == 0 and got[("taskdash_scrape_duration_seconds", ())] > 0

        # after the cache time a scrape collects again and sees the change
        server.cache_s = 0.0
        r.delete("emails")
        got = samples(_scrape(server.url))
        assert server.collects == 2 and got[("taskdash_queue_depth", (("queue", "emails"),))] == 0
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url.replace("/metrics", "/nope"), timeout=5)
    finally:
        server.shutdown()
        collector.close()


def test_cli_serves_and_stops(redis_url: str, demo_app: Any) -> None:
    kombu.pools.reset()  # pools are shared per URL; after a FLUSHALL the binding must be declared again
    demo_app.send_task("demo_tasks.tasks.send_email", args=("x",))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "taskdash", "metrics", "--port", str(port), "--broker", redis_url,
                             "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ), text=True)
    try:
        deadline = time.monotonic() + 20
        key = ("taskdash_queue_depth", (("queue", "emails"),))
        got: dict[Any, float] = {}
        while key not in got:  # queues are discovered from the binding tables within a few refreshes
            try:
                got = samples(_scrape(f"http://127.0.0.1:{port}/metrics"))
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "metrics endpoint never showed the queue"
            time.sleep(0.2)
        assert got[key] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert f"127.0.0.1:{port}" in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    bad = subprocess.run([sys.executable, "-m", "taskdash", "metrics", "--port", "0", "--broker",
                          f"redis://u:s3cret@127.0.0.1:{free_port()}/0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "s3cret" not in bad.stderr and "cannot reach" in bad.stderr
