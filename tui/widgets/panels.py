"""The dashboard's panels: one per view, each a KeyedTable fed from the latest Snapshot.

Panels only *read*: write keys post ``WriteRequested`` and ``enter`` posts ``DetailRequested``; the
app confirms and runs the action (messages up, attributes down).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from collectors.core.models import (
    PoisonSuspect,
    QueueInfo,
    Snapshot,
    SourceStatus,
    TaskFailure,
    UnackedEntry,
    WorkerInfo,
)
from tui.format import (
    by_priority_text,
    fmt_age,
    fmt_ago,
    fmt_int,
    fmt_oldest,
    fmt_rate,
    parse_time,
    safe_text,
    short_id,
    sparkline,
    truncate,
)
from tui.messages import DetailRequested, WriteRequested
from tui.widgets.keyed_table import Col, KeepEnd, KeyedTable

if TYPE_CHECKING:
    from tui.history import History

MAX_ROWS = 5000
"""Rows per table (the user scrolls them all; KeyedTable builds cells only around the viewport); the
rest are counted and reachable through the filter or sort."""
CELL_MAX = 160
"""Longest text a cell keeps (the table cuts it further to fit, with "…"; the detail screen shows it all)."""
SORT_GROUP = Binding.Group("Sort", compact=True)
"""``s`` and ``S`` share one footer entry: "s S Sort"."""


def whole(text: str | None) -> str:
    """A cell's text, whole up to CELL_MAX (the table fits it to the column)."""
    return truncate(text, CELL_MAX)


