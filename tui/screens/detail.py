"""DetailScreen: everything known about one message, task, worker, queue or poison suspect."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from tui.format import safe_text

Fields = Sequence[tuple[str, str]]
Section = tuple[str, "Fields | str"]
"""A titled block: key/value fields, or preformatted text (a traceback)."""


def render_section(title: str, content: Fields | str) -> Text:
    """One section as Rich text: a heading, then aligned fields or verbatim text."""
    t = Text()
    t.append(f"{title}\n", style="bold underline")
    if isinstance(content, str):
        t.append(content.rstrip() + "\n")
        return safe_text(t)
    if not content:
        t.append("  (none)\n", style="dim")
        return t
    width = max(len(k) for k, _ in content)
    for key, value in content:
        t.append(f"  {key:<{width}}  ", style="bold")
        t.append(f"{value}\n")
    return safe_text(t)


class DetailScreen(ModalScreen[None]):
    """A scrollable detail view; ``loader`` (optional) fetches more sections in a thread worker."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,enter", "close", "Close", id="taskdash.detail.close"),
    ]

    def __init__(self, title: str, sections: Sequence[Section],
                 loader: Callable[[], Sequence[Section]] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.sections = list(sections)
        self.loader = loader

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-dialog"):
            yield Label(safe_text(Text(self.title_text)), id="detail-title")
            with VerticalScroll(id="detail-body"):
                for title, content in self.sections:
                    yield Static(render_section(title, content), classes="detail-section")
            yield Label("esc: close", id="detail-hint")

    AUTO_FOCUS = "#detail-body"

    def on_mount(self) -> None:
        if self.loader is not None:
            self._load(self.loader)

    @work(thread=True, exit_on_error=False, group="detail")
    def _load(self, loader: Callable[[], Sequence[Section]]) -> None:
        try:
            extra = list(loader())
        except Exception as exc:  # noqa: BLE001 - shown in the screen, never crashes the app
            extra = [("More", f"could not load more details: {exc}")]
        self.app.call_from_thread(self._add_sections, extra)

    def _add_sections(self, sections: Sequence[Section]) -> None:
        if not self.is_attached:
            return
        body = self.query_one("#detail-body")
        for title, content in sections:
            body.mount(Static(render_section(title, content), classes="detail-section"))

    def action_close(self) -> None:
        """Close the detail view."""
        self.dismiss(None)
