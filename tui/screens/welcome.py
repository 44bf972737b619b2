"""WelcomeScreen: shown when the broker cannot be reached at start; explains how to point taskdash at it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from collectors.core.config import DEFAULT_BROKER
from tui.format import safe_text


def welcome_text(broker_masked: str, error: str | None, is_default: bool) -> Text:
    """The body of the welcome screen."""
    t = Text()
    if is_default:
        t.append("No Redis answered at the default broker URL ", style="bold")
    else:
        t.append("No Redis answered at ", style="bold")
    t.append(broker_masked, style="bold reverse")
    t.append("\n")
    if error:
        t.append(f"({error})\n", style="dim")
    t.append("\nPoint taskdash at your broker:\n", style="bold underline")
    for cmd, what in (
        ("taskdash --broker redis://HOST:6379/0", "the broker URL (add --backend URL for the results)"),
        ("taskdash -A proj.celery", "read broker, backend and transport options from your Celery app"),
        ("export TASKDASH_BROKER=redis://…", "or CELERY_BROKER_URL / CELERY_RESULT_BACKEND"),
    ):
        t.append(f"  {cmd}\n", style="bold")
        t.append(f"      {what}\n")
    t.append("\nOr try it on a demo system:\n", style="bold underline")
    t.append("  taskdash demo\n", style="bold")
    t.append("      a private Redis, workers and a task load, then this dashboard\n")
    t.append("\nRetrying in the background: the dashboard opens as soon as the broker answers.\n",
             style="italic")
    return safe_text(t)


class WelcomeScreen(ModalScreen[bool]):
    """First screen when nothing is reachable. Dismisses itself when the broker comes up."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "app.quit", "Quit", id="taskdash.welcome.quit"),
        Binding("enter,escape", "close", "Dashboard anyway", id="taskdash.welcome.close"),
    ]

    def __init__(self, broker_masked: str, error: str | None, broker_url: str) -> None:
        super().__init__()
        self.broker_masked = broker_masked
        self.error = error
        self.is_default = broker_url == DEFAULT_BROKER

    def compose(self) -> ComposeResult:
        with Vertical(id="welcome-dialog"):
            yield Label("taskdash: cannot reach the broker", id="welcome-title")
            with VerticalScroll(id="welcome-body"):
                yield Static(welcome_text(self.broker_masked, self.error, self.is_default), id="welcome-text")
            yield Label("q: quit · enter: open the dashboard anyway", id="welcome-hint")

    def update_error(self, error: str | None) -> None:
        """Show the latest connection error."""
        self.error = error
        if self.is_mounted:
            self.query_one("#welcome-text", Static).update(
                welcome_text(self.broker_masked, error, self.is_default))

    def action_close(self) -> None:
        """Go to the dashboard (it keeps saying the broker is down)."""
        self.dismiss(False)