class Colors:
    """Theme colours resolved once per refresh (so every Textual theme applies to cell styles)."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.error = f"bold {variables.get('error', 'red')}"
        self.warning = variables.get("warning", "yellow")
        self.success = variables.get("success", "green")
        self.muted = "dim"
        self.accent = variables.get("accent", "cyan")


class Panel(Vertical):
    """Base panel: a titled KeyedTable with filter, sort and marks; subclasses build rows."""

    VIEW: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    COLUMNS: ClassVar[tuple[Col, ...]] = ()
    """The table's columns (``Col``: content-sized, with a priority for narrow terminals)."""
    SORTS: ClassVar[tuple[tuple[str, str, bool], ...]] = ()
    """(label, sort key, descending) choices cycled by ``s`` (``S`` reverses); the first is the default."""
    SORT_COLUMNS: ClassVar[dict[str, str]] = {}
    """Sort key -> the column whose header shows ▲/▼ (default: the column of the same key)."""
    DETAIL_KIND: ClassVar[str] = ""
    EMPTY: ClassVar[str] = "nothing here"
    SOURCE: ClassVar[str] = ""
    """The snapshot source this panel shows (``Snapshot.source``): an unreadable one is said, never empty."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark", id="taskdash.mark"),
        Binding("s", "sort", "Sort", id="taskdash.sort", group=SORT_GROUP),
        Binding("S", "sort_reverse", "Reverse sort", id="taskdash.sort_reverse", group=SORT_GROUP),
        Binding("ctrl+w", "wide", "Wide", id="taskdash.wide"),
    ]

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id or f"{self.VIEW}-panel", classes="panel")
        self.filter_text = ""
        self.sort_index = 0
        self.sort_reversed = False
        """``S`` flipped the direction of the current sort."""
        self.snapshot: Snapshot | None = None
        self._synced: Snapshot | None = None
        self._note_text: str | None = None
        self._titles: tuple[str, str] | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_extra()
        yield KeyedTable(self.COLUMNS, limit=MAX_ROWS, id=f"{self.VIEW}-table")
        yield Static("", classes="panel-note", id=f"{self.VIEW}-note")

    def compose_extra(self) -> ComposeResult:
        """Widgets shown above the table (override)."""
        yield from ()

    def on_mount(self) -> None:
        self._update_title()

    # The border is bright while the panel holds the focus and dims when the focus goes elsewhere in
    # the view (the prompt, a dialog). A ``:focus-within`` rule did this, but Textual restyles the whole
    # subtree of such a node on every focus change, so each view key restyled and redrew two panels
    # (the one hidden and the one shown): ~10 ms of a view switch's ~55 at 1,000 queues. A class set
    # here changes only when the look does; the panel being hidden keeps its bright border for later.
    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self.remove_class("-away")

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        if self.is_displayed_view():
            self.add_class("-away")

    @property
    def table(self) -> KeyedTable:
        """The panel's table."""
        return self.query_one(KeyedTable)

    @property
    def history(self) -> History:
        """The app's rolling history."""
        return self.app.history  # type: ignore[attr-defined, no-any-return]

    @property
    def colors(self) -> Colors:
        """Theme colours for cell styles."""
        return Colors(self.app.theme_variables)

    # ---- data -------------------------------------------------------------------------------
    def items_of(self, snapshot: Snapshot) -> Sequence[Any]:
        """The model objects this panel lists (override)."""
        return ()

    def row_key(self, item: Any) -> str:
        """Stable row key (override)."""
        raise NotImplementedError

    def row_cells(self, item: Any) -> tuple[Any, ...]:
        """Display cells (override)."""
        raise NotImplementedError

    def row_text(self, item: Any) -> str:
        """Filter text (override)."""
        return self.row_key(item).lower()

    def row_sort(self, item: Any, sort_by: str) -> Any:
        """Sort value (override)."""
        return None

    def show_snapshot(self, snapshot: Snapshot, *, force: bool = False) -> None:
        """Take a new snapshot; the table is only re-synced while the panel is visible."""
        self.snapshot = snapshot
        if force or self.is_displayed_view():
            self.resync()

    def is_displayed_view(self) -> bool:
        """True when this panel is the active view."""
        return getattr(self.app, "current_view", None) == self.VIEW

    def resync(self) -> None:
        """Push the current snapshot, filter and sort into the table."""
        if self.snapshot is None or not self.is_mounted:
            return
        items = self.items_of(self.snapshot)
        sort_by, reverse = self.sort_choice()
        table = self.table
        if self.SORTS:  # before prepare: the header's arrow is part of the column widths
            table.set_sort_indicator(self.SORT_COLUMNS.get(sort_by or "", sort_by), reverse)
        self.prepare(self.snapshot)
        table.sync(items, self, filter_text=self.filter_text, sort_by=sort_by, reverse=reverse)
        self._synced = self.snapshot
        self._update_title()
        self._update_note()

    def sort_choice(self) -> tuple[str | None, bool]:
        """The active (sort key, descending)."""
        if not self.SORTS:
            return None, False
        _, key, desc = self.SORTS[self.sort_index % len(self.SORTS)]
        return key, desc != self.sort_reversed

    def prepare(self, snapshot: Snapshot) -> None:
        """Per-refresh precomputation before cells are built (override)."""
        self.c = self.colors

    def _update_title(self) -> None:
        parts = [self.TITLE]
        if self.SORTS:
            label = self.SORTS[self.sort_index % len(self.SORTS)][0]
            parts.append(f"sort: {label} {'▼' if self.sort_choice()[1] else '▲'}")
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        table = self.table if self.is_mounted else None
        subs = []
        if table is not None and table.marked:
            subs.append(f"{len(table.marked)} marked")
        if table is not None and table.wide:
            subs.append("wide: ← → scroll · ctrl+w fits")
        elif table is not None and table.hidden_labels:
            n = len(table.hidden_labels)
            subs.append(f"+{n} col{'s' if n > 1 else ''} hidden: {', '.join(table.hidden_labels)} · ctrl+w")
        subtitle = " · ".join(subs)
        self.set_titles(safe_text(Text(" · ".join(parts))), subtitle)  # user filter text: no markup

    def set_titles(self, title: Text, subtitle: str) -> None:
        """Set the border title and subtitle, only when they change: each assignment repaints the whole
        panel, table included (every refresh did, twice)."""
        if (title.plain, subtitle) == self._titles:
            return
        self._titles = (title.plain, subtitle)
        self.border_title = title  # type: ignore[assignment]
        self.border_subtitle = subtitle

    def _update_note(self) -> None:
        table = self.table
        note = self.query_one(".panel-note", Static)
        text = ""
        if table.all_rows == 0:
            text = self.EMPTY
        elif table.total_rows == 0:
            text = f"no row matches the filter {self.filter_text!r} (esc clears it)"
        elif table.total_rows > table.row_count:
            text = (f"showing the first {table.row_count:,} of {table.total_rows:,} rows "
                    f"(narrow with / or change the sort with s)")
        text = self.extra_note(text)
        st = self.snapshot.source(self.SOURCE) if (self.SOURCE and self.snapshot is not None) else None
        if st is not None and st.state != "ok":
            what = {"unreadable": "UNREADABLE", "partial": "partly read", "degraded": "read"}[st.state]
            line = f"{what}: {st.reason or 'no reason given'}"
            text = line if (st.state == "unreadable" or not text) else f"{line}\n{text}"
        if text != self._note_text:  # Static.update re-lays out the whole screen: only on a change
            self._note_text = text
            note.update(Text(text))
        note.display = bool(text)

    def extra_note(self, text: str) -> str:
        """Hook for panels that add to the note line."""
        return text

    def reset(self) -> None:
        """Drop the snapshot, rows, marks and filter (``:ctx`` switched to another broker)."""
        self.snapshot = None
        self._synced = None
        self.filter_text = ""
        if self.is_mounted:
            self.table.reset()
            self._update_title()
            self._update_note()

    def set_filter(self, text: str) -> None:
        """Filter rows by a case-insensitive substring."""
        self.filter_text = text
        self.resync()
        self._update_title()

    # ---- keys ---------------------------------------------------------------------------------
    def action_mark(self) -> None:
        """Mark/unmark the row under the cursor for a bulk action."""
        self.table.toggle_mark()
        self._update_title()

    def action_sort(self) -> None:
        """Cycle the sort order (each in its natural direction)."""
        if self.SORTS:
            self.sort_index = (self.sort_index + 1) % len(self.SORTS)
            self.sort_reversed = False
            self.resync()
            self._update_title()

    def action_sort_reverse(self) -> None:
        """Reverse the current sort (▲ ascending / ▼ descending in the header and the title)."""
        if self.SORTS:
            self.sort_reversed = not self.sort_reversed
            self.resync()
            self._update_title()

    def action_wide(self) -> None:
        """Wide mode: every column whole, scrolling sideways · again: fit the columns to the width."""
        self.table.toggle_wide()
        self._update_title()

    @on(KeyedTable.Fitted)
    def _columns_fitted(self, event: KeyedTable.Fitted) -> None:
        event.stop()
        self._update_title()

    def targets(self) -> tuple[Any, ...]:
        """Marked rows, or the row under the cursor when nothing is marked."""
        marked = self.table.marked_items()
        if marked:
            return tuple(marked)
        item = self.table.selected_item
        return () if item is None else (item,)

    def request(self, kind: str, items: tuple[Any, ...] | None = None) -> None:
        """Ask the app to run a write action on ``items`` (default: the targets)."""
        items = self.targets() if items is None else items
        self.post_message(WriteRequested(kind, items))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        item = self.table.items.get(event.row_key.value or "")
        if item is not None and self.DETAIL_KIND:
            self.post_message(DetailRequested(self.DETAIL_KIND, item))


