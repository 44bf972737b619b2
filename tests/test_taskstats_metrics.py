"""taskdash metrics exports the per-task-name analytics (issue 15), parsed with prometheus_client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from collectors.analysis.taskstats import TaskStatsAggregator
from collectors.core.models import Snapshot, SourceStatus
from collectors.serving.metrics import render_metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_histograms_and_ratio() -> None:
    agg = TaskStatsAggregator(now=0.0)
    for i in range(10):
        t = 1.0 + i
        agg.observe({"type": "task-received", "uuid": f"u{i}", "name": 'app."q"', "timestamp": t}, t)
        agg.observe({"type": "task-started", "uuid": f"u{i}", "timestamp": t + 0.2}, t)
        if i < 8:
            agg.observe({"type": "task-succeeded", "uuid": f"u{i}", "timestamp": t + 1, "runtime": 0.3 * (i + 1)}, t)
        else:
            agg.observe({"type": "task-failed", "uuid": f"u{i}", "timestamp": t + 1, "exception": "E()"}, t)
    snap = Snapshot(taken_at=20.0, broker=SourceStatus("redis://x", True), backend=SourceStatus("redis://x", True),
                    task_stats=agg.view(20.0))
    text = render_metrics(snap, now=20.0)
    s = _samples(text)
    task = ("task", 'app."q"')
    assert s[("taskdash_task_events_total", (("outcome", "succeeded"), task))] == 8
    assert s[("taskdash_task_events_total", (("outcome", "failed"), task))] == 2
    assert s[("taskdash_task_events_total", (("outcome", "sent"), task))] == 0
    assert s[("taskdash_task_runtime_seconds_count", (task,))] == 8
    assert abs(s[("taskdash_task_runtime_seconds_sum", (task,))] - 0.3 * 36) < 1e-9
    assert s[("taskdash_task_runtime_seconds_bucket", (("le", "1.0"), task))] == 3  # 0.3, 0.6, 0.9
    assert s[("taskdash_task_runtime_seconds_bucket", (("le", "+Inf"), task))] == 8
    assert s[("taskdash_task_wait_seconds_bucket", (("le", "0.25"), task))] == 10
    assert s[("taskdash_task_failure_ratio", (task,))] == 0.2
    assert s[("taskdash_task_events_state", (("state", "ok"),))] == 1


def test_label_cardinality_is_bounded() -> None:
    agg = TaskStatsAggregator(max_names=20, now=0.0)
    for i in range(5000):
        agg.observe({"type": "task-received", "uuid": f"u{i}", "name": f"n{i}", "timestamp": 1.0}, 1.0)
    snap = Snapshot(taken_at=2.0, broker=SourceStatus("r", True), backend=SourceStatus("r", True),
                    task_stats=agg.view(2.0))
    tasks = {dict(k[1]).get("task") for k in _samples(render_metrics(snap, now=2.0)) if k[0].startswith("taskdash_task")}
    assert len(tasks - {None}) == 21 and "(other)" in tasks
