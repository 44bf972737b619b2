"""Redis health: a compact panel (for the dashboard) and a modal screen that keeps it fresh.

``HealthPanel.show_health(h)`` renders a ``collectors.health.RedisHealth``; ``HealthScreen(loader)``
calls ``loader()`` (blocking: one INFO) in a thread worker on open and every ``interval`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from collectors.health import RedisHealth, human_bytes


def _uptime(s: int | None) -> str:
    if s is None:
        return "?"
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    return f"{d}d {h}h" if d else f"{h}h {rem // 60}m"


def health_text(h: RedisHealth | None) -> Text:
    """The panel body: one line per topic, warnings in red at the top."""
    t = Text()
    if h is None:
        t.append("reading INFO…", style="dim")
        return t
    if h.error:
        t.append(f"Redis health unavailable: {h.error}", style="bold red")
        return t
    for w in h.warnings:
        t.append("⚠ ", style="bold red")
        t.append(f"{w.message}\n", style="red" if w.code in ("evicting-policy", "evicted") else "yellow")
    ratio = h.memory_ratio
    mem = f"{human_bytes(h.used_memory)}"
    mem += f" / {human_bytes(h.maxmemory)} ({ratio:.0%})" if ratio is not None else " (no maxmemory)"
    rows = (
        ("memory", mem + f", peak {human_bytes(h.used_memory_peak)}"),
        ("eviction", f"{h.maxmemory_policy or 'unknown (CONFIG disabled)'}"
                     f"{'  ← may evict broker keys' if h.may_evict else ''}"),
        ("evicted keys", f"{h.evicted_keys:,}" if h.evicted_keys is not None else "?"),
        ("clients", f"{h.connected_clients} connected, {h.blocked_clients} blocked"),
        ("ops/s", f"{h.ops_per_sec}"),
        ("persistence", h.persistence),
        ("server", f"{h.version} {h.mode or ''} {h.role or ''}, up {_uptime(h.uptime_s)}, {h.keys} keys"),
    )
    for key, value in rows:
        t.append(f"{key:<13}", style="bold")
        style = "red" if key == "eviction" and h.may_evict else ""
        t.append(f"{value}\n", style=style)
    return t


class HealthPanel(Static):
    """A static block showing one RedisHealth (update with ``show_health``)."""

    DEFAULT_CSS = """
    HealthPanel { height: auto; padding: 0 1; border: round $primary; }
    HealthPanel.-warn { border: round $error; }
    """

    def __init__(self, health: RedisHealth | None = None, **kw: object) -> None:
        super().__init__(health_text(health), **kw)  # type: ignore[arg-type]
        self.border_title = "Redis health"
        self.health = health

    def show_health(self, health: RedisHealth | None) -> None:
        """Render ``health`` (None: still loading)."""
        self.health = health
        self.set_class(bool(health and health.warnings), "-warn")
        self.update(health_text(health))


class HealthScreen(ModalScreen[None]):
    """Modal Redis health view refreshed in a thread worker."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="taskdash.health.close"),
        Binding("r", "reload", "Reload", id="taskdash.health.reload"),
    ]
    DEFAULT_CSS = """
    HealthScreen { align: center middle; }
    HealthScreen > Vertical { width: 90%; max-width: 110; height: auto; background: $surface; }
    """

    def __init__(self, loader: Callable[[], RedisHealth], interval: float = 2.0) -> None:
        super().__init__()
        self.loader = loader
        self.interval = interval

    def compose(self) -> ComposeResult:
        with Vertical():
            yield HealthPanel(id="health-panel")
            yield Label("r reload · esc close", classes="hint")

    def on_mount(self) -> None:
        self.action_reload()
        if self.interval > 0:
            self.set_interval(self.interval, self.action_reload)

    def action_reload(self) -> None:
        """Read INFO again (in a thread)."""
        self._load()

    @work(thread=True, exclusive=True, group="health", exit_on_error=False)
    def _load(self) -> None:
        health = self.loader()
        self.app.call_from_thread(self.query_one(HealthPanel).show_health, health)

    def action_close(self) -> None:
        self.dismiss(None)
