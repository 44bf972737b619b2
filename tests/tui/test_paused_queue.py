"""A queue paused with ``taskdash pause`` reads as paused, by whom and since when (issue 18), never as a
queue nobody consumes: in the Queues view and on the Overview (a warning that stays in sight)."""

from __future__ import annotations

from dataclasses import replace

from tui_fakes import QUEUES, T0, make_app, make_snapshot
from tui_helpers import screen_text, settle

from tui.widgets.overview_model import problems


def _paused_snapshot(rogue: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    queues = tuple(replace(q, paused_by="alice@ops", paused_since=T0 - 180, consumed_while_paused=rogue)
                   if q.name == "emails" else q for q in QUEUES)
    return make_snapshot(queues=queues)


def test_overview_says_paused_not_no_consumer() -> None:
    got = {p.key: p for p in problems(_paused_snapshot(("w9@late",)))}
    assert "noconsumer:emails" not in got
    p = got["paused:emails"]
    assert p.label == "PAUSED" and p.severity == "warning" and p.view == "queues" and p.row == "emails"
    assert "paused by alice@ops 3m" in p.text and "7 waiting" in p.text and "consumed anyway by w9@late" in p.text
    assert "resume emails" in p.hint


async def test_queues_view_shows_who_paused_and_since() -> None:
    app = make_app([_paused_snapshot()])
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        text = screen_text(app)
        assert "⏸ paused by alice@ops 3m00s ago" in text, text
        assert "emails ⚠ no consumer" not in text
