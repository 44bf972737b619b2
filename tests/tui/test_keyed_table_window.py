"""KeyedTable at scale: cells built around the viewport only, widths without DataTable's per-cell
column re-measure, bulk row replacement (issue 14)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import DataTable
from tui_fakes import big_snapshot, make_app, make_snapshot
from tui_helpers import screen_text, settle

from collectors.core.models import QueueInfo


def queues(n: int, bump: int = 0, long_name: bool = False) -> tuple[QueueInfo, ...]:
    out = [QueueInfo(f"queue-{i:04d}", 10_000 - i + bump * (i % 3), ((0, 10_000 - i),), float(i + bump), 0, 1)
           for i in range(n)]
    if long_name:
        out[500] = replace(out[500], name="a-much-longer-queue-name-than-the-others")
    return tuple(out)


@pytest.fixture
def column_remeasures(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = DataTable._update_column_widths

    def counting(self: Any, updated: Any) -> None:
        calls.append(len(updated))
        original(self, updated)

    monkeypatch.setattr(DataTable, "_update_column_widths", counting)
    return calls


async def test_1000_rows_refresh_builds_one_screenful_and_scrolling_fills_in(column_remeasures: list[int]) -> None:
    snaps = [make_snapshot(queues=queues(1000, bump=i, long_name=(i == 0)), taken_at=1_780_000_000.0 + i)
             for i in range(4)]
    app = make_app(snaps)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        panel = app.panel("queues")
        table = panel.table
        assert table.row_count == 1000  # every queue is scrollable, not a capped window
        name_col = table.columns[next(k for k in table.columns if k.value == "name")]
        assert name_col.content_width == len("a-much-longer-queue-name-than-the-others")  # off screen too

        built: list[str] = []
        original = panel.row_cells

        def spy(item: QueueInfo) -> tuple[Any, ...]:
            built.append(item.name)
            return original(item)

        panel.row_cells = spy  # type: ignore[method-assign]
        app.action_refresh()
        await settle(pilot)
        assert 0 < len(built) <= 3 * 40  # the viewport and a page either side, not 1,000 rows
        assert column_remeasures == []  # never DataTable's quadratic width pass
        assert name_col.content_width == len("queue-0000")  # the long name is gone: the column narrows

        built.clear()
        await pilot.press("ctrl+end")  # the last row scrolls into view: its cells are rebuilt then
        await settle(pilot)
        await pilot.pause(0.1)
        assert table.selected_key == "queue-0999"
        assert "queue-0999" in built
        assert "queue-0999" in screen_text(app)
        row = table.get_row("queue-0999")
        assert str(row[2]).replace(",", "").strip() != ""  # real cells, not blanks


async def test_sort_change_over_10k_rows_is_fast() -> None:
    big = big_snapshot(10_000, 50)
    app = make_app([make_snapshot(), big])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.show_view("unacked")
        app.action_refresh()
        await settle(pilot)
        table = app.panel().table
        assert table.row_count == table.limit
        started = time.monotonic()
        for _ in range(3):  # each sort replaces most of the rows
            await pilot.press("s")
            await pilot.pause()
        assert time.monotonic() - started < 6.0  # was ~15 s per sort with DataTable.remove_row
        assert table.row_count == min(10_000, table.limit)
        shown = table.shown_keys[:5]
        assert [table.get_row_index(k) for k in shown] == list(range(5))


async def test_changed_cells_are_repainted_without_a_full_table_redraw() -> None:
    first = make_snapshot()
    second = make_snapshot(taken_at=first.taken_at + 1, queues=(
        replace(first.queues[0], messages=777), *first.queues[1:]))
    app = make_app([first, second])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        table = app.panel().table
        assert "120" in screen_text(app)
        count = table._update_count
        app.action_refresh()
        await settle(pilot)
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "777" in text and " 120 " not in text  # the changed cell is on screen
        assert table._update_count == count  # ... and no table-wide cache invalidation was needed


def test_fit_widths_cuts_then_hides_by_priority_then_cuts_to_the_floor() -> None:
    from tui.widgets.keyed_table import Col, fit_widths

    cols = (Col("Name", "name", shrink=8, roomy=16), Col("Id", "id", priority=2), Col("Age", "age"),
            Col("Why", "why", priority=1, shrink=6, roomy=12))
    natural = [30, 8, 5, 20]
    assert fit_widths(natural, cols, 200, 2) == (natural, set())  # room: nothing cut or hidden
    assert fit_widths(natural, cols, 60, 2) == ([20, 8, 5, 19], set())  # the widest is cut first
    assert fit_widths(natural, cols, 40, 2) == ([16, 8, 5, 13], {1})  # then Id (priority 2) hides first
    assert fit_widths(natural, cols, 30, 2) == ([21, 8, 5, 20], {1, 3})  # then Why; Name gets the room back
    assert fit_widths(natural, cols, 20, 2) == ([11, 8, 5, 20], {1, 3})  # must-haves only: cut below roomy
    assert fit_widths(natural, cols, 30, 2, wide=True) == (natural, set())  # wide: every column whole


async def test_resize_refits_columns_without_building_cells() -> None:
    snaps = [make_snapshot(queues=queues(1000, long_name=True), taken_at=1_780_000_000.0)]
    app = make_app(snaps)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        panel = app.panel("queues")
        table = panel.table
        assert table.hidden_labels == ()
        built: list[str] = []
        original = panel.row_cells

        def spy(item: QueueInfo) -> tuple[Any, ...]:
            built.append(item.name)
            return original(item)

        panel.row_cells = spy  # type: ignore[method-assign]
        started = time.monotonic()
        await pilot.resize_terminal(60, 24)
        await settle(pilot)
        await pilot.pause(0.1)
        assert built == []  # widths come from the kept ones: a resize builds no cell
        assert time.monotonic() - started < 3.0
        assert table.hidden_labels and "Trend" in table.hidden_labels
        used = sum(c.get_render_width(table) for c in table.columns.values())
        assert used <= table.size.width - table.SCROLLBAR_ROOM  # fits: no sideways scroll
        assert "hidden" in screen_text(app)


CELLS = [
    Text("12,345", justify="right"), Text("queue-0001"), Text(""), Text("  padded  "),
    Text("trailing   ", justify="right"), Text("x" * 300), Text("ellipsis " * 30, overflow="ellipsis"),
    Text("crop " * 30, overflow="crop"), Text("宽字符的队列名称" * 6), Text("emoji 🚀 ok ✔ ⚠"),
    Text.assemble(("ORPHANED", "bold red"), " 3 unacked ", ("dim", "dim")),
    Text("styled base with spans", style="red on blue"), Text("7", style="bold #B93C5B", justify="right"),
    Text("emails ⚠ no consumer", style="bold #B93C5B"), Text("left", style="on red", justify="left"),
    Text("right  ", style="on red", justify="right"),
    Text("●", style="bold"), Text(" ", style="bold"), Text("x", justify="right"),  # the one-cell mark column
]


@pytest.mark.parametrize("width", [1, 2, 3, 4, 6, 12, 40, 171])
def test_one_line_cell_draws_what_rich_draws(width: int) -> None:
    """KeyedTable's fast one-line cell (``one_line_cell``) gives the segments DataTable's rich path gives."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.segment import Segment
    from rich.style import Style
    from textual.renderables.styled import Styled

    from tui.widgets.keyed_table import one_line_cell

    console = Console(width=200, force_terminal=True, color_system="truecolor", legacy_windows=False)
    pre = Style(color="white", bgcolor="black") + Style.from_meta({"row": 3, "column": 1})
    post = Style(bold=False, italic=True)
    for text in [*CELLS, CELLS[-1].copy()]:
        if text.plain == "styled base with spans":
            text.stylize("bold green", 0, 6)
        want = console.render_lines(Styled(Padding(text, (0, 1)), pre_style=pre, post_style=post),
                                    console.options.update_dimensions(width, 1).update(no_wrap=True))
        got = one_line_cell(console, text, width, 1, pre, post)
        if width < 3 or (width == 3 and text.cell_len > 1):  # no room inside the padding: rich's own path
            assert got is None
            continue
        assert [list(Segment.simplify(line)) for line in got] == [list(Segment.simplify(line)) for line in want], \
            (text.plain[:40], width)


