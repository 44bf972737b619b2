"""Per-task-name minute aggregates in the SQLite history (issue 15): survive a restart, bounded, deltas."""

from __future__ import annotations

from typing import Any

from collectors.analysis.history import History
from collectors.analysis.taskstats import TaskStatsAggregator, movers, summarize


def _run(agg: TaskStatsAggregator, name: str, t0: float, n: int, runtime: float, fail_every: int = 0) -> None:
    for i in range(n):
        t = t0 + i * (50.0 / n)
        uid = f"{name}-{t0}-{i}"
        agg.observe({"type": "task-received", "uuid": uid, "name": name, "timestamp": t}, t)
        agg.observe({"type": "task-started", "uuid": uid, "timestamp": t + 0.1}, t + 0.1)
        if fail_every and i % fail_every == 0:
            agg.observe({"type": "task-failed", "uuid": uid, "timestamp": t + 0.2, "exception": "E('x')"}, t + 0.2)
        else:
            agg.observe({"type": "task-succeeded", "uuid": uid, "timestamp": t + 0.2, "runtime": runtime}, t + 0.2)


def test_minutes_survive_a_restart_and_are_not_written_twice(tmp_path: Any) -> None:
    path = tmp_path / "h.sqlite3"
    base = 1_800_000_000.0  # a minute boundary
    agg = TaskStatsAggregator(now=base)
    _run(agg, "billing.charge", base, 30, 0.5)
    _run(agg, "billing.charge", base + 60, 30, 0.5, fail_every=3)
    with History(path, scope="s") as h:
        assert h.record_tasks(agg, base + 130) == 2
        assert h.record_tasks(agg, base + 130) == 0
    with History(path, scope="s") as h:  # taskdash restarted: a new aggregator, the rows are still there
        agg2 = TaskStatsAggregator(now=base + 125)
        _run(agg2, "billing.charge", base + 121, 10, 0.5)
        rows = h.task_minutes(base, base + 600, task="billing.charge")
        assert [(m - base, c[3], c[4]) for m, _n, c, *_ in rows] == [(0.0, 30, 0), (60.0, 20, 10)]
        assert h.record_tasks(agg2, base + 130) == 0  # minute 120 still open
        assert h.record_tasks(agg2, base + 185) == 1
        assert h.rows()["task_minutes"] == 3
        s = summarize(h.task_minutes(base, base + 120), 120.0)["billing.charge"]
        assert abs(s.per_min - 30.0) < 1e-9 and abs(s.failure_rate - 10 / 60) < 1e-9
        assert abs(s.runtime_p95 - 0.5) <= 0.01


def test_age_and_cap_prune(tmp_path: Any) -> None:
    base = 1_800_000_000.0
    with History(tmp_path / "h.sqlite3", scope="s", caps={"task_minutes": 5}, max_age_s=3600) as h:
        agg = TaskStatsAggregator(window_s=3000, max_names=50, now=base)
        for k in range(8):
            _run(agg, f"t{k}", base, 5, 0.1)
        h.record_tasks(agg, base + 70)
        assert h.rows()["task_minutes"] == 8
        h.prune(now=base + 70)
        assert h.rows()["task_minutes"] == 5
        h.prune(now=base + 3600 + 61)
        assert h.rows()["task_minutes"] == 0


def test_vs_one_hour_ago_and_yesterday_and_top_movers(tmp_path: Any) -> None:
    base = 1_800_000_000.0
    with History(tmp_path / "h.sqlite3", scope="s") as h:
        old = TaskStatsAggregator(window_s=300, now=base)
        for m in range(5):
            _run(old, "billing.charge", base + 60 * m, 20, 0.2)
        h.record_tasks(old, base + 301)
        yday = base + 86400 - 3600  # "1 h ago" of now == base + 3600 + 300; yesterday == base - 86400 + ...
        now = base + 3600 + 300
        agg = TaskStatsAggregator(window_s=300, now=now - 300)
        for m in range(5):
            _run(agg, "billing.charge", now - 300 + 60 * m, 20, 0.6, fail_every=4)
        view = agg.view(now, history=h)
        b = view.baseline("billing.charge", "1h ago")
        assert b is not None and abs(b.per_min - 20.0) < 0.01 and abs(b.runtime_p95 - 0.2) <= 0.005
        assert view.baseline("billing.charge", "yesterday") is None and yday > 0
        doc = view.to_json()["tasks"][0]
        assert doc["vs_1h_ago"]["per_min"] == 20.0 and "vs_yesterday" not in doc
        lines = [text for _r, text in movers(view)]
        assert any(text.startswith("billing.charge p95 ×3.0 vs 1 h ago") for text in lines), lines
        assert any("failing 25% vs 0% 1 h ago" in text for text in lines), lines
