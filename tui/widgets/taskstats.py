"""The Tasks view's analytics box (issue 15): per-task-name table, live event stream, throughput/p95 plot.

Everything comes from ``Snapshot.task_stats`` (task events, no result backend needed). The table sorts by
rate, p95, failure rate or wait (``t`` cycles), shows "vs 1 h ago" / "vs yesterday" deltas when the
persistent history has them, and the highlighted row selects the name plotted below: throughput per
minute and p95 over the last hour.

Plot: Textual's own ``Sparkline`` rather than textual-plotext: no new dependency, two rows of height
fit an 80x24 terminal next to the table and the stream (a plotext chart needs ~10 rows to be legible),
it follows the theme, and an hour of per-minute points is exactly a sparkline's job — trend and
"since when", not exact values (those are in the table).

The stream lists the newest task events (received/started/succeeded/failed... with runtime, worker, id),
filtered with the task search syntax (``name:billing state:failed -worker:w2``; see
``collectors.reads.search``); enter on a stream-filtered name is the table's enter: the name's top
exceptions with a sample traceback.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Sparkline, Static

from collectors.core.models import Snapshot
from collectors.core.taskstats import TaskNameStats, TaskStatsView

SORTS: tuple[tuple[str, Any], ...] = (
    ("rate", lambda t: -t.per_min),
    ("p95", lambda t: -(t.runtime_p95 or 0.0)),
    ("failure rate", lambda t: -(t.failure_rate or 0.0)),
    ("wait", lambda t: -(t.wait_p95 or 0.0)),
)
STREAM_LINES = 6
PLOT_MINUTES = 60


def fmt_s(v: float | None) -> str:
    """Seconds compactly: 850µs, 12ms, 1.4s, 2m5s."""
    if v is None:
        return "–"
    if v < 0.001:
        return f"{v * 1e6:.0f}µs"
    if v < 1:
        return f"{v * 1000:.0f}ms"
    if v < 120:
        return f"{v:.1f}s"
    return f"{int(v // 60)}m{int(v % 60)}s"


def ratio_text(now: float | None, then: float | None) -> str:
    """``×3.0`` / ``−40%`` / ``=`` / ``–`` for a current value against a baseline."""
    if now is None or then is None:
        return "–"
    if then <= 0:
        return "new" if now > 0 else "="
    r = now / then
    if r >= 1.5:
        return f"×{r:.1f}"
    if abs(r - 1) < 0.1:
        return "="
    return f"{(r - 1) * 100:+.0f}%"


def delta_text(t: TaskNameStats, view: TaskStatsView, label: str) -> str:
    """p95 and rate against ``label`` (``1h ago`` / ``yesterday``): ``p95 ×3.0 rate =``."""
    b = view.baseline(t.name, label)
    if b is None:
        return "–"
    return f"p95 {ratio_text(t.runtime_p95, b.runtime_p95)} rate {ratio_text(t.per_min, b.per_min)}"


class TaskStatsBox(Vertical):
    """Per-task-name analytics of the Tasks view (fed by ``show(snapshot)``; reads only)."""

    DEFAULT_CSS = """
    TaskStatsBox { height: auto; max-height: 65%; }
    TaskStatsBox #ts-head { height: auto; }
    TaskStatsBox #ts-table { height: auto; max-height: 8; }
    TaskStatsBox #ts-plots { height: 2; }
    TaskStatsBox .ts-label { width: auto; padding: 0 1; }
    TaskStatsBox Sparkline { width: 1fr; height: 2; }
    TaskStatsBox #ts-filter { height: 1; }
    TaskStatsBox #ts-stream { height: auto; max-height: 6; }
    TaskStatsBox #ts-stream-note { height: auto; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "stats_sort", "Stats sort", id="taskdash.stats_sort"),
    ]

    COLUMNS = ("Task", "/min", "Fail", "p50", "p95", "p99", "Wait95", "vs 1h", "vs yday", "Top exception")

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id or "task-stats")
        self.view: TaskStatsView | None = None
        self.sort_index = 0
        self.selected: str | None = None
        self.query_text = ""
        self._query: Any = None
        self._series: dict[str, deque[tuple[float, int, float | None]]] = {}
        """name -> (minute, finished total, p95) per minute seen while running (bounded)."""
        self._taken_at = 0.0
        self._keys: list[str] = []
        self._rows: list[tuple[Any, ...]] = []
        self._stream_rows: list[tuple[Any, ...]] = []
        self._stream: list[Any] = []
        self._painted: dict[str, str] = {}

    def _update(self, selector: str, text: Text) -> None:
        """Static.update re-lays out the screen: only when the text changed."""
        if self._painted.get(selector) != text.plain:
            self._painted[selector] = text.plain
            self.query_one(selector, Static).update(text)

    def compose(self) -> ComposeResult:
        yield Static("", id="ts-head")
        table: DataTable[Any] = DataTable(id="ts-table", cursor_type="row", zebra_stripes=False)
        yield table
        with Horizontal(id="ts-plots"):
            yield Static("", classes="ts-label", id="ts-plot-label")
            yield Sparkline([], id="ts-rate", summary_function=max)
            yield Static("p95", classes="ts-label")
            yield Sparkline([], id="ts-p95", summary_function=max)
        yield Input(placeholder="filter events: name: id: state: worker: exc: (search syntax)", id="ts-filter",
                    compact=True)
        yield Static("", id="ts-stream-note")
        yield DataTable(id="ts-stream", cursor_type="row", zebra_stripes=False, show_header=False)

    def on_mount(self) -> None:
        self.query_one("#ts-table", DataTable).add_columns(*self.COLUMNS)
        self.query_one("#ts-stream", DataTable).add_columns("event", "task", "id", "worker", "runtime", "exception")
        self.display = self.view is not None

    # ---- data ---------------------------------------------------------------------------------
    def show(self, snapshot: Snapshot) -> None:
        """Take a snapshot's ``task_stats`` and repaint."""
        view = snapshot.task_stats
        self.view = view
        self._taken_at = snapshot.taken_at
        if view is not None:
            self._remember(view, snapshot.taken_at)
        if self.is_mounted:
            self._paint()

    def _remember(self, view: TaskStatsView, now: float) -> None:
        minute = now - (now % 60.0)
        for t in view.tasks[:200]:
            done = (t.totals[3] + t.totals[4]) if len(t.totals) > 4 else 0
            series = self._series.get(t.name)
            if series is None:
                series = self._series[t.name] = deque(maxlen=PLOT_MINUTES + 1)
            if series and series[-1][0] == minute:
                series[-1] = (minute, done, t.runtime_p95)
            else:
                series.append((minute, done, t.runtime_p95))

    def sorted_tasks(self) -> list[TaskNameStats]:
        if self.view is None:
            return []
        _, key = SORTS[self.sort_index % len(SORTS)]
        return sorted(self.view.tasks, key=lambda t: (key(t), t.name))

    def _paint(self) -> None:
        view = self.view
        self.display = view is not None  # a collector without analytics (or a hand-made snapshot): no box
        quiet = view is None or (not view.tasks and not view.recent)
        for sel in ("#ts-table", "#ts-plots", "#ts-filter", "#ts-stream", "#ts-stream-note"):
            self.query_one(sel).display = not quiet  # events off / none yet: only the note
        t = Text()
        if view is None:
            t.append("task analytics: not collected", style="dim")
        else:
            label = SORTS[self.sort_index % len(SORTS)][0]
            t.append("Per task name", style="bold")
            t.append(f" · task events, last {fmt_s(view.window_s)} · {view.events_seen:,} events · sort: {label} ↓ (t)")
            if view.enable_events:
                t.append(" · sending enable_events", style="dim")
            if view.note:
                t.append("\n")
                t.append(("task events are OFF: " if view.state == "off" else "") + view.note,
                         style="bold yellow" if view.state == "off" else "dim")
        self._update("#ts-head", t)
        self._paint_table()
        self._paint_plot()
        self._paint_stream()

    def _paint_table(self) -> None:
        table = self.query_one("#ts-table", DataTable)
        tasks = self.sorted_tasks()
        keys = [x.name for x in tasks]
        cursor = table.cursor_row
        rows = []
        for x in tasks:
            top = x.top_exceptions[0] if x.top_exceptions else None
            fail = "–" if x.failure_rate is None else f"{x.failure_rate:.0%}"
            rows.append((
                x.name[:40], f"{x.per_min:.1f}", fail,
                fmt_s(x.runtime_p50), fmt_s(x.runtime_p95), fmt_s(x.runtime_p99),
                fmt_s(x.wait_p95) + ("" if x.wait_source != "received→started" else "*"),
                delta_text(x, self.view, "1h ago") if self.view else "–",
                delta_text(x, self.view, "yesterday") if self.view else "–",
                f"{top.exception[:40]} ({top.count})" if top else ""))
        if rows != self._rows:
            self._rows = rows
            table.clear()
            for key, row in zip(keys, rows, strict=True):
                table.add_row(Text(row[0]), row[1], Text(row[2], style="bold red" if row[2] not in ("–", "0%") else ""),
                              *row[3:9], Text(row[9], style="red"), key=key)
            if keys:
                row = keys.index(self.selected) if self.selected in keys else min(max(cursor, 0), len(keys) - 1)
                table.move_cursor(row=row)
                self.selected = keys[row]
        self._keys = keys

    def series(self, name: str, now: float) -> tuple[list[float], list[float]]:
        """Throughput per minute and p95 per minute of ``name`` over the last hour (history first)."""
        store = getattr(self.app, "store", None)
        rows: list[Any] = []
        if store is not None and hasattr(store, "task_minutes"):
            try:
                rows = store.task_minutes(now - PLOT_MINUTES * 60.0, now, task=name)
            except Exception:  # noqa: BLE001 - a broken history must not break the view
                rows = []
        if rows:
            from collectors.analysis.taskstats import quantiles

            rate = [float(c[3] + c[4]) for _m, _n, c, *_ in rows]
            p95 = [quantiles(rt, (0.95,))[0] or 0.0 for _m, _n, _c, rt, *_ in rows]
            return rate, p95
        pts = list(self._series.get(name, ()))
        rate = [float(b[1] - a[1]) for a, b in zip(pts, pts[1:], strict=False)]
        return rate, [p or 0.0 for _m, _d, p in pts[1:]]

    def _paint_plot(self) -> None:
        if not self.selected:
            self._update("#ts-plot-label", Text("last hour: select a task", style="dim"))
            self.query_one("#ts-rate", Sparkline).data = []
            self.query_one("#ts-p95", Sparkline).data = []
            return
        rate, p95 = self.series(self.selected, self._taken_at)
        last = f"{rate[-1]:.0f}/min" if rate else "–"
        self._update("#ts-plot-label", Text(f"{self.selected[:24]} last hour: done/min {last}"))
        self.query_one("#ts-rate", Sparkline).data = rate  # empty until a minute has passed: nothing drawn
        self.query_one("#ts-p95", Sparkline).data = [v for v in p95 if not math.isnan(v)]

    def stream_events(self) -> list[Any]:
        """The newest events matching the filter, newest first (at most STREAM_LINES)."""
        from collectors.reads.search import SearchHit

        view = self.view
        if view is None:
            return []
        out: list[Any] = []
        for ev in reversed(view.recent):
            if self._query is not None:
                hit = SearchHit(source="event", task_id=ev.task_id, name=ev.name, state=ev.type,
                                worker=ev.hostname, exception=ev.exception)
                if not self._query.matches(hit):
                    continue
            out.append(ev)
            if len(out) >= STREAM_LINES:
                break
        return out

    def stream_lines(self) -> list[Text]:
        """The newest events matching the filter as lines, newest first."""
        out: list[Text] = []
        for ev in self.stream_events():
            style = "red" if ev.type == "failed" else "green" if ev.type == "succeeded" else ""
            line = Text()
            line.append(f"{ev.type:<9} ", style=style)
            line.append(f"{(ev.name or '?')[:32]:<32} ")
            line.append(f"{(ev.task_id or '')[:8]} ", style="dim")
            line.append(f"{(ev.hostname or '')[:20]} ")
            if ev.runtime is not None:
                line.append(fmt_s(ev.runtime))
            if ev.exception:
                line.append(f" {ev.exception[:60]}", style="red")
            out.append(line)
        return out

    def _paint_stream(self) -> None:
        events = self.stream_events()
        note = self.query_one("#ts-stream-note", Static)
        table = self.query_one("#ts-stream", DataTable)
        note.display = not events and table.display
        if not events:
            self._update("#ts-stream-note", Text(
                "no event matches the filter" if self._query is not None else "no task event yet", style="dim"))
        rows = [(ev.type, (ev.name or "?")[:32], (ev.task_id or "")[:8], (ev.hostname or "")[:20],
                 fmt_s(ev.runtime) if ev.runtime is not None else "", (ev.exception or "")[:60]) for ev in events]
        if rows == self._stream_rows:
            return
        self._stream_rows = rows
        self._stream = events
        table.clear()
        for i, (row, ev) in enumerate(zip(rows, events, strict=True)):
            style = "red" if ev.type == "failed" else "green" if ev.type == "succeeded" else ""
            table.add_row(Text(row[0], style=style), *row[1:5], Text(row[5], style="red"), key=str(i))

    @on(DataTable.RowSelected, "#ts-stream")
    def _event_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an event: its details, and the task search for its id (stored result, unacked, queued)."""
        event.stop()
        try:
            ev = self._stream[int(event.row_key.value or "")]
        except (ValueError, IndexError):
            return
        parts = [f"{ev.type} {ev.name or '?'}", f"id {ev.task_id or '?'}", f"worker {ev.hostname or '?'}"]
        if ev.runtime is not None:
            parts.append(f"runtime {fmt_s(ev.runtime)}")
        if ev.exception:
            parts.append(ev.exception)
        self.app.notify("\n".join(parts), title="Task event", timeout=10)
        search = getattr(self.screen, "_run_search", None)
        if ev.task_id and callable(search):
            search(f"id:{ev.task_id}", getattr(self.app, "snapshot", None))

    # ---- keys and events -----------------------------------------------------------------------
    def action_stats_sort(self) -> None:
        """Cycle the per-name sort: rate, p95, failure rate, wait."""
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        if self.is_mounted:
            self._paint()

    @on(DataTable.RowHighlighted, "#ts-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        name = event.row_key.value if event.row_key is not None else None
        if name and name != self.selected:
            self.selected = name
            self._paint_plot()

    @on(DataTable.RowSelected, "#ts-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        """Enter: the name's top exceptions with a sample traceback."""
        event.stop()
        name = event.row_key.value if event.row_key is not None else None
        t = self.view.get(name) if (self.view is not None and name) else None
        if t is None:
            return
        if not t.top_exceptions:
            self.app.notify(f"{t.name}: no failure in the window", title="Task")
            return
        body = "\n".join(f"{e.count}× {e.exception}" for e in t.top_exceptions)
        sample = (t.top_exceptions[0].sample or "")[-800:]
        self.app.notify(f"{body}\n\n{sample}", title=f"{t.name}: top exceptions", timeout=15)

    @on(Input.Changed, "#ts-filter")
    def _filter(self, event: Input.Changed) -> None:
        event.stop()
        from collectors.reads.search import SearchError, parse_query

        self.query_text = event.value.strip()
        try:
            q = parse_query(self.query_text) if self.query_text else None
            self._query = q if (q is not None and not q.empty) else None
            event.input.remove_class("-invalid")
        except SearchError:
            event.input.add_class("-invalid")
            return
        if self.is_mounted:
            self._paint_stream()

    @on(Input.Submitted, "#ts-filter")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#ts-table", DataTable).focus()
