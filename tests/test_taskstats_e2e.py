"""Per-task-name analytics against real workers (issue 15): events on with task-sent, events off, --enable-events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from collectors.collector import Collector
from collectors.core.config import resolve_settings


def _collector(url: str) -> Collector:
    return Collector(resolve_settings(broker=url, env={}, interval=0.5, inspect_interval=1.0, inspect_timeout=0.5))


def _wait_stats(col: Collector, done: dict[str, int], timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    snap = col.collect()
    while time.monotonic() < deadline:
        ts = snap.task_stats
        if ts is not None and all((t := ts.get(n)) is not None and t.count("succeeded") + t.count("failed") >= k
                                  for n, k in done.items()):
            return snap
        time.sleep(0.3)
        snap = col.collect()
    raise AssertionError(f"not all tasks seen: {snap.task_stats and snap.task_stats.to_json()}")


def test_counts_runtimes_waits_and_exceptions_from_real_workers(redis_url: str, r: Any, demo_app: Any,
                                                               start_worker: Any) -> None:
    start_worker(("celery",), concurrency=4, extra_args=("-E",))
    demo_app.conf.task_send_sent_event = True  # the producer sends task-sent: wait = started - sent
    col = _collector(redis_url)
    try:
        col.collect()  # the event subscriber is up before anything is sent
        time.sleep(0.5)
        for i in range(30):
            demo_app.send_task("demo_tasks.tasks.charge", kwargs={"seconds": 0.2, "fail": i % 3 == 0})
        for _ in range(12):
            demo_app.send_task("demo_tasks.tasks.quiet", kwargs={"seconds": 0.3})
        snap = _wait_stats(col, {"demo_tasks.tasks.charge": 30, "demo_tasks.tasks.quiet": 12})
    finally:
        col.close()
    doc = json.loads(json.dumps(snap.to_json()))
    ts = doc["task_stats"]
    assert ts["source"] == "events" and ts["state"] == "ok" and 0 < ts["window_s"] <= 300
    by = {t["name"]: t for t in ts["tasks"]}
    charge, quiet = by["demo_tasks.tasks.charge"], by["demo_tasks.tasks.quiet"]
    counts = {k: charge[k] for k in ("sent", "received", "started", "succeeded", "failed", "retried", "rejected",
                                     "revoked")}
    assert counts == {"sent": 30, "received": 30, "started": 30, "succeeded": 20, "failed": 10, "retried": 0,
                      "rejected": 0, "revoked": 0}
    assert abs(charge["failure_rate"] - 1 / 3) < 1e-3
    assert charge["per_min"] > 0
    for q in ("p50", "p95", "p99", "max"):  # runtime of a 0.2 s sleep, plus the worker's overhead
        assert 0.195 <= charge["runtime_s"][q] <= 0.35, charge["runtime_s"]
    assert charge["wait_s"]["source"] == "sent→started" and 0 <= charge["wait_s"]["p50"] <= charge["wait_s"]["p95"]
    (top,) = charge["top_exceptions"]
    assert top["exception"] == "ValueError: card declined" and top["count"] == 10
    assert "Traceback" in top["sample"] and "card declined" in top["sample"]
    assert (quiet["sent"], quiet["succeeded"], quiet["failed"], quiet["top_exceptions"]) == (12, 12, 0, [])
    assert 0.295 <= quiet["runtime_s"]["p50"] <= 0.45
    # ignore_result: nothing in the result backend for quiet, the stats came from events alone
    metas = [json.loads(r.get(k)) for k in r.scan_iter("celery-task-meta-*")]
    assert len(metas) == 30 and all(m.get("name") != "demo_tasks.tasks.quiet" for m in metas)
    assert doc["schema"] >= 4


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "taskdash", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _observe_while_sending(redis_url: str, demo_app: Any, n: int, *extra: str, audit: str) -> tuple[int, dict, str]:
    proc = _cli("snapshot", "--json", "--observe", "9", "-b", redis_url, "--interval", "0.5", *extra,
                env={"TASKDASH_AUDIT_LOG": audit})
    time.sleep(3.0)  # the first refreshes took the workers' processed baseline
    deadline = time.monotonic() + 10
    while "--enable-events" in extra and not os.path.exists(audit) and time.monotonic() < deadline:
        time.sleep(0.1)  # the broadcast went out (and its 2-s reply window passed)
    for _ in range(n):
        demo_app.send_task("demo_tasks.tasks.add", args=(1, 2))
    out, err = proc.communicate(timeout=60)
    return proc.returncode, (json.loads(out) if out.strip() else {}), err


def test_events_off_says_so_then_enable_events_brings_stats(redis_url: str, demo_app: Any, start_worker: Any,
                                                            tmp_path: Any) -> None:
    start_worker(("celery",), concurrency=2)  # no -E: workers send heartbeats but no task events
    audit = str(tmp_path / "audit.jsonl")
    code, doc, err = _observe_while_sending(redis_url, demo_app, 5, audit=audit)
    assert code == 0, err
    ts = doc["task_stats"]
    assert ts["state"] == "off" and ts["tasks"] == [] and ts["events_seen"] == 0
    assert "-E" in ts["note"] and "--enable-events" in ts["note"]

    ro = subprocess.run([sys.executable, "-m", "taskdash", "snapshot", "--json", "-b", redis_url, "--read-only",
                         "--enable-events"], capture_output=True, text=True, timeout=60,
                        env={**os.environ, "TASKDASH_AUDIT_LOG": audit})
    assert ro.returncode == 1 and "read-only" in ro.stderr and not os.path.exists(audit)

    code, doc, err = _observe_while_sending(redis_url, demo_app, 6, "--enable-events", audit=audit)
    assert code == 0, err
    ts = doc["task_stats"]
    assert ts["state"] == "ok" and ts["enable_events"] is True, (open(audit).read(), err)
    (add,) = [t for t in ts["tasks"] if t["name"] == "demo_tasks.tasks.add"]
    assert (add["received"], add["started"], add["succeeded"], add["sent"]) == (6, 6, 6, 0)
    assert add["wait_s"]["source"] == "received→started"
    lines = [json.loads(x) for x in open(audit)]
    assert lines and all(x.get("action") == "worker-enable_events" for x in lines)


def test_history_minutes_survive_a_restart(redis_url: str, demo_app: Any, start_worker: Any, tmp_path: Any) -> None:
    """Real workers: the Collector writes closed minutes to the history file; a new process reads them back."""
    from collectors.analysis.history import History

    start_worker(("celery",), concurrency=2, extra_args=("-E",))
    path = tmp_path / "history.sqlite3"
    hist = History(path, scope="e2e")
    col = _collector(redis_url)
    col.attach(forensics=None, history=hist)
    try:
        col.collect()
        time.sleep(0.5)
        for i in range(8):
            demo_app.send_task("demo_tasks.tasks.charge", kwargs={"seconds": 0.1, "fail": i < 2})
        snap = _wait_stats(col, {"demo_tasks.tasks.charge": 8})
        sent_minute = snap.taken_at - (snap.taken_at % 60.0)
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline and not hist.task_minutes(sent_minute - 60, sent_minute + 61):
            time.sleep(1.0)
            col.collect()  # the minute closes; the next refresh stores it
        while time.monotonic() < deadline and time.time() < sent_minute + 121:
            time.sleep(1.0)  # and the one after, in case the tasks straddled a minute boundary
            col.collect()
    finally:
        col.close()
        hist.close()
    with History(path, scope="e2e") as again:  # taskdash restarted
        rows = again.task_minutes(sent_minute - 120, sent_minute + 120, task="demo_tasks.tasks.charge")
        assert rows
        succeeded = sum(c[3] for _m, _n, c, *_ in rows)
        failed = sum(c[4] for _m, _n, c, *_ in rows)
        assert (succeeded, failed) == (6, 2)
        assert sum(sum(rt.values()) for _m, _n, _c, rt, *_ in rows) == 6
