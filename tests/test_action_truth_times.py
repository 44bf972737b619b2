"""Issue 21, times as people read them: detail screens show an age and the local time, never epoch seconds."""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path

from collectors.writes.quarantine import QuarantinedMessage
from tui.details import fmt_when, generic_sections

NOW = 1_796_000_000.0


def local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def test_fmt_when_says_the_age_then_the_local_time() -> None:
    assert fmt_when(NOW - 185, NOW) == f"3m05s ago, {local(NOW - 185)} local"
    assert fmt_when(NOW + 120, NOW) == f"in 2m00s, {local(NOW + 120)} local"
    assert fmt_when(None, NOW) == "–"


def test_quarantine_detail_shows_quarantined_at_as_age_and_local_time() -> None:
    q = QuarantinedMessage("q-1", "t-1", "demo_tasks.tasks.poison", "risky", "poison suspect", NOW - 185, 117,
                           "unacked")
    ((title, fields),) = generic_sections("Quarantined message", q, now=NOW)
    values = dict(fields)  # type: ignore[arg-type]
    assert values["quarantined_at"] == f"3m05s ago, {local(NOW - 185)} local"
    assert values["deliveries"] == "117"  # counts stay numbers
    assert not re.search(r"\b1[0-9]{9}(\.\d+)?\b", " ".join(v for _k, v in fields))  # no epoch seconds anywhere


def test_other_epoch_fields_of_a_generic_detail_are_read_the_same_way() -> None:
    ((_t, fields),) = generic_sections("Task", {"date_done": "2026-12-02T11:04:05", "last_seen": NOW - 5,
                                                "eta_ts": NOW + 60, "runtime": 12.5, "retries": 3}, now=NOW)
    values = dict(fields)  # type: ignore[arg-type]
    assert values["last_seen"].startswith("5s ago, ") and values["eta_ts"].startswith("in 1m00s, ")
    assert values["date_done"] == "2026-12-02T11:04:05" and values["runtime"] == "12.5" and values["retries"] == "3"


async def test_the_quarantine_view_detail_screen() -> None:
    sys.path.insert(0, str(Path(__file__).parent / "tui"))
    from tui_fakes import make_app
    from tui_helpers import settle, wait_until, widget_text

    from tui.screens.detail import DetailScreen

    app = make_app()
    async with app.run_test(size=(110, 34)) as pilot:
        await settle(pilot)
        app.show_view("quarantine")
        await settle(pilot)
        await wait_until(pilot, lambda: app.panel().table.row_count > 0)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        text = widget_text(app.screen)
        line = next(line for line in text.splitlines() if "quarantined_at" in line)
        quarantined_at = app.actions.quarantine_entries[0].quarantined_at  # type: ignore[union-attr]
        assert line.rstrip().endswith(f"ago, {local(quarantined_at)} local"), line
        assert str(int(quarantined_at)) not in text
        assert time.time() > quarantined_at