# ---------------------------------------------------------------------------------------------
class QueuesPanel(Panel):
    """Queues: ready (optionally per priority), unacked, consumers, oldest age, rates, trend."""

    VIEW = "queues"
    SOURCE = "queues"
    TITLE = "Queues"
    DETAIL_KIND = "queue"
    EMPTY = "no task queue found yet (queues appear once a worker or a publisher declares them)"
    COLUMNS = (
        Col("Queue", "name", shrink=14, roomy=30),
        Col("Ready", "ready"),
        Col("Unacked", "unacked", priority=1),
        Col("Cons", "consumers"),
        Col("Oldest", "oldest"),
        Col("In/s", "in", 6, priority=3),
        Col("Out/s", "out", 6, priority=2),
        Col("Trend", "trend", 12, priority=4),
    )
    SORTS = (("ready", "ready", True), ("name", "name", False), ("oldest", "oldest", True),
             ("unacked", "unacked", True))
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "purge", "Purge", id="taskdash.purge"),
        Binding("b", "bands", "Priorities", id="taskdash.bands"),
    ]

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.show_bands = False
        self._outs: dict[str, float | None] = {}
        self._now = 0.0

    def out_rates(self, snapshot: Snapshot) -> dict[str, float | None]:
        """Estimated consumption per queue: each online worker's processed/s split over its queues."""
        out: dict[str, float | None] = {}
        for w in snapshot.workers:
            rate = self.history.processed_rate(w.hostname)
            if rate is None or not w.queues or not w.online:
                continue
            for q in w.queues:
                out[q] = (out.get(q) or 0.0) + rate / len(w.queues)
        return out

    def prepare(self, snapshot: Snapshot) -> None:
        super().prepare(snapshot)
        self._outs = self.out_rates(snapshot)
        self._now = snapshot.taken_at

    def items_of(self, snapshot: Snapshot) -> Sequence[Any]:
        return snapshot.queues

    def row_key(self, item: QueueInfo) -> str:
        return item.name

    def row_sort(self, item: QueueInfo, sort_by: str) -> Any:
        return {"name": item.name, "ready": item.messages, "oldest": item.oldest_age_s,
                "unacked": item.unacked}.get(sort_by)

    def row_cells(self, q: QueueInfo) -> tuple[Any, ...]:
        c = self.c
        net = self.history.depth_rate(q.name)
        out = self._outs.get(q.name)
        inn = None if net is None else max(0.0, net + (out or 0.0))
        paused = q.paused_by is not None
        style = c.error if q.no_consumer and not paused else ""
        if paused:  # taskdash pause: no consumer on purpose; who and since when
            since = "" if q.paused_since is None else " " + fmt_ago(max(0.0, self._now - q.paused_since))
            mark = f" ⏸ paused by {q.paused_by}{since}"
            if q.consumed_while_paused:
                mark += f" ⚠ consumed by {', '.join(q.consumed_while_paused)}"
            name = Text(whole(q.name))
            name.append(mark, style=c.warning)
        else:
            name = Text(whole(q.name) + (" ⚠ no consumer" if q.no_consumer else ""), style=style)
        ready = fmt_int(q.messages)
        if self.show_bands:
            ready = f"{ready} ({by_priority_text(q.by_priority)})"
        if q.wrong_type:
            ready += " !type"
        cons = "?" if q.consumers is None else str(q.consumers)
        return (name, Text(ready, style=style), fmt_int(q.unacked), Text(cons, style=style),
                fmt_oldest(q.oldest_age_s, getattr(q, "oldest_age_is_lower_bound", False)),
                fmt_rate(inn).lstrip("+"), fmt_rate(out).lstrip("+"),
                Text(sparkline(self.history.depth_values(q.name), 12), style=c.accent))

    def action_purge(self) -> None:
        """Purge the queue under the cursor (asks first)."""
        item = self.table.selected_item
        self.request("purge", () if item is None else (item,))

    def action_bands(self) -> None:
        """Show/hide the per-priority breakdown of ready messages."""
        self.show_bands = not self.show_bands
        self.resync()


