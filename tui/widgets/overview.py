"""The Overview (view ``0``, the first screen): problems first, then a compact picture of the system.

Top: one line per problem (``overview_model.problems``), errors first, in a KeyedTable so the cursor,
``enter`` (jump to the row in its view, where that view's action keys work) and the mouse behave like
every other view. The table is sized to its rows (at most about half the panel): the problems never
scroll away behind the summaries. With nothing wrong it is one "all clear" line.

Below: a grid of sections (top queues by backlog and age, workers, task states, throughput
sparklines) in 2x2, or on wide terminals 3 columns over a full-width throughput row; each section fills its cell and shows as many rows
as fit. Sections render from the last snapshot only when painted, so a hidden overview costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Grid
from textual.widget import Widget
from textual.widgets import DataTable

from collectors.core.models import Snapshot
from tui.format import fmt_int, fmt_oldest_summary, fmt_rate, safe, sparkline, truncate
from tui.widgets.keyed_table import Col, KeyedTable
from tui.widgets.overview_model import Problem, Totals, problems, worker_state
from tui.widgets.panels import CELL_MAX, Colors, Panel

WIDE = 160
"""From this many columns the section grid has 3 columns over a full-width throughput row (else 2x2)."""

VIEW_LABELS = {"queues": "Queues", "unacked": "Unacked", "workers": "Workers", "tasks": "Tasks",
               "poison": "Poison", "quarantine": "Quarantine"}


def columns_text(header: tuple[str, ...] | None, rows: list[tuple[Text | str, ...]], justify: str,
                 width: int, flex: int = 0) -> Text:
    """Rows as aligned columns in one Text (``justify``: one ``l``/``r`` per column; column ``flex``
    is cut to make the line fit ``width``). Much cheaper to paint than a rich Table every refresh."""
    cells = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    head = [Text(h, style="bold") for h in header] if header else None
    all_rows = ([head] if head else []) + cells
    if not all_rows:
        return Text()
    n = len(justify)
    widths = [max(r[j].cell_len for r in all_rows) for j in range(n)]
    over = sum(widths) + (n - 1) - width
    if over > 0:
        widths[flex] = max(3, widths[flex] - over)
    out = Text(no_wrap=True, overflow="crop")
    for i, row in enumerate(all_rows):
        if i:
            out.append("\n")
        for j, cell in enumerate(row):
            if j:
                out.append(" ")
            piece = cell.copy()
            if piece.cell_len > widths[j]:
                piece.truncate(widths[j], overflow="ellipsis")
            pad = " " * (widths[j] - piece.cell_len)
            if justify[j] == "r":
                out.append(pad)
                out.append_text(piece)
            else:
                out.append_text(piece)
                if j < n - 1:
                    out.append(pad)
    return out


class OverviewSection(Widget):
    """One grid cell: a titled text built for the cell's current size.

    ``rebuild`` (each refresh, while the Overview shows) builds the text and repaints only when it
    differs from what is shown: an idle system's Workers and Tasks cells cost nothing per refresh, and
    the repaint of one that changed goes through Textual's own Content (one ``Text``; a rich ``Group``
    took the slower rich-renderable path)."""

    DEFAULT_CSS = """
    OverviewSection {
        height: 1fr;
        border: round $primary 30%;
        border-title-color: $primary;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, title: str, build: Callable[[int, int], RenderableType], *, id: str) -> None:  # noqa: A002
        super().__init__(id=id)
        self.border_title = title
        self._build = build
        self._shown: Text | None = None
        self._shown_key: tuple[Any, ...] | None = None

    def _text(self) -> Text:
        size = self.content_region.size if self.is_mounted else self.size
        return as_text(self._build(max(1, size.width), max(1, size.height)))

    def rebuild(self) -> None:
        """Build for the current size; repaint only when the text (characters or styles) changed."""
        text = self._text()
        key = (text.plain, tuple(text.spans), text.style)
        if key == self._shown_key:
            return
        self._shown, self._shown_key = text, key
        self.refresh()

    def render(self) -> RenderableType:
        if self._shown is None or self._shown_key is None:
            self._shown = self._text()
        return self._shown

    def on_resize(self, event: events.Resize) -> None:
        self._shown_key = None  # built for another size
        self._shown = None


