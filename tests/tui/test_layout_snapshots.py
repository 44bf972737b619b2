"""Layout at the sizes people run (issue 21): every dashboard view at 80x24 and 140x40 with realistic long
names, as SVG snapshots, plus Pilot checks that the screens fit and tell the truth — the must-have columns
stay (or the line under the table names what is hidden), nothing is cut while the table has room, times
read as ages, and the cursor / sort / wide keys work.

Regenerate after an intended visual change: ``pytest tests/tui/test_layout_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_fakes import T0, FakeActions, entry, make_app, make_snapshot
from tui_helpers import screen_text, settle

from collectors.core.models import PoisonSuspect, QueueInfo, Snapshot, TaskFailure, TaskStats, WorkerInfo
from collectors.writes.actions import QuarantinedMessage
from tui.app import TaskDashApp
from tui.screens.dashboard import TAB_LABELS
from tui.widgets.keyed_table import KeyedTable
from tui.widgets.panels import VIEWS

SIZES = [(80, 24), (140, 40)]
SIZE_IDS = ["80x24", "140x40"]

Q_PDF = "billing.invoices.generate-pdf.high"
Q_MAIL = "notifications.email.marketing-campaigns"
Q_NIGHT = "reports.analytics.nightly-aggregation.low"
T_MAIL = "demo_tasks.tasks.send_marketing_email_batch"
T_PDF = "billing.tasks.generate_invoice_pdf_for_customer"
T_AGG = "reports.tasks.aggregate_nightly_usage_statistics"
H_1A = "celery@worker-prod-eu-west-1a-7f9c"
H_1B = "celery@worker-prod-eu-west-1b-3d2e"
H_2C = "billing@worker-prod-us-east-2c-91ab"


@dataclass(frozen=True)
class LowerBoundQueue(QueueInfo):
    """A queue whose oldest age is only a lower bound (the model field is being added: issue 21 item 4)."""

    oldest_age_is_lower_bound: bool = True


LONG_QUEUES = (
    LowerBoundQueue(Q_PDF, 1250, ((0, 1200), (3, 50), (6, 0), (9, 0)), 545.0, 4, 2, ("binding",)),
    QueueInfo(Q_MAIL, 48211, ((0, 48211),), 3725.0, 0, 0, ("binding",)),
    QueueInfo(Q_NIGHT, 0, ((0, 0),), None, 12, 1, ("binding", "worker")),
    QueueInfo("celery", 7, ((0, 7),), 2.0, 1, 3, ("worker",)),
)
LONG_UNACKED = (
    entry("tag-1", "a1a1a1a1-0000-4000-8000-000000000001", task=T_MAIL, queue=Q_MAIL, holder=H_1A, age=12.0),
    entry("tag-2", "b2b2b2b2-0000-4000-8000-000000000002", task=T_PDF, queue=Q_PDF, state="orphaned", age=4000.0,
          stale=True, redelivered=True),
    entry("tag-3", "c3c3c3c3-0000-4000-8000-000000000003", task=T_AGG, queue=Q_NIGHT, state="reserved", holder=H_2C,
          age=3.0, redelivered=True),
    replace(entry("tag-4", "d4d4d4d4-0000-4000-8000-000000000004", task=T_MAIL, queue=Q_MAIL, state="may-be-held",
                  age=30.0), possible_holders=(H_1B, H_1A)),
)
LONG_WORKERS = (
    WorkerInfo(H_1A, True, "prefork", 16, 12, 4, 2, 1_520_334, (Q_PDF, "celery"), 0.8, pid=101,
               liveness="responding", liveness_evidence="heartbeat 1s ago, replied to inspect",
               liveness_since=T0 - 3600.0),
    WorkerInfo(H_1B, True, "prefork", 8, 0, 0, 0, 88_120, (Q_MAIL,), 41.0, pid=201, responding=False,
               liveness="silent", liveness_evidence=("no heartbeat or reply for 41s; 3 subscriber connection(s) "
                                                     "opened at its start still open (CLIENT LIST)"),
               liveness_since=T0 - 41.0),
    WorkerInfo(H_2C, False, "solo", 1, 0, 0, 0, 12, (Q_NIGHT,), 340.0, pid=301, liveness="dead",
               liveness_evidence="no Redis connection, silent 5m", liveness_since=T0 - 300.0),
)
LONG_FAILURES = (
    TaskFailure("f1f1f1f1-0000-4000-8000-000000000006", T_PDF,
                "PermissionError('S3 bucket billing-invoices-prod denied access')", "Traceback ...",
                "2026-05-28T20:26:28", worker=H_1A, queue=Q_PDF),  # T0 - 12 s
    TaskFailure("f2f2f2f2-0000-4000-8000-000000000007", T_MAIL,
                "WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL)')", None,
                "2026-05-28T19:58:40+00:00", worker=H_1B, queue=Q_MAIL),
)
LONG_POISON = (
    PoisonSuspect("b2b2b2b2-0000-4000-8000-000000000002", T_PDF, Q_PDF, 7, T0 - 1800.0, T0 - 20.0,
                  "7 deliveries, each followed by WorkerLostError (SIGKILL)", (H_1A, H_1B), "tag-2"),
)


def long_snapshot(**changes: Any) -> Snapshot:
    """The standard snapshot with production-length queue, task and host names."""
    fields: dict[str, Any] = {
        "queues": LONG_QUEUES, "unacked": LONG_UNACKED, "unacked_total": len(LONG_UNACKED), "workers": LONG_WORKERS,
        "poison": LONG_POISON,
        "tasks": TaskStats((("SUCCESS", 120_444), ("FAILURE", 2)), 120_446, True, LONG_FAILURES, 1),
    }
    return make_snapshot(**{**fields, **changes})


def long_app(snapshots: list[Snapshot] | None = None) -> TaskDashApp:
    actions = FakeActions()
    actions.quarantine_entries = [
        QuarantinedMessage("q-1", "b2b2b2b2-0000-4000-8000-000000000002", T_PDF, Q_PDF,
                           "poison suspect: 7 deliveries, each followed by WorkerLostError (SIGKILL)", T0 - 95, 7,
                           "unacked"),
    ]
    return make_app(snapshots or [long_snapshot()], actions=actions)


async def show(pilot: Pilot[object], view: str) -> None:
    await settle(pilot)
    pilot.app.show_view(view)  # type: ignore[attr-defined]
    await settle(pilot)
    await pilot.pause(0.1)
    await settle(pilot)


# ---- snapshots ----------------------------------------------------------------------------------------
def before(view: str, *keys: str) -> Callable[[Pilot[object]], Awaitable[None]]:
    async def run_before(pilot: Pilot[object]) -> None:
        # no tab-underline animation: under load a fixed pause did not always see it finish (a flaky frame)
        pilot.app.animation_level = "none"
        await show(pilot, view)
        if keys:
            await pilot.press(*keys)
            await settle(pilot)
        await pilot.pause(0.2)  # let the tab underline animation finish

    return run_before


assert set(TAB_LABELS) == set(VIEWS)  # every view the dashboard lists gets its snapshots


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("view", VIEWS)
def test_view_layout(snap_compare: Callable[..., bool], view: str, size: tuple[int, int]) -> None:
    assert snap_compare(long_app(), terminal_size=size, run_before=before(view))


def test_unacked_wide_80x24(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(long_app(), terminal_size=(80, 24), run_before=before("unacked", "ctrl+w"))


# ---- Pilot: fit and truth -------------------------------------------------------------------------------
MUST_HAVE = {
    "queues": ("Queue", "Ready", "Cons", "Oldest"),
    "unacked": ("State", "Task", "Age", "Holder", "↻"),
    "workers": ("Worker", "Liveness", "Since", "Evidence", "Busy"),
    "tasks": ("Task", "Exception", "Done"),
    "poison": ("Task", "Deliv", "Last", "Reason"),
    "quarantine": ("Task", "When", "Reason"),
}
TABLE_VIEWS = list(MUST_HAVE)


def lines(app: TaskDashApp) -> list[str]:
    return screen_text(app).splitlines()


def table_of(app: TaskDashApp) -> KeyedTable:
    return app.panel().table


def header_line(app: TaskDashApp) -> str:
    return lines(app)[table_of(app).region.y]


def bottom_border(app: TaskDashApp) -> str:
    return lines(app)[app.panel().region.bottom - 1]


def free_columns(table: KeyedTable) -> int:
    used = sum(c.get_render_width(table) for c in table.columns.values())
    return table.region.width - 2 - used  # 2: the vertical scrollbar's room


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("view", TABLE_VIEWS)
async def test_must_have_columns_stay_and_hidden_ones_are_named(view: str, size: tuple[int, int]) -> None:
    app = long_app()
    async with app.run_test(size=size) as pilot:
        await show(pilot, view)
        header = header_line(app)
        for label in MUST_HAVE[view]:
            assert re.search(rf"(^|\s){re.escape(label)}(\s|$)", header), (label, header)
        marker = bottom_border(app)
        labels = [c.label for c in table_of(app).column_spec]
        missing = [label for label in labels if not re.search(rf"(^|\s){re.escape(label)}(\s|$)", header)]
        if missing:  # whatever is not on screen is named under the table, with the key that shows it
            assert f"+{len(missing)} col" in marker and "ctrl+w" in marker, marker
            for label in missing:
                assert label in marker, (label, marker)
        else:
            assert "hidden" not in marker, marker


async def test_no_cell_is_cut_while_the_table_has_room() -> None:
    app = long_app()
    async with app.run_test(size=SIZES[0]) as pilot:
        checked = 0
        for size in SIZES:
            await pilot.resize_terminal(*size)
            for view in TABLE_VIEWS:
                await show(pilot, view)
                table = table_of(app)
                top = table.region.y
                rows = lines(app)[top + 1: top + 1 + table.row_count]
                assert rows and all(r.strip("│ ") for r in rows), (view, size)
                if free_columns(table) >= 10:
                    checked += 1
                    for row in rows:
                        assert "…" not in row, (view, size, free_columns(table), row)
        assert checked >= 1  # not vacuous: at 140 columns the Queues table has room (and nothing is cut)


async def test_140_columns_tasks_done_and_worker_whole() -> None:
    app = long_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await show(pilot, "tasks")
        row = next(line for line in lines(app) if "f1f1f1f1" in line)
        assert "12s ago" in row and H_1A in row, row  # Done is an age (not 19 columns of date); Worker whole
        row = next(line for line in lines(app) if "f2f2f2f2" in line)
        assert "28m00s ago" in row and H_1B in row, row


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_control_prompt_hint_fits(size: tuple[int, int]) -> None:
    app = long_app()
    async with app.run_test(size=size) as pilot:
        await show(pilot, "workers")
        await pilot.press("c")
        await settle(pilot)
        prompt = app.screen.query_one("#prompt")
        hint = prompt.placeholder
        assert hint.startswith("command for ") and len(hint) <= prompt.size.width - 1, (len(hint), hint)
        assert "grow N" in hint and (hint.endswith("shutdown") or hint.endswith("(? lists all)")), hint
        assert hint in screen_text(app)  # shown whole


async def test_unacked_keeps_holder_and_redelivered_at_80x24() -> None:
    app = long_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await show(pilot, "unacked")
        header = header_line(app)
        assert "Holder" in header and "↻" in header, header
        row = next(line for line in lines(app) if "ORPHANED" in line)
        assert "↻" in row, row
        assert "?" in next(line for line in lines(app) if "MAY-BE-HELD" in line)  # possible holder shown


FOOTER_KEYS = {"queues": ("p Purge", "b Priorities"), "unacked": ("r Requeue", "Q Quarantine", "x Revoke"),
               "workers": ("c Control", "T Timeline"), "tasks": ("r Retry",), "poison": ("Q Quarantine", "x Revoke"),
               "quarantine": ("r Replay", "d Delete"), "overview": ("q Quit",)}
"""A view's own keys, which the footer must never leave out."""


