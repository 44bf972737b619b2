"""``:canvas``: groups and chords from the result backend; enter lists a chord's parts and where a
missing part's message is (queued / unacked with its state / quarantined / lost).

The chord list comes from the app's latest snapshot (``Snapshot.canvas``); the parts are read on enter
in a thread worker (``Collector.beat_canvas.chord_parts``, O(parts) and capped) and shown below.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from collectors.core.beat_canvas import ChordPart
from tui.format import safe_text

STATE_STYLE = {"stuck": "bold red", "failed": "red", "running": "yellow", "done": "green"}


def _age(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}s" if v < 120 else f"{v / 60:.0f}m" if v < 7200 else f"{v / 3600:.1f}h"


class CanvasScreen(ModalScreen[None]):
    """The canvas view (``:canvas``); enter on a chord lists its parts; esc closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    CanvasScreen { align: center middle; }
    CanvasScreen > Vertical { width: 95%; height: 90%; border: round $accent; background: $surface; }
    CanvasScreen #canvas-note { height: auto; padding: 0 1; }
    CanvasScreen #canvas-table { height: 1fr; }
    CanvasScreen #parts-table { height: 1fr; }
    """
    COLUMNS = ("Group", "Kind", "State", "Size", "Done", "Failed", "Missing", "Body", "Last part", "Reason")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="canvas-note")
            yield DataTable(id="canvas-table", cursor_type="row")
            yield DataTable(id="parts-table", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "Canvas · groups and chords (enter: parts)"
        self.query_one("#canvas-table", DataTable).add_columns(*self.COLUMNS)
        self.query_one("#parts-table", DataTable).add_columns("Index", "Task id", "State", "Where", "Task")
        self.refresh_view()
        self.set_interval(1.0, self.refresh_view)

    def refresh_view(self) -> None:
        snap: Any = getattr(self.app, "snapshot", None)
        cv = getattr(snap, "canvas", None)
        note = "canvas not read yet" if cv is None else (
            f"{len(cv.chords)} chord(s)/group(s); stuck = no part finished for {cv.stuck_after_s:.0f}s"
            + ("" if cv.scan_complete else " · first scan in progress") + (f" · error: {cv.error}" if cv.error else ""))
        self.query_one("#canvas-note", Static).update(safe_text(Text(note)))
        table = self.query_one("#canvas-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for c in (cv.chords if cv else ()):
            table.add_row(
                c.group_id[:36], c.kind, Text(c.state, style=STATE_STYLE.get(c.state, "")),
                "?" if c.size is None else str(c.size), str(c.done), str(c.failed),
                "?" if c.missing is None else str(c.missing), safe_text(Text(c.body or "?")),
                _age(c.last_progress_age_s) + " ago", safe_text(Text(c.reason or "")), key=c.group_id)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "canvas-table" or event.row_key.value is None:
            return
        self.query_one("#canvas-note", Static).update(f"reading the parts of {event.row_key.value}…")
        self._load_parts(str(event.row_key.value))

    @work(thread=True, exclusive=True, group="chord-parts", exit_on_error=False)
    def _load_parts(self, gid: str) -> None:
        app: Any = self.app
        source = getattr(getattr(app, "collector", None), "beat_canvas", None)
        snap = getattr(app, "snapshot", None)
        if source is None:
            self.app.call_from_thread(self._show_parts, gid, (), "this collector does not read chords")
            return
        queues = tuple(q.name for q in getattr(snap, "queues", ()))
        unacked = {e.delivery_tag: e.state for e in getattr(snap, "unacked", ())}
        started = time.monotonic()
        try:
            parts = source.chord_parts(gid, queues=queues, unacked_states=unacked)
            err = None
        except Exception as exc:  # noqa: BLE001 - shown, never raised into the UI
            parts, err = (), f"{type(exc).__name__}: {exc}"
        self.app.call_from_thread(self._show_parts, gid, parts, err, time.monotonic() - started)

    def _show_parts(self, gid: str, parts: tuple[ChordPart, ...], error: str | None, took: float = 0.0) -> None:
        table = self.query_one("#parts-table", DataTable)
        table.clear()
        for p in parts:
            style = "bold red" if p.state in ("lost", "FAILURE", "REVOKED") else ""
            table.add_row("-" if p.index is None else str(p.index), (p.task_id or "?")[:36],
                          Text(p.state, style=style), safe_text(Text(p.where or "-")), safe_text(Text(p.task or "-")))
        missing = sum(1 for p in parts if p.state not in ("SUCCESS", "FAILURE", "REVOKED"))
        self.query_one("#canvas-note", Static).update(safe_text(Text(
            error or f"{gid}: {len(parts)} part(s), {missing} not returned (read in {took:.2f}s)")))
