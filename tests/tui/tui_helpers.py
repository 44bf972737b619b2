"""Helpers shared by the TUI tests (waits, notifications, screen text)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot
from textual.worker import WorkerCancelled, WorkerFailed


async def settle(pilot: Pilot[object]) -> None:
    """Wait for every worker (poll, preview, actions) and let the resulting messages be handled.

    A write flow (group "flows") waits on its confirm dialog, i.e. on the test's next key: not waited for.
    """
    for _ in range(2):
        busy = [w for w in pilot.app.workers if w.group != "flows"]
        try:
            if busy:
                await pilot.app.workers.wait_for_complete(busy)
        except (WorkerCancelled, WorkerFailed):
            pass
        await pilot.pause()


async def wait_until(pilot: Pilot[object], predicate: Callable[[], bool], timeout: float = 10.0,
                     explain: Callable[[], str] | None = None) -> None:
    """Poll ``predicate`` (letting the app run) until true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s" + (f": {explain()}" if explain else ""))
        await pilot.pause(0.05)
        await asyncio.sleep(0)


def notifications(app: object) -> list[tuple[str, str, str]]:
    """(title, message, severity) of every notification the app raised."""
    return [(n.title, n.message, n.severity) for n in app._notifications]  # type: ignore[attr-defined]
def screen_text(app: App[object]) -> str:
    """The current screen as plain text, one line per terminal row."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text.rstrip() for strip in strips)


def widget_text(screen: object, selector: str = "Static") -> str:
    """Plain text of every matching Static on ``screen`` (including parts scrolled out of view)."""
    out = []
    for w in screen.query(selector):  # type: ignore[attr-defined]
        content = w.content
        out.append(content.plain if hasattr(content, "plain") else str(content))
    return "\n".join(out)
