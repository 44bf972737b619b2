"""Worker liveness in the TUI (issue 12): the Workers view's Liveness/Since/Evidence columns, both worker
detail screens, and the Unacked view's HELD-BY-SILENT / MAY-BE-HELD rows (fake collector, no Redis)."""

from __future__ import annotations

import re
from typing import Any

from textual.app import App
from tui_fakes import LIVENESS_UNACKED, LIVENESS_WORKERS, FakeControl, liveness_snapshot, make_app
from tui_helpers import screen_text, settle, wait_until, widget_text

from tui.screens.detail import DetailScreen
from tui.screens.worker_detail import WorkerDetailScreen
from tui.widgets.panels import WorkersPanel

STATES = {"w1@host": "RESPONDING", "w4@quiet": "SILENT", "w5@killed": "DEAD", "w6@ghost": "GHOST"}
EVIDENCE = {w.hostname: w.liveness_evidence or "" for w in LIVENESS_WORKERS}


def _cell(app: Any, key: str, column: str) -> Any:
    return app.panel().table.get_cell(key, column)


async def test_workers_view_shows_each_state_its_evidence_and_since_at_80x24() -> None:
    app = make_app([liveness_snapshot()])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.show_view("workers")
        await settle(pilot)
        panel = app.panel()
        assert isinstance(panel, WorkersPanel)
        assert panel.table.shown_keys == ["w1@host", "w4@quiet", "w5@killed", "w6@ghost"]
        text = screen_text(app)
        header = next(line for line in text.splitlines() if "Liveness" in line)
        for column in ("Worker", "Liveness", "Since", "Evidence", "Busy"):  # all on screen at 80 columns
            assert column in header, header
        for host, label in STATES.items():
            cell = _cell(app, host, "liveness")
            assert cell.plain == label
            row = next(line for line in text.splitlines() if host in line)
            assert label in row, row
        # dead/ghost shout in the error style, silent in bold warning, responding in the success style
        c = panel.colors
        assert str(_cell(app, "w5@killed", "liveness").style) == c.error
        assert str(_cell(app, "w6@ghost", "liveness").style) == c.error
        assert "bold" in str(_cell(app, "w4@quiet", "liveness").style)
        assert str(_cell(app, "w1@host", "liveness").style) == c.success
        # since: how long the evidence has held
        assert str(_cell(app, "w4@quiet", "since")) == "42s"
        assert str(_cell(app, "w5@killed", "since")) == "1m20s"
        assert str(_cell(app, "w6@ghost", "since")) == "5m00s"
        # the evidence is the column that truncates (whole in the detail screen); a short one is whole
        assert _cell(app, "w1@host", "evidence").plain == "heartbeat 1s ago"
        width = panel.evidence_width(LIVENESS_WORKERS)
        assert panel.EVIDENCE_MIN <= width < 40
        for host in ("w4@quiet", "w5@killed", "w6@ghost"):
            shown = _cell(app, host, "evidence").plain
            assert shown.endswith("…") and len(shown) == width and EVIDENCE[host].startswith(shown[:-1])
        assert "no heartbeat or reply for 42s" in text and "heartbeat 1s ago" in text
        assert str(_cell(app, "w6@ghost", "busy")) == "0/4"


async def test_evidence_column_widens_with_the_terminal() -> None:
    app = make_app([liveness_snapshot()])
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        app.show_view("workers")
        await settle(pilot)
        panel = app.panel()
        assert panel.evidence_width(LIVENESS_WORKERS) >= panel.EVIDENCE_ROOMY
        header = next(line for line in screen_text(app).splitlines() if "Liveness" in line)
        for column in ("Busy", "Res", "Sch", "Processed", "Done/s"):
            assert column in header, header
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        await wait_until(pilot, lambda: len(_cell(app, "w6@ghost", "evidence").plain) < 40)


async def test_workers_sort_by_liveness_and_filter_by_evidence() -> None:
    app = make_app([liveness_snapshot()])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.show_view("workers")
        await settle(pilot)
        await pilot.press("s")  # name -> liveness: the ones that need a look first
        await settle(pilot)
        assert app.panel().table.shown_keys == ["w5@killed", "w6@ghost", "w4@quiet", "w1@host"]
        assert "sort: liveness" in screen_text(app)
        await pilot.press("slash", *"client list", "enter")
        await settle(pilot)
        assert app.panel().table.shown_keys == ["w5@killed", "w4@quiet"]  # the evidence is searchable


