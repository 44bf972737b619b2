"""Command palette provider: views, "Purge queue: X" and "Requeue all orphaned", built from the snapshot.

Commands only post ``WriteRequested`` (the same message a panel key posts) or switch views, so the
palette goes through the very same confirmation flow as the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.messages import WriteRequested
from tui.screens.dashboard import TAB_LABELS
from tui.widgets.panels import VIEWS

if TYPE_CHECKING:
    from tui.app import TaskDashApp


class TaskDashCommands(Provider):
    """Palette commands built from the current snapshot: views, purge a queue, requeue orphans."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app: TaskDashApp = self.app  # type: ignore[assignment]
        cmds: list[tuple[str, str, Callable[[], Any]]] = [
            (f"View: {TAB_LABELS[v]}", f"Jump to the {v} view", partial(app.show_view, v)) for v in VIEWS
        ]
        snap = app.snapshot
        if snap is not None:
            for q in snap.queues:
                cmds.append((f"Purge queue: {q.name}", f"Delete the {q.messages:,} ready messages of {q.name} "
                             "(asks first)", partial(app.post_message, WriteRequested("purge", (q,)))))
            if snap.orphaned:
                cmds.append((f"Requeue all orphaned ({len(snap.orphaned)})", "Put every orphaned message "
                             "back on its queue (asks first)",
                             partial(app.post_message, WriteRequested("requeue_orphaned", snap.orphaned))))
        return cmds

    async def discover(self) -> Hits:
        """Every command, for the empty palette."""
        for title, help_text, cb in self._commands():
            yield DiscoveryHit(title, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        """Commands whose title matches ``query`` (fuzzy)."""
        matcher = self.matcher(query)
        for title, help_text, cb in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help_text)