# ---------------------------------------------------------------------------------------------
MAYBE_HELD_STATES = ("held-by-silent", "may-be-held")
"""Unacked states of a message a live (silent or responding) worker may still run (issue 12): never
requeued without force; what matters is the time left before kombu redelivers it, and who may hold it."""


def unacked_state_text(e: UnackedEntry, c: Colors) -> Text:
    """State cell: orphaned rows shout (bold + colour, so they stand out even with NO_COLOR); a message a
    live worker may hold is in capitals too (HELD-BY-SILENT bold): not orphaned, and not to requeue."""
    if e.state == "orphaned":
        return Text("ORPHANED", style=c.error)
    if e.state == "held-by-silent":
        return Text("HELD-BY-SILENT", style=f"bold {c.warning}")
    if e.state == "may-be-held":
        return Text("MAY-BE-HELD", style=c.warning)
    if e.state == "unknown":
        return Text("unknown", style=c.warning)
    return Text(e.state, style=c.success if e.state == "active" else "")


def holder_text(e: UnackedEntry, width: int = CELL_MAX) -> str:
    """Holder cell: the worker that reports it; for a message that may be held, its possible holders
    (``w4@quiet?``, ``w1@host? +2``): the ``?`` says nobody reported it."""
    if e.state in MAYBE_HELD_STATES and e.possible_holders:
        first, rest = e.possible_holders[0], len(e.possible_holders) - 1
        more = f" +{rest}" if rest else ""
        return truncate(first, max(4, width - 1 - len(more))) + "?" + more
    return truncate(e.holder, width)


class UnackedPanel(Panel):
    """Unacked ledger: every delivered-but-unacknowledged message and who (if anyone) holds it."""

    VIEW = "unacked"
    SOURCE = "unacked"
    TITLE = "Unacked"
    DETAIL_KIND = "unacked"
    EMPTY = "no unacked message: every delivered message has been acknowledged"
    COLUMNS = (
        Col("State", "state"),
        Col("Task", "task", shrink=12, roomy=28),
        Col("Id", "id", priority=2),
        Col("Queue", "queue", priority=1, shrink=8, roomy=16),
        Col("Age", "age"),
        Col("Redeliv.", "ttr", priority=3),
        Col("Holder", "holder", shrink=10, roomy=22),
        Col("↻", "redelivered", 1),
    )
    SORTS = (("age", "age", True), ("state", "state", False), ("task", "task", False),
             ("queue", "queue", False), ("redelivery", "ttr", False))
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "requeue", "Requeue", id="taskdash.requeue"),
        Binding("R", "requeue_orphaned", "Requeue orphans", id="taskdash.requeue_orphaned"),
        Binding("Q", "quarantine", "Quarantine", id="taskdash.quarantine"),
        Binding("x", "revoke", "Revoke", id="taskdash.revoke"),
    ]
    STATE_ORDER: ClassVar[dict[str, int]] = {"orphaned": 0, "held-by-silent": 1, "may-be-held": 2, "unknown": 3,
                                             "active": 4, "reserved": 5, "scheduled": 6}

    def items_of(self, snapshot: Snapshot) -> Sequence[Any]:
        return snapshot.unacked

    def row_key(self, item: UnackedEntry) -> str:
        return item.delivery_tag

    def row_sort(self, e: UnackedEntry, sort_by: str) -> Any:
        if sort_by == "age":
            return e.age_s
        if sort_by == "state":
            return self.STATE_ORDER.get(e.state, 9)
        if sort_by == "ttr":
            return e.time_to_redelivery_s
        return getattr(e, sort_by, None)

    def row_text(self, e: UnackedEntry) -> str:
        return " ".join(str(x) for x in (e.state, e.task, e.task_id, e.queue, e.holder, e.delivery_tag,
                                         *e.possible_holders, "stale" if e.stale else "")).lower()

    def row_cells(self, e: UnackedEntry) -> tuple[Any, ...]:
        c = self.c
        row_style = c.error if e.state == "orphaned" else ""
        age = Text(("⚠ " if e.stale else "") + fmt_age(e.age_s), style=c.warning if e.stale else row_style)
        ttr = "now" if e.stale else fmt_age(e.time_to_redelivery_s)
        # A message a live worker may hold: the time left before kombu redelivers it is the decision.
        ttr_style = c.warning if e.stale else "bold" if e.state in MAYBE_HELD_STATES else ""
        maybe = e.state in MAYBE_HELD_STATES and bool(e.possible_holders)
        holder_s = holder_text(e)
        # a cut keeps the "?" (nobody reported it) and the "+N" (other possible holders)
        holder = (KeepEnd(holder_s, len(holder_s) - len(truncate(e.possible_holders[0], CELL_MAX)), style=c.warning)
                  if maybe else Text(holder_s, style=c.warning if e.state in MAYBE_HELD_STATES else ""))
        return (unacked_state_text(e, c), Text(whole(e.task), style=row_style), short_id(e.task_id),
                whole(e.queue), age, Text(ttr, style=ttr_style), holder, "↻" if e.redelivered else "")

    def extra_note(self, text: str) -> str:
        snap = self.snapshot
        if snap is not None and snap.unacked_total > len(snap.unacked):
            extra = (f"{snap.unacked_total:,} unacked in Redis; the collector reads a window of "
                     f"{len(snap.unacked):,} (oldest first)")
            return f"{text} · {extra}" if text else extra
        return text

    def action_requeue(self) -> None:
        """Requeue the marked rows (or the row under the cursor)."""
        self.request("requeue")

    def action_requeue_orphaned(self) -> None:
        """Requeue every orphaned message."""
        snap = self.snapshot
        self.request("requeue_orphaned", snap.orphaned if snap else ())

    def action_quarantine(self) -> None:
        """Quarantine the marked rows (or the row under the cursor)."""
        self.request("quarantine")

    def action_revoke(self) -> None:
        """Revoke the task under the cursor."""
        item = self.table.selected_item
        self.request("revoke", () if item is None else (item,))


