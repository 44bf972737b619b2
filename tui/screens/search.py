"""SearchScreen: the hits of one task search (``/`` in the Tasks view), enter opens a hit's details.

The search itself (``collectors.reads.search.search_all``) runs in the app's thread worker; this screen only
shows a finished ``SearchOutcome`` in a ``KeyedTable`` (cells made terminal-safe there).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from collectors.reads.search import FREE_FIELDS, SearchHit, SearchOutcome, parse_query
from tui import details
from tui.format import short_id, truncate
from tui.screens.detail import DetailScreen
from tui.widgets.keyed_table import KeyedTable

COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("Source", "source", 8),
    ("Task", "task", None),
    ("Id", "id", 8),
    ("State", "state", 9),
    ("Worker", "worker", None),
    ("Match", "match", None),
)


def match_text(hit: SearchHit, query: str) -> str:
    """Which fields of ``hit`` the query's positive terms matched, with a snippet of the first one."""
    try:
        terms = [t for t in parse_query(query).terms if not t.negate]
    except ValueError:
        return ""
    found: list[str] = []
    snippet = ""
    for term in terms:
        fields = [term.field] if term.field else list(FREE_FIELDS)
        for name in fields:
            text = hit.field_text(name)
            pos = text.find(term.value) if name != "state" or not term.field else (0 if text.startswith(
                term.value) else -1)
            if pos < 0:
                continue
            if name not in found:
                found.append(name)
            if not snippet and name in ("args", "exc"):
                raw = " ".join(v for v in (hit.args, hit.kwargs) if v) if name == "args" else (hit.exception or "")
                start = max(0, pos - 10)
                snippet = ("…" if start else "") + raw[start:pos + len(term.value) + 20]
            break
    out = ",".join(found)
    return f"{out}: {snippet}" if snippet else out


class SearchScreen(ModalScreen[None]):
    """Search results: source, task, id, state, worker and what matched; enter → details."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="taskdash.search.close"),
    ]
    DEFAULT_CSS = """
    SearchScreen { align: center middle; }
    SearchScreen > Vertical { width: 95%; height: 90%; background: $surface; border: round $primary; }
    SearchScreen #search-summary { padding: 0 1; }
    SearchScreen KeyedTable { height: 1fr; }
    """
    AUTO_FOCUS = "#search-table"

    def __init__(self, outcome: SearchOutcome, limit: int = 200) -> None:
        super().__init__()
        self.outcome = outcome
        self.limit = limit
        self.hits = {f"{i}:{h.task_id}": h for i, h in enumerate(outcome.hits)}
        self._match = {key: match_text(h, outcome.query) for key, h in self.hits.items()}

    def summary(self) -> Text:
        """``N hits for QUERY · scanned … · …`` (and whether the search stopped early)."""
        o = self.outcome
        t = Text()
        t.append(f"{len(o.hits)} hit{'s' if len(o.hits) != 1 else ''}", style="bold")
        t.append(f" for {o.query!r}")
        t.append(f" · {o.scanned:,} stored results looked at · {o.elapsed_ms:.0f} ms", style="dim")
        if len(o.hits) >= self.limit:
            t.append(f" · stopped at {self.limit} hits: narrow the query", style="yellow")
        elif not o.complete:
            t.append(" · result backend not fully scanned", style="yellow")
        for err in o.errors:
            t.append(f"\n{err}", style="red")
        return t

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.summary(), id="search-summary")
            yield KeyedTable(COLUMNS, limit=max(1, len(self.hits)), id="search-table")
            yield Label(" enter details · esc close", classes="hint")

    def on_mount(self) -> None:
        self.border_title = "Search"
        self.query_one(KeyedTable).sync(list(self.hits), self)

    # RowSource over the hit keys
    def row_key(self, item: str) -> str:
        return item

    def row_cells(self, item: str) -> tuple[Any, ...]:
        h = self.hits[item]
        return (h.source, truncate(h.name, 36), short_id(h.task_id), truncate(h.state, 9), truncate(h.worker, 22),
                truncate(self._match[item], 50))

    def row_text(self, item: str) -> str:
        return item.lower()

    def row_sort(self, item: str, sort_by: str) -> Any:
        return None

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        hit = self.hits.get(event.row_key.value or "")
        if hit is None:
            return
        title = f"Search hit {hit.name or '?'} [{hit.task_id or '?'}]"
        self.app.push_screen(DetailScreen(title, details.generic_sections("Task", hit.to_json())))

    def action_close(self) -> None:
        """Close the results."""
        self.dismiss(None)
