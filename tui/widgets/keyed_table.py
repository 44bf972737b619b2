"""KeyedTable: a DataTable updated in place by row key, with filter, sort, marks and a row window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rich.text import Text
from textual.widgets import DataTable

from tui.format import safe_cell

MARK_COLUMN = "mark"
_STALE: tuple[object, ...] = (object(),)
"""Cached cells that never equal real ones: forces a redraw."""


@dataclass(frozen=True, slots=True)
class Mark:
    """First-column cell: shows whether a row is marked for a bulk action, and carries the row key."""

    key: str
    marked: bool = False

    def __rich__(self) -> Text:
        return Text("●" if self.marked else " ", style="bold")


class RowSource(Protocol):
    """How a panel turns its model objects into rows (only the shown window gets cells built)."""

    def row_key(self, item: Any) -> str:
        """Stable row key (queue name, delivery tag, hostname, task id)."""
        ...

    def row_cells(self, item: Any) -> tuple[Any, ...]:
        """Display cells, one per column after the mark column."""
        ...

    def row_text(self, item: Any) -> str:
        """Lower-case text the ``/`` filter matches against."""
        ...

    def row_sort(self, item: Any, sort_by: str) -> Any:
        """Raw value to sort by."""
        ...


def _sort_value(value: Any) -> tuple[int, Any]:
    """None sorts last; numbers and strings compare within their own kind."""
    if value is None:
        return (2, 0)
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


class KeyedTable(DataTable[Any]):
    """A row-cursor DataTable whose rows are synchronised by key instead of being rebuilt.

    ``sync(rows)`` removes vanished keys, updates only changed cells, adds new rows, re-orders by rank
    and puts the cursor back on the row it was on, so refreshes never lose the selection or scroll.
    Only the first ``limit`` rows (after filter and sort) are shown, so huge snapshots stay cheap.
    """

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[tuple[str, str, int | None]], *, limit: int = 500,
                 id: str | None = None, show_header: bool = True) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_header=show_header)
        self.column_spec = tuple(columns)
        self.limit = limit
        self.marked: set[str] = set()
        self.items: dict[str, Any] = {}
        self.total_rows = 0
        """Rows matching the filter (may exceed what is shown)."""
        self.all_rows = 0
        """Rows before filtering."""
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        self.add_column(" ", key=MARK_COLUMN, width=1)
        for label, key, width in self.column_spec:
            self.add_column(label, key=key, width=width)

    @property
    def selected_key(self) -> str | None:
        """Row key under the cursor, or None when the table is empty."""
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the table during a resize
            return None

    @property
    def selected_item(self) -> Any:
        """Model object under the cursor, or None."""
        key = self.selected_key
        return None if key is None else self.items.get(key)

    @property
    def shown_keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._order)

    def select_key(self, key: str) -> bool:
        """Put the cursor on the row ``key`` (scrolling it into view); False when it is not shown."""
        if key not in self.items or key not in self.rows:
            return False
        self.move_cursor(row=self.get_row_index(key), animate=False)
        return True

    def marked_items(self) -> list[Any]:
        """Model objects of the marked rows still present, in display order."""
        return [self.items[k] for k in self._order if k in self.marked and k in self.items]

    def toggle_mark(self) -> None:
        """Mark or unmark the row under the cursor, then move down one row."""
        key = self.selected_key
        if key is None:
            return
        if key in self.marked:
            self.marked.discard(key)
        else:
            self.marked.add(key)
        self.update_cell(key, MARK_COLUMN, Mark(key, key in self.marked))
        if self.cursor_row < self.row_count - 1:
            self.move_cursor(row=self.cursor_row + 1)

    def clear_marks(self) -> None:
        """Unmark every row."""
        for key in list(self.marked):
            if key in self.rows:
                self.update_cell(key, MARK_COLUMN, Mark(key, False))
        self.marked.clear()

    def sync(self, items: Sequence[Any], source: RowSource, *, filter_text: str = "",
             sort_by: str | None = None, reverse: bool = False) -> None:
        """Show ``items`` (filtered, sorted, windowed), changing only what differs from the screen.

        Filtering and sorting look at every item; cells are only built for the shown window, so a
        10,000-row snapshot costs one sort, not 10,000 rendered rows.
        """
        self.all_rows = len(items)
        needle = filter_text.strip().lower()
        wanted = [it for it in items if needle in source.row_text(it)] if needle else list(items)
        if sort_by is not None:
            wanted.sort(key=lambda it: _sort_value(source.row_sort(it, sort_by)), reverse=reverse)
            if reverse:  # keep unknown values last even when descending
                wanted.sort(key=lambda it: source.row_sort(it, sort_by) is None)
        self.total_rows = len(wanted)
        wanted = wanted[: self.limit]
        keyed = [(source.row_key(it), it) for it in wanted]
        order = [k for k, _ in keyed]
        wanted_keys = set(order)
        selected = self.selected_key
        selected_index = self.cursor_row
        self.marked &= {source.row_key(it) for it in items} if self.marked else set()
        self.items = dict(keyed)
        with self.app.batch_update():
            stale = [k for k in self._cells if k not in wanted_keys]
            rebuilt = len(stale) > 32 and 2 * len(stale) > len(self._cells)
            scroll_y = self.scroll_y
            if rebuilt:
                # DataTable.remove_row is O(rows); past a few dozen removals a rebuild is far cheaper.
                self.clear()
                self._cells.clear()
            else:
                for key in stale:
                    self.remove_row(key)
                    del self._cells[key]
            col_keys = [c[1] for c in self.column_spec]
            for key, item in keyed:
                cells = tuple(safe_cell(c) for c in source.row_cells(item))
                mark = Mark(key, key in self.marked)
                old = self._cells.get(key)
                if old is None:
                    self.add_row(mark, *cells, key=key)
                elif old == _STALE:
                    for col, new in zip(col_keys, cells, strict=True):
                        self.update_cell(key, col, new, update_width=True)
                else:
                    if self.get_cell(key, MARK_COLUMN) != mark:
                        self.update_cell(key, MARK_COLUMN, mark)
                    if old != cells:
                        for col, new, was in zip(col_keys, cells, old, strict=True):
                            if new != was:
                                self.update_cell(key, col, new, update_width=True)
                self._cells[key] = cells
            if order != self._current_order():
                rank = {k: i for i, k in enumerate(order)}
                self.sort(MARK_COLUMN, key=lambda m: rank[m.key])
            self._order = order
            if selected is not None and selected in wanted_keys:
                index = order.index(selected)
                if index != self.cursor_row:
                    self.move_cursor(row=index, scroll=False, animate=False)
            elif order and (rebuilt or selected_index >= len(order)):
                self.move_cursor(row=min(selected_index, len(order) - 1), scroll=False, animate=False)
            if rebuilt:
                self.scroll_to(y=scroll_y, animate=False, immediate=True)

    def reset(self) -> None:
        """Forget every row, mark and cached cell (a new context shows a different system)."""
        self.clear()
        self._cells.clear()
        self._order = []
        self.items = {}
        self.marked.clear()
        self.total_rows = self.all_rows = 0

    def invalidate(self) -> None:
        """Redraw every cell on the next ``sync`` (e.g. after a theme change recoloured the styles)."""
        self._cells = dict.fromkeys(self._cells, _STALE)

    def _current_order(self) -> list[str]:
        return [row.key.value for row in self.ordered_rows if row.key.value is not None]