# ---------------------------------------------------------------------------------------------
LIVENESS_LABELS: dict[str, str] = {"responding": "RESPONDING", "silent": "SILENT", "dead": "DEAD",
                                   "ghost": "GHOST"}
LIVENESS_ORDER: dict[str, int] = {"dead": 0, "ghost": 1, "silent": 2, "offline": 0, "no-reply": 2,
                                  "responding": 3, "online": 3}
"""Sort rank of a worker's liveness: the ones that need a look first."""


def worker_liveness(w: WorkerInfo) -> str:
    """responding / silent / dead / ghost when decided by evidence, else the online flags' offline /
    no-reply / online (a row from before the first decision, or a collector without liveness)."""
    if w.liveness is not None:
        return w.liveness
    if not w.online:
        return "offline"
    return "online" if w.responding else "no-reply"


def liveness_text(w: WorkerInfo, c: Colors) -> Text:
    """Liveness cell, in capitals and bold for the states that need a look (readable with NO_COLOR):
    DEAD and GHOST in the error style, SILENT in the warning style, RESPONDING in the success style."""
    state = worker_liveness(w)
    if state in ("dead", "ghost", "offline"):
        return Text(LIVENESS_LABELS.get(state, state.upper()), style=c.error)
    if state in ("silent", "no-reply"):
        return Text(LIVENESS_LABELS.get(state, state.upper()), style=f"bold {c.warning}")
    return Text(LIVENESS_LABELS.get(state, state), style=c.success)


def liveness_since_s(w: WorkerInfo, now: float) -> float | None:
    """Seconds the liveness evidence has held (for a worker not decided yet: since it was last seen)."""
    if w.liveness is not None and w.liveness_since is not None:
        return max(0.0, now - w.liveness_since)
    return w.last_seen_s


