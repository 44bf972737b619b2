"""The :beat and :canvas screens render a snapshot's beat and canvas (and list a chord's parts on enter)."""

from __future__ import annotations

import time
from typing import Any

from textual.app import App
from textual.widgets import DataTable

from collectors.core.beat_canvas import BeatEntry, BeatView, CanvasView, ChordInfo, ChordPart
from tui.screens.beat import BeatScreen
from tui.screens.canvas import CanvasScreen


class _Snap:
    def __init__(self) -> None:
        now = time.time()
        self.beat = BeatView("redbeat", "dead", "lock 'redbeat::lock' is gone", now - 10, (
            BeatEntry("tick", "demo.record", "every 2s", 2.0, "celery", now - 10, now - 8, 5, 4, 8.0),))
        self.canvas = CanvasView((ChordInfo("g1", "chord", "stuck", 3, 2, 0, 2, "demo.tsum", None, 9.0, now - 20,
                                            "no part finished for 9s with 1 missing"),))
        self.queues = ()
        self.unacked = ()


class _Source:
    def chord_parts(self, gid: str, **_: Any) -> tuple[ChordPart, ...]:
        return (ChordPart(0, None, "lost", "no result, and in no queue"), ChordPart(1, "t1", "SUCCESS"))


class _Collector:
    beat_canvas = _Source()


class _App(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.snapshot = _Snap()
        self.collector = _Collector()


async def test_beat_and_canvas_screens() -> None:
    app = _App()
    async with app.run_test(size=(140, 40)) as pilot:
        app.push_screen(BeatScreen())
        await pilot.pause()
        header = str(app.screen.query_one("#beat-header").render())
        assert "DEAD" in header and "lock" in header
        assert app.screen.query_one(DataTable).row_count == 1
        await pilot.press("escape")
        app.push_screen(CanvasScreen())
        await pilot.pause()
        table = app.screen.query_one("#canvas-table", DataTable)
        assert table.row_count == 1
        table.focus()
        await pilot.press("enter")
        for _ in range(20):
            await pilot.pause(0.05)
            if app.screen.query_one("#parts-table", DataTable).row_count:
                break
        assert app.screen.query_one("#parts-table", DataTable).row_count == 2
