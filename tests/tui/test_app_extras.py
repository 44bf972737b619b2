"""Pilot tests of the dashboard's later features: ctrl+c, terminal-safe text, search, contexts,
crash forensics and the persistent history (fake collector unless the test says otherwise)."""

from __future__ import annotations

from tui_fakes import make_app
from tui_helpers import settle, wait_until


async def test_ctrl_c_quits_even_from_the_prompt() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("slash")  # the filter prompt has the focus: ctrl+c must still quit
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: app._exit, timeout=5)
    assert app.return_code == 0
