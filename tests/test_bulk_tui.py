"""The :bulk screen (issue 18): dry run first, typed confirmation, run with progress, read-only dry runs only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App
from textual.widgets import Input, Static

from collectors.core.config import Settings
from collectors.writes.bulk import BulkActions
from tests.test_bulk import fill, template
from tui.screens.bulk import BulkScreen, parse_line


class _App(App[None]):
    def __init__(self, screen: BulkScreen) -> None:
        super().__init__()
        self._bulk = screen

    def on_mount(self) -> None:
        self.push_screen(self._bulk)


async def _until(pilot: Any, cond: Any, n: int = 200) -> None:
    for _ in range(n):
        await pilot.pause(0.05)
        if cond():
            return
    raise AssertionError("timed out")


def test_parse_line() -> None:
    assert parse_line('move name:"a b" in:queue:x --to y') == ("move", 'name:"a b" in:queue:x', "y")
    assert parse_line("delete in:queue:w") == ("delete", "in:queue:w", None)


async def test_bulk_screen_dry_run_confirm_run(redis_url, demo_app, r, tmp_path: Path) -> None:
    tpl = template(demo_app, r)
    fill(r, tpl, "work", 150, name="billing.charge")
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl"))
    screen = BulkScreen(lambda: BulkActions(settings))
    app = _App(screen)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        q = screen.query_one("#bulk-query", Input)
        q.value = "delete name:billing in:queue:work"
        q.focus()
        await pilot.press("enter")
        await _until(pilot, lambda: screen.plan is not None)
        assert "150 match(es)" in str(screen.query_one("#bulk-plan", Static).render())
        assert r.llen("work") == 150  # the dry run changed nothing
        c = screen.query_one("#bulk-confirm", Input)
        assert not c.disabled and "150" in c.placeholder
        c.value = "yes"  # above the threshold "yes" is not enough: the count must be typed
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert r.llen("work") == 150 and screen.result is None
        c.value = "150"
        await pilot.press("enter")
        await _until(pilot, lambda: screen.result is not None)
        assert screen.result.count == 150 and r.llen("work") == 0
        assert "deleted 150 of 150" in str(screen.query_one("#bulk-status", Static).render())


async def test_bulk_screen_read_only_is_dry_run_only(redis_url, demo_app, r, tmp_path: Path) -> None:
    tpl = template(demo_app, r)
    fill(r, tpl, "work", 5)
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl"), read_only=True)
    screen = BulkScreen(lambda: BulkActions(settings), read_only=True, initial="move in:queue:work --to x")
    app = _App(screen)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        screen.query_one("#bulk-query", Input).focus()
        await pilot.press("enter")
        await _until(pilot, lambda: screen.plan is not None)
        assert screen.plan.count == 5 and screen.query_one("#bulk-confirm", Input).disabled
        assert "read-only" in str(screen.query_one("#bulk-status", Static).render())
        await pilot.press("escape")
        await pilot.pause()
    assert r.llen("work") == 5