class WorkersPanel(Panel):
    """Workers: liveness by evidence (responding / silent / dead / ghost, since when, and why), pool,
    concurrency, active/reserved/scheduled, processed.

    The Evidence column takes the width the others leave (it is the one that truncates; the detail
    screen shows it whole): Worker, Liveness, Since and Busy stay on screen at 80 columns.
    """

    VIEW = "workers"
    SOURCE = "workers"
    TITLE = "Workers"
    DETAIL_KIND = "worker"
    EMPTY = "no worker has answered yet (inspect runs every few seconds)"
    COLUMNS = (
        Col("Worker", "host", shrink=14, roomy=36),
        Col("Liveness", "liveness", 10),
        Col("Since", "since", 6),
        Col("Evidence", "evidence", shrink=20, roomy=32),
        Col("Busy", "busy", 5),
        Col("Res", "reserved", 3, priority=1),
        Col("Sch", "scheduled", 3, priority=4),
        Col("Processed", "processed", 9, priority=2),
        Col("Done/s", "rate", 6, priority=3),
        Col("Pool", "pool", priority=5),
        Col("Queues", "queues", priority=5, shrink=10, roomy=20),
    )
    SORT_COLUMNS: ClassVar[dict[str, str]] = {"active": "busy"}
    SORTS = (("name", "host", False), ("liveness", "liveness", False), ("active", "active", True),
             ("processed", "processed", True))
    EVIDENCE_MIN = 20
    """The evidence is never cut shorter than this."""
    EVIDENCE_ROOMY = 32
    """Evidence width kept before the least important columns are hidden (``Col.roomy``)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "control", "Control", id="taskdash.control"),
        Binding("T", "timeline", "Timeline", id="taskdash.timeline"),
    ]

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self._now = 0.0
        self._evidence_width = CELL_MAX
        self._sized_for = 0

    def action_timeline(self) -> None:
        """Crash forensics timeline of the worker under the cursor (all workers when none)."""
        item = self.table.selected_item
        self.app.action_crash(item.hostname if item is not None else "")  # type: ignore[attr-defined]

    def action_control(self) -> None:
        """Open the worker-command prompt for the marked workers (or the one under the cursor)."""
        targets = self.targets()
        if not targets:
            self.app.notify("no worker selected", severity="warning", timeout=3)
            return
        self.screen.open_control_prompt(targets)  # type: ignore[attr-defined] - the DashboardScreen

    def on_resize(self) -> None:
        if self.snapshot is not None and self.size.width != self._sized_for and self.is_displayed_view():
            self.resync()  # the evidence cells follow the width

    def evidence_width(self, workers: Sequence[WorkerInfo]) -> int:
        """Characters of evidence shown: the width the table's fit gives the Evidence column (the one that
        is cut first; whole in the detail screen). Cells are cut to it here (the table keeps whole cells'
        widths), so it is computed from the whole cells' widths: hostnames, evidence, pool, queues."""
        table = self.table
        self._sized_for = self.size.width
        whole_width = {
            "host": max((cell_len(whole(w.hostname)) for w in workers), default=0),
            "evidence": max((cell_len(whole(w.liveness_evidence)) for w in workers), default=0),
            "pool": max((cell_len(w.pool or "–") for w in workers), default=0),
            "queues": max((cell_len(whole(",".join(w.queues))) for w in workers), default=0),
        }
        table.natural_hints = {"evidence": whole_width["evidence"]}
        natural = [table.label_width(c.key, whole_width.get(c.key, 0)) if c.width is None else c.width
                   for c in self.COLUMNS]
        widths, hidden = table.fit(natural)
        j = next(i for i, c in enumerate(self.COLUMNS) if c.key == "evidence")
        return max(self.EVIDENCE_MIN, widths[j])

    def prepare(self, snapshot: Snapshot) -> None:
        super().prepare(snapshot)
        self._now = snapshot.taken_at
        self._evidence_width = self.evidence_width(snapshot.workers)

    def items_of(self, snapshot: Snapshot) -> Sequence[Any]:
        return snapshot.workers

    def row_key(self, item: WorkerInfo) -> str:
        return item.hostname

    def row_sort(self, w: WorkerInfo, sort_by: str) -> Any:
        if sort_by == "liveness":
            return (LIVENESS_ORDER.get(worker_liveness(w), 9), w.hostname)
        return {"host": w.hostname, "active": w.active, "processed": w.processed}.get(sort_by)

    def row_text(self, w: WorkerInfo) -> str:
        return " ".join((w.hostname, "online" if w.online else "offline", worker_liveness(w),
                         w.liveness_evidence or "", w.pool or "", *w.queues)).lower()

    def row_cells(self, w: WorkerInfo) -> tuple[Any, ...]:
        c = self.c
        state = worker_liveness(w)
        bad = state in ("dead", "ghost", "offline")
        evidence = Text(truncate(w.liveness_evidence, self._evidence_width),
                        style=c.error if bad else c.warning if state in ("silent", "no-reply") else c.muted)
        rate = self.history.processed_rate(w.hostname)
        busy = f"{w.active}/{fmt_int(w.concurrency)}" if w.concurrency is not None else str(w.active)
        return (Text(whole(w.hostname), style=c.muted if state in ("dead", "offline") else ""), liveness_text(w, c),
                fmt_age(liveness_since_s(w, self._now)), evidence, busy, str(w.reserved), str(w.scheduled),
                fmt_int(w.processed), fmt_rate(rate).lstrip("+"), w.pool or "–", whole(",".join(w.queues)))


