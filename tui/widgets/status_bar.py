"""StatusBar: connections (masked), refresh age and cost, pause/read-only flags, per-source errors."""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

from collectors.core.config import mask_text
from collectors.core.models import Snapshot
from tui.format import fmt_age, safe_text


@dataclass
class StatusState:
    """Everything the status bar shows, gathered by the app."""

    broker_url: str
    backend_url: str
    latest: Snapshot | None = None
    last_ok_at: float | None = None
    now: float = 0.0
    paused: bool = False
    read_only: bool = False
    retry_in: float | None = None
    failures: int = 0
    crash: str | None = None
    polling: bool = False
    context: str | None = None
    """Name of the active context (``:ctx``), if any."""


def short_backend(broker_url: str, backend_url: str, compact: bool = False) -> str:
    """The backend URL, shortened to ``db N`` when it is the broker's server with another db."""
    if backend_url == broker_url:
        return "same as broker"
    head_b, _, db_b = broker_url.rpartition("/")
    head_k, _, db_k = backend_url.rpartition("/")
    if head_b and head_b == head_k and db_k.isdigit():
        return f"db {db_k}" if compact else f"db {db_k} (same server)"
    return backend_url


def _dot(t: Text, ok: bool | None, c_ok: str, c_bad: str) -> None:
    if ok is None:
        t.append("○ ", style="dim")
    else:
        t.append("● " if ok else "✖ ", style=c_ok if ok else f"bold {c_bad}")


def status_text(s: StatusState, colors: dict[str, str], secrets: tuple[str | None, ...] = (),
                width: int = 0) -> Text:
    """Render the status bar (one line, plus a second one when something is wrong). When the first line
    is wider than ``width``, it says the same shorter (``db 1``, no refresh cost) before "…" cuts it."""
    out = _status_text(s, colors, secrets, compact=False)
    if width and cell_len(out.plain.split("\n", 1)[0]) > width:
        return _status_text(s, colors, secrets, compact=True)
    return out


def _status_text(s: StatusState, colors: dict[str, str], secrets: tuple[str | None, ...], *,
                 compact: bool) -> Text:
    ok_c = colors.get("success", "green")
    bad_c = colors.get("error", "red")
    warn_c = colors.get("warning", "yellow")
    snap = s.latest
    t = Text(no_wrap=True, overflow="ellipsis")
    broker_ok = None if snap is None else snap.broker.ok
    backend_ok = None if snap is None else snap.backend.ok
    if s.paused:
        t.append("PAUSED", style=f"bold reverse {warn_c}")
        t.append(" ")
    if s.read_only:
        t.append("READ-ONLY", style="bold reverse")
        t.append(" ")
    if s.context:
        t.append(f"ctx {s.context}", style=f"bold {colors.get('accent', 'cyan')}")
        t.append(" ")
    if s.last_ok_at is None:
        t.append("connecting…" if s.polling or snap is None else "no data yet", style="dim")
    else:
        t.append(f"⟳ {fmt_age(max(0.0, s.now - s.last_ok_at))} ago", style="bold" if broker_ok else warn_c)
    t.append("  ")
    _dot(t, broker_ok, ok_c, bad_c)
    t.append("broker ", style="bold")
    broker_url = snap.broker.url if snap else s.broker_url
    backend_url = snap.backend.url if snap else s.backend_url
    t.append(broker_url)
    if backend_url != broker_url or backend_ok is False:
        t.append("  ")
        _dot(t, backend_ok, ok_c, bad_c)
        t.append("backend ", style="bold")
        t.append(short_backend(broker_url, backend_url, compact))
    if snap is not None and snap.broker.ok and not compact:
        cost = snap.cost
        t.append(f"  cost {cost.commands} cmd/{cost.round_trips} rt {cost.wall_ms:.0f}ms", style="dim")
    lines = [t]

    problem = Text(no_wrap=True, overflow="ellipsis")
    if snap is not None and not snap.broker.ok:
        problem.append("✖ broker unreachable", style=f"bold {bad_c}")
        if s.retry_in is not None:
            problem.append(f" · retrying in {max(0.0, s.retry_in):.0f}s (attempt {s.failures})", style=warn_c)
        if s.last_ok_at is not None:
            problem.append(" · showing the last good data", style="dim")
        if snap.broker.error:
            problem.append(f" · {snap.broker.error}")
    elif s.crash:
        problem.append("✖ refresh failed: ", style=f"bold {bad_c}")
        problem.append(s.crash)
        if s.retry_in is not None:
            problem.append(f" — retrying in {max(0.0, s.retry_in):.0f}s", style=warn_c)
    elif snap is not None and (snap.errors or not snap.backend.ok):
        problem.append("⚠ ", style=f"bold {warn_c}")
        parts = [f"{e.source}: {e.message}" for e in snap.errors]
        if not snap.backend.ok and not any(e.source in ("backend", "results") for e in snap.errors):
            parts.insert(0, f"backend: {snap.backend.error or 'unreachable'}")
        problem.append(" · ".join(parts))
    if problem.plain:
        lines.append(problem)
    out = Text("\n").join(lines)
    plain_secrets = tuple(x for x in secrets if x)
    if plain_secrets:
        masked = mask_text(out.plain, *plain_secrets)
        if masked != out.plain:
            return safe_text(Text(masked, no_wrap=True, overflow="ellipsis"))
    return safe_text(out)


class StatusBar(Static):
    """The top status line(s)."""

    DEFAULT_CSS = """
    StatusBar { height: auto; max-height: 2; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    _shown: Text | None = None

    def show(self, state: StatusState, secrets: tuple[str | None, ...] = ()) -> None:
        """Re-render from ``state``."""
        text = status_text(state, self.app.theme_variables, secrets, width=max(0, self.size.width - 2))
        self.set_class(state.latest is not None and not state.latest.broker.ok, "-down")
        self.set_class(bool(state.latest and (state.latest.errors or not state.latest.backend.ok)), "-errors")
        if text == self._shown:
            return
        # Static.update lays out the whole screen again (a full repaint, twice a second): only when the
        # bar's height can change, i.e. it gains or loses its problem line.
        lines = text.plain.count("\n")
        self.update(text, layout=lines != (self._shown.plain.count("\n") if self._shown is not None else -1))
        self._shown = text
