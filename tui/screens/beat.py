"""``:beat``: periodic tasks — beat alive or dead with its evidence, every entry, missed runs and lint.

Reads only the app's latest snapshot (``Snapshot.beat``, built by the collector: collectors/analysis/
beat_rules.py) once a second on the UI thread; no Redis access here.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from collectors.core.beat_canvas import BeatView
from tui.format import safe_text


def _age(v: float | None) -> str:
    if v is None:
        return "-"
    v = abs(v)
    return f"{v:.0f}s" if v < 120 else f"{v / 60:.0f}m" if v < 7200 else f"{v / 3600:.1f}h"


def beat_header(b: BeatView | None, now: float) -> Text:
    """The lines above the entries: state, evidence, lock, findings."""
    t = Text()
    if b is None:
        t.append("beat not read yet", style="dim")
        return safe_text(t)
    style = {"alive": "bold green", "dead": "bold red", "unknown": "yellow", "off": "dim"}[b.state]
    t.append(f"beat ({b.scheduler}): {b.state.upper()}", style=style)
    if b.dead_since:
        t.append(f" since {time.strftime('%H:%M:%S', time.localtime(b.dead_since))} ({_age(now - b.dead_since)} ago)",
                 style=style)
    t.append(f"\n{b.evidence or ''}")
    if b.lock is not None:
        lk = b.lock
        t.append(f"\nlock {lk.key}: " + (f"held by {lk.holder[:12]}, TTL {lk.ttl_s:.1f}s"
                                         if lk.holder and lk.ttl_s is not None else "not held"))
        if lk.last_extended_s is not None:
            t.append(f", extended {lk.last_extended_s:.1f}s ago")
    for f in b.findings:
        t.append(f"\n⚠ {f.rule}: {f.message}", style="yellow")
    if b.error:
        t.append(f"\nerror: {b.error}", style="bold red")
    return safe_text(t)


class BeatScreen(ModalScreen[None]):
    """The beat view (``:beat``); esc closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    BeatScreen { align: center middle; }
    BeatScreen > Vertical { width: 95%; height: 90%; border: round $accent; background: $surface; }
    BeatScreen #beat-header { height: auto; padding: 0 1; }
    """
    COLUMNS = ("Entry", "Task", "Schedule", "Queue", "Last run", "Next due", "Runs", "Missed", "Overdue", "Seen by")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="beat-header")
            yield DataTable(id="beat-table", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "Beat · periodic tasks"
        self.query_one(DataTable).add_columns(*self.COLUMNS)
        self.refresh_view()
        self.set_interval(1.0, self.refresh_view)

    def refresh_view(self) -> None:
        snap: Any = getattr(self.app, "snapshot", None)
        b = getattr(snap, "beat", None)
        now = time.time()
        self.query_one("#beat-header", Static).update(beat_header(b, now))
        table = self.query_one(DataTable)
        table.clear()
        for e in (b.entries if b else ()):
            missed = Text(str(e.missed_runs), style="bold red" if e.missed_runs else "")
            overdue = Text(_age(e.overdue_s), style="bold red") if e.overdue_s is not None else "-"
            table.add_row(
                safe_text(Text(e.name)), safe_text(Text(e.task or "?")), e.schedule, e.queue or "-",
                _age(now - e.last_run_at) + " ago" if e.last_run_at else "never seen",
                ("in " + _age(e.next_due_at - now)) if e.next_due_at and e.next_due_at > now else
                (_age(now - e.next_due_at) + " ago" if e.next_due_at else "-"),
                "-" if e.total_run_count is None else str(e.total_run_count), missed, overdue, e.evidence or "-",
                key=e.name)
