"""Per-task-name aggregates from task events (issue 15): pure tests of the aggregator."""

from __future__ import annotations

import random

from collectors.analysis.taskstats import (
    ALPHA,
    OTHER,
    TaskStatsAggregator,
    bucket_of,
    bucket_value,
    exception_group,
    quantiles,
)


def _task(agg: TaskStatsAggregator, uuid: str, name: str, t: float, *, wait: float = 0.5, runtime: float = 1.0,
          fail: str | None = None, sent: bool = True) -> None:
    if sent:
        agg.observe({"type": "task-sent", "uuid": uuid, "name": name, "timestamp": t}, t)
    agg.observe({"type": "task-received", "uuid": uuid, "name": name, "timestamp": t + 0.01, "hostname": "w@h"}, t)
    agg.observe({"type": "task-started", "uuid": uuid, "timestamp": t + wait, "hostname": "w@h"}, t + wait)
    end = t + wait + runtime
    if fail:
        agg.observe({"type": "task-failed", "uuid": uuid, "timestamp": end, "exception": fail,
                     "traceback": f"Traceback...\n{fail}\n"}, end)
    else:
        agg.observe({"type": "task-succeeded", "uuid": uuid, "timestamp": end, "runtime": runtime}, end)


def test_buckets_are_within_alpha() -> None:
    for v in (0.001, 0.05, 0.3, 1.0, 7.5, 123.0, 86400.0):
        assert abs(bucket_value(bucket_of(v)) - v) <= ALPHA * v * 1.0001


def test_quantiles_of_a_known_distribution() -> None:
    rng = random.Random(1)
    values = sorted(rng.uniform(0.1, 2.0) for _ in range(10_000))
    hist: dict[int, int] = {}
    for v in values:
        hist[bucket_of(v)] = hist.get(bucket_of(v), 0) + 1
    p50, p95, p99 = quantiles(hist, (0.5, 0.95, 0.99))
    for got, q in ((p50, 0.5), (p95, 0.95), (p99, 0.99)):
        true = values[int(q * (len(values) - 1))]
        assert abs(got - true) <= 0.03 * true, (q, got, true)
    assert quantiles({}, (0.5,)) == [None]


def test_counts_rates_runtimes_waits_and_exceptions() -> None:
    agg = TaskStatsAggregator(window_s=300, now=1000.0)
    for i in range(100):
        _task(agg, f"a{i}", "app.ok", 1000.0 + i, wait=0.2, runtime=0.5 + (i % 10) * 0.1)
    for i in range(20):
        _task(agg, f"b{i}", "app.bad", 1000.0 + i, fail="ValueError('card 42 declined')" if i % 4 else
              "KeyError('x')", runtime=0.0)
    view = agg.view(1200.0)
    ok, bad = view.get("app.ok"), view.get("app.bad")
    assert ok is not None and bad is not None
    j = ok.to_json()
    assert (j["sent"], j["received"], j["started"], j["succeeded"], j["failed"]) == (100, 100, 100, 100, 0)
    assert j["failure_rate"] == 0.0
    assert abs(j["per_min"] - 100 * 60 / 200.0) < 1e-6
    assert abs(j["runtime_s"]["p50"] - 0.9) <= 0.03 and abs(j["runtime_s"]["max"] - 1.4) < 1e-9
    assert abs(j["runtime_s"]["p99"] - 1.4) <= 0.03
    assert abs(j["wait_s"]["p50"] - 0.2) <= 0.01 and j["wait_s"]["source"] == "sent→started"
    jb = bad.to_json()
    assert jb["failed"] == 20 and jb["succeeded"] == 0 and jb["failure_rate"] == 1.0
    top = jb["top_exceptions"][0]
    assert top["exception"] == "ValueError: card 42 declined" and top["count"] == 15
    assert "Traceback" in top["sample"]
    assert jb["top_exceptions"][1] == {"exception": "KeyError: x", "count": 5, "sample": "Traceback...\nKeyError('x')\n"}
    assert agg.pending() == 0  # terminal events free the per-id entries
    assert view.state == "ok" and view.note is None


def test_wait_without_task_sent_is_received_to_started() -> None:
    agg = TaskStatsAggregator(now=0.0)
    _task(agg, "x", "app.t", 10.0, wait=1.0, sent=False)
    t = agg.view(20.0).get("app.t")
    assert t is not None and t.wait_source == "received→started"
    assert abs(t.wait_p50 - 0.99) <= 0.02


