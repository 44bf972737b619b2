"""The Tasks view's per-task-name analytics (issue 15): table, sort, plot, filtered stream, events-off note."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tui"))

from tui_fakes import T0, make_app, make_snapshot  # noqa: E402
from tui_helpers import screen_text, settle  # noqa: E402

from collectors.analysis.taskstats import TaskStatsAggregator  # noqa: E402
from tui.widgets.taskstats import TaskStatsBox  # noqa: E402


def _agg() -> TaskStatsAggregator:
    agg = TaskStatsAggregator(now=T0 - 200)
    for i in range(40):
        t = T0 - 100 + i
        for name, rt, fail in (("billing.charge", 2.0, i % 4 == 0), ("mail.send", 0.05, False)):
            uid = f"{name}-{i}"
            agg.observe({"type": "task-received", "uuid": uid, "name": name, "timestamp": t,
                         "hostname": "w1@host"}, t)
            agg.observe({"type": "task-started", "uuid": uid, "timestamp": t + 0.1, "hostname": "w1@host"}, t)
            if fail:
                agg.observe({"type": "task-failed", "uuid": uid, "timestamp": t + rt, "hostname": "w1@host",
                             "exception": "CardError('declined')", "traceback": "Traceback\nCardError"}, t)
            else:
                agg.observe({"type": "task-succeeded", "uuid": uid, "timestamp": t + rt, "runtime": rt,
                             "hostname": "w2@host"}, t)
    return agg


async def test_table_sort_plot_and_stream() -> None:
    snap = make_snapshot(task_stats=_agg().view(T0))
    app = make_app([snap])
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        app.show_view("tasks")
        await settle(pilot)
        box = app.screen.query_one(TaskStatsBox)
        assert box.display
        text = screen_text(app)
        assert "Per task name" in text and "billing.charge" in text and "mail.send" in text
        assert "CardError: declined (10)" in text and "25%" in text
        assert [t.name for t in box.sorted_tasks()][:2] in (["billing.charge", "mail.send"],
                                                             ["mail.send", "billing.charge"])
        box.action_stats_sort()  # p95
        assert [t.name for t in box.sorted_tasks()][0] == "billing.charge"
        box.action_stats_sort()  # failure rate
        assert [t.name for t in box.sorted_tasks()][0] == "billing.charge"
        assert box.selected in ("billing.charge", "mail.send")
        lines = [x.plain for x in box.stream_lines()]
        assert lines and all(len(x) > 0 for x in lines)
        box.query_one("#ts-filter").value = "state:failed name:billing"
        await settle(pilot)
        lines = [x.plain for x in box.stream_lines()]
        assert lines and all(x.startswith("failed") and "billing.charge" in x for x in lines)
        box.query_one("#ts-filter").value = "state:nosuch"
        await settle(pilot)
        assert box.stream_lines() == []


async def test_events_off_note_and_hand_made_snapshots_have_no_box() -> None:
    agg = TaskStatsAggregator(now=T0 - 10)
    agg.observe_processed(5)
    agg.observe_processed(9)
    app = make_app([make_snapshot(task_stats=agg.view(T0))])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.show_view("tasks")
        await settle(pilot)
        text = screen_text(app)
        assert "task events are OFF" in text and "--enable-events" in text
        assert not app.screen.query_one("#ts-table").display
    app = make_app([make_snapshot()])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.show_view("tasks")
        await settle(pilot)
        assert not app.screen.query_one(TaskStatsBox).display


def test_overview_lists_top_movers(tmp_path: Path) -> None:
    from collectors.analysis.history import History
    from tui.widgets.overview_model import problems

    base = T0 - 3600 - 300
    with History(tmp_path / "h.sqlite3", scope="s") as h:
        old = TaskStatsAggregator(now=base)
        for i in range(100):
            t = base + i * 2.9
            old.observe({"type": "task-received", "uuid": f"o{i}", "name": "billing.charge", "timestamp": t}, t)
            old.observe({"type": "task-succeeded", "uuid": f"o{i}", "timestamp": t, "runtime": 0.2}, t)
        h.record_tasks(old, base + 400)
        agg = TaskStatsAggregator(now=T0 - 300)
        for i in range(100):
            t = T0 - 300 + i * 2.9
            agg.observe({"type": "task-received", "uuid": f"n{i}", "name": "billing.charge", "timestamp": t}, t)
            agg.observe({"type": "task-succeeded", "uuid": f"n{i}", "timestamp": t, "runtime": 0.6}, t)
        snap = make_snapshot(task_stats=agg.view(T0, history=h))
    lines = [p.text for p in problems(snap) if p.label == "MOVER"]
    assert lines and lines[0].startswith("billing.charge p95 ×3.0 vs 1 h ago"), lines


async def test_tasks_view_keys_reach_the_box() -> None:
    app = make_app([make_snapshot(task_stats=_agg().view(T0))])
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        app.show_view("tasks")
        await settle(pilot)
        box = app.screen.query_one(TaskStatsBox)
        await pilot.press("t")
        await settle(pilot)
        assert box.sort_index == 1 and "sort: p95" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert app.focused is box.query_one("#ts-table")
        await pilot.press("e")  # from the name table: the box's own keys
        await settle(pilot)
        app.screen.query_one("TasksPanel").action_stats("filter")
        await settle(pilot)
        assert app.focused is box.query_one("#ts-filter")


async def test_enter_on_a_stream_event_shows_it_and_searches_its_id() -> None:
    app = make_app([make_snapshot(task_stats=_agg().view(T0))])
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        app.show_view("tasks")
        await settle(pilot)
        box = app.screen.query_one(TaskStatsBox)
        searched: list[str] = []
        app.screen._run_search = lambda text, snap: searched.append(text)  # type: ignore[method-assign]
        stream = box.query_one("#ts-stream")
        assert stream.row_count == 6
        stream.focus()
        await pilot.press("enter")
        await settle(pilot)
        first = box.stream_events()[0]
        assert searched == [f"id:{first.task_id}"]
        assert any("Task event" in (n.title or "") for n in app._notifications)
