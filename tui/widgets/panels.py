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
from textual import on
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
    fmt_int,
    fmt_rate,
    safe_text,
    short_id,
    sparkline,
    truncate,
)
from tui.messages import DetailRequested, WriteRequested
from tui.widgets.keyed_table import KeyedTable

if TYPE_CHECKING:
    from tui.history import History

MAX_ROWS = 5000
"""Rows per table (the user scrolls them all; KeyedTable builds cells only around the viewport); the
rest are counted and reachable through the filter or sort."""


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
    COLUMNS: ClassVar[tuple[tuple[str, str, int | None], ...]] = ()
    SORTS: ClassVar[tuple[tuple[str, str, bool], ...]] = ()
    """(label, sort key, descending) choices cycled by ``s``; the first is the default."""
    DETAIL_KIND: ClassVar[str] = ""
    EMPTY: ClassVar[str] = "nothing here"
    SOURCE: ClassVar[str] = ""
    """The snapshot source this panel shows (``Snapshot.source``): an unreadable one is said, never empty."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark", id="taskdash.mark"),
        Binding("s", "sort", "Sort", id="taskdash.sort"),
    ]

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id or f"{self.VIEW}-panel", classes="panel")
        self.filter_text = ""
        self.sort_index = 0
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
        self.prepare(self.snapshot)
        sort_by, reverse = self.sort_choice()
        self.table.sync(items, self, filter_text=self.filter_text, sort_by=sort_by, reverse=reverse)
        self._synced = self.snapshot
        self._update_title()
        self._update_note()

    def sort_choice(self) -> tuple[str | None, bool]:
        """The active (sort key, descending)."""
        if not self.SORTS:
            return None, False
        _, key, desc = self.SORTS[self.sort_index % len(self.SORTS)]
        return key, desc

    def prepare(self, snapshot: Snapshot) -> None:
        """Per-refresh precomputation before cells are built (override)."""
        self.c = self.colors

    def _update_title(self) -> None:
        parts = [self.TITLE]
        if self.SORTS:
            label, _, desc = self.SORTS[self.sort_index % len(self.SORTS)]
            parts.append(f"sort: {label} {'↓' if desc else '↑'}")
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        table = self.table if self.is_mounted else None
        subtitle = f"{len(table.marked)} marked" if table is not None and table.marked else ""
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
        """Cycle the sort order."""
        if self.SORTS:
            self.sort_index = (self.sort_index + 1) % len(self.SORTS)
            self.resync()
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
        ("Queue", "name", None),
        ("Ready", "ready", None),
        ("Unacked", "unacked", 7),
        ("Cons", "consumers", 4),
        ("Oldest", "oldest", 6),
        ("In/s", "in", 6),
        ("Out/s", "out", 6),
        ("Trend", "trend", 12),
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
        style = c.error if q.no_consumer else ""
        name = Text(q.name + (" ⚠ no consumer" if q.no_consumer else ""), style=style)
        ready = fmt_int(q.messages)
        if self.show_bands:
            ready = f"{ready} ({by_priority_text(q.by_priority)})"
        if q.wrong_type:
            ready += " !type"
        cons = "?" if q.consumers is None else str(q.consumers)
        return (name, Text(ready, style=style), fmt_int(q.unacked), Text(cons, style=style),
                fmt_age(q.oldest_age_s), fmt_rate(inn).lstrip("+"), fmt_rate(out).lstrip("+"),
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


def holder_text(e: UnackedEntry, width: int = 22) -> str:
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
        ("State", "state", 14),
        ("Task", "task", None),
        ("Id", "id", 8),
        ("Queue", "queue", None),
        ("Age", "age", 7),
        ("Redeliv.", "ttr", 8),
        ("Holder", "holder", None),
        ("↻", "redelivered", 1),
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
        holder = Text(holder_text(e), style=c.warning if e.state in MAYBE_HELD_STATES else "")
        return (unacked_state_text(e, c), Text(truncate(e.task, 28), style=row_style), short_id(e.task_id),
                truncate(e.queue, 14), age, Text(ttr, style=ttr_style), holder, "↻" if e.redelivered else "")

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
        ("Worker", "host", None),
        ("Liveness", "liveness", 10),
        ("Since", "since", 6),
        ("Evidence", "evidence", None),
        ("Busy", "busy", 5),
        ("Res", "reserved", 3),
        ("Sch", "scheduled", 3),
        ("Processed", "processed", 9),
        ("Done/s", "rate", 6),
        ("Pool", "pool", None),
        ("Queues", "queues", None),
    )
    SORTS = (("name", "host", False), ("liveness", "liveness", False), ("active", "active", True),
             ("processed", "processed", True))
    EVIDENCE_MIN = 20
    EVIDENCE_MAX = 72
    EVIDENCE_ROOMY = 44
    """Evidence width kept before the columns right of it get room too (wide terminals)."""
    _RIGHT_KEPT = ("busy",)
    """Always kept on screen right of the evidence (the evidence shrinks first, down to EVIDENCE_MIN)."""
    _RIGHT_NEXT = ("reserved", "processed", "rate", "scheduled")
    """Then these, in order, while the evidence keeps EVIDENCE_ROOMY characters."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "control", "Control", id="taskdash.control"),
        Binding("T", "timeline", "Timeline", id="taskdash.timeline"),
    ]

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self._now = 0.0
        self._evidence_width = self.EVIDENCE_MAX
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
            self.resync()  # the evidence column follows the width

    def evidence_width(self, workers: Sequence[WorkerInfo]) -> int:
        """Characters of evidence that fit beside Worker, Liveness, Since (and Busy) in this panel's width."""
        width = self.table.size.width or self.size.width or self.app.size.width
        self._sized_for = self.size.width
        pad = 2 * self.table.cell_padding
        fixed = {key: w for _, key, w in self.COLUMNS if w is not None}
        host = max((cell_len(w.hostname) for w in workers), default=6)
        left = (1 + pad) + (max(host, 6) + pad) + (fixed["liveness"] + pad) + (fixed["since"] + pad)
        room = width - left - pad - 2 - sum(fixed[k] + pad for k in self._RIGHT_KEPT)  # 2: the scrollbar
        for key in self._RIGHT_NEXT:
            if room - (fixed[key] + pad) < self.EVIDENCE_ROOMY:
                break
            room -= fixed[key] + pad
        return max(self.EVIDENCE_MIN, min(self.EVIDENCE_MAX, room))

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
        return (Text(w.hostname, style=c.muted if state in ("dead", "offline") else ""), liveness_text(w, c),
                fmt_age(liveness_since_s(w, self._now)), evidence, busy, str(w.reserved), str(w.scheduled),
                fmt_int(w.processed), fmt_rate(rate).lstrip("+"), w.pool or "–", truncate(",".join(w.queues), 30))