def as_text(renderable: RenderableType) -> Text:
    """A section's renderable (a Text, or a Group of Texts, one per line block) as one Text."""
    if isinstance(renderable, Text):
        return renderable
    if isinstance(renderable, Group):
        parts = [as_text(r) for r in renderable.renderables]
        out = Text("\n").join(parts)
        out.no_wrap, out.overflow = True, "ellipsis"  # a line wider than the cell ends in "…"
        return out
    raise TypeError(f"an overview section builds Text, not {type(renderable).__name__}")


class OverviewPanel(Panel, inherit_bindings=False):
    """Problems first (actionable lines), then top queues, workers, task states and throughput."""

    VIEW = "overview"
    TITLE = "Overview"
    EMPTY = "waiting for the first refresh…"
    COLUMNS = (Col("Problem", "label"), Col("What · then", "text", shrink=20))
    """The text is whole in the cell; the table cuts it to the width ("…")."""
    SORTS = ()
    BINDINGS: ClassVar[list[BindingType]] = []

    DEFAULT_CSS = """
    OverviewPanel #overview-table { height: auto; max-height: 50%; }
    OverviewPanel #overview-grid { height: 1fr; grid-size: 2; grid-gutter: 0 0; min-height: 4; }
    OverviewPanel #overview-grid.-wide { grid-size: 3; grid-rows: 1fr 7; }
    OverviewPanel #overview-grid.-wide #ov-throughput { column-span: 3; }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.totals = Totals()
        self.problems: list[Problem] = []
        self._text_width = 60

    def compose(self) -> ComposeResult:
        yield KeyedTable(self.COLUMNS, limit=200, id="overview-table", show_header=False)
        with Grid(id="overview-grid"):
            yield OverviewSection("Top queues", self._queues_section, id="ov-queues")
            yield OverviewSection("Workers", self._workers_section, id="ov-workers")
            yield OverviewSection("Tasks", self._tasks_section, id="ov-tasks")
            yield OverviewSection("Throughput", self._throughput_section, id="ov-throughput")

    # ---- data -------------------------------------------------------------------------------
    def show_snapshot(self, snapshot: Snapshot, *, force: bool = False) -> None:
        self.totals.add(snapshot)  # the sparklines need every refresh, shown or not (cheap sums)
        super().show_snapshot(snapshot, force=force)

    def reset(self) -> None:
        self.totals.reset()
        self.problems = []
        super().reset()

    def compute_problems(self, snapshot: Snapshot) -> list[Problem]:
        """The problems of ``snapshot`` with this app's delivery counts and the recent failure rate."""
        deliveries = getattr(self.app, "deliveries_of", None)
        return problems(snapshot, failure_rate=self.totals.failure_rate(), deliveries_of=deliveries)

    def prepare(self, snapshot: Snapshot) -> None:
        super().prepare(snapshot)
        # mark (1+2) + label (14+2) + padding of the text column (2) + borders (2)
        self._text_width = max(20, self.size.width - 23) if self.size.width else 60

    def items_of(self, snapshot: Snapshot) -> list[Problem]:
        self.problems = self.compute_problems(snapshot)
        if self.problems:
            return self.problems
        return [self._all_clear(snapshot)]

    def _all_clear(self, snap: Snapshot) -> Problem:
        live = sum(1 for w in snap.workers if worker_state(w) == "responding")
        waiting = sum(q.messages for q in snap.queues)
        text = (f"nothing wrong: {len(snap.queues):,} queues ({waiting:,} waiting), {live}/{len(snap.workers)} "
                f"workers responding, no orphan, no poison suspect")
        return Problem("ok", "warning", "✔ ALL CLEAR", text, None, None, "")

    def row_key(self, item: Problem) -> str:
        return item.key

    def row_text(self, item: Problem) -> str:
        return f"{item.label} {item.text}".lower()

    def row_cells(self, p: Problem) -> tuple[Any, ...]:
        c = self.c
        if p.key == "ok":
            return (Text(p.label, style=c.success), Text(truncate(p.text, CELL_MAX)))
        style = c.error if p.severity == "error" else c.warning
        text = Text(safe(p.text))
        where = f"enter → {VIEW_LABELS.get(p.view or '', '')}" if p.view else ""
        then = " · ".join(x for x in (where, p.hint) if x)
        if then:
            text.append(f"  {then}", style=c.muted)
        text.truncate(CELL_MAX, overflow="ellipsis")
        return (Text(p.label, style=style), text)

    def resync(self) -> None:
        super().resync()
        if self.snapshot is not None and self.is_mounted:
            for section in self.query(OverviewSection):
                section.rebuild()

    def _update_title(self) -> None:
        n = len(self.problems)
        errors = sum(1 for p in self.problems if p.severity == "error")
        title = "Overview · " + (f"{n} problem{'s' if n != 1 else ''}" + (f" ({errors} serious)" if errors else "")
                                 if n else "all clear")
        item = self.table.selected_item if self.is_mounted else None
        subtitle = (f"enter → {VIEW_LABELS.get(item.view, item.view)}: {item.hint}"
                    if isinstance(item, Problem) and item.view else "")
        self.set_titles(Text(title), subtitle)

    def _update_note(self) -> None:
        note = self.query_one(".panel-note") if self.query(".panel-note") else None
        if note is not None:
            note.display = False

    def tab_label(self) -> tuple[str, bool]:
        """(tab label, alert) for the dashboard's tab bar."""
        errors = sum(1 for p in self.problems if p.severity == "error")
        if not self.problems:
            return "Overview", False
        return f"Overview ⚠{len(self.problems)}", errors > 0

    # ---- keys ---------------------------------------------------------------------------------
    def action_mark(self) -> None:
        """Marks belong to the views the lines jump to."""

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_title()

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        item = self.table.items.get(event.row_key.value or "")
        if isinstance(item, Problem):
            self.jump(item)

    def jump(self, problem: Problem) -> None:
        """Show the problem's row in its view (its action keys then act on it)."""
        if problem.view is None:
            if problem.key != "ok":
                self.app.notify(safe(problem.text), title=problem.label, markup=False, timeout=8)
            return
        screen: Any = self.screen
        screen.show_view(problem.view)
        if problem.row is None:
            return
        panel: Panel = screen.panel(problem.view)
        if not panel.table.select_key(problem.row) and panel.filter_text:
            panel.set_filter("")
            panel.table.select_key(problem.row)

    def on_resize(self, event: events.Resize) -> None:
        self.query_one("#overview-grid").set_class(event.size.width >= WIDE, "-wide")
        if self.snapshot is not None and self.is_displayed_view():
            self.table.invalidate()
            self.resync()

    # ---- sections (built at paint time for the cell's size) ---------------------------------------
    def _queues_section(self, width: int, height: int) -> RenderableType:
        snap = self.snapshot
        if snap is None:
            return Text("…", style="dim")
        if not snap.queues:
            return Text("no task queue found yet", style="dim")
        c = Colors(self.app.theme_variables)
        rows_n = max(1, height - 2)
        by_backlog = sorted(snap.queues, key=lambda q: (-q.messages, -(q.oldest_age_s or 0.0), q.name))
        hist = getattr(self.app, "history", None)
        rows: list[tuple[Text | str, ...]] = []
        for q in by_backlog[:rows_n]:
            style = c.error if q.no_consumer else ""
            trend = sparkline(hist.depth_values(q.name), 8) if hist is not None else ""
            rows.append((Text(safe(q.name), style=style), Text(fmt_int(q.messages), style=style),
                         fmt_oldest_summary(q.oldest_age_s, getattr(q, "oldest_age_is_lower_bound", False)),
                         Text("?" if q.consumers is None else str(q.consumers), style=style),
                         Text(trend, style=c.accent)))
        t = columns_text(("Queue", "Ready", "Oldest", "Cons", "Trend"), rows, "lrrrl", width)
        oldest = max(snap.queues, key=lambda q: q.oldest_age_s or -1.0)
        foot = Text()
        more = len(snap.queues) - min(rows_n, len(snap.queues))
        tail = f"  +{more:,} more (1)" if more > 0 else ""
        if oldest.oldest_age_s is not None:
            age = fmt_oldest_summary(oldest.oldest_age_s, getattr(oldest, "oldest_age_is_lower_bound", False))
            label = "oldest waiting: " if width >= 40 else "oldest: "
            room = max(6, width - len(label) - len(age) - 1 - len(tail))  # one line: the name gives way
            foot.append(label, style="dim")
            foot.append(f"{truncate(oldest.name, room)} {age}")
        if tail:
            foot.append(tail, style="dim")
        foot.truncate(width, overflow="ellipsis")
        return Group(t, foot) if foot.plain else t

    def _workers_section(self, width: int, height: int) -> RenderableType:
        snap = self.snapshot
        if snap is None:
            return Text("…", style="dim")
        if not snap.workers:
            return Text("no worker has answered yet", style="dim")
        c = Colors(self.app.theme_variables)
        states: dict[str, int] = {}
        for w in snap.workers:
            states[worker_state(w)] = states.get(worker_state(w), 0) + 1
        head = Text()
        for i, (state, n) in enumerate(sorted(states.items(), key=lambda kv: kv[0] != "responding")):
            if i:
                head.append(" · ")
            head.append(f"{n} {state}", style=c.success if state == "responding" else c.error)
        hist = getattr(self.app, "history", None)
        order = sorted(snap.workers, key=lambda w: (worker_state(w) == "responding", w.hostname))
        rows: list[tuple[Text | str, ...]] = []
        for w in order[:max(1, height - 2)]:
            state = worker_state(w)
            rate = hist.processed_rate(w.hostname) if hist is not None else None
            rows.append((Text(safe(w.hostname), style="" if state == "responding" else c.muted),
                         Text(state, style=c.success if state == "responding" else c.error), str(w.active),
                         fmt_rate(rate).lstrip("+")))
        t = columns_text(("Worker", "State", "Act", "Done/s"), rows, "llrr", width)
        return Group(head, t)

    def _tasks_section(self, width: int, height: int) -> RenderableType:
        snap = self.snapshot
        if snap is None:
            return Text("…", style="dim")
        c = Colors(self.app.theme_variables)
        if not snap.backend.ok:
            return Text(f"result backend unreachable: {safe(snap.backend.error or 'error')}", style=c.error)
        stats = snap.tasks
        lines: list[RenderableType] = []
        states = Text()
        if not stats.states:
            states.append("no stored results", style="dim")
        for i, (state, n) in enumerate(stats.states):
            if i:
                states.append(" · ")
            states.append(f"{state} ", style=c.error if state == "FAILURE" else c.success if state == "SUCCESS" else "")
            states.append(f"{n:,}", style="bold")
        lines.append(states)
        rate = self.totals.failure_rate()
        recent = Text("failure rate (1 min): ", style="dim")
        if rate is None:
            recent.append("–")
        else:
            share, failed = rate
            recent.append(f"{share:.0%} ({failed:,} failed)", style=c.error if failed else "")
        lines.append(recent)
        lines.append(Text(f"scan complete: {stats.scanned:,} keys" if stats.complete
                          else f"scanning… {stats.scanned:,} keys so far", style="dim" if stats.complete else c.warning))
        room = height - len(lines)
        for f in sorted(stats.recent_failures, key=lambda f: f.date_done or "", reverse=True)[:max(0, room)]:
            line = Text("✖ ", style=c.error)
            task_w = min(len(safe(f.task or "–")), max(12, (width - 3) // 2))  # the name gets half when long
            line.append(truncate(f.task, task_w))
            line.append(f" {truncate(f.exception, max(8, width - task_w - 3))}", style="dim")
            line.truncate(width, overflow="ellipsis")
            lines.append(line)
        return Group(*lines)

    def _throughput_section(self, width: int, height: int) -> RenderableType:
        snap = self.snapshot
        if snap is None:
            return Text("…", style="dim")
        c = Colors(self.app.theme_variables)
        spark_w = max(4, width - 18)
        ready = self.totals.ready()
        done = self.totals.done_rates()
        failed = self.totals.failed_rates()
        rows: list[tuple[Text | str, ...]] = [
            ("waiting", Text(sparkline(ready, spark_w).ljust(spark_w), style=c.accent), fmt_int(int(ready[-1])) if ready else "–"),
            ("done/s", Text(sparkline(done, spark_w).ljust(spark_w), style=c.success),
             fmt_rate(done[-1]).lstrip("+") if done else "–"),
            ("failed/s", Text(sparkline(failed, spark_w).ljust(spark_w), style=c.error),
             fmt_rate(failed[-1]).lstrip("+") if failed else "–"),
            ("unacked", "", fmt_int(snap.unacked_total)),
        ]
        t = columns_text(None, rows, "llr", width, flex=1)
        return t