# ---------------------------------------------------------------------------------------------
class TasksPanel(Panel):
    """Results: counts per state (with scan progress until a full pass completes), recent failures."""

    VIEW = "tasks"
    SOURCE = "results"
    TITLE = "Tasks · recent failures"
    DETAIL_KIND = "failure"
    EMPTY = "no failure stored in the result backend"
    COLUMNS = (
        Col("Task", "task", shrink=12, roomy=28),
        Col("Id", "id", priority=2),
        Col("Exception", "exc", shrink=12, roomy=30),
        Col("Done", "done"),
        Col("Worker", "worker", priority=1, shrink=10, roomy=24),
    )
    SORTS = (("done", "done", True), ("task", "task", False), ("exception", "exc", False))
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry", "Retry", id="taskdash.retry"),
        Binding("t", "stats('sort')", "Stats sort", show=False),
        Binding("n", "stats('table')", "Per name", show=False),
        Binding("e", "stats('filter')", "Events filter", show=False),
    ]

    def action_stats(self, what: str) -> None:
        """Per-task-name analytics keys (issue 15): t sort, n the name table, e the event filter."""
        from tui.widgets.taskstats import TaskStatsBox

        box = self.query_one(TaskStatsBox)
        if what == "sort":
            box.action_stats_sort()
        elif box.display:
            box.query_one("#ts-filter" if what == "filter" else "#ts-table").focus()

    def compose_extra(self) -> ComposeResult:
        from tui.widgets.taskstats import TaskStatsBox  # per-task-name analytics (issue 15)

        yield TaskStatsBox()
        yield Static("", id="task-states")

    def resync(self) -> None:
        super().resync()
        if self.snapshot is not None and self.is_mounted:
            self.query_one("#task-states", Static).update(self.states_text(self.snapshot))
            from tui.widgets.taskstats import TaskStatsBox

            self.query_one(TaskStatsBox).show(self.snapshot)

    def states_text(self, snapshot: Snapshot) -> Text:
        """``SUCCESS 1,204 · FAILURE 12 · …`` and the scan progress."""
        c = self.colors
        t = Text()
        if not snapshot.backend.ok:
            t.append(f"result backend unreachable: {snapshot.backend.error or 'error'}", style=c.error)
            return t
        stats = snapshot.tasks
        if not stats.states:
            t.append("no stored results", style=c.muted)
        for i, (state, n) in enumerate(stats.states):
            if i:
                t.append(" · ")
            style = c.error if state == "FAILURE" else c.success if state == "SUCCESS" else ""
            t.append(f"{state} ", style=style)
            t.append(f"{n:,}", style="bold")
        if stats.complete:
            t.append(f"   (scan complete: {stats.scanned:,} keys)", style=c.muted)
        else:
            t.append(f"   (scanning… {stats.scanned:,} keys so far)", style=c.warning)
        return t

    def items_of(self, snapshot: Snapshot) -> Sequence[Any]:
        return snapshot.tasks.recent_failures

    def row_key(self, item: TaskFailure) -> str:
        return item.task_id

    def prepare(self, snapshot: Snapshot) -> None:
        super().prepare(snapshot)
        self._now = snapshot.taken_at

    def row_sort(self, f: TaskFailure, sort_by: str) -> Any:
        if sort_by == "done":
            return parse_time(f.date_done)
        return {"task": f.task, "exc": f.exception}.get(sort_by)

    def row_text(self, f: TaskFailure) -> str:
        return " ".join(str(x) for x in (f.task, f.task_id, f.exception, f.worker)).lower()

    def row_cells(self, f: TaskFailure) -> tuple[Any, ...]:
        done = parse_time(f.date_done)
        when = fmt_ago(self._now - done) if done is not None else whole(f.date_done)  # unreadable: as stored
        return (whole(f.task), short_id(f.task_id), Text(whole(f.exception), style=self.c.error), when,
                whole(f.worker))

    def action_retry(self) -> None:
        """Retry the failed task under the cursor from its stored args."""
        item = self.table.selected_item
        self.request("retry", () if item is None else (item,))


# ---------------------------------------------------------------------------------------------
class PoisonPanel(Panel):
    """Poison suspects: task ids delivered again and again (probably killing their worker)."""

    VIEW = "poison"
    TITLE = "Poison suspects"
    DETAIL_KIND = "poison"
    EMPTY = "no poison suspect: no task id has been delivered repeatedly"
    COLUMNS = (
        Col("Task", "task", shrink=12, roomy=28),
        Col("Id", "id", priority=3),
        Col("Queue", "queue", priority=1, shrink=8, roomy=16),
        Col("Deliv", "deliveries"),
        Col("First", "first", priority=2),
        Col("Last", "last"),
        Col("Workers", "workers", priority=4, shrink=10, roomy=24),
        Col("Reason", "reason", shrink=12, roomy=24),
    )
    SORTS = (("deliveries", "deliveries", True), ("last seen", "last", True), ("task", "task", False))
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("Q", "quarantine", "Quarantine", id="taskdash.quarantine"),
        Binding("x", "revoke", "Revoke", id="taskdash.revoke"),
    ]

    def prepare(self, snapshot: Snapshot) -> None:
        super().prepare(snapshot)
        self._now = snapshot.taken_at

    def items_of(self, snapshot: Snapshot) -> Sequence[Any]:
        return snapshot.poison

    def row_key(self, item: PoisonSuspect) -> str:
        return item.task_id

    def row_sort(self, p: PoisonSuspect, sort_by: str) -> Any:
        return {"deliveries": p.deliveries, "last": p.last_seen, "task": p.task}.get(sort_by)

    def row_text(self, p: PoisonSuspect) -> str:
        return " ".join(str(x) for x in (p.task, p.task_id, p.queue, p.reason, *p.workers)).lower()

    def row_cells(self, p: PoisonSuspect) -> tuple[Any, ...]:
        c, now = self.c, self._now
        deliveries = self.app.deliveries_of(p) if hasattr(self.app, "deliveries_of") else p.deliveries
        return (Text(whole(p.task), style=c.error), short_id(p.task_id), whole(p.queue),
                Text(str(deliveries), style=c.error), fmt_ago(now - p.first_seen),
                fmt_ago(now - p.last_seen), whole(",".join(p.workers)), whole(p.reason))

    def action_quarantine(self) -> None:
        """Quarantine the marked suspects (or the one under the cursor)."""
        self.request("quarantine")

    def action_revoke(self) -> None:
        """Revoke the suspect under the cursor."""
        item = self.table.selected_item
        self.request("revoke", () if item is None else (item,))