# ---------------------------------------------------------------------------------------------
class TasksPanel(Panel):
    """Results: counts per state (with scan progress until a full pass completes), recent failures."""

    VIEW = "tasks"
    SOURCE = "results"
    TITLE = "Tasks · recent failures"
    DETAIL_KIND = "failure"
    EMPTY = "no failure stored in the result backend"
    COLUMNS = (
        ("Task", "task", None),
        ("Id", "id", 8),
        ("Exception", "exc", None),
        ("Done", "done", 19),
        ("Worker", "worker", None),
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

    def row_sort(self, f: TaskFailure, sort_by: str) -> Any:
        return {"done": f.date_done, "task": f.task, "exc": f.exception}.get(sort_by)

    def row_text(self, f: TaskFailure) -> str:
        return " ".join(str(x) for x in (f.task, f.task_id, f.exception, f.worker)).lower()

    def row_cells(self, f: TaskFailure) -> tuple[Any, ...]:
        return (truncate(f.task, 28), short_id(f.task_id), Text(truncate(f.exception, 44), style=self.c.error),
                truncate(f.date_done, 19), truncate(f.worker, 20))

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
        ("Task", "task", None),
        ("Id", "id", 8),
        ("Queue", "queue", None),
        ("Deliv", "deliveries", 5),
        ("First", "first", 6),
        ("Last", "last", 6),
        ("Workers", "workers", None),
        ("Reason", "reason", None),
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
        return (Text(truncate(p.task, 28), style=c.error), short_id(p.task_id), truncate(p.queue, 14),
                Text(str(deliveries), style=c.error), fmt_age(now - p.first_seen),
                fmt_age(now - p.last_seen), truncate(",".join(p.workers), 24), truncate(p.reason, 30))

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
        ("Task", "task", None),
        ("Id", "id", 8),
        ("Queue", "queue", None),
        ("When", "when", 7),
        ("Deliv", "deliveries", 5),
        ("Reason", "reason", None),
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
        return (truncate(q_attr(e, "task", "name"), 28), short_id(q_attr(e, "task_id")),
                truncate(q_attr(e, "queue", "original_queue"), 14),
                fmt_age(None if when is None else self._now - when),
                fmt_int(q_attr(e, "deliveries")), truncate(q_attr(e, "reason"), 40))

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
