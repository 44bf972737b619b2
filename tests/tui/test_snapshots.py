"""SVG snapshots of the main screens with fixed data (pytest-textual-snapshot; must run in CI).

Regenerate after an intended visual change with:
``pytest tests/tui/test_snapshots.py --snapshot-update`` and commit ``__snapshots__/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual.pilot import Pilot
from tui_fakes import down_snapshot, make_app, make_snapshot
from tui_helpers import settle


def go(*keys: str, view: str | None = None) -> Callable[[Pilot[object]], Awaitable[None]]:
    """run_before: wait for the first refresh, optionally switch view, press keys, settle."""

    async def run_before(pilot: Pilot[object]) -> None:
        await settle(pilot)
        if view is not None:
            pilot.app.show_view(view)  # type: ignore[attr-defined]
            await settle(pilot)
        if keys:
            await pilot.press(*keys)
            await settle(pilot)
        await pilot.pause(0.2)  # let the tab underline animation finish

    return run_before


def test_queues_80x24(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=go(view="queues"))


def test_unacked_120x32(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 32), run_before=go(view="unacked"))


def test_workers_and_tasks(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 24), run_before=go("tab", view="workers"))


def test_poison_80x24(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=go(view="poison"))


def test_purge_confirm_dialog(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(make_app(), terminal_size=(100, 32), run_before=go("p", view="queues"))


def test_unacked_detail(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(make_app(), terminal_size=(100, 40), run_before=go("enter", view="unacked"))


def test_welcome_when_unreachable(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(make_app([down_snapshot()]), terminal_size=(80, 24), run_before=go())


def test_broker_down_keeps_last_data(snap_compare: Callable[..., bool]) -> None:
    app = make_app([make_snapshot(), down_snapshot()])

    async def run_before(pilot: Pilot[object]) -> None:
        await settle(pilot)
        app.show_view("queues")
        app.action_refresh()
        await settle(pilot)
        app.clear_notifications()
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(100, 24), run_before=run_before)
