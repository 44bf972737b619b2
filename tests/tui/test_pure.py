"""Unit tests of the Textual-free parts of the TUI: formatting, history/rates, details, status text."""

from __future__ import annotations

from dataclasses import replace

from tui_fakes import FAILURES, POISON, QUEUES, T0, UNACKED, WORKERS, down_snapshot, make_snapshot

from collectors.core.models import SourceError
from tui import details
from tui.app import resolve_view
from tui.format import by_priority_text, fmt_age, fmt_rate, sparkline, truncate
from tui.history import History
from tui.widgets.status_bar import StatusState, short_backend, status_text


def test_formatting() -> None:
    assert [fmt_age(x) for x in (None, 4.2, 185, 7440, 270000)] == ["–", "4s", "3m05s", "2h04m", "3d03h"]
    assert fmt_rate(None) == "–" and fmt_rate(0.01) == "0/s" and fmt_rate(3.21) == "+3.2/s"
    assert fmt_rate(-250) == "-250/s"
    assert sparkline([0, 5, 10]) == "▁▅█" and sparkline([0, 0]) == "▁▁" and sparkline([]) == ""
    assert by_priority_text(((0, 5), (3, 0), (9, 2))) == "p0:5 p9:2" and by_priority_text(((0, 0),)) == "–"
    assert truncate("abcdef", 4) == "abc…" and truncate(None, 3) == "–"


def test_history_rates_and_trend() -> None:
    h = History()
    base = make_snapshot()
    for i, depth in enumerate((100, 110, 130)):
        queues = (replace(QUEUES[0], messages=depth),)
        workers = (replace(WORKERS[0], processed=1000 + 20 * i),)
        h.add(replace(base, taken_at=T0 + 2 * i, queues=queues, workers=workers))
    assert h.depth_values("celery") == [100, 110, 130]
    assert h.depth_rate("celery") == 7.5  # (130 - 100) / 4 s
    assert h.processed_rate("w1@host") == 10.0
    h.add(down_snapshot())  # a failed refresh adds nothing
    assert h.depth_values("celery") == [100, 110, 130]
    h.add(replace(base, taken_at=T0 + 10, queues=(), workers=()))  # vanished queues are forgotten
    assert h.depth_values("celery") == [] and h.depth_rate("celery") is None


def test_resolve_view() -> None:
    assert resolve_view(":unacked") == "unacked"
    assert resolve_view("qua") == "quarantine" and resolve_view("q") == "queues"
    assert resolve_view("3") == "workers" and resolve_view("nope") is None and resolve_view(":") is None


def flat(sections: list[details.Section]) -> str:
    """Every title, key and value of detail sections as one text."""
    out = []
    for title, content in sections:
        out.append(title)
        out.extend([content] if isinstance(content, str) else [f"{k} {v}" for k, v in content])
    return "\n".join(out)


def test_detail_sections_join_the_snapshot() -> None:
    snap = make_snapshot()
    poison_entry = next(e for e in UNACKED if e.delivery_tag == "tag-p1")
    text = flat(details.unacked_sections(poison_entry, snap))
    assert "deliveries seen" in text and "WorkerLostError" in text and "(5,)" in text
    assert "tag-p1" in flat(details.poison_sections(POISON[0], snap))
    assert "raise ValueError('boom')" in flat(details.failure_sections(FAILURES[0], snap))
    worker = flat(details.worker_sections(WORKERS[0], snap))
    assert "102, 103, 104, 105" in worker and "a1a1a1a1" in worker  # pool pids, the message it holds
    queue = flat(details.queue_sections(QUEUES[0], snap, [1, 2, 3]))
    assert "band 3" in queue and "w1@host" in queue


def test_status_text_masks_and_reports() -> None:
    secret_url = "redis://:hunter2@h:6379/0"
    snap = replace(make_snapshot(), errors=(SourceError("workers", f"inspect failed on {secret_url}"),))
    state = StatusState(broker_url="redis://:***@h:6379/0", backend_url="redis://:***@h:6379/0", latest=snap,
                        last_ok_at=T0, now=T0 + 3, paused=True, read_only=True)
    text = status_text(state, {}, (secret_url,)).plain
    assert "hunter2" not in text
    assert "PAUSED" in text and "READ-ONLY" in text and "⟳ 3s ago" in text and "workers: inspect failed" in text
    down = StatusState(broker_url="x", backend_url="x", latest=down_snapshot(), last_ok_at=T0, now=T0 + 20,
                       retry_in=4.0, failures=3)
    text = status_text(down, {}).plain
    assert "broker unreachable" in text and "retrying in 4s (attempt 3)" in text and "last good data" in text
    assert short_backend("redis://h:1/0", "redis://h:1/1") == "db 1 (same server)"
    assert short_backend("redis://h:1/0", "redis://other:1/0") == "redis://other:1/0"


def test_overview_age_precision_moves_once_a_minute_after_the_first() -> None:
    from tui.format import fmt_age_summary, fmt_oldest_summary

    assert [fmt_age_summary(s) for s in (None, 0, 9.9, 10, 47, 59.9, 60, 119, 324, 3599, 3600, 3725, 90000)] == [
        "–", "0s", "9s", "10s", "40s", "50s", "1m", "1m", "5m", "59m", "1h00m", "1h02m", "1d01h"]
    # within a minute the text holds still, so the line it is on is not repainted; in the first minute
    # it moves every ten seconds after the first ten (always rounded down: never older than it is)
    assert len({fmt_age_summary(s) for s in range(300, 360)}) == 1
    assert len({fmt_age_summary(s / 10) for s in range(0, 600)}) == 10 + 5
    assert all(int(fmt_age_summary(s / 10)[:-1]) <= s / 10 for s in range(0, 600))
    assert fmt_oldest_summary(545.0, True) == "≥ 9m" and fmt_oldest_summary(None) == "–"
    assert fmt_oldest_summary(47.0, True) == "≥ 40s" and fmt_oldest_summary(7200.0, True) == "≥ 2h"
    assert fmt_oldest_summary(324.0) == "5m"


def test_dashboard_raises_the_gc_thresholds_never_lowers_them() -> None:
    import gc

    from tui.app import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.set_threshold(50_000, 10, 10)
        tune_gc()
        assert gc.get_threshold() == (50_000, 10, 10)
    finally:
        gc.set_threshold(*before)