async def test_footer_fits_80_columns() -> None:
    app = long_app()
    async with app.run_test(size=(80, 24)) as pilot:
        for view, keys in FOOTER_KEYS.items():
            await show(pilot, view)
            footer = lines(app)[-1]
            assert "? Help" in footer and "^p palette" in footer, (view, footer)
            for key in keys:
                assert key in footer, (view, key, footer)


async def test_times_read_as_ages_never_raw_timestamps() -> None:
    app = long_app()
    async with app.run_test(size=(140, 40)) as pilot:
        for view in ("tasks", "poison", "quarantine", "unacked", "workers", "queues", "overview"):
            await show(pilot, view)
            text = screen_text(app)
            assert not re.search(r"\b1\d{9}(\.\d+)?\b", text), (view, text)  # no epoch seconds
            assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), (view, text)  # no ISO stamps in tables
        await show(pilot, "tasks")
        table = table_of(app)
        assert table.get_cell("f1f1f1f1-0000-4000-8000-000000000006", "done").plain == "12s ago"
        assert table.get_cell("f2f2f2f2-0000-4000-8000-000000000007", "done").plain == "28m00s ago"
        await show(pilot, "poison")
        row = next(line for line in lines(app) if "b2b2b2b2" in line)
        assert "30m00s ago" in row and "20s ago" in row, row
        await show(pilot, "quarantine")
        assert "1m35s ago" in next(line for line in lines(app) if "b2b2b2b2" in line)


