"""``:bulk`` — bulk actions by query (issue 18): type ``ACTION QUERY`` (``move QUERY --to Q`` for a move),
enter shows the dry run (count, per source, the keys that would change, a sample; read in a thread), then
typing ``yes`` — or the count, above the threshold — runs it in batches with a progress bar. Escape stops
a run between batches (nothing half-moved); escape when nothing runs closes the screen.

The writes are :class:`collectors.writes.bulk.BulkActions` (made by ``actions_factory``: the app passes one
built on its settings, with its collector's liveness evidence); this screen only collects input and shows
results, and touches widgets only on the UI thread (``call_from_thread``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, ProgressBar, Static

from collectors.writes.bulk import ACTIONS, BulkPlan, BulkProgress
from tui.format import safe_text

HELP = ("ACTION QUERY — actions: " + " ".join(ACTIONS) + " · move needs --to QUEUE · query: the search syntax plus "
        "since:1h older:10m in:queue:NAME in:unacked in:results in:quarantine")


def parse_line(line: str) -> tuple[str, str, str | None]:
    """``'move name:"a b" in:queue:a --to b'`` -> (``move``, ``name:"a b" in:queue:a``, ``b``); the query
    text is kept as typed (the search syntax's own quotes)."""
    action, _, rest = line.strip().partition(" ")
    action = action.lower()
    if not action:
        raise ValueError("type ACTION QUERY")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    target = None
    m = re.search(r"(?:^|\s)--to(?:\s+|=)(\S+)", rest)
    if m:
        target = m.group(1)
        rest = rest[:m.start()] + rest[m.end():]
    elif re.search(r"(?:^|\s)--to\s*$", rest):
        raise ValueError("--to needs a queue")
    return action, " ".join(rest.split()), target


class BulkScreen(ModalScreen[None]):
    """Dry run, typed confirmation, batched run with progress; escape stops between batches."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "stop_or_close", "Stop / close")]
    DEFAULT_CSS = """
    BulkScreen { align: center middle; }
    BulkScreen > Vertical { width: 95%; height: 90%; border: round $accent; background: $surface; }
    BulkScreen #bulk-plan { height: 1fr; padding: 0 1; overflow-y: auto; }
    BulkScreen #bulk-status { height: auto; padding: 0 1; }
    """

    def __init__(self, actions_factory: Callable[[], Any], *, read_only: bool = False, initial: str = "") -> None:
        super().__init__()
        self._factory = actions_factory
        self._actions: Any = None
        self.read_only = read_only
        self.initial = initial
        self.plan: BulkPlan | None = None
        self.running = False
        self.stop_event = threading.Event()
        self.result: Any = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(safe_text(Text(HELP, style="dim")), id="bulk-help")
            yield Input(value=self.initial, placeholder="e.g. requeue in:unacked name:billing older:10m", id="bulk-query")
            yield Static("", id="bulk-plan")
            yield Input(placeholder="type yes (or the count) to run", id="bulk-confirm", disabled=True)
            yield ProgressBar(total=100, id="bulk-progress", show_eta=False)
            yield Static("", id="bulk-status")

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "Bulk actions by query" + (" (read-only: dry runs only)"
                                                                          if self.read_only else "")
        self.query_one("#bulk-query", Input).focus()

    def _status(self, text: str, style: str = "") -> None:
        self.query_one("#bulk-status", Static).update(safe_text(Text(text, style=style)))

    def _get_actions(self) -> Any:
        if self._actions is None:
            self._actions = self._factory()
        return self._actions

    # ---- input ------------------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "bulk-query":
            try:
                action, query, target = parse_line(event.value)
            except ValueError as exc:
                self._status(str(exc), "red")
                return
            self._status("dry run…", "dim")
            self._dry_run(action, query, target)
        elif event.input.id == "bulk-confirm" and self.plan is not None:
            want = str(self.plan.count) if self.plan.needs_typed_confirmation else "yes"
            if event.value.strip().lower() != want:
                self._status(f"not confirmed: type {want!r} to run", "yellow")
                return
            event.input.disabled = True
            self._run(self.plan)

    @work(thread=True, exclusive=True, group="bulk-plan", exit_on_error=False)
    def _dry_run(self, action: str, query: str, target: str | None) -> None:
        try:
            plan = self._get_actions().plan(action, query, target=target)
        except Exception as exc:  # noqa: BLE001 - shown to the user, masked by the writes layer
            self.app.call_from_thread(self._status, str(exc), "red")
            return
        self.app.call_from_thread(self._show_plan, plan)

    def _show_plan(self, plan: BulkPlan) -> None:
        self.plan = plan
        self.query_one("#bulk-plan", Static).update(safe_text(Text("\n".join(plan.describe(15)))))
        confirm = self.query_one("#bulk-confirm", Input)
        if self.read_only:
            self._status("read-only mode: dry run only, nothing can be changed", "yellow")
            return
        if not plan.count:
            self._status("nothing matched", "yellow")
            return
        confirm.disabled = False
        confirm.value = ""
        confirm.placeholder = (f"type the count ({plan.count}) to run" if plan.needs_typed_confirmation
                               else "type yes to run")
        confirm.focus()
        self._status(f"{plan.count} item(s) — confirm below; escape cancels", "bold")

    # ---- run --------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="bulk-run", exit_on_error=False)
    def _run(self, plan: BulkPlan) -> None:
        self.running = True
        self.stop_event.clear()
        self.app.call_from_thread(self.query_one("#bulk-progress", ProgressBar).update, total=plan.count, progress=0)
        try:
            res = self._get_actions().run(plan, stop=self.stop_event.is_set,
                                          progress=lambda p: self.app.call_from_thread(self._progress, p))
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self._status, str(exc), "red")
            return
        finally:
            self.running = False
        self.result = res
        self.app.call_from_thread(self._status, res.message, "green" if res.count else "yellow")

    def _progress(self, p: BulkProgress) -> None:
        self.query_one("#bulk-progress", ProgressBar).update(total=p.total, progress=p.done)
        self._status(f"{p.done}/{p.total} looked at · {p.changed} changed · {p.gone} gone · {p.refused} refused"
                     f" (batch {p.batches}; escape stops after this batch)")

    def action_stop_or_close(self) -> None:
        if self.running:
            self.stop_event.set()
            self._status("stopping after this batch…", "yellow")
            return
        self.dismiss(None)
