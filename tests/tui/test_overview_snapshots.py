"""SVG snapshots of the Overview at 80x24, 120x36 and 200x50, healthy and on fire (issue 14).

Regenerate after an intended visual change with
``pytest tests/tui/test_overview_snapshots.py --snapshot-update`` and commit ``__snapshots__/``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from overview_fixtures import fire_series, healthy_series
from textual.pilot import Pilot
from tui_fakes import make_app
from tui_helpers import settle

SIZES = [(80, 24), (120, 36), (200, 50)]


def _run_through(n: int) -> Callable[[Pilot[object]], object]:
    async def run_before(pilot: Pilot[object]) -> None:
        await settle(pilot)  # the dashboard's own first poll (refreshing before it is ready races the tabs)
        for _ in range(n - 1):  # every other snapshot of the series: trends and rates need history
            pilot.app.action_refresh()  # type: ignore[attr-defined]
            await settle(pilot)
        pilot.app.clear_notifications()
        await pilot.pause(0.2)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_overview_on_fire(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    series = fire_series()
    assert snap_compare(make_app(series), terminal_size=size, run_before=_run_through(len(series)))


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_overview_healthy(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    series = healthy_series()
    assert snap_compare(make_app(series), terminal_size=size, run_before=_run_through(len(series)))