async def test_oldest_lower_bound_reads_at_least() -> None:
    app = long_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await show(pilot, "queues")
        row = next(line for line in lines(app) if Q_PDF in line)
        assert "≥ 9m" in row, row
        exact = next(line for line in lines(app) if Q_MAIL in line)
        assert "1h02m" in exact and "≥" not in exact, exact
        await show(pilot, "overview")
        assert "≥ 9m" in screen_text(app)


# ---- Pilot: keys ----------------------------------------------------------------------------------------
def many_unacked(n: int = 120) -> Snapshot:
    rows = tuple(entry(f"tag-{i:04d}", f"{i:08x}-0000-4000-8000-{i:012d}", task=T_MAIL, queue=Q_MAIL, holder=H_1A,
                       age=float(1000 - i)) for i in range(n))
    return long_snapshot(unacked=rows, unacked_total=n)


async def test_home_end_pageup_pagedown_move_the_cursor() -> None:
    app = long_app([many_unacked()])
    async with app.run_test(size=(80, 24)) as pilot:
        await show(pilot, "unacked")
        table = table_of(app)
        assert table.cursor_row == 0
        await pilot.press("end")
        await settle(pilot)
        assert table.cursor_row == 119 and table.selected_key == table.shown_keys[-1]
        assert "14m41s" in screen_text(app)  # scrolled to it (the youngest: 1000 - 119 s)
        await pilot.press("home")
        await settle(pilot)
        assert table.cursor_row == 0
        await pilot.press("pagedown")
        await settle(pilot)
        page = table.cursor_row
        assert page >= 5
        await pilot.press("pagedown")
        await settle(pilot)
        assert table.cursor_row == 2 * page
        await pilot.press("pageup")
        await settle(pilot)
        assert table.cursor_row == page
        await pilot.press("end", "pageup")
        await settle(pilot)
        assert table.cursor_row == 119 - page