def test_window_rolls_and_totals_stay() -> None:
    agg = TaskStatsAggregator(window_s=60, now=0.0)
    for i in range(10):
        _task(agg, f"a{i}", "app.t", 5.0 + i)
    assert agg.view(30.0).get("app.t").count("succeeded") == 10
    later = agg.view(200.0).get("app.t")
    assert later.count("succeeded") == 0 and later.runtime_p50 is None and later.totals[3] == 10
    assert later.runtime_hist[-1][1] == 10 and agg.view(200.0).window_s == 60


def test_names_are_capped_with_other_and_pending_is_bounded() -> None:
    agg = TaskStatsAggregator(max_names=5, max_pending=100, now=0.0)
    for i in range(50):
        agg.observe({"type": "task-received", "uuid": f"u{i}", "name": f"n{i}", "timestamp": 1.0}, 1.0)
    view = agg.view(2.0)
    assert len(view.tasks) == 6 and view.get(OTHER).count("received") == 45  # 5 names + (other)
    for i in range(1000):
        agg.observe({"type": "task-received", "uuid": f"v{i}", "name": "n0", "timestamp": 1.0}, 1.0)
    assert agg.pending() == 100


def test_unknown_ids_and_foreign_events() -> None:
    agg = TaskStatsAggregator(now=0.0)
    agg.observe({"type": "worker-heartbeat", "hostname": "w"}, 1.0)
    agg.observe({"type": "task-succeeded", "uuid": "zz", "runtime": 0.1, "timestamp": 1.0}, 1.0)
    agg.observe({"type": "task-bogus", "uuid": "zz"}, 1.0)
    view = agg.view(2.0)
    assert [t.name for t in view.tasks] == ["(unknown)"] and view.events_seen == 1


def test_events_off_needs_proof() -> None:
    agg = TaskStatsAggregator(now=0.0)
    agg.observe_processed(10)
    assert agg.view(1.0).state == "idle" and "--enable-events" in agg.view(1.0).note
    agg.observe_processed(12)
    v = agg.view(2.0)
    assert v.state == "off" and "-E" in v.note and "--enable-events" in v.note


def test_exception_groups() -> None:
    assert exception_group("ValueError('boom')") == "ValueError: boom"
    assert exception_group('billing.CardError("x" * 3)') == 'billing.CardError: "x" * 3'
    assert exception_group("RuntimeError()") == "RuntimeError"
    assert exception_group("ValueError('" + "a" * 200 + "')") == "ValueError: " + "a" * 80
    assert exception_group(None) == "(no exception)"


def test_eta_is_not_waiting() -> None:
    agg = TaskStatsAggregator(now=0.0)
    agg.observe({"type": "task-received", "uuid": "e", "name": "t", "timestamp": 10.0,
                 "eta": "1970-01-01T00:01:00+00:00"}, 10.0)
    agg.observe({"type": "task-started", "uuid": "e", "timestamp": 60.5}, 60.5)
    t = agg.view(61.0).get("t")
    assert t is not None and abs(t.wait_p50 - 0.5) <= 0.02


def test_minutes_for_history() -> None:
    agg = TaskStatsAggregator(now=0.0)
    for i in range(30):
        _task(agg, f"a{i}", "t", 60.0 + i * 2, runtime=0.3)
    rows = agg.minutes(after=-1.0, now=200.0)
    assert [(m, n, c[3]) for m, n, c, *_ in rows] == [(60.0, "t", 30)]
    assert agg.minutes(after=60.0, now=200.0) == []


def test_snapshot_tables_show_tasks_by_name() -> None:
    from collectors.core.models import Snapshot, SourceStatus
    from taskdash.cmd_snapshot import render_tables

    agg = TaskStatsAggregator(now=0.0)
    _task(agg, "x", "billing.charge", 1.0, fail="ValueError('card declined')")
    ok = SourceStatus("redis://h", True)
    text = render_tables(Snapshot(taken_at=5.0, broker=ok, backend=ok, task_stats=agg.view(5.0)))
    assert "Tasks by name" in text and "billing.charge" in text and "ValueError: card declined (1)" in text
    off = TaskStatsAggregator(now=0.0)
    off.observe_processed(1)
    off.observe_processed(3)
    text = render_tables(Snapshot(taken_at=5.0, broker=ok, backend=ok, task_stats=off.view(5.0)))
    assert "Task events off:" in text and "--enable-events" in text
