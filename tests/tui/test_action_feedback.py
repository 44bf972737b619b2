"""Issue 21: a write key gets a visible response in the next frames, whatever the write waits on.

The actions block (on an Event) as a slow broker or a slow inspect would, so the test sees exactly what
the user sees while they wait: a "working…" notification on screen (``run_test(notifications=True)``
renders the toasts), gone when the step is over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from textual.pilot import Pilot
from tui_fakes import FakeActions, make_app
from tui_helpers import notifications, screen_text, settle, wait_until

from collectors.writes.actions import ActionResult, PurgePreview
from tui.screens.confirm import ConfirmScreen

FRAMES = 5
"""Message-loop rounds (``pilot.pause()``) a response may take to show: no wall-clock bound."""


class SlowActions(FakeActions):
    """FakeActions whose purge preview and requeue wait until the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def purge_preview(self, queue: str) -> PurgePreview:
        assert self.release.wait(30), "never released"
        return super().purge_preview(queue)

    def requeue(self, tags: Sequence[str], *, force: bool = False, live: set[str] | None = None,
                expected: Mapping[str, float] | None = None) -> ActionResult:
        assert self.release.wait(30), "never released"
        return super().requeue(tags, force=force, live=live)


async def within_frames(pilot: Pilot[object], predicate: Callable[[], bool]) -> None:
    for _ in range(FRAMES):
        await pilot.pause()
        if predicate():
            return
    raise AssertionError(f"no visible response within {FRAMES} frames:\n{screen_text(pilot.app)}")  # type: ignore[arg-type]


def working(app: Any) -> list[str]:
    return [m for t, m, _s in notifications(app) if t == "Working"]


async def test_purge_key_shows_working_at_once_then_the_dialog() -> None:
    actions = SlowActions()
    app = make_app(actions=actions)
    try:
        async with app.run_test(size=(100, 34), notifications=True) as pilot:
            await settle(pilot)
            await pilot.press("1")
            await settle(pilot)
            await pilot.press("p")
            await within_frames(pilot, lambda: "reading queue celery…" in screen_text(app))
            assert not isinstance(app.screen, ConfirmScreen)  # the preview is still being read
            assert working(app) == ["reading queue celery…"]
            actions.release.set()
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await wait_until(pilot, lambda: not working(app))  # taken down once the dialog is there
            await pilot.press("n")
            await pilot.pause()
    finally:
        actions.release.set()


async def test_yes_on_requeue_shows_working_at_once_then_the_result() -> None:
    actions = SlowActions()
    app = make_app(actions=actions)
    try:
        async with app.run_test(size=(100, 34), notifications=True) as pilot:
            await settle(pilot)
            app.show_view("unacked")
            await settle(pilot)
            await pilot.press("R")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await within_frames(pilot, lambda: "requeueing 2 orphaned message(s)" in screen_text(app))
            assert working(app) == ["requeueing 2 orphaned message(s): asking the workers what they hold first…"]
            # nothing titled like the result yet: a caller waiting for "Requeue orphaned" waits for the result
            assert not any(t == "Requeue orphaned" for t, _m, _ in notifications(app))
            actions.release.set()
            await wait_until(pilot, lambda: ("Requeue orphaned", "requeued 2 message(s)", "information")
                             in notifications(app), explain=lambda: str(notifications(app)))
            await wait_until(pilot, lambda: not working(app), explain=lambda: str(notifications(app)))
    finally:
        actions.release.set()