async def test_shift_s_reverses_the_sort_and_the_header_says_which_way() -> None:
    app = long_app([many_unacked(30)])
    async with app.run_test(size=(140, 40)) as pilot:
        await show(pilot, "unacked")
        table = table_of(app)
        oldest_first = table.shown_keys
        assert oldest_first[0] == "tag-0000"  # age, descending
        assert "Age ▼" in header_line(app) and "sort: age ▼" in screen_text(app)
        await pilot.press("S")
        await settle(pilot)
        assert table.shown_keys == list(reversed(oldest_first))
        assert "Age ▲" in header_line(app) and "sort: age ▲" in screen_text(app)
        await pilot.press("S")
        await settle(pilot)
        assert table.shown_keys == oldest_first
        await pilot.press("s")  # the next sort, in its own direction
        await settle(pilot)
        assert "State ▲" in header_line(app) and "Age ▼" not in header_line(app)
        help_text = await help_screen_text(pilot)
        assert "reverse the sort" in help_text and "ctrl+w" in help_text and "home / end" in help_text


async def help_screen_text(pilot: Pilot[object]) -> str:
    from tui.screens.help import help_text

    await pilot.press("question_mark")
    await settle(pilot)
    text = help_text(False).plain
    await pilot.press("escape")
    await settle(pilot)
    return text


async def test_ctrl_w_shows_every_column_whole_and_scrolls_sideways() -> None:
    app = long_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await show(pilot, "unacked")
        table = table_of(app)
        assert table.hidden_labels  # at 80 columns some are hidden ...
        assert "ctrl+w" in bottom_border(app)
        await pilot.press("ctrl+w")
        await settle(pilot)
        await pilot.pause(0.1)
        assert table.wide and not table.hidden_labels
        assert table.virtual_size.width > table.size.width  # ... wide: all of them, side by side
        assert T_PDF in screen_text(app)  # whole
        assert "wide" in bottom_border(app)
        await pilot.press(*["right"] * 10)
        await settle(pilot)
        assert table.scroll_x > 0  # ← → scroll sideways
        table.scroll_to(x=table.max_scroll_x, animate=False)
        await settle(pilot)
        await pilot.pause(0.1)
        assert "Holder" in header_line(app) and "↻" in header_line(app)
        assert H_2C in screen_text(app)  # the holder whole
        await pilot.press("ctrl+w")
        await settle(pilot)
        await pilot.pause(0.1)
        assert not table.wide and table.hidden_labels and table.scroll_x == 0
        assert "Holder" in header_line(app)


async def test_resize_refits_the_columns() -> None:
    app = long_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await show(pilot, "unacked")
        table = table_of(app)
        assert not table.hidden_labels
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        await pilot.pause(0.1)
        assert table.hidden_labels and "+" in bottom_border(app)
        assert "Holder" in header_line(app)
        await pilot.resize_terminal(140, 40)
        await settle(pilot)
        await pilot.pause(0.1)
        assert not table.hidden_labels and "hidden" not in bottom_border(app)
