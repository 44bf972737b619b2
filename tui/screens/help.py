"""HelpScreen: every key, per view, and what read-only mode disables."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from collectors.reads.search import SEARCH_HELP
from collectors.writes.control import CONTROL_HELP

GLOBAL_KEYS: tuple[tuple[str, str], ...] = (
    ("?", "this help"),
    ("/", "filter the rows of the current view (esc clears); in Tasks: search (syntax below)"),
    (":", "jump to a view: :overview :queues :unacked :workers :tasks :poison :quarantine"),
    (":health", "Redis health: memory vs maxmemory, eviction policy, evicted keys, clients, persistence"),
    (":lint", "Celery config lint: settings behind duplicates and poison loops, each with its fix"),
    (":crash [HOST]", "crash forensics: online/offline, heartbeat gaps, pool process deaths and the task "
                      "that was running (all workers, or HOST; T on a worker)"),
    (":ctx [NAME]", "list the contexts of the config file (▶ current) · switch to NAME (TASKDASH_CONFIG, "
                    "~/.config/taskdash/config.toml)"),
    ("tab / shift+tab", "next / previous view (mouse: click a tab)"),
    ("0-6", "jump straight to a view (0: the overview, problems first)"),
    ("↑ ↓ pgup pgdn", "move the cursor a row / a page; enter (or click twice) opens the details"),
    ("home / end", "the first / last row"),
    ("space", "mark the row for a bulk action"),
    ("s", "sort by the next column (its header shows ▼ descending / ▲ ascending)"),
    ("S", "reverse the sort"),
    ("ctrl+w", "wide: every column whole, ← → scroll sideways; again: fit the columns to the terminal. "
               "Narrow terminals cut long cells (…) and hide the least needed columns: the line under "
               "the table names them (the details, enter, show everything)"),
    ("P", "pause / resume the refresh"),
    ("ctrl+r", "refresh now"),
    ("ctrl+p", "command palette (views, actions, themes)"),
    ("q / ctrl+c", "quit"),
)

VIEW_KEYS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Queues", (("p", "purge the queue (preview, optional export, asks first)"),
                ("b", "show ready messages per priority band"))),
    ("Unacked", (("r", "requeue the marked / selected messages onto their queues"),
                 ("R", "requeue every orphaned message"),
                 ("Q", "quarantine the marked / selected messages"),
                 ("x", "revoke the task (asks whether to terminate)"))),
    ("Workers", (("enter", "the worker's own report: stats, pool, queues, registered tasks, conf"),
                 ("T", "crash-forensics timeline of the worker (a: all workers)"),
                 ("c", "send a command to the marked / selected workers: grow N, shrink N, autoscale MAX MIN, "
                       "restart, add-consumer Q, cancel-consumer Q, rate-limit TASK RATE, "
                       "time-limit TASK SOFT HARD, shutdown"))),
    ("Tasks", (("/", "search tasks: stored results, unacked and queued messages (syntax below)"),
               ("r", "retry the failed task from its stored args"))),
    ("Poison", (("Q", "quarantine the suspects (stops the loop)"), ("x", "revoke the task"))),
    ("Quarantine", (("r", "replay onto the original queue"), ("d", "delete for good"))),
)


def help_text(read_only: bool) -> Text:
    """The help body."""
    t = Text()
    t.append("Everywhere\n", style="bold underline")
    for key, what in GLOBAL_KEYS:
        t.append(f"  {key:<16}", style="bold")
        t.append(f"{what}\n")
    for view, keys in VIEW_KEYS:
        t.append(f"\n{view}\n", style="bold underline")
        for key, what in keys:
            t.append(f"  {key:<16}", style="bold")
            t.append(f"{what}{'  [disabled: read-only]' if read_only else ''}\n")
    t.append("\nQueues: In/s and Out/s are estimates (Out = the consuming workers' processed rate split over "
             "their queues; In = Out + the change of depth). Trend = depth over the last refreshes.\n")
    t.append("Unacked: ORPHANED = no live worker claims it; ⚠ age = older than visibility_timeout (the next "
             "restore sweep requeues it).\n")
    t.append("\n")
    t.append(SEARCH_HELP)
    t.append("\n")
    t.append(CONTROL_HELP)
    t.append("\nEvery write asks first (default No), names exactly what changes, and is written to the "
             "audit log.\n")
    if read_only:
        t.append("Read-only mode (--read-only): every write key is disabled.\n", style="bold")
    return t


class HelpScreen(ModalScreen[None]):
    """Key reference."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="taskdash.help.close"),
    ]

    def __init__(self, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Label("taskdash keys", id="help-title")
            with VerticalScroll(id="help-body"):
                yield Static(help_text(self.read_only))
            yield Label("esc: close", id="help-hint")

    AUTO_FOCUS = "#help-body"

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
