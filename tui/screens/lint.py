"""The ``:lint`` view: config linter findings, run in a thread worker (one inspect window, ~1-3 s).

``LintScreen(loader)`` calls ``loader()`` (e.g. ``partial(run_lint, settings)``) when it opens and
on ``r``; findings are listed warning first, each with its reason and fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from collectors.analysis.lint import RULES, LintReport
from collectors.core.config import mask_text
from tui.format import safe_text


def lint_text(report: LintReport | None, error: str | None = None) -> Text:
    """The findings as Rich text."""
    t = Text()
    if error:
        t.append(f"lint failed: {error}\n", style="bold red")
        return safe_text(t)
    if report is None:
        t.append("asking the workers (one inspect window)…\n", style="dim")
        return safe_text(t)
    t.append(f"workers: {', '.join(report.workers) or 'none answered'}\n", style="dim")
    if not report.findings:
        t.append("✓ no problems found\n", style="bold green")
    for f in report.findings:
        warn = f.severity == "warning"
        t.append("⚠ " if warn else "ℹ ", style="bold red" if warn else "bold blue")
        t.append(f"{RULES.get(f.rule, f.rule)}", style="bold")
        if f.subject:
            t.append(f"  [{f.subject}]", style="dim")
        t.append(f"\n   {f.message}\n")
        t.append("   fix: ", style="bold green")
        t.append(f"{f.fix}\n\n")
    for err in report.errors:
        t.append(f"note: {err}\n", style="yellow")
    return safe_text(t)


class LintScreen(ModalScreen[None]):
    """Modal list of lint findings; ``r`` runs the linter again."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="taskdash.lint.close"),
        Binding("r", "reload", "Run again", id="taskdash.lint.reload"),
    ]
    DEFAULT_CSS = """
    LintScreen { align: center middle; }
    LintScreen > Vertical { width: 95%; height: 90%; background: $surface; border: round $primary; }
    LintScreen #lint-body { padding: 0 1; }
    """

    def __init__(self, loader: Callable[[], LintReport]) -> None:
        super().__init__()
        self.loader = loader
        self.report: LintReport | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(" Config lint — settings behind duplicates and poison loops", classes="title")
            with VerticalScroll():
                yield Static(lint_text(None), id="lint-body")
            yield Label(" r run again · esc close", classes="hint")

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Run the linter again (in a thread)."""
        self.report, self.error = None, None
        self.query_one("#lint-body", Static).update(lint_text(None))
        self._run()

    @work(thread=True, exclusive=True, group="lint", exit_on_error=False)
    def _run(self) -> None:
        try:
            report, error = self.loader(), None
        except Exception as exc:  # noqa: BLE001 - shown in the screen
            report, error = None, mask_text(f"{type(exc).__name__}: {exc}")
        self.app.call_from_thread(self._show, report, error)

    def _show(self, report: LintReport | None, error: str | None) -> None:
        self.report, self.error = report, error
        self.query_one("#lint-body", Static).update(lint_text(report, error))

    def action_close(self) -> None:
        self.dismiss(None)