async def test_undecided_workers_fall_back_to_the_online_flags() -> None:
    app = make_app()  # the standard fake workers carry no liveness decision
    async with app.run_test(size=(120, 24)) as pilot:
        await settle(pilot)
        app.show_view("workers")
        await settle(pilot)
        assert _cell(app, "w1@host", "liveness").plain == "online"
        assert _cell(app, "w3@gone", "liveness").plain == "OFFLINE"
        assert str(_cell(app, "w3@gone", "since")) == "5m40s"  # last seen
        assert _cell(app, "w3@gone", "evidence").plain == "–"


async def test_worker_detail_shows_liveness_full_evidence_since_and_boot() -> None:
    app = make_app([liveness_snapshot()])  # load_details=False: the snapshot's own detail screen
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.show_view("workers")
        await settle(pilot)
        for i, w in enumerate(LIVENESS_WORKERS):
            app.panel().table.move_cursor(row=i)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, DetailScreen)
            text = widget_text(app.screen)
            assert "Liveness" in text and EVIDENCE[w.hostname] in text, text  # whole, not truncated
            assert re.search(rf"\bpid +{w.pid}\n", text), text
            assert "2026-" in text and "ago)" in text and "(up " in text  # since, booted
            await pilot.press("escape")
            await settle(pilot)
        app.panel().table.move_cursor(row=3)
        await pilot.press("enter")
        await settle(pilot)
        text = widget_text(app.screen)
        assert "GHOST (heartbeating and answering, not consuming)" in text
        assert "taskdash worker add-consumer emails -d w6@ghost" in text
        await pilot.press("escape")
        app.panel().table.move_cursor(row=1)
        await pilot.press("enter")
        await settle(pilot)
        text = widget_text(app.screen)
        assert "SILENT (not proven dead)" in text and "HELD-BY-SILENT, never orphaned" in text
        assert "h1h1h1h1-0000-4000-8000-000000000011" in text  # a message it may hold


async def test_live_worker_detail_screen_shows_liveness_from_the_snapshot() -> None:
    control = FakeControl()
    app = make_app([liveness_snapshot()], load_details=True, control=control)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.show_view("workers")
        await settle(pilot)
        app.panel().table.move_cursor(row=2)  # w5@killed
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, WorkerDetailScreen)
        await wait_until(pilot, lambda: screen.loads == 1)
        text = widget_text(screen)
        assert "DEAD (proven)" in text and EVIDENCE["w5@killed"] in text and "501" in text
        await pilot.press("r")  # the reload keeps the liveness section
        await wait_until(pilot, lambda: screen.loads == 2)
        assert "DEAD (proven)" in widget_text(screen)


class Host(App[None]):
    def __init__(self, screen: WorkerDetailScreen) -> None:
        super().__init__()
        self.detail = screen

    def on_mount(self) -> None:
        self.push_screen(self.detail)


async def test_worker_detail_screen_with_a_given_row_each_state() -> None:
    for w in LIVENESS_WORKERS:
        app = Host(WorkerDetailScreen(w.hostname, {"hostname": w.hostname, "online": w.online}, info=w))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            text = widget_text(app.screen)
            assert STATES[w.hostname] in text and EVIDENCE[w.hostname] in text, text
            assert str(w.pid) in text and "booted" in text
    app = Host(WorkerDetailScreen("nobody@x", {"hostname": "nobody@x", "online": False}))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert "taskdash has not seen this worker" in widget_text(app.screen)


async def test_unacked_view_shows_held_states_redelivery_and_possible_holders() -> None:
    app = make_app([liveness_snapshot()])
    async with app.run_test(size=(120, 32)) as pilot:
        await settle(pilot)
        app.show_view("unacked")
        await settle(pilot)
        table = app.panel().table
        assert table.get_cell("tag-h1", "state").plain == "HELD-BY-SILENT"
        assert "bold" in str(table.get_cell("tag-h1", "state").style)
        assert table.get_cell("tag-m1", "state").plain == "MAY-BE-HELD"
        assert table.get_cell("tag-o9", "state").plain == "ORPHANED"
        assert table.get_cell("tag-h1", "holder").plain == "w4@quiet?"
        assert table.get_cell("tag-m1", "holder").plain == "w1@host? +1"
        assert table.get_cell("tag-h1", "ttr").plain == "59m18s"  # time left before kombu redelivers it
        text = screen_text(app)
        assert "HELD-BY-SILENT" in text and "MAY-BE-HELD" in text and "w1@host? +1" in text
        await pilot.press("s")  # age -> state: orphaned, then held by a silent worker, then may be held
        await settle(pilot)
        assert table.shown_keys == ["tag-o9", "tag-h1", "tag-m1"]
        table.move_cursor(row=2)
        await pilot.press("enter")
        await settle(pilot)
        text = widget_text(app.screen)
        assert LIVENESS_UNACKED[1].state_reason in text and "w1@host, w4@quiet" in text
