"""Redis health and crash forensics: panels and modal screens (no collector logic here).

``HealthPanel.show_health(h)`` renders a ``collectors.reads.health.RedisHealth``; ``HealthScreen(loader)``
calls ``loader()`` (blocking: one INFO) in a thread worker on open and every ``interval`` seconds.
``TimelineScreen(forensics)`` shows a ``collectors.analysis.forensics.Forensics`` timeline (in memory, read on
the UI thread every second): every worker's events, or one worker's, and the tasks that killed
pool processes.
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

from collectors.analysis.forensics import Forensics, TimelineEvent
from collectors.reads.health import RedisHealth, human_bytes
from tui.format import safe_text


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
        return safe_text(t)
    if h.error:
        t.append(f"Redis health unavailable: {h.error}", style="bold red")
        return safe_text(t)
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
    return safe_text(t)


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


_KIND_STYLE = {"process-died": "bold red", "worker-lost": "red", "offline": "yellow", "heartbeat-gap": "yellow",
               "restarted": "magenta", "online": "green", "heartbeat-back": "green", "process-started": "dim"}


def timeline_text(forensics: Forensics, hostname: str | None = None, now: float | None = None,
                  limit: int = 300) -> Text:
    """Killers first, then the newest ``limit`` events (of one worker or all), newest last."""
    import time

    now = time.time() if now is None else now
    t = Text()
    killers = forensics.killers()
    if killers:
        t.append("Tasks that took pool processes down\n", style="bold underline")
        for task_id, name, n, victims in killers[:20]:
            t.append(f"  {name or '?'} [{task_id}]", style="bold red")
            t.append(f"  {n} process{'es' if n != 1 else ''} on {', '.join(victims)}\n")
        t.append("\n")
    events: list[TimelineEvent] = (list(forensics.timeline(hostname)) if hostname
                                   else forensics.events())[-limit:]
    t.append(f"Timeline — {hostname or 'all workers'}\n", style="bold underline")
    if not events:
        t.append("  nothing happened yet\n", style="dim")
    for e in events:
        t.append(f"  {e.ts - now:+8.1f}s  ", style="dim")
        t.append(f"{e.hostname:<24} ")
        t.append(f"{e.kind:<15} ", style=_KIND_STYLE.get(e.kind, ""))
        t.append(f"{e.detail}\n")
    return safe_text(t)


class TimelineScreen(ModalScreen[None]):
    """Crash forensics: the live timeline of one worker (or all) and the killers."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="taskdash.timeline.close"),
        Binding("a", "all_workers", "All workers", id="taskdash.timeline.all"),
    ]
    DEFAULT_CSS = """
    TimelineScreen { align: center middle; }
    TimelineScreen > Vertical { width: 95%; height: 90%; background: $surface; border: round $primary; }
    TimelineScreen #timeline-body { padding: 0 1; }
    """

    def __init__(self, forensics: Forensics, hostname: str | None = None, interval: float = 1.0) -> None:
        super().__init__()
        self.forensics = forensics
        self.hostname = hostname
        self.interval = interval

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll():
                yield Static(timeline_text(self.forensics, self.hostname), id="timeline-body")
            yield Label(" a all workers · esc close", classes="hint")

    def on_mount(self) -> None:
        if self.interval > 0:
            self.set_interval(self.interval, self.refresh_timeline)

    def refresh_timeline(self) -> None:
        """Re-render from the Forensics object (cheap, in memory)."""
        self.query_one("#timeline-body", Static).update(timeline_text(self.forensics, self.hostname))

    def action_all_workers(self) -> None:
        self.hostname = None
        self.refresh_timeline()

    def action_close(self) -> None:
        self.dismiss(None)
