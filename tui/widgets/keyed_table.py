"""KeyedTable: a DataTable updated in place by row key, with filter, sort, marks and a row window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual._two_way_dict import TwoWayDict
from textual.binding import Binding, BindingType
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import Column, ColumnKey

from tui.format import safe_cell

MARK_COLUMN = "mark"
BUILD_NEW_ROWS = 1500
"""At most this many new rows get cells in one sync; more (a new sort or filter over a huge table) get
blank cells off screen, filled in when scrolled to."""
_STALE: tuple[object, ...] = (object(),)
"""Cached cells that never equal real ones: forces a redraw."""


@dataclass(frozen=True, slots=True)
class Col:
    """One column of a KeyedTable and how it gives way when the terminal is narrow.

    Columns are as wide as their widest cell (or ``width`` when fixed). When they do not all fit, the
    ``shrink`` columns are cut first (with "…", never below ``roomy``), then columns are hidden, the
    highest ``priority`` number first (the right-most first among equals), and only when every
    column left is a must-have (``priority`` 0) are the ``shrink`` columns cut down to ``shrink``.
    """

    label: str
    key: str
    width: int | None = None
    """Fixed width; None: sized to the content."""
    priority: int = 0
    """0: always shown; higher numbers are hidden first."""
    shrink: int | None = None
    """Narrowest width this column may be cut to ("…"); None: never cut."""
    roomy: int | None = None
    """Narrowest width it is cut to before another column is hidden (default: twice ``shrink``)."""

    @classmethod
    def of(cls, spec: Col | tuple[Any, ...]) -> Col:
        """A ``Col`` from itself or from a ``(label, key, width)`` tuple."""
        return spec if isinstance(spec, Col) else cls(*spec)

    @property
    def soft_floor(self) -> int | None:
        if self.shrink is None:
            return None
        return max(self.shrink, self.roomy if self.roomy is not None else 2 * self.shrink)


class _FitColumn(Column):
    """A DataTable column that KeyedTable can hide (no width at all) without removing it."""

    hidden: bool = False

    def get_render_width(self, data_table: DataTable[Any]) -> int:
        if self.hidden:
            return 0
        return super().get_render_width(data_table)


def fit_widths(natural: Sequence[int], cols: Sequence[Col], room: int, pad: int,
               wide: bool = False) -> tuple[list[int], set[int]]:
    """Column widths and the hidden column indexes for ``room`` cells (padding ``pad`` per column).

    Nothing is cut or hidden while everything fits, nor in ``wide`` mode (the table scrolls sideways).
    Cost: columns only (never rows).
    """
    widths = list(natural)
    hidden: set[int] = set()
    if wide or room <= 0:
        return widths, hidden

    def cut(floor_of: Any) -> list[int] | None:
        """Cut the widest shrinkable columns, level by level, to fit; None if the floors do not allow it."""
        out = list(natural)
        over = sum(out[j] + pad for j in range(len(out)) if j not in hidden) - room
        if over <= 0:
            return out
        floors = {j: min(out[j], floor_of(c)) for j, c in enumerate(cols)
                  if j not in hidden and floor_of(c) is not None}
        if sum(out[j] - floors[j] for j in floors) < over:
            return None
        while over > 0:  # one cell at a time off the widest (the right-most first): columns only
            top = max(out[j] for j in floors if out[j] > floors[j])
            for j in reversed(sorted(floors)):
                if out[j] == top and out[j] > floors[j]:
                    out[j] -= 1
                    over -= 1
                    if over <= 0:
                        break
        return out

    while True:
        got = cut(lambda c: c.soft_floor)
        if got is not None:
            return got, hidden
        candidates = [j for j, c in enumerate(cols) if c.priority > 0 and j not in hidden]
        if not candidates:
            break
        hidden.add(max(candidates, key=lambda j: (cols[j].priority, j)))
    got = cut(lambda c: c.shrink)
    if got is None:  # nothing fits even cut to the bone: the table scrolls sideways
        got = [min(n, c.shrink) if c.shrink is not None else n for n, c in zip(natural, cols, strict=True)]
    return got, hidden


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


def _cell_width(cell: Any) -> int:
    """Display width of a one-line cell (what DataTable's own measure gives, without a Console)."""
    if isinstance(cell, Text):
        return max((cell_len(line) for line in cell.plain.split("\n")), default=0)
    if isinstance(cell, str):
        return cell_len(cell)
    if isinstance(cell, Mark):
        return 1
    return cell_len(str(cell))


class KeepEnd(Text):
    """A cell whose last ``keep`` characters survive a cut: ``"w1@worker-prod…? +2"`` (the marker is the
    point of the cell, the name around it can give way)."""

    def __init__(self, text: str, keep: int, style: str = "") -> None:
        super().__init__(text, style=style, end="", no_wrap=True, overflow="ellipsis")
        self.keep = keep

    def cut(self, width: int) -> Text:
        """The plain Text drawn in ``width`` cells: the head cut with "…", the kept end whole."""
        plain = self.plain
        if cell_len(plain) <= width or self.keep <= 0 or self.keep >= len(plain):
            whole = self.copy()  # a plain Text (Text.copy builds the base class)
            return whole
        head, tail = self[: len(plain) - self.keep], self[len(plain) - self.keep:]
        head.truncate(max(1, width - cell_len(tail.plain)), overflow="ellipsis")
        head.append_text(tail)
        head.no_wrap, head.overflow, head.end = True, "ellipsis", ""
        return head

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield from Text.__rich_console__(self.cut(options.max_width), console, options)


def _one_line(cell: Any) -> Any:
    if isinstance(cell, str):
        return Text(cell, end="", no_wrap=True, overflow="ellipsis")
    if isinstance(cell, Text):
        cell.no_wrap = True
        cell.overflow = "ellipsis"
    return cell


def _sort_value(value: Any) -> tuple[int, Any]:
    """None sorts last; numbers and strings compare within their own kind."""
    if value is None:
        return (2, 0)
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


def one_line_cell(console: Any, text: Text, width: int, padding: int, pre_style: Style,
                  post_style: Style) -> list[list[Segment]] | None:
    """A one-line DataTable cell, as ``DataTable._render_cell`` draws it with rich's
    ``render_lines(Styled(Padding(text, (0, padding)), pre, post))``, at a third of the cost (rich
    renders, pads and crops through a stack of generators: a third of the time of a view switch that
    repaints fresh rows). None when the text needs rich's full wrap (newlines, tabs, full
    justification, a one-cell column the text does not fit): the caller falls back to rich. The mark
    column is one cell wide: its cells went through rich on every fresh paint, ~1,300 a view switch at S1.
    tests/tui/test_keyed_table_window.py compares the two on every justification and overflow."""
    plain = text.plain
    justify = text.justify
    inner = width - 2 * padding
    if inner < 1 or "\n" in plain or "\t" in plain or justify not in (None, "default", "left", "right"):
        return None
    if inner < 2 and text.cell_len > inner:  # a one-cell column (the mark column) cut: rich's own path
        return None
    line = text
    if justify == "right" and plain != plain.rstrip():
        line = line.copy()
        line.rstrip()
    if line.cell_len > inner:
        line = line.copy()
        line.truncate(inner, overflow=text.overflow or "fold")
    if justify in ("left", "right") and line.cell_len < inner:  # rich pads inside the Text (its style)
        line = line.copy()
        if justify == "left":
            line.truncate(inner, pad=True)
        else:
            line.pad_left(inner - line.cell_len)
    used = line.cell_len
    if line.style:  # rich renders the line joined (the Text's own style becomes its last span)
        line = Text("\n").join([line])
    segments: list[Segment] = [Segment(" " * padding)] if padding else []
    segments.extend(line.render(console))
    tail = width - padding - used
    if tail > 0:
        segments.append(Segment(" " * tail))
    return [list(Segment.apply_style(segments, style=pre_style, post_style=post_style))]


class KeyedTable(DataTable[Any]):
    """A row-cursor DataTable whose rows are synchronised by key instead of being rebuilt.

    ``sync(rows)`` removes vanished keys, updates only changed cells, adds new rows, re-orders by rank
    and puts the cursor back on the row it was on, so refreshes never lose the selection or scroll.
    Only the first ``limit`` rows (after filter and sort) are shown, so huge snapshots stay cheap.

    Columns fit the width (``fit_widths``: cut with "…", then the least important hidden; ``wide``
    shows every column whole and scrolls sideways); ``hidden_labels`` says what is hidden.
    """

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]
    SCROLLBAR_ROOM = 2
    """Cells kept free for the vertical scrollbar when fitting the columns."""

    class Fitted(Message):
        """The hidden columns changed (a resize, the wide toggle, new content)."""

        def __init__(self, table: KeyedTable) -> None:
            super().__init__()
            self.table = table

    def __init__(self, columns: Sequence[Col | tuple[Any, ...]], *, limit: int = 500,
                 id: str | None = None, show_header: bool = True) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_header=show_header)
        self.column_spec = tuple(Col.of(c) for c in columns)
        self.wide = False
        """Every column at its full width, scrolling sideways (``ctrl+w``)."""
        self.hidden_labels: tuple[str, ...] = ()
        """Labels of the columns hidden to fit the width."""
        self._labels: dict[str, str] = {c.key: c.label for c in self.column_spec}
        self.natural_hints: dict[str, int] = {}
        """Column key -> the width its whole content needs, when the panel cuts the cells itself."""
        self.limit = limit
        self.marked: set[str] = set()
        self.items: dict[str, Any] = {}
        self.total_rows = 0
        """Rows matching the filter (may exceed what is shown)."""
        self.all_rows = 0
        """Rows before filtering."""
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._widths: dict[str, tuple[int, ...]] = {}
        self._width_counts: list[dict[int, int]] = [{} for _ in columns]
        """Per column: cell width -> rows with it (the widest is the natural width, without a pass over rows)."""
        """Display width of each cached cell, per row key (the auto columns' widths come from these)."""
        self._dirty: set[str] = set()
        """Rows outside the window whose model changed since their cells were built."""
        self._source: RowSource | None = None
        self._pending_rows: dict[str, set[str]] = {}
        """Row key -> columns written since the last _flush_rows."""
        self._col_keys = tuple(c.key for c in self.column_spec)
        self._blank: tuple[Any, ...] = tuple(Text("") for _ in self.column_spec)
        self._order: list[str] = []

    def on_mount(self) -> None:
        self.add_column(" ", key=MARK_COLUMN, width=1)
        for col in self.column_spec:
            key = self.add_column(col.label, key=col.key, width=col.width)
            c = self.columns[key]
            self.columns[key] = _FitColumn(c.key, c.label, c.width, c.content_width, c.auto_width)

    _drawn_size: tuple[int, int] | None = None
    """The size DataTable's render caches were last invalidated for (``on_resize``)."""

    def on_resize(self, event: events.Resize) -> None:
        # DataTable's own handler (run after this one) bumps its update count, a part of every render
        # cache key, on each Resize. A view switch sends two to the table: 0x0 when its view is hidden
        # and the size it had when shown again, so every visible line was rendered again although
        # nothing had changed. Only a new non-zero size goes through (_fit_columns bumps the count itself
        # when a column width changed; it skips a hidden table, refitted when shown).
        size = (event.size.width, event.size.height)
        if not all(size) or size == self._drawn_size:
            event.prevent_default()
        else:
            self._drawn_size = size
        self._fit_columns()

    _look: tuple[Any, ...] | None = None
    """The styles the render caches were filled under (``_restyled``)."""
    _restyle_pending = False

    def notify_style_update(self) -> None:
        # Textual calls this after every restyle, changed or not, and DataTable then drops every render
        # cache. A view switch restyles the table twice (blurred when hidden, focused when shown), so
        # the table shown again drew every visible line afresh although it looked as before. The
        # caches are dropped at the next render instead, and only when the look they were made under
        # (the table's style and its component styles) is not the look now.
        Widget.notify_style_update(self)
        self._restyle_pending = True
        self.refresh()

    def _restyled(self) -> None:
        self._restyle_pending = False
        look = (self.rich_style, self.background_colors,
                *(self.get_component_rich_style(name) for name in sorted(self.COMPONENT_CLASSES)))
        if look != self._look:
            self._look = look
            DataTable.notify_style_update(self)

    def render_lines(self, crop: Region) -> list[Strip]:
        if self._restyle_pending:
            self._restyled()
        return super().render_lines(crop)

    def toggle_wide(self) -> None:
        """Wide mode on/off: every column whole (scroll sideways with ← →) · fitted to the width."""
        self.wide = not self.wide
        self._fit_columns()
        if not self.wide:
            self.scroll_x = 0

    def set_sort_indicator(self, key: str | None, descending: bool) -> None:
        """Show ▼ (descending) or ▲ (ascending) after the label of the sorted column ``key``."""
        labels = {c.key: c.label + ((" ▼" if descending else " ▲") if c.key == key else "")
                  for c in self.column_spec}
        if labels == self._labels:
            return
        self._labels = labels
        for col in self.column_spec:
            column = self.columns.get(ColumnKey(col.key))
            if column is not None:
                column.label = Text(labels[col.key])
        self._update_count += 1
        self._fit_columns(force=True)
        self.refresh()

    def _render_cell(self, row_index: int, column_index: int, base_style: Any, width: int,
                     cursor: bool = False, hover: bool = False) -> Any:
        key = self._column_locations.get_key(column_index)
        column = self.columns.get(key) if key is not None else None
        if isinstance(column, _FitColumn) and column.hidden:  # a hidden column draws nothing
            height = self.header_height if row_index == -1 else 1
            # no segment at all: an unstyled empty one crashed Textual's NO_COLOR (monochrome) filter
            return [[] for _ in range(max(1, height))]
        if row_index < 0 or column_index < 0 or row_index < self.fixed_rows or column_index < self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        cache_key = (row_key, key, base_style, cursor, hover, self._show_hover_cursor, self._update_count,
                     self._pseudo_class_state)  # DataTable's cell cache key (_flush_rows discards by it)
        cache = self._cell_render_cache
        if cache_key in cache:
            return cache[cache_key]
        row = self.rows.get(row_key) if row_key is not None else None
        if row is None or row.height != 1:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cell = self._get_row_renderables(row_index).cells[column_index]
        if isinstance(cell, Mark):
            cell = cell.__rich__()
        elif isinstance(cell, KeepEnd):
            cell = cell.cut(width - 2 * self.cell_padding)
        if type(cell) is not Text:  # other renderables render through rich
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre_style = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
        lines = one_line_cell(self.app.console, cell, width, self.cell_padding, pre_style, post_style)
        if lines is None:  # wrapping, tabs, full justification: rich's own path
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cache[cache_key] = lines
        return lines

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

        Filtering and sorting look at every item. Cells are built for new rows and for the rows on
        screen (plus a page either side); rows further away keep their last cells and are rebuilt when
        scrolled to (``_refresh_window``), so a 1,000-row table costs one screenful per refresh.
        Column widths come from the cells' own widths, kept per row: DataTable's ``update_width``
        re-measures a whole column for every narrowed cell (quadratic at 1,000 rows).
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
        self._source = source
        with self.app.batch_update():
            count = self._update_count
            stale = [k for k in self._cells if k not in wanted_keys]
            if stale:
                self._remove_rows(stale)
            lo, hi = self._window(selected_index if selected in wanted_keys else None,
                                  order.index(selected) if selected in wanted_keys else None)
            added = False
            # New rows get their real cells (right column widths from the start) unless a sort or a
            # filter brings thousands at once: then the off-screen ones are built when scrolled to.
            build_all = sum(1 for k in order if k not in self._cells) <= BUILD_NEW_ROWS
            for index, (key, item) in enumerate(keyed):
                old = self._cells.get(key)
                in_window = lo <= index < hi
                if old is None:
                    if in_window or build_all:
                        cells = self._build(source, item)
                    else:  # built when scrolled to: a new sort or filter costs one screenful
                        cells = self._blank
                        self._dirty.add(key)
                    self.add_row(Mark(key, key in self.marked), *cells, key=key)
                    self._store(key, cells)
                    added = True
                    continue
                if in_window:  # marks change through toggle_mark/clear_marks; this only double-checks
                    mark = Mark(key, key in self.marked)
                    if self.get_cell(key, MARK_COLUMN) != mark:
                        self.update_cell(key, MARK_COLUMN, mark)
                    self._update_row(key, self._build(source, item), old)
                else:
                    self._dirty.add(key)
            if added:
                # Textual would measure every cell of the new rows again (one Console.size per cell);
                # the widths are ours (_fit_columns), and every row is one line high.
                self._new_rows.clear()
            if added or stale or order != self._order:  # (the table's order is ours since the last sync)
                rank = {k: i for i, k in enumerate(order)}
                self.sort(MARK_COLUMN, key=lambda m: rank[m.key])
            self._order = order
            self._fit_columns()
            self._flush_rows(count)
            if selected is not None and selected in wanted_keys:
                index = order.index(selected)
                if index != self.cursor_row:
                    self.move_cursor(row=index, scroll=False, animate=False)
            elif order and (stale or selected_index >= len(order)):
                self.move_cursor(row=min(selected_index, len(order) - 1), scroll=False, animate=False)

    def _remove_rows(self, keys: list[str]) -> None:
        """Drop rows in one pass (``DataTable.remove_row`` re-indexes every row per call: quadratic
        when a new sort or filter replaces thousands)."""
        for key in keys:
            del self._cells[key]
            self._count_widths(self._widths.pop(key, None), None)
            self._dirty.discard(key)
        if len(keys) <= 8:
            for key in keys:
                self.remove_row(key)
            return
        gone = set(keys)
        locations = self._row_locations
        keep = sorted((rk for rk in self._data if rk.value not in gone), key=locations.get)
        for rk in [rk for rk in self._data if rk.value in gone]:
            del self.rows[rk]
            del self._data[rk]
        self._row_locations = TwoWayDict({rk: i for i, rk in enumerate(keep)})
        self._updated_cells = {c for c in self._updated_cells if c.row_key.value not in gone}
        self.cursor_coordinate = self.cursor_coordinate  # clamped to the rows left
        self._update_count += 1
        self._require_update_dimensions = True
        self.refresh(layout=True)

    # ---- the window and the widths ---------------------------------------------------------------
    def _window(self, cursor: int | None = None, new_cursor: int | None = None) -> tuple[int, int]:
        """Display rows whose cells are kept fresh: the viewport and a quarter page either side (and the
        cursor's row, which the detail and action keys read). Rows scrolled to beyond it are rebuilt
        before the frame that shows them (``watch_scroll_y``); a page either side built ~90 rows a refresh
        at 200x50 for 44 on screen."""
        height = max(self.size.height, 20)
        margin = max(5, height // 4)
        top = int(self.scroll_y)
        if new_cursor is not None and cursor is not None:
            top += new_cursor - cursor  # the cursor's row moves: the viewport follows it below
        return max(0, top - margin), top + height + margin

    def _build(self, source: RowSource, item: Any) -> tuple[Any, ...]:
        # str cells become Text: DataTable would parse them as markup on every render (and a queue
        # named "[bold]x" would lose its brackets).
        # One line, cut with "…" when the column is narrower than the cell (the detail shows it whole).
        return tuple(_one_line(c) for c in (safe_cell(c) for c in source.row_cells(item)))

    def _store(self, key: str, cells: tuple[Any, ...]) -> None:
        self._cells[key] = cells
        widths = tuple(_cell_width(c) for c in cells)
        self._count_widths(self._widths.get(key), widths)
        self._widths[key] = widths

    def _count_widths(self, old: tuple[int, ...] | None, new: tuple[int, ...] | None) -> None:
        if old == new:
            return
        for j, counts in enumerate(self._width_counts):
            if old is not None and j < len(old):
                left = counts.get(old[j], 0) - 1
                if left > 0:
                    counts[old[j]] = left
                else:
                    counts.pop(old[j], None)
            if new is not None and j < len(new):
                counts[new[j]] = counts.get(new[j], 0) + 1

    def _update_row(self, key: str, cells: tuple[Any, ...], old: tuple[Any, ...]) -> None:
        if old == cells:
            self._dirty.discard(key)
            return
        # Straight into the table's data, not update_cell: that bumps DataTable's update count, which
        # keys every render cache, so one changed cell re-rendered every visible line. _flush_rows drops
        # the caches of the changed rows only and repaints just those lines.
        data = self._data[key]  # type: ignore[index]  # str looks up a RowKey
        before = old if len(old) == len(cells) else (_STALE[0],) * len(cells)  # _STALE: redraw every cell
        changed = self._pending_rows.setdefault(key, set())
        for col, new, was in zip(self._col_keys, cells, before, strict=True):
            if new != was:
                data[col] = new  # type: ignore[index]
                changed.add(col)
        self._store(key, cells)
        self._dirty.discard(key)

    def _flush_rows(self, update_count: int) -> None:
        """Repaint the rows whose cells changed since ``update_count`` was read."""
        rows, self._pending_rows = self._pending_rows, {}
        if not rows:
            return
        if self._update_count != update_count:  # rows were added/removed/sorted: every cache is stale
            self.refresh()
            return
        indexes = {i for i in (self._row_locations.get(k) for k in rows) if i is not None}  # type: ignore[call-overload]
        header = self.header_height if self.show_header else 0
        lines = {i + header for i in indexes}

        def by_row(ck: Any) -> bool:
            return getattr(ck[0], "value", ck[0]) in rows

        def by_cell(ck: Any) -> bool:  # unchanged cells of a changed row keep their rendering
            cols = rows.get(getattr(ck[0], "value", ck[0]))
            return cols is not None and getattr(ck[1], "value", ck[1]) in cols

        for cache, stale in ((self._cell_render_cache, by_cell), (self._row_render_cache, by_row),
                             (self._row_renderable_cache, lambda ck: ck[1] in indexes),
                             (self._line_cache, lambda ck: ck[0] in lines)):
            for ck in [ck for ck in cache.keys() if stale(ck)]:
                cache.discard(ck)
        top = int(self.scroll_y)
        shown = range(top, top + max(1, self.size.height) - header)
        for index in indexes:
            if index in shown:  # off-screen rows are drawn afresh when scrolled to (their caches are gone)
                self.refresh_row(index)

    def _fit_columns(self, force: bool = False) -> None:
        """Column widths: the widest cell of each column (or its label), from the kept widths, then
        fitted to the table's width (``fit_widths``). Cost: columns x distinct widths, never rows."""
        if not self.columns or not self.size.width:  # not laid out, or its view hidden: fitted when shown
            return
        spec = self.column_spec
        widths, hidden = self.fit(self.natural_widths())
        changed = force
        for j, col in enumerate(spec):
            column = self.columns.get(ColumnKey(col.key))
            if column is None:
                continue
            if isinstance(column, _FitColumn) and column.hidden != (j in hidden):
                column.hidden = j in hidden
                changed = True
            if col.width is None and column.content_width != widths[j]:
                column.content_width = widths[j]
                changed = True
            elif col.width is not None and column.width != widths[j]:
                column.width = widths[j]
                changed = True
        labels = tuple(spec[j].label for j in sorted(hidden))
        if labels != self.hidden_labels:
            self.hidden_labels = labels
            self.post_message(self.Fitted(self))
        if changed:
            self._update_count += 1  # render caches are keyed by it
            self._require_update_dimensions = True  # virtual size on the next idle
            self.refresh()

    def natural_widths(self) -> list[int]:
        """Each column's width with nothing cut: its widest kept cell, its label (or its fixed width)."""
        spec = self.column_spec
        n = len(spec)
        natural = [max(counts, default=0) for counts in self._width_counts]
        natural = (natural + [0] * n)[:n]
        return [self.label_width(col.key, max(natural[j], self.natural_hints.get(col.key, 0)))
                if col.width is None else col.width for j, col in enumerate(spec)]

    def label_width(self, key: str, content: int = 0) -> int:
        """``content`` widened to the column's header label (with its sort arrow)."""
        return max(content, _cell_width(self._labels[key]))

    def fit(self, natural: Sequence[int]) -> tuple[list[int], set[int]]:
        """(widths, hidden column indexes) for ``natural`` widths in this table's width now."""
        pad = 2 * self.cell_padding
        room = self.size.width - self.SCROLLBAR_ROOM - (1 + pad) if self.size.width else 0
        return fit_widths(natural, self.column_spec, room, pad, wide=self.wide)

    def _refresh_window(self) -> None:
        """Rebuild the rows that scrolled into the window with stale cells."""
        source = self._source
        if source is None or not self._dirty:
            return
        lo, hi = self._window()
        keys = [k for k in self._order[lo:hi] if k in self._dirty]
        if not keys:
            return
        with self.app.batch_update():
            count = self._update_count
            for key in keys:
                item = self.items.get(key)
                old = self._cells.get(key)
                if item is None or old is None:
                    self._dirty.discard(key)
                    continue
                self._update_row(key, self._build(source, item), old)
            self._fit_columns()
            self._flush_rows(count)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._dirty and int(old_value) != int(new_value):
            self.call_later(self._refresh_window)

    def reset(self) -> None:
        """Forget every row, mark and cached cell (a new context shows a different system)."""
        self.clear()
        self._cells.clear()
        self._widths.clear()
        self._width_counts = [{} for _ in self.column_spec]
        self._dirty.clear()
        self._order = []
        self.items = {}
        self.marked.clear()
        self.total_rows = self.all_rows = 0

    def invalidate(self) -> None:
        """Redraw every cell on the next ``sync`` (e.g. after a theme change recoloured the styles)."""
        self._cells = dict.fromkeys(self._cells, _STALE)
        self._dirty.update(self._cells)

    def _current_order(self) -> list[str]:
        return [row.key.value for row in self.ordered_rows if row.key.value is not None]