async def test_a_view_shown_again_draws_from_its_caches_until_its_look_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switching back to a view whose rows did not change draws no table line afresh (Textual restyles the
    table on every focus change and DataTable dropped every render cache then), while a real change of
    look (a theme) still redraws every line in the new colours."""
    drawn: list[str] = []
    original = DataTable._render_line_in_row

    def counting(self: Any, row_key: Any, *args: Any, **kwargs: Any) -> Any:
        drawn.append(self.id or "")
        return original(self, row_key, *args, **kwargs)

    monkeypatch.setattr(DataTable, "_render_line_in_row", counting)
    app = make_app([make_snapshot(queues=queues(200), taken_at=1_780_000_000.0)])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        await pilot.pause(0.1)
        table = app.panel("queues").table
        assert table.has_focus and drawn.count("queues-table") > 30  # first sight: every visible row drawn
        before = screen_text(app)
        for _ in range(2):
            await pilot.press("3")
            await settle(pilot)
            await pilot.pause(0.1)
            drawn.clear()
            await pilot.press("1")
            await settle(pilot)
            await pilot.pause(0.1)
            assert table.has_focus and app.current_view == "queues"
            assert drawn.count("queues-table") == 0  # nothing changed: every line came from the caches
            assert screen_text(app) == before
        look = table._look
        app.theme = "textual-light"
        await settle(pilot)
        await pilot.pause(0.2)
        assert table._look != look  # the theme recoloured the table ...
        assert drawn.count("queues-table") > 30  # ... so every visible line was drawn again
