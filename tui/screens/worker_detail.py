"""WorkerDetailScreen: one worker as it reports itself (Flower's worker page, from the keyboard).

Shows what ``collectors.writes.control.WorkerControl.worker_details(hostname)`` returns: stats (pool,
prefetch, rusage, broker and its transport options, task totals), active queues, registered tasks,
the worker's configuration (``inspect conf``) and revoked task ids. Give it the dict, or a loader
callable that is run in a thread worker (``r`` runs it again). ``escape``/``q`` close it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from collectors.core.models import WorkerInfo
from tui.format import safe_text

Details = Mapping[str, Any]
Fields = Sequence[tuple[str, str]]

REVOKED_SHOWN = 200
"""Revoked ids listed at most (the count is always shown)."""


def _v(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping | list | tuple):
        try:
            return json.dumps(value, default=str, sort_keys=True)
        except (TypeError, ValueError):
            return repr(value)
    return str(value)


def _section(title: str, content: Fields | str | Sequence[str]) -> Text:
    """A heading, then aligned fields, verbatim text or one line per item."""
    t = Text()
    t.append(f"{title}\n", style="bold underline")
    if isinstance(content, str):
        t.append((content.rstrip() or "(none)") + "\n")
        return safe_text(t)
    items = list(content)
    if not items:
        t.append("  (none)\n", style="dim")
        return safe_text(t)
    if isinstance(items[0], tuple):
        width = max(len(k) for k, _ in items)  # type: ignore[misc]
        for key, value in items:  # type: ignore[misc]
            t.append(f"  {key:<{width}}  ", style="bold")
            t.append(f"{value}\n")
        return safe_text(t)
    for item in items:
        t.append(f"  {item}\n")
    return safe_text(t)


def worker_sections(d: Details) -> list[tuple[str, Text]]:
    """(id, rendered section) for every part of a ``worker_details`` dict (pure, for tests and reuse)."""
    stats: Mapping[str, Any] = d.get("stats") or {}
    pool: Mapping[str, Any] = stats.get("pool") or {}
    broker: Mapping[str, Any] = stats.get("broker") or {}
    rusage: Mapping[str, Any] = stats.get("rusage") or {}
    out: list[tuple[str, Text]] = []
    errors: Mapping[str, Any] = d.get("errors") or {}
    if errors:
        out.append(("errors", _section("Problems", [(k, _v(v)) for k, v in sorted(errors.items())])))
    out.append(("stats", _section("Stats", [
        ("pid", _v(stats.get("pid"))), ("uptime", f"{_v(stats.get('uptime'))} s"),
        ("prefetch_count", _v(stats.get("prefetch_count"))), ("clock", _v(stats.get("clock"))),
        ("tasks processed", _v(stats.get("total"))),
    ] if stats else [])))
    out.append(("pool", _section("Pool", [
        ("implementation", _v(pool.get("implementation"))), ("max-concurrency", _v(pool.get("max-concurrency"))),
        ("processes", _v(pool.get("processes"))), ("max-tasks-per-child", _v(pool.get("max-tasks-per-child"))),
        ("timeouts", _v(pool.get("timeouts"))), ("autoscaler", _v(stats.get("autoscaler"))),
    ] if pool else [])))
    out.append(("rusage", _section("Resource usage", [(k, _v(v)) for k, v in sorted(rusage.items())])))
    broker_fields = [(k, _v(v)) for k, v in sorted(broker.items()) if k != "transport_options"]
    broker_fields.append(("transport_options", _v(broker.get("transport_options"))))
    out.append(("broker", _section("Broker", broker_fields if broker else [])))
    queues = [f"{q.get('name')}  exchange={_v((q.get('exchange') or {}).get('name'))}  "
              f"routing_key={_v(q.get('routing_key'))}" for q in d.get("active_queues") or []]
    out.append(("queues", _section(f"Active queues ({len(queues)})", queues)))
    registered = [str(t) for t in d.get("registered") or []]
    out.append(("registered", _section(f"Registered tasks ({len(registered)})", registered)))
    conf: Mapping[str, Any] = d.get("conf") or {}
    out.append(("conf", _section("Configuration (as the worker reports it)",
                                 [(k, _v(v)) for k, v in sorted(conf.items())])))
    revoked = [str(t) for t in d.get("revoked") or []]
    shown = revoked[:REVOKED_SHOWN]
    if len(revoked) > REVOKED_SHOWN:
        shown.append(f"… {len(revoked) - REVOKED_SHOWN} more")
    out.append(("revoked", _section(f"Revoked ids ({len(revoked)})", shown)))
    return out


def liveness_section(w: WorkerInfo | None, now: float) -> Text:
    """The worker's liveness (issue 12): state, the whole evidence that decided it, since when, pid and
    boot time — what taskdash watched, where the rest of the screen is what the worker says of itself."""
    if w is None:
        return _section("Liveness", [("liveness", "not in the last refresh (taskdash has not seen this worker)")])
    from tui.details import liveness_fields

    return _section("Liveness", liveness_fields(w, now))


class WorkerDetailScreen(ModalScreen[None]):
    """A scrollable view of one worker's details; ``r`` reloads when a loader was given.

    Args:
        hostname: The worker.
        details: A ``WorkerControl.worker_details`` dict to show at once.
        loader: Called in a thread worker to (re)load the dict (e.g. ``lambda: control.worker_details(h)``).
        info: The worker's row of the last refresh (liveness, evidence, since, boot time); by default it
            is looked up in the app's current snapshot (``app.snapshot``), again on every reload.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="taskdash.worker_detail.close"),
        Binding("r", "reload", "Reload", id="taskdash.worker_detail.reload"),
    ]

    DEFAULT_CSS = """
    WorkerDetailScreen {
        align: center middle;
    }
    WorkerDetailScreen #wd-dialog {
        width: 90%;
        height: 90%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    WorkerDetailScreen #wd-title {
        text-style: bold;
        width: 1fr;
    }
    WorkerDetailScreen #wd-body {
        height: 1fr;
    }
    WorkerDetailScreen .wd-section {
        margin-bottom: 1;
    }
    WorkerDetailScreen #wd-hint {
        color: $text-muted;
    }
    """

    AUTO_FOCUS = "#wd-body"

    def __init__(self, hostname: str, details: Details | None = None,
                 loader: Callable[[], Details] | None = None, info: WorkerInfo | None = None) -> None:
        super().__init__()
        self.hostname = hostname
        self.details: Details | None = details
        self.loader = loader
        self.info = info
        self.loads = 0

    def worker_info(self) -> tuple[WorkerInfo | None, float]:
        """The worker's row (given, or from the app's latest snapshot) and that snapshot's time."""
        snap = getattr(self.app, "snapshot", None)
        now = snap.taken_at if snap is not None else time.time()
        if self.info is not None:
            return self.info, now
        workers = getattr(snap, "workers", None) or ()
        return next((w for w in workers if w.hostname == self.hostname), None), now

    def _liveness(self) -> Static:
        info, now = self.worker_info()
        return Static(liveness_section(info, now), id="wd-liveness", classes="wd-section")

    def _title(self) -> Text:
        t = Text(f"Worker {self.hostname}", style="bold")
        if self.details is None:
            t.append("  loading…", style="dim")
        elif self.details.get("online"):
            t.append("  ● replied", style="green")
        else:
            t.append("  ○ no reply", style="red")
        return safe_text(t)

    def compose(self) -> ComposeResult:
        with Vertical(id="wd-dialog"):
            yield Label(self._title(), id="wd-title")
            with VerticalScroll(id="wd-body"):
                yield self._liveness()
                if self.details is not None:
                    for sid, text in worker_sections(self.details):
                        yield Static(text, id=f"wd-{sid}", classes="wd-section")
            hint = "esc: close · r: reload" if self.loader is not None else "esc: close"
            yield Label(hint, id="wd-hint")

    def on_mount(self) -> None:
        if self.details is None and self.loader is not None:
            self._load(self.loader)

    def action_reload(self) -> None:
        """Ask the worker again (needs a loader)."""
        if self.loader is None:
            self.notify("nothing to reload from", severity="warning")
            return
        self._load(self.loader)

    @work(thread=True, exit_on_error=False, exclusive=True, group="worker-detail")
    def _load(self, loader: Callable[[], Details]) -> None:
        try:
            details: Details = loader()
        except Exception as exc:  # noqa: BLE001 - shown in the screen, never crashes the app
            details = {"hostname": self.hostname, "online": False,
                       "errors": {"load": f"{type(exc).__name__}: {exc}"}}
        self.app.call_from_thread(self._show, details)

    async def _show(self, details: Details) -> None:
        if not self.is_attached:
            return
        self.details = details
        self.query_one("#wd-title", Label).update(self._title())
        body = self.query_one("#wd-body", VerticalScroll)
        await body.remove_children()
        await body.mount_all([self._liveness(), *(Static(text, id=f"wd-{sid}", classes="wd-section")
                                                  for sid, text in worker_sections(details))])
        self.loads += 1

    def action_close(self) -> None:
        """Close the worker view."""
        self.dismiss(None)
