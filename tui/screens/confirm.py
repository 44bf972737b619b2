"""ConfirmScreen: the dialog in front of every write; it names exactly what will change, default No."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, Static

from tui.format import safe_text


@dataclass
class Confirmation:
    """A "Yes" answer, with the state of the dialog's options (checkbox id → checked)."""

    options: dict[str, bool] = field(default_factory=dict)


class ConfirmScreen(ModalScreen[Confirmation | None]):
    """Ask before a write. Dismisses with a ``Confirmation`` on Yes and ``None`` on No/escape.

    The "No" button has the initial focus, so ``enter`` right away is a safe no-op. ``body`` may be a
    callable: it is rendered again every second while the dialog is open (e.g. "as of 3s ago").
    """

    AUTO_FOCUS = "#no"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes", id="taskdash.confirm.yes"),
        Binding("n,escape", "cancel", "No", id="taskdash.confirm.no"),
    ]

    def __init__(self, title: str, body: str | Text | Callable[[], str | Text], *, confirm_label: str = "Yes",
                 options: Sequence[tuple[str, str, bool]] = ()) -> None:
        super().__init__()
        self.title_text = title
        self._body_fn = body if callable(body) else None
        self.body: str | Text = body() if callable(body) else body
        self.confirm_label = confirm_label
        self.options = tuple(options)

    @staticmethod
    def _render_body(body: str | Text) -> Text:
        return safe_text(Text(body) if isinstance(body, str) else body)

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Label(safe_text(Text(self.title_text)), id="confirm-title")
            with VerticalScroll(id="confirm-body"):
                yield Static(self._render_body(self.body), id="confirm-text")
            for option_id, label, default in self.options:
                yield Checkbox(label, default, id=option_id)
            with Horizontal(id="confirm-buttons"):
                yield Button("No", id="no")
                yield Button(f"{self.confirm_label} (y)", id="yes", variant="error")

    def on_mount(self) -> None:
        if self._body_fn is not None:
            self.set_interval(1.0, self._refresh_body, name="confirm-body")

    def _refresh_body(self) -> None:
        """Render a callable body again (only when its text changed)."""
        if self._body_fn is None:
            return
        body = self._body_fn()
        if body != self.body:
            self.body = body
            self.query_one("#confirm-text", Static).update(self._render_body(body))

    @on(Button.Pressed, "#yes")
    def action_confirm(self) -> None:
        """Answer Yes."""
        opts = {cb.id or "": cb.value for cb in self.query(Checkbox)}
        self.dismiss(Confirmation(opts))

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        """Answer No."""
        self.dismiss(None)
