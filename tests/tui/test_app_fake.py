"""Pilot tests of the dashboard on a fake collector with fixed snapshots (no Redis)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tui_fakes import (
    QUEUES,
    SETTINGS,
    T0,
    FakeActions,
    FakeControl,
    down_snapshot,
    make_app,
    make_snapshot,
)
from tui_helpers import notifications, screen_text, settle, wait_until, widget_text

from collectors.core.models import QueueInfo
from tui.screens.confirm import ConfirmScreen
from tui.screens.detail import DetailScreen
from tui.screens.help import HelpScreen
from tui.screens.welcome import WelcomeScreen
from tui.widgets.status_bar import StatusBar


async def test_panels_show_the_snapshot() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("1")  # the queues view (the overview is the first screen)
        await settle(pilot)
        queues = app.panel("queues").table
        assert queues.shown_keys == ["celery", "emails", "risky", "slow"]  # ready, descending
        text = screen_text(app)
        assert "emails ⚠ no consumer" in text
        assert "Unacked 5 ⚠2" in text and "Workers 2/3" in text and "Poison 1" in text
        assert "⟳ 0s ago" in text and "secret" not in text and "redis://:***@broker.example:6379/0" in text

        app.show_view("unacked")
        await settle(pilot)
        unacked = app.panel().table
        assert unacked.shown_keys[:2] == ["tag-o1", "tag-o2"]  # oldest first: the orphans stand out
        text = screen_text(app)
        assert text.count("ORPHANED") == 2 and "⚠ 1h06m" in text
        dark_style = str(unacked.get_cell("tag-o1", "state").style)
        app.theme = "nord"  # cell colours follow the theme
        await settle(pilot)
        assert str(unacked.get_cell("tag-o1", "state").style) != dark_style

        app.show_view("workers")
        await settle(pilot)
        assert "OFFLINE" in screen_text(app)
        app.show_view("tasks")
        await settle(pilot)
        text = screen_text(app)
        assert "SUCCESS 1,204" in text and "scan complete" in text and "ValueError('boom')" in text
        app.show_view("poison")
        await settle(pilot)
        assert app.panel().table.shown_keys == ["p0150n00-0000-4000-8000-000000000005"]


async def test_refresh_updates_in_place_and_keeps_the_cursor() -> None:
    first = make_snapshot()
    # Next refresh: emails grows past celery, slow disappears, a new queue appears, values change.
    second = make_snapshot(taken_at=T0 + 1, queues=(
        replace(QUEUES[0], messages=50), replace(QUEUES[1], messages=900), QUEUES[3],
        QueueInfo("reports", 3, ((0, 3),), 1.0, 0, 1),
    ))
    app = make_app([first, second])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("1")  # the queues view (the overview is the first screen)
        await settle(pilot)
        table = app.panel("queues").table
        await pilot.press("down")  # cursor on "emails" (row 1)
        assert table.selected_key == "emails"
        app.action_refresh()
        await settle(pilot)
        assert table.shown_keys == ["emails", "celery", "reports", "risky"]
        assert table.selected_key == "emails"  # followed its row to index 0
        assert table.cursor_row == 0
        assert "slow" not in table.rows
        assert str(table.get_cell("celery", "ready")) == "50"


async def test_filter_narrows_rows_and_escape_clears_it() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await pilot.pause()
        assert app.current_view == "unacked"
        await pilot.press("slash", *"orphan")
        await pilot.pause()
        table = app.panel().table
        assert table.shown_keys == ["tag-o1", "tag-o2"]
        await pilot.press("enter")  # keep the filter, back to the table
        await pilot.pause()
        assert table.has_focus and app.panel().filter_text == "orphan"
        assert "filter: orphan" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert len(table.shown_keys) == 5


async def test_colon_jumps_to_views_and_tab_cycles() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"po", "enter")
        await pilot.pause()
        assert app.current_view == "poison"
        assert app.panel().table.has_focus
        await pilot.press("colon", *":qua", "enter")
        await settle(pilot)
        assert app.current_view == "quarantine"
        assert app.panel().table.shown_keys == ["q-1"]
        await pilot.press("colon", *"nope", "enter")
        await pilot.pause()
        assert app.current_view == "quarantine"
        assert any("no view matches" in m for _, m, _ in notifications(app))
        await pilot.press("tab")
        await pilot.pause()
        assert app.current_view == "overview"  # tab wraps to the first view
        await pilot.press("tab")
        await pilot.pause()
        assert app.current_view == "queues"
        await pilot.click("#--content-tab-workers")  # the mouse works too
        await pilot.pause()
        assert app.current_view == "workers"


async def test_enter_opens_the_detail_screen() -> None:
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        app.show_view("unacked")
        await settle(pilot)
        table = app.panel().table
        table.move_cursor(row=table.shown_keys.index("tag-p1"))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        text = widget_text(app.screen)
        assert "p0150n00-0000-4000-8000-000000000005" in text
        assert "(5,)" in text and "{'tag': 'x'}" in text
        assert "deliveries seen" in text and "WorkerLostError" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DetailScreen)

        app.show_view("tasks")
        await settle(pilot)
        app.panel().table.move_cursor(row=app.panel().table.shown_keys.index("f1f1f1f1-0000-4000-8000-000000000006"))
        await pilot.press("enter")
        await pilot.pause()
        text = widget_text(app.screen)
        assert "Traceback" in text and "raise ValueError('boom')" in text


async def test_help_and_pause() -> None:
    app = make_app(interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "requeue every orphaned message" in widget_text(app.screen)
        await pilot.press("escape")
        await pilot.pause()
        collector = app.collector
        await wait_until(pilot, lambda: collector.calls >= 3)
        await pilot.press("P")
        await settle(pilot)
        assert "PAUSED" in screen_text(app)
        paused_at = collector.calls
        await pilot.pause(0.4)
        assert collector.calls == paused_at
        await pilot.press("P")
        await wait_until(pilot, lambda: collector.calls >= paused_at + 2)
        assert "PAUSED" not in screen_text(app)


async def test_purge_cancel_then_confirm() -> None:
    actions = FakeActions()
    app = make_app(actions=actions)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("1")  # the queues view (the overview is the first screen)
        await settle(pilot)
        assert app.panel().table.selected_key == "celery"
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        text = screen_text(app)
        assert "Purge queue celery?" in text and "120 ready message(s)" in text
        assert "priority 0: 100, priority 3: 20" in text
        await pilot.press("enter")  # "No" has the focus: enter is safe
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert [c[0] for c in actions.calls] == ["purge_preview"]

        calls_before = app.collector.calls
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        purge = [c for c in actions.calls if c[0] == "purge"]
        assert len(purge) == 1
        name, args, kwargs = purge[0]
        assert args == ("celery",) and kwargs["include_unacked"] is False
        assert kwargs["export_path"].endswith(".jsonl") and "purge-celery-" in kwargs["export_path"]
        assert ("Purge", "purged 120 message(s) from celery", "information") in notifications(app)
        assert app.collector.calls > calls_before  # immediate refresh after the action
        assert app.collector.inspects >= 1


async def test_action_targets_the_row_captured_when_the_dialog_opened() -> None:
    actions = FakeActions()
    app = make_app(actions=actions)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        app.show_view("unacked")
        await settle(pilot)
        table = app.panel().table
        assert table.selected_key == "tag-o1"
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "0a0a0a0a-0000-4000-8000-000000000002" in screen_text(app)
        # While the dialog is open the data changes under it (tag-o1 is gone, cursor moves).
        app.collector.snapshots = [make_snapshot(unacked=make_snapshot().unacked[1:][::-1])]
        app.collector.snapshots[0] = replace(app.collector.snapshots[0],
                                             unacked=tuple(e for e in make_snapshot().unacked
                                                           if e.delivery_tag != "tag-o1"))
        app.action_refresh()
        await settle(pilot)
        assert "tag-o1" not in table.rows
        await pilot.press("y")
        await settle(pilot)
        requeue = [c for c in actions.calls if c[0] == "requeue"]
        assert requeue == [("requeue", (["tag-o1"],), {"force": False})]


async def test_marks_make_bulk_actions_and_read_only_refuses() -> None:
    actions = FakeActions()
    app = make_app(actions=actions)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        app.show_view("unacked")
        await settle(pilot)
        await pilot.press("space", "space")  # marks tag-o1 and tag-o2 (cursor moves down)
        await pilot.pause()
        assert "2 marked" in screen_text(app)
        await pilot.press("Q")
        await pilot.pause()
        assert "Move 2 message(s) into taskdash's quarantine" in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
        q = [c for c in actions.calls if c[0] == "quarantine"]
        assert q[0][2]["tags"] == ["tag-o1", "tag-o2"]

    ro_actions = FakeActions()
    ro = make_app(actions=ro_actions, settings=replace(SETTINGS, read_only=True))
    async with ro.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("1", "p")
        ro.show_view("unacked")
        await settle(pilot)
        await pilot.press("r", "R", "x")
        await settle(pilot)
        assert not isinstance(ro.screen, ConfirmScreen)
        assert ro_actions.calls == []
        assert sum("--read-only" in m for _, m, _ in notifications(ro)) == 4
        assert "READ-ONLY" in screen_text(ro)


async def test_broker_down_then_back_notifies_on_transitions_only() -> None:
    ok = make_snapshot()
    app = make_app([ok, down_snapshot(), down_snapshot(), replace(ok, taken_at=T0 + 5)])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("1")  # the queues view (the overview is the first screen)
        await settle(pilot)
        for _ in range(2):
            app.action_refresh()
            await settle(pilot)
        bar = app.query_one(StatusBar)
        assert bar.has_class("-down")
        assert "broker unreachable" in screen_text(app)
        assert "Connection refused" in widget_text(app.screen, "StatusBar")  # the full line, not cut at 100
        assert app.panel("queues").table.shown_keys == ["celery", "emails", "risky", "slow"]  # last good data
        app.action_refresh()
        await settle(pilot)
        assert not bar.has_class("-down")
        titles = [t for t, _, _ in notifications(app)]
        assert titles.count("Broker unreachable") == 1 and titles.count("Broker back") == 1


async def test_welcome_screen_when_nothing_is_reachable_then_recovers() -> None:
    app = make_app([down_snapshot(), down_snapshot(), make_snapshot()])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, WelcomeScreen)
        text = screen_text(app)
        assert "--broker" in text and "taskdash demo" in text and "secret" not in text
        app.action_refresh()
        await settle(pilot)
        assert isinstance(app.screen, WelcomeScreen)
        app.action_refresh()
        await settle(pilot)
        assert not isinstance(app.screen, WelcomeScreen)
        assert app.panel().table.row_count == 4


async def test_collector_crash_is_reported_and_the_app_keeps_running() -> None:
    def boom() -> object:
        raise RuntimeError("collector exploded")

    app = make_app([make_snapshot(), boom, make_snapshot()])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.action_refresh()
        await settle(pilot)
        assert app.is_running
        assert any("collector exploded" in m for _, m, _ in notifications(app))
        assert "refresh failed" in screen_text(app)
        app.action_refresh()
        await settle(pilot)
        assert "refresh failed" not in screen_text(app)


async def test_palette_purge_goes_through_the_confirm_dialog() -> None:
    actions = FakeActions()
    app = make_app(actions=actions)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"purge emails")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert [c[1] for c in actions.calls if c[0] == "purge"] == [("emails",)]


async def test_sort_bands_no_color_and_the_layout_follows_the_terminal_size(monkeypatch: Any) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("1")  # the queues view (the overview is the first screen)
        await settle(pilot)
        assert app.no_color
        await pilot.press("b")  # ready messages per priority band, on demand
        await pilot.pause()
        assert "120 (p0:100 p3:20)" in screen_text(app)
        await pilot.press("b")
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause()
        assert app.panel().table.shown_keys == ["celery", "emails", "risky", "slow"]  # by name
        assert "sort: name" in screen_text(app)
        await pilot.press("s")
        await pilot.pause()
        assert app.panel().table.shown_keys[0] == "emails"  # oldest first
        assert len(screen_text(app).splitlines()) == 24
        await pilot.resize_terminal(200, 60)
        await pilot.pause()
        assert len(screen_text(app).splitlines()) == 60


async def test_retry_and_revoke_with_terminate() -> None:
    actions = FakeActions()
    app = make_app(actions=actions)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        app.show_view("tasks")
        await settle(pilot)
        table = app.panel().table
        table.move_cursor(row=table.shown_keys.index("f1f1f1f1-0000-4000-8000-000000000006"))
        await pilot.press("r")
        await pilot.pause()
        assert "Send task demo_tasks.tasks.fail" in widget_text(app.screen)
        await pilot.press("y")
        await settle(pilot)
        assert ("retry", ("f1f1f1f1-0000-4000-8000-000000000006",), {}) in actions.calls

        app.show_view("unacked")
        await settle(pilot)
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("shift+tab", "space")  # from "No" back to the terminate checkbox, tick it
        await pilot.press("y")
        await settle(pilot)
        assert ("revoke", ("0a0a0a0a-0000-4000-8000-000000000002",), {"terminate": True}) in actions.calls
        assert ("Revoke", "revoked 0a0a0a0a-0000-4000-8000-000000000002", "information") in notifications(app)


async def test_worker_command_prompt_confirms_then_sends() -> None:
    control = FakeControl()
    app = make_app(control=control)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.show_view("workers")
        await settle(pilot)
        await pilot.press("c", *"fly away", "enter")
        await pilot.pause()
        assert any("unknown worker command" in m for _, m, _ in notifications(app))
        await pilot.press("c", *"grow 2", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "grow the pool by 2" in widget_text(app.screen) and "w1@host" in widget_text(app.screen)
        await pilot.press("y")
        await settle(pilot)
        assert control.calls == [("pool_grow", (2,), ["w1@host"])]
        assert ("Worker control", "pool grown by 2", "information") in notifications(app)


async def test_poison_quarantine_then_replay_and_delete() -> None:
    actions = FakeActions()
    app = make_app(actions=actions)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.show_view("poison")
        await settle(pilot)
        await pilot.press("Q")
        await pilot.pause()
        assert "p0150n00-0000-4000-8000-000000000005" in widget_text(app.screen)
        await pilot.press("y")
        await settle(pilot)
        q = [c for c in actions.calls if c[0] == "quarantine"][0][2]
        assert q["task_ids"] == ["p0150n00-0000-4000-8000-000000000005"] and q["tags"] == []
        assert q["deliveries"] == 4 and q["reason"].startswith("poison suspect")

        app.show_view("quarantine")
        await settle(pilot)
        await pilot.press("r")
        await pilot.pause()
        assert "back on their original queue" in widget_text(app.screen)
        await pilot.press("y")
        await settle(pilot)
        await pilot.press("d")
        await pilot.pause()
        assert "for good" in widget_text(app.screen)
        await pilot.press("escape")  # cancelled: nothing deleted
        await settle(pilot)
        assert ("replay", (["q-1"],), {}) in actions.calls
        assert not [c for c in actions.calls if c[0] == "delete_quarantined"]


async def test_the_panel_border_dims_while_the_prompt_has_the_focus_and_a_view_switch_restyles_no_panel(
        monkeypatch: Any) -> None:
    """The visible panel's border dims while the focus is elsewhere in its view (the prompt) and is bright
    again when the table has it back; switching views changes no panel's classes (the hidden panel is
    not restyled: a ``:focus-within`` rule restyled both panels' whole subtrees on each view key)."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await pilot.pause()
        panel = app.panel("queues")
        assert panel.table.has_focus and not panel.has_class("-away")
        await pilot.press("slash")
        await pilot.pause()
        assert panel.has_class("-away")  # the prompt has the focus
        await pilot.press("escape")
        await pilot.pause()
        assert panel.table.has_focus and not panel.has_class("-away")
        restyled: list[str] = []
        for view in ("queues", "unacked", "workers", "overview"):
            other = app.panel(view)
            monkeypatch.setattr(other, "add_class", lambda *c, _v=view, **k: restyled.append(_v))
        for key in "2301":
            await pilot.press(key)
            await pilot.pause()
        assert app.current_view == "queues" and panel.table.has_focus
        assert restyled == []
        assert not any(app.panel(v).has_class("-away") for v in ("queues", "unacked", "workers", "overview"))


async def test_a_key_press_holds_the_garbage_collector_briefly_and_never_for_long() -> None:
    """A key is answered without a cyclic GC pause: the collector waits KEY_GC_PAUSE_S after the press,
    at most KEY_GC_PAUSE_MAX_S under a held key, and is back on when the app ends."""
    import gc
    import time

    app = make_app()
    app.KEY_GC_PAUSE_S = 0.2
    app.KEY_GC_PAUSE_MAX_S = 0.6
    assert gc.isenabled()
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("down")
            assert not gc.isenabled()
            await wait_until(pilot, gc.isenabled, timeout=2.0)  # back on by itself
            started = time.monotonic()
            back_on = None
            while time.monotonic() - started < 1.2:  # a held key: a press every 50 ms
                await pilot.press("down")
                if gc.isenabled() and back_on is None:
                    back_on = time.monotonic() - started
                await pilot.pause(0.05)
            assert back_on is not None and back_on < 0.6 + 0.3  # the cap let it run
            await pilot.press("down")
        assert gc.isenabled()  # the app ended mid-pause: the collector is on again
    finally:
        gc.enable()