# ---------------------------------------------------------------------------------------------
def q_attr(entry: Any, *names: str) -> Any:
    """First present attribute (or mapping key) of a quarantine entry."""
    for name in names:
        if isinstance(entry, dict):
            if entry.get(name) is not None:
                return entry[name]
        elif getattr(entry, name, None) is not None:
            return getattr(entry, name)
    return None


_NO_SOURCE = SourceStatus(url="", ok=True)


class QuarantinePanel(Panel):
    """taskdash's dead-letter list: quarantined messages, replayable or deletable."""

    VIEW = "quarantine"
    TITLE = "Quarantine"
    DETAIL_KIND = "quarantined"
    EMPTY = "quarantine is empty (Q on an unacked row or a poison suspect puts a message here)"
    COLUMNS = (
        Col("Task", "task", shrink=12, roomy=28),
        Col("Id", "id", priority=2),
        Col("Queue", "queue", priority=1, shrink=8, roomy=16),
        Col("When", "when"),
        Col("Deliv", "deliveries", priority=3),
        Col("Reason", "reason", shrink=12, roomy=24),
    )
    SORTS = (("when", "when", True), ("task", "task", False), ("queue", "queue", False))
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "replay", "Replay", id="taskdash.replay"),
        Binding("d", "delete", "Delete", id="taskdash.delete"),
    ]

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.entries: tuple[Any, ...] = ()
        self.error: str | None = None
        self.loaded = False
        self._now = 0.0

    def reset(self) -> None:
        self.entries = ()
        self.error = None
        self.loaded = False
        super().reset()

    def show_entries(self, entries: tuple[Any, ...], error: str | None = None) -> None:
        """Take a freshly read quarantine list."""
        self.loaded = True
        self.error = error
        if error is None:
            self.entries = entries
        self.resync()

    def resync(self) -> None:
        if self.snapshot is None and self.loaded:
            self.snapshot = Snapshot(taken_at=time.time(), broker=_NO_SOURCE, backend=_NO_SOURCE)
        super().resync()

    def prepare(self, snapshot: Snapshot) -> None:
        super().prepare(snapshot)
        self._now = snapshot.taken_at

    def items_of(self, snapshot: Snapshot) -> Sequence[Any]:
        return self.entries

    def row_key(self, e: Any) -> str:
        return str(q_attr(e, "id", "qid", "task_id", "delivery_tag") or "?")

    @staticmethod
    def _when(e: Any) -> float | None:
        when = q_attr(e, "quarantined_at", "when", "at")
        try:
            return float(when) if when is not None else None
        except (TypeError, ValueError):
            return None

    def row_sort(self, e: Any, sort_by: str) -> Any:
        if sort_by == "when":
            return self._when(e)
        return q_attr(e, sort_by)

    def row_text(self, e: Any) -> str:
        return " ".join(str(q_attr(e, n) or "") for n in ("task", "task_id", "queue", "reason")).lower()

    def row_cells(self, e: Any) -> tuple[Any, ...]:
        when = self._when(e)
        return (whole(q_attr(e, "task", "name")), short_id(q_attr(e, "task_id")),
                whole(q_attr(e, "queue", "original_queue")),
                fmt_ago(None if when is None else self._now - when),
                fmt_int(q_attr(e, "deliveries")), whole(q_attr(e, "reason")))

    def extra_note(self, text: str) -> str:
        if self.error:
            return f"could not read the quarantine: {self.error}"
        if not self.loaded:
            return "reading the quarantine…"
        return text

    def action_replay(self) -> None:
        """Put the marked (or selected) quarantined messages back on their queues."""
        self.request("replay")

    def action_delete(self) -> None:
        """Delete the marked (or selected) quarantined messages for good."""
        self.request("delete_quarantined")


PANELS: tuple[type[Panel], ...] = (QueuesPanel, UnackedPanel, WorkersPanel, TasksPanel, PoisonPanel,
                                   QuarantinePanel)
VIEWS: tuple[str, ...] = ("overview", *(p.VIEW for p in PANELS))
"""Every view in key order: ``0`` is the Overview (tui/widgets/overview.py, the first screen), ``1``–``6`` the panels."""
