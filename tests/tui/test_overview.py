"""The Overview: problems first, each line jumps to its row; healthy is one line (issue 14)."""

from __future__ import annotations

from dataclasses import replace

from overview_fixtures import fire_series, healthy_series
from tui_fakes import make_app, make_snapshot
from tui_helpers import screen_text, settle

from tui.widgets.overview_model import Totals, problems


def test_problems_order_and_targets() -> None:
    snap = fire_series()[-1]
    got = problems(snap, failure_rate=(0.5, 21))
    kinds = [p.key.split(":")[0] for p in got]
    # errors first (issue order), then warnings
    assert kinds == ["orphaned", "poison", "noconsumer", "noconsumer", "worker", "held", "worker", "failures",
                     "source"]
    by_key = {p.key: p for p in got}
    assert by_key["orphaned:slow"].view == "unacked" and by_key["orphaned:slow"].row == "tag-o1"  # oldest
    assert by_key["held:celery"].row == "tag-h1" and "w4@quiet" in by_key["held:celery"].text
    assert by_key["poison:p0150n00-0000-4000-8000-000000000005"].view == "poison"
    assert by_key["noconsumer:reports"].view == "queues"
    assert by_key["worker:w3@gone"].label == "OFFLINE"
    assert by_key["worker:w4@quiet"].label == "SILENT"
    assert by_key["failures:rate"].view == "tasks"
    assert by_key["source:workers"].view is None


def test_healthy_has_no_problem_and_quiet_failures_are_not_a_fire() -> None:
    snap = healthy_series()[-1]
    assert problems(snap, failure_rate=(0.0, 0)) == []
    assert problems(snap, failure_rate=(0.5, 2)) == []  # below FAILURE_MIN


def test_totals_rates() -> None:
    totals = Totals()
    for snap in fire_series(4):
        totals.add(snap)
    share, failed = totals.failure_rate() or (0, 0)
    assert failed == 9 and round(share, 2) == round(9 / (9 + 15), 2)
    assert totals.done_rates() == [6.0, 6.0, 6.0]  # 3 workers +4 each per 2 s (w4 stays at 400)
    assert len(totals.ready()) == 4


async def test_first_screen_is_the_overview_and_enter_jumps() -> None:
    series = fire_series()
    app = make_app(series)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for _ in series[1:]:
            app.action_refresh()
            await settle(pilot)
        assert app.current_view == "overview"
        text = screen_text(app)
        for needle in ("ORPHANED", "POISON", "NO CONSUMER", "OFFLINE", "SILENT", "HELD-BY-SILENT", "FAILURES"):
            assert needle in text, needle
        table = app.panel().table
        # each line lands on its row, and that view's keys act on it
        expected = {"orphaned:slow": ("unacked", "tag-o1"), "noconsumer:reports": ("queues", "reports"),
                    "worker:w4@quiet": ("workers", "w4@quiet"),
                    "poison:p0150n00-0000-4000-8000-000000000005":
                        ("poison", "p0150n00-0000-4000-8000-000000000005")}
        for key, (view, row) in expected.items():
            await pilot.press("0")
            await settle(pilot)
            assert app.current_view == "overview"
            assert table.select_key(key)
            await pilot.press("enter")
            await settle(pilot)
            assert app.current_view == view
            assert app.panel().table.selected_key == row
        # R from the jumped-to Unacked view asks to requeue the orphans
        await pilot.press("0")
        await settle(pilot)
        table.select_key("orphaned:slow")
        await pilot.press("enter", "R")
        await pilot.pause(0.2)
        assert "Requeue" in screen_text(app) or "requeue" in screen_text(app)


async def test_jump_word_and_healthy_line() -> None:
    app = make_app(healthy_series())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        assert app.current_view == "queues"
        await pilot.press("colon", *"overview", "enter")
        await settle(pilot)
        assert app.current_view == "overview"
        assert "ALL CLEAR" in screen_text(app)
        assert app.panel().table.row_count == 1


async def test_hidden_overview_still_labels_its_tab() -> None:
    app = make_app([make_snapshot(), replace(make_snapshot(), poison=())])
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        app.action_refresh()
        await settle(pilot)
        assert "Overview ⚠3" in screen_text(app)
