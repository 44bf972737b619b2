"""ConfirmScreen: the dialog in front of every write; it names exactly what will change, default No."""

from __future__ import annotations

from collections.abc import Sequence
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

    The "No" button has the initial focus, so ``enter`` right away is a safe no-op.
    """

    AUTO_FOCUS = "#no"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes", id="taskdash.confirm.yes"),
        Binding("n,escape", "cancel", "No", id="taskdash.confirm.no"),
    ]

    def __init__(self, title: str, body: str | Text, *, confirm_label: str = "Yes",
                 options: Sequence[tuple[str, str, bool]] = ()) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirm_label = confirm_label
        self.options = tuple(options)

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Label(safe_text(Text(self.title_text)), id="confirm-title")
            with VerticalScroll(id="confirm-body"):
                yield Static(safe_text(Text(self.body) if isinstance(self.body, str) else self.body))
            for option_id, label, default in self.options:
                yield Checkbox(label, default, id=option_id)
            with Horizontal(id="confirm-buttons"):
                yield Button("No", id="no")
                yield Button(f"{self.confirm_label} (y)", id="yes", variant="error")

    @on(Button.Pressed, "#yes")
    def action_confirm(self) -> None:
        """Answer Yes."""
        opts = {cb.id or "": cb.value for cb in self.query(Checkbox)}
        self.dismiss(Confirmation(opts))

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        """Answer No."""
        self.dismiss(None)
