"""TaskDashApp: the live dashboard. Timer → thread worker → collect() → SnapshotReady → panels.

Only the app owns the collector and the actions. Panels post ``WriteRequested``/``DetailRequested``;
the app asks for confirmation, captures the targets when the dialog opens, runs the action in a
thread worker, notifies the result and refreshes at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widgets import Footer, Input, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from collectors.analysis.forensics import Forensics
from collectors.core.config import Settings, mask_text
from collectors.core.models import Snapshot, SourceStatus
from tui import details
from tui.format import safe
from tui.history import History
from tui.messages import CollectFailed, DetailRequested, QuarantineListed, SnapshotReady, WriteRequested
from tui.screens.confirm import Confirmation, ConfirmScreen
from tui.screens.detail import DetailScreen
from tui.screens.help import HelpScreen
from tui.screens.welcome import WelcomeScreen
from tui.widgets.panels import PANELS, VIEWS, Panel, QuarantinePanel, q_attr
from tui.widgets.status_bar import StatusBar, StatusState

log = logging.getLogger(__name__)

TAB_LABELS: dict[str, str] = {"queues": "Queues", "unacked": "Unacked", "workers": "Workers",
                              "tasks": "Tasks", "poison": "Poison", "quarantine": "Quarantine"}
SCREENS: tuple[str, ...] = ("health", "lint", "ctx", "crash")
"""``:`` words that open a screen (or run a command) instead of a view."""
ARG_SCREENS: tuple[str, ...] = ("ctx", "crash")
"""``:`` words that take an optional argument (``:ctx NAME``, ``:crash HOST``)."""
LIST_LIMIT = 8
"""Targets listed by name in a confirm dialog before "… and N more"."""
SEARCH_LIMIT = 200
"""Most hits one task search returns."""


class Collector(Protocol):
    """What the app needs from a collector (``collectors.collector.Collector`` or a test fake)."""

    settings: Settings

    def collect(self) -> Snapshot:
        """Blocking refresh; never raises for one failed source."""
        ...

    def inspect_soon(self) -> None:
        """Ask for a fresh worker inspect on the next collect."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


class TaskDashCommands(Provider):
    """Palette commands built from the current snapshot: views, purge a queue, requeue orphans."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app = self.app
        assert isinstance(app, TaskDashApp)
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
        for title, help_text, cb in self._commands():
            yield DiscoveryHit(title, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, cb in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help_text)


def default_export_path(queue: str, now: float, export_dir: Path | None = None) -> Path:
    """Where a purge export goes: ``export_dir`` or taskdash's state dir (like the CLI), one file per purge."""
    if export_dir is None:
        from collectors.core.audit import state_dir

        export_dir = state_dir() / "exports"
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in queue)
    return export_dir / f"purge-{safe}-{stamp}.jsonl"


def _listing(lines: Sequence[str]) -> str:
    shown = [f"  • {line}" for line in lines[:LIST_LIMIT]]
    if len(lines) > LIST_LIMIT:
        shown.append(f"  … and {len(lines) - LIST_LIMIT} more")
    return "\n".join(shown)


def _describe_entry(e: Any) -> str:
    task = getattr(e, "task", None) or "?"
    tid = getattr(e, "task_id", None) or "?"
    queue = getattr(e, "queue", None) or "?"
    return f"{task} [{tid}] on {queue}"


class TaskDashApp(App[int]):
    """The taskdash dashboard."""

    CSS_PATH = "app.tcss"
    TITLE = "taskdash"
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = App.COMMANDS | {TaskDashCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="taskdash.quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="taskdash.quit_ctrl_c"),
        Binding("question_mark", "help", "Help", id="taskdash.help"),
        Binding("slash", "filter", "Filter", id="taskdash.filter"),
        Binding("colon", "jump", "View", id="taskdash.jump"),
        Binding("P", "pause", "Pause", id="taskdash.pause"),
        Binding("escape", "escape", "Clear", show=False, id="taskdash.escape"),
        Binding("ctrl+r", "refresh", "Refresh", show=False, id="taskdash.refresh"),
        Binding("tab", "next_view", "Next view", show=False, priority=True, id="taskdash.next_view"),
        Binding("shift+tab", "prev_view", "Previous view", show=False, priority=True,
                id="taskdash.prev_view"),
        *[Binding(str(i + 1), f"show_view('{v}')", TAB_LABELS[v], show=False, id=f"taskdash.view.{v}")
          for i, v in enumerate(VIEWS)],
    ]

    def __init__(self, collector: Collector, *, actions: Any = None,
                 actions_factory: Callable[[], Any] | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time, show_welcome: bool = True,
                 max_backoff: float | None = None, load_details: bool = True,
                 export_dir: Path | None = None,
                 collector_factory: Callable[[Settings], Collector] | None = None,
                 history_path: str | Path | None = None) -> None:
        """Create the app.

        Args:
            collector: Source of snapshots (``collect()`` runs in a thread worker).
            actions: An ``Actions`` object (or a fake); built lazily by ``actions_factory`` otherwise.
            actions_factory: Builds the actions object on first use.
            interval: Seconds between refreshes; 0 means "only when asked" (tests). Default: settings.
            clock: Wall clock for the "last refresh" age (tests pin it for stable screenshots).
            show_welcome: Show the friendly first screen when the broker is unreachable at start.
            max_backoff: Longest wait between retries while the broker is down.
            load_details: Read headers / stored results from Redis when a detail screen opens.
            export_dir: Directory for purge exports (default: taskdash's state dir).
            collector_factory: Builds the collector of another context on ``:ctx NAME``
                (default ``collectors.collector.Collector``).
            history_path: SQLite file of the persistent history (depth trends and poison delivery
                counts survive a restart); ``run()`` passes the state dir's file, None keeps none.
        """
        super().__init__()
        self.collector = collector
        self.settings: Settings = collector.settings
        self._actions = actions
        self._actions_factory = actions_factory
        self.interval = self.settings.interval if interval is None else interval
        self.clock = clock
        self.show_welcome = show_welcome
        self.load_details = load_details
        self.export_dir = export_dir
        self.max_backoff = max_backoff if max_backoff is not None else max(self.interval,
                                                                             min(30.0, 10 * self.interval))
        self.read_only = self.settings.read_only
        self.history = History()
        self.forensics = Forensics()
        """Crash forensics (worker timelines, pool process deaths), fed by the poll thread."""
        self.snapshot: Snapshot | None = None
        """Latest snapshot with a reachable broker (what the panels show)."""
        self.latest: Snapshot | None = None
        """Latest snapshot received, reachable or not."""
        self.last_ok_at: float | None = None
        self.paused = False
        self.failures = 0
        self.crash: str | None = None
        self._poll: Worker[None] | None = None
        self._next: Timer | None = None
        self._next_due: float | None = None
        self._broker_ok: bool | None = None
        self._failing: set[str] = set()
        self._welcome: WelcomeScreen | None = None
        self._welcome_done = False
        self._prompt_mode = "filter"
        self._control_targets: tuple[Any, ...] = ()
        self._refreshes = 0
        self.apply_ms = 0.0
        """How long the UI thread spent applying the last snapshot (milliseconds)."""
        self._control: Any = None
        self._control_lock = threading.Lock()
        self._collector_factory = collector_factory
        self._generation = 0
        """Bumped when ``:ctx`` replaces the collector: results of the old one are dropped."""
        self.history_path = history_path
        self.store: Any = None
        """``collectors.analysis.history.History`` (SQLite) when ``history_path`` is given."""
        self._stored_deliveries: dict[str, int] = {}
        self._open_store()

    def _open_store(self) -> None:
        """Open the persistent history for the current context and seed the depth trends from it."""
        if self.history_path is None:
            return
        from collectors.analysis.history import History as Store

        try:
            self.store = Store(self.history_path, scope=self.settings.context or self.settings.broker_masked)
            since = self.clock() - 3600
            for queue in self.store.queues():
                self.history.prefill_depth(queue, self.store.series(queue, since=since)[-self.history.maxlen:])
        except Exception:  # noqa: BLE001 - a broken history file must not stop the dashboard
            log.warning("persistent history unavailable", exc_info=True)
            self.store = None

    def _close_store(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the history failed", exc_info=True)

    def deliveries_of(self, suspect: Any) -> int:
        """A poison suspect's deliveries: the most this refresh or the persistent history has seen."""
        current = int(getattr(suspect, "deliveries", 0) or 0)
        return max(current, self._stored_deliveries.get(getattr(suspect, "task_id", "") or "", 0))

    def _forget(self, task_ids: Iterable[str | None]) -> None:
        """Drop delivery counts of tasks that were quarantined/revoked (action thread)."""
        for task_id in task_ids:
            if not task_id:
                continue
            self._stored_deliveries.pop(task_id, None)
            if self.store is not None:
                try:
                    self.store.forget(task_id)
                except Exception:  # noqa: BLE001
                    log.warning("history.forget failed", exc_info=True)

    def say(self, message: str, *, title: str = "", severity: str = "information", timeout: float | None = None) -> None:
        """``notify`` without markup: messages carry task ids, URLs and error text with brackets."""
        self.notify(safe(message), title=safe(title), severity=severity, timeout=timeout,  # type: ignore[arg-type]
                    markup=False)

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with TabbedContent(id="views", initial="queues"):
            for panel_cls in PANELS:
                with TabPane(TAB_LABELS[panel_cls.VIEW], id=panel_cls.VIEW):
                    yield panel_cls()
        yield Input(id="prompt", compact=True)
        yield Footer(id="footer")

    def on_mount(self) -> None:
        self.dash.query_one("#prompt", Input).display = False
        self.focus_table()
        self._update_status()
        self.set_interval(1.0, self._update_status, name="status-age")
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.start_poll()

    def on_unmount(self) -> None:
        self._close_store()

    def _theme_changed(self, theme: Any) -> None:
        """Cell colours come from the theme: redraw every table with the new one."""
        for panel in self.dash.query(Panel):
            panel.table.invalidate()
            if panel.is_displayed_view():
                panel.resync()
            else:
                panel._synced = None
        self._update_status()

    @property
    def dash(self) -> Screen[Any]:
        """The dashboard screen (the bottom of the stack, whatever dialog is open above it)."""
        return self.screen_stack[0]

    @property
    def current_view(self) -> str:
        """The active view name."""
        try:
            return self.dash.query_one("#views", TabbedContent).active or VIEWS[0]
        except Exception:  # noqa: BLE001 - before compose
            return VIEWS[0]

    def panel(self, view: str | None = None) -> Panel:
        """The panel of ``view`` (default: the active one)."""
        return self.dash.query_one(f"#{view or self.current_view}-panel", Panel)

    def focus_table(self) -> None:
        """Give the keyboard to the active panel's table."""
        try:
            self.panel().table.focus()
        except Exception:  # noqa: BLE001 - during shutdown
            pass

    # ---- polling -----------------------------------------------------------------------------
    def start_poll(self) -> None:
        """Start a refresh unless one is already in flight (polls never stack behind a slow broker)."""
        if self._next is not None:
            self._next.stop()
            self._next = None
            self._next_due = None
        if self._poll is not None and not self._poll.is_finished:
            return
        self._poll = self._collect()
        self._update_status()

    @work(thread=True, group="poll", exit_on_error=False, description="collect a snapshot")
    def _collect(self) -> None:
        collector, generation = self.collector, self._generation
        try:
            snapshot = collector.collect()
        except Exception as exc:  # noqa: BLE001 - a crashed refresh must never take the app down
            log.warning("collect() failed", exc_info=True)
            self.post_message(CollectFailed(f"{type(exc).__name__}: {exc}", generation))
            return
        if generation == self._generation:
            self._observe(collector, snapshot)
            self._record(snapshot)
        self.post_message(SnapshotReady(snapshot, generation))

    def _record(self, snapshot: Snapshot) -> None:
        """Persist the snapshot (sampled) and read back the stored delivery counts of its suspects (poll thread)."""
        store = self.store
        if store is None or not snapshot.broker.ok:
            return
        try:
            store.record(snapshot)
            self._stored_deliveries = {p.task_id: store.deliveries(p.task_id) for p in snapshot.poison}
        except Exception:  # noqa: BLE001 - a full disk must not break the refresh
            log.warning("history.record failed", exc_info=True)

    def _observe(self, collector: Collector, snapshot: Snapshot) -> None:
        """Feed crash forensics (poll thread): the snapshot plus the workers' view when the collector has one."""
        if not snapshot.broker.ok:
            return
        try:
            view_of = getattr(collector, "workers_view", None)
            view = view_of(snapshot.taken_at) if callable(view_of) else None
            self.forensics.observe(snapshot, view)
        except Exception:  # noqa: BLE001 - forensics must never break a refresh
            log.warning("forensics.observe failed", exc_info=True)

    def _schedule_next(self) -> None:
        if self.paused or self.interval <= 0 or not self.is_running or not self.screen_stack:
            return
        if self.failures:
            delay = min(self.max_backoff, self.interval * (2 ** min(self.failures - 1, 10)))
        else:
            delay = self.interval
        if self._next is not None:
            self._next.stop()
        self._next_due = self.clock() + delay
        self._next = self.set_timer(delay, self.start_poll, name="next-poll")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "poll":
            if worker is not self._poll:
                return  # a poll of a context switched away from
            if event.state == WorkerState.SUCCESS:
                self._schedule_next()
            elif event.state == WorkerState.ERROR:
                self._collect_failed(CollectFailed(f"{type(worker.error).__name__}: {worker.error}"))
                self._schedule_next()
        elif worker.group == "actions" and event.state == WorkerState.SUCCESS:
            title, message, severity = worker.result  # type: ignore[misc]
            self.say(message, title=title, severity=severity, timeout=6)
            self.collector.inspect_soon()
            self.action_refresh()
            if self.current_view == "quarantine" or title.startswith(("Quarantine", "Replay", "Delete")):
                self.load_quarantine()
        elif worker.group in ("actions", "preview", "quarantine") and event.state == WorkerState.ERROR:
            err = mask_text(f"{type(worker.error).__name__}: {worker.error}", self.settings.broker_url,
                            self.settings.backend_url)
            self.say(err, title="Action failed", severity="error", timeout=8)

    @on(CollectFailed)
    def _collect_failed(self, message: CollectFailed) -> None:
        if not self.screen_stack or message.generation != self._generation:
            return
        err = mask_text(message.error, self.settings.broker_url, self.settings.backend_url)
        self.failures += 1
        if self.crash is None:
            self.say(err, title="Refresh failed", severity="error")
        self.crash = err
        self._update_status()

    @on(SnapshotReady)
    def _apply_snapshot(self, message: SnapshotReady) -> None:
        snap = message.snapshot
        if not self.screen_stack or message.generation != self._generation:  # shutting down / old context
            return
        self.latest = snap
        self.crash = None
        self._refreshes += 1
        self._notify_transitions(snap)
        if snap.broker.ok:
            started = time.perf_counter()
            self.failures = 0
            self.last_ok_at = self.clock()
            self.snapshot = snap
            self.history.add(snap)
            with self.batch_update():
                for panel in self.dash.query(Panel):
                    panel.show_snapshot(snap)
                self._update_tabs(snap)
            self.apply_ms = (time.perf_counter() - started) * 1000
            if self._welcome is not None:
                self._welcome.dismiss(True)
            if self.current_view == "quarantine" and self._refreshes % 5 == 0:
                self.load_quarantine()
        else:
            self.failures += 1
            if (self.show_welcome and not self._welcome_done and self.snapshot is None
                    and self._welcome is None):
                self._welcome = WelcomeScreen(snap.broker.url, snap.broker.error, self.settings.broker_url)
                self.push_screen(self._welcome, self._welcome_closed)
            elif self._welcome is not None:
                self._welcome.update_error(snap.broker.error)
        self._update_status()

    def _welcome_closed(self, connected: bool | None) -> None:
        self._welcome = None
        self._welcome_done = True
        self.focus_table()

    def _notify_transitions(self, snap: Snapshot) -> None:
        """Notify only when something changes state, never on every refresh."""
        ok = snap.broker.ok
        if self._broker_ok is True and not ok:
            self.say(f"{snap.broker.url}: {snap.broker.error or 'unreachable'} — retrying with backoff",
                        title="Broker unreachable", severity="error", timeout=8)
        elif self._broker_ok is False and ok:
            self.say(f"{snap.broker.url} answers again", title="Broker back", timeout=5)
        self._broker_ok = ok
        if not ok:
            return
        failing = {e.source for e in snap.errors}
        if not snap.backend.ok:
            failing.add("backend")
        new = failing - self._failing
        healed = self._failing - failing
        if new:
            msgs = [f"{e.source}: {e.message}" for e in snap.errors if e.source in new]
            if "backend" in new and not any(e.source == "backend" for e in snap.errors):
                msgs.append(f"backend: {snap.backend.error or 'unreachable'}")
            self.say("\n".join(msgs), title="Source error", severity="warning", timeout=6)
        if healed:
            self.say(", ".join(sorted(healed)) + " recovered", title="Sources recovered", timeout=4)
        self._failing = failing

    def _update_tabs(self, snap: Snapshot) -> None:
        tabs = self.dash.query_one("#views", TabbedContent)
        online = sum(1 for w in snap.workers if w.online)
        labels = {
            "queues": f"Queues {len(snap.queues)}",
            "unacked": f"Unacked {snap.unacked_total:,}" + (f" ⚠{len(snap.orphaned)}" if snap.orphaned else ""),
            "workers": f"Workers {online}/{len(snap.workers)}",
            "tasks": "Tasks" + (f" ✖{dict(snap.tasks.states).get('FAILURE', 0):,}"
                                if dict(snap.tasks.states).get("FAILURE") else ""),
            "poison": f"Poison {len(snap.poison)}" + (" ⚠" if snap.poison else ""),
        }
        for view, label in labels.items():
            tab = tabs.get_tab(view)
            if tab.label_text != label:
                tab.label = Text(label)
            tab.set_class(view in ("unacked", "poison") and (bool(snap.orphaned) if view == "unacked"
                                                             else bool(snap.poison)), "-alert")

    def _status_state(self) -> StatusState:
        polling = self._poll is not None and not self._poll.is_finished
        retry_in = None
        if self._next_due is not None and (self.failures or self.crash):
            retry_in = self._next_due - self.clock()
        return StatusState(
            broker_url=self.settings.broker_masked, backend_url=self.settings.backend_masked,
            latest=self.latest, last_ok_at=self.last_ok_at, now=self.clock(), paused=self.paused,
            read_only=self.read_only, retry_in=retry_in, failures=self.failures, crash=self.crash,
            polling=polling, context=self.settings.context,
        )

    def _update_status(self) -> None:
        try:
            bar = self.dash.query_one(StatusBar)
        except Exception:  # noqa: BLE001 - not mounted yet / shutting down
            return
        bar.show(self._status_state(), (self.settings.broker_url, self.settings.backend_url))

    # ---- view switching, filter, jump ----------------------------------------------------------
    def show_view(self, view: str) -> None:
        """Switch to ``view`` and focus its table."""
        if view not in VIEWS:
            self.say(f"unknown view {view!r}; views: {', '.join(VIEWS)}", severity="warning")
            return
        self.dash.query_one("#views", TabbedContent).active = view
        self._view_shown(view)

    def action_show_view(self, view: str) -> None:
        """Key/palette action: switch view."""
        self.show_view(view)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._view_shown(self.current_view)

    def _view_shown(self, view: str) -> None:
        panel = self.panel(view)
        if self.snapshot is not None and panel._synced is not self.snapshot:
            panel.show_snapshot(self.snapshot, force=True)
        if view == "quarantine":
            self.load_quarantine()
        if not self.dash.query_one("#prompt", Input).has_focus:
            panel.table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_view", "prev_view"):
            # Only on the dashboard itself: dialogs and the prompt keep tab for focus moves.
            if len(self.screen_stack) > 1:
                return False
            try:
                return not self.dash.query_one("#prompt", Input).has_focus
            except Exception:  # noqa: BLE001
                return False
        return True

    def action_next_view(self) -> None:
        """Next view (wraps)."""
        i = VIEWS.index(self.current_view)
        self.show_view(VIEWS[(i + 1) % len(VIEWS)])

    def action_prev_view(self) -> None:
        """Previous view (wraps)."""
        i = VIEWS.index(self.current_view)
        self.show_view(VIEWS[(i - 1) % len(VIEWS)])

    def _open_prompt(self, mode: str, value: str, placeholder: str) -> None:
        prompt = self.dash.query_one("#prompt", Input)
        self._prompt_mode = mode
        prompt.suggester = (SuggestFromList([*VIEWS, *SCREENS], case_sensitive=False) if mode == "jump"
                            else None)
        prompt.placeholder = placeholder
        prompt.value = value
        prompt.display = True
        prompt.focus()

    def _close_prompt(self) -> None:
        prompt = self.dash.query_one("#prompt", Input)
        prompt.display = False
        self.focus_table()

    def action_filter(self) -> None:
        """Open the filter prompt for the current view (the Tasks view searches instead)."""
        panel = self.panel()
        if panel.VIEW == "tasks":
            self._open_prompt("search", "", "/ search tasks: words, field:value (name: id: state: worker: "
                              "queue: exc: args:), -exclude, \"a phrase\" (syntax in the help: ?)")
            return
        self._open_prompt("filter", panel.filter_text, f"/ filter {panel.VIEW} (enter keeps it, esc clears)")

    def action_jump(self) -> None:
        """Open the ``:`` prompt to jump to a view."""
        self._open_prompt("jump", "", ": view — " + " ".join(VIEWS) + " · or " + " ".join(SCREENS))

    def open_control_prompt(self, workers: tuple[Any, ...]) -> None:
        """Ask for a one-line worker command (grow 2, rate-limit TASK 10/m, ...) for ``workers``."""
        if self.read_only:
            self.say("worker control is disabled: taskdash runs with --read-only", title="Read-only",
                     severity="warning", timeout=4)
            return
        self._control_targets = tuple(workers)
        names = ", ".join(w.hostname for w in workers[:3]) + (" …" if len(workers) > 3 else "")
        self._open_prompt("control", "", f"command for {names}: grow N · shrink N · autoscale MAX MIN · "
                          "restart · add-consumer Q · cancel-consumer Q · rate-limit TASK 10/m · "
                          "time-limit TASK SOFT HARD · shutdown")

    @on(Input.Changed, "#prompt")
    def _prompt_changed(self, event: Input.Changed) -> None:
        if self._prompt_mode == "filter" and event.input.display:
            self.panel().set_filter(event.value)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        mode = self._prompt_mode
        self._close_prompt()
        if mode == "control":
            self._control_submitted(value)
        elif mode == "search":
            if value:
                self.say(f"searching for {value!r}…", title="Searching", timeout=2)
                self._run_search(value, self.snapshot)
        elif mode == "jump":
            word, _, arg = value.strip().lstrip(":").strip().partition(" ")
            word = word.lower()
            if word in ARG_SCREENS:
                getattr(self, f"action_{word}")(arg.strip())
                return
            if word in SCREENS:
                getattr(self, f"action_{word}")()
                return
            view = resolve_view(value)
            if view is None:
                self.say(f"no view matches {value!r}; try one of: {', '.join(VIEWS)}", severity="warning")
            else:
                self.show_view(view)

    def _control_submitted(self, text: str) -> None:
        if not text:
            return
        from collectors.writes.actions import ActionError
        from collectors.writes.control import parse_command

        try:
            command = parse_command(text)
        except ActionError as exc:
            self.say(str(exc), title="Worker command", severity="error", timeout=6)
            return
        self.post_message(WriteRequested("control", self._control_targets, command=command))

    def action_escape(self) -> None:
        """Close the prompt / clear the filter / clear marks."""
        prompt = self.dash.query_one("#prompt", Input)
        panel = self.panel()
        if prompt.display:
            if self._prompt_mode == "filter":
                panel.set_filter("")
            self._close_prompt()
        elif panel.filter_text:
            panel.set_filter("")
        elif panel.table.marked:
            panel.table.clear_marks()
            panel._update_title()

    # ---- crash forensics ------------------------------------------------------------------------
    def action_crash(self, hostname: str = "") -> None:
        """``:crash [HOST]`` / ``T`` on a worker: the crash-forensics timeline (one worker or all)."""
        from tui.screens.health import TimelineScreen

        self.push_screen(TimelineScreen(self.forensics, hostname or None), lambda _: self.focus_table())

    # ---- contexts --------------------------------------------------------------------------------
    def action_ctx(self, name: str = "") -> None:
        """``:ctx`` lists the contexts of the config file; ``:ctx NAME`` switches to one."""
        from collectors.core.config import ConfigError
        from collectors.core.contexts import config_path, list_contexts, switch

        if not name:
            try:
                rows = list_contexts()
            except ConfigError as exc:
                self.say(str(exc), title="Contexts", severity="error", timeout=8)
                return
            if not rows:
                self.say(f"no context in {config_path()}", title="Contexts", severity="warning", timeout=6)
                return
            current = self.settings.context
            lines = [f"{'▶' if n == current else ' '} {n}{' (default)' if d else ''} — {desc}"
                     for n, desc, d in rows]
            self.say("\n".join(lines) + "\n\n:ctx NAME switches", title="Contexts", timeout=12)
            return
        try:
            new = switch(name, self.settings)
        except ConfigError as exc:
            msg = mask_text(str(exc), self.settings.broker_url, self.settings.backend_url)
            self.say(msg, title=f"Context {name}", severity="error", timeout=8)
            return
        self.switch_settings(new)

    def switch_settings(self, settings: Settings) -> None:
        """Point the dashboard at another broker: stop polling, close the old collector (thread), build
        a new one, reset panels and history, poll again."""
        if self._next is not None:
            self._next.stop()
            self._next = None
            self._next_due = None
        self._generation += 1
        old = self.collector
        factory = self._collector_factory
        if factory is None:
            from collectors.collector import Collector as RealCollector

            factory = RealCollector
        try:
            collector = factory(settings)
        except Exception as exc:  # noqa: BLE001 - bad URL etc.: stay on the current context
            msg = mask_text(f"{type(exc).__name__}: {exc}", settings.broker_url, settings.backend_url)
            self.say(msg, title="Context switch failed", severity="error", timeout=8)
            self._generation -= 1
            self.start_poll()
            return
        self.collector = collector
        self.settings = settings
        self.read_only = self.read_only or settings.read_only
        self._poll = None
        self._close_collector(old)
        if self._actions_factory is not None:
            self._actions = None  # rebuilt from the new settings on first use
        with self._control_lock:
            self._control = None
        self.history = History()
        self.snapshot = self.latest = None
        self.last_ok_at = None
        self.failures = 0
        self.crash = None
        self._broker_ok = None
        self._failing = set()
        self._on_context_switched()
        with self.batch_update():
            for panel in self.dash.query(Panel):
                panel.reset()
            tabs = self.dash.query_one("#views", TabbedContent)
            for view, label in TAB_LABELS.items():
                tab = tabs.get_tab(view)
                tab.label = Text(label)
                tab.set_class(False, "-alert")
        self.say(f"{settings.context or '?'}: {settings.broker_masked}", title="Context switched", timeout=4)
        self._update_status()
        self.start_poll()

    def _on_context_switched(self) -> None:
        """Per-context state: forensics (and the persistent history) start over for the new broker."""
        self.forensics = Forensics()
        self._stored_deliveries = {}
        self._close_store()
        self._open_store()

    @work(thread=True, group="ctx-close", exit_on_error=False, description="close the old collector")
    def _close_collector(self, collector: Collector) -> None:
        try:
            collector.close()
        except Exception:  # noqa: BLE001 - best effort
            log.warning("closing the previous collector failed", exc_info=True)

    # ---- task search ---------------------------------------------------------------------------
    @work(thread=True, group="search", exclusive=True, exit_on_error=False, description="task search")
    def _run_search(self, text: str, snapshot: Snapshot | None) -> None:
        """``search_all`` over unacked, queued and stored results (thread), then the results screen."""
        from collectors.reads.search import SEARCH_HELP, SearchError, search_all

        try:
            outcome = search_all(self.settings, text, limit=SEARCH_LIMIT, snapshot=snapshot)
        except SearchError as exc:
            self.call_from_thread(self.say, f"{exc}\n\n{SEARCH_HELP}", title="Search", severity="error",
                                  timeout=15)
            return
        except Exception as exc:  # noqa: BLE001 - Redis down, ...: tell, never crash
            msg = mask_text(f"{type(exc).__name__}: {exc}", self.settings.broker_url, self.settings.backend_url)
            self.call_from_thread(self.say, msg, title="Search failed", severity="error", timeout=8)
            return
        self.call_from_thread(self._show_search, outcome)

    def _show_search(self, outcome: Any) -> None:
        from tui.screens.search import SearchScreen

        if not self.screen_stack:
            return
        self.push_screen(SearchScreen(outcome, limit=SEARCH_LIMIT), lambda _: self.focus_table())

    # ---- misc actions --------------------------------------------------------------------------
    def action_refresh(self) -> None:
        """Refresh now (also retries at once while the broker is down)."""
        self.start_poll()

    def action_pause(self) -> None:
        """Pause / resume the refresh."""
        self.paused = not self.paused
        if self.paused:
            if self._next is not None:
                self._next.stop()
                self._next = None
                self._next_due = None
            self.say("refresh paused (P resumes)", title="Paused", timeout=3)
        else:
            self.say("refresh resumed", title="Resumed", timeout=2)
            self.start_poll()
        self._update_status()

    def action_help(self) -> None:
        """Show the key reference."""
        self.push_screen(HelpScreen(self.read_only))

    def action_health(self) -> None:
        """``:health``: Redis memory, eviction policy, clients, persistence (INFO in a thread)."""
        from tui.screens.health import HealthScreen

        self.push_screen(HealthScreen(self._redis_health))

    def _redis_health(self) -> Any:
        from collectors.core.config import redis_client
        from collectors.reads.health import redis_health

        client = redis_client(self.settings.broker_url, self.settings)
        try:
            return redis_health(client)
        finally:
            client.close()

    def action_lint(self) -> None:
        """``:lint``: Celery settings behind duplicates and poison loops (one inspect, in a thread)."""
        from collectors.analysis.lint import run_lint
        from tui.screens.lint import LintScreen

        self.push_screen(LintScreen(partial(run_lint, self.settings)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh now", "Poll Redis and the workers immediately", self.action_refresh)
        yield SystemCommand("Pause / resume refresh", "Stop or restart the periodic refresh", self.action_pause)
        yield SystemCommand("Help: keys", "Every key of every view", self.action_help)
        yield SystemCommand("Redis health (:health)", "Memory, eviction policy, clients, persistence",
                            self.action_health)
        yield SystemCommand("Lint the Celery config (:lint)", "Settings behind duplicates and poison loops",
                            self.action_lint)

    # ---- details -------------------------------------------------------------------------------
    @on(DetailRequested)
    def _detail_requested(self, message: DetailRequested) -> None:
        snap = self.snapshot
        item = message.item
        if snap is None:
            return
        kind = message.kind
        if kind == "queue":
            title = f"Queue {item.name}"
            sections = details.queue_sections(item, snap, self.history.depth_values(item.name))
        elif kind == "unacked":
            title = f"Unacked message {item.task or '?'} [{item.task_id or item.delivery_tag}]"
            sections = details.unacked_sections(item, snap)
        elif kind == "worker":
            if self.load_details:
                # Live: the worker describes itself (stats, pool, queues, registered, conf), in a thread.
                from tui.screens.worker_detail import WorkerDetailScreen

                hostname = item.hostname
                self.push_screen(WorkerDetailScreen(hostname, loader=partial(self._worker_details, hostname)))
                return
            title = f"Worker {item.hostname}"
            sections = details.worker_sections(item, snap)
        elif kind == "failure":
            title = f"Failed task {item.task or '?'} [{item.task_id}]"
            sections = details.failure_sections(item, snap)
        elif kind == "poison":
            title = f"Poison suspect {item.task or '?'} [{item.task_id}]"
            if self.deliveries_of(item) != item.deliveries:  # the persistent history saw more
                item = dataclasses.replace(item, deliveries=self.deliveries_of(item))
            sections = details.poison_sections(item, snap)
            sections.insert(2, details.forensics_section(self.forensics.victims(item.task_id),
                                                         self.forensics.took_down(item.task_id), snap.taken_at))
        else:
            title = "Quarantined message"
            sections = details.generic_sections("Quarantined message", item)
        self.push_screen(DetailScreen(title, sections, loader=self.detail_loader(kind, item)))

    def detail_loader(self, kind: str, item: Any) -> Callable[[], Sequence[details.Section]] | None:
        """The slow part of a detail screen (headers, stored result), run in a thread by the screen."""
        if not self.load_details or kind not in ("unacked", "poison"):
            return None
        tag = getattr(item, "delivery_tag", None)
        task_id = getattr(item, "task_id", None)
        if not tag and not task_id:
            return None
        from tui.loaders import detail_sections

        return partial(detail_sections, self.settings, tag, task_id)

    def worker_control(self) -> Any:
        """The ``WorkerControl`` (built on first use, from any thread)."""
        with self._control_lock:
            if self._control is None:
                from collectors.writes.control import WorkerControl

                self._control = WorkerControl(self.settings)
            return self._control

    def _worker_details(self, hostname: str) -> dict[str, Any]:
        """Ask one worker for its details (runs in the detail screen's thread worker)."""
        return self.worker_control().worker_details(hostname)

    # ---- actions -------------------------------------------------------------------------------
    @property
    def actions(self) -> Any:
        """The actions object (built on first use)."""
        if self._actions is None and self._actions_factory is not None:
            self._actions = self._actions_factory()
        return self._actions

    @on(WriteRequested)
    def _write_requested(self, message: WriteRequested) -> None:
        kind, items = message.kind, tuple(message.items)
        if self.read_only:
            self.say(f"{kind.replace('_', ' ')} is disabled: taskdash runs with --read-only",
                        title="Read-only", severity="warning", timeout=4)
            return
        if not items:
            self.say("nothing selected" if kind != "requeue_orphaned" else "no orphaned message",
                        severity="warning", timeout=3)
            return
        if self.actions is None and kind != "control":
            self.say("actions are not available in this build", severity="error")
            return
        if kind == "purge":
            self._purge_preview(items[0])
            return
        builder = getattr(self, f"_confirm_{kind}", None)
        if builder is None:
            self.say(f"unknown action {kind}", severity="error")
            return
        built = builder(items, message.command) if kind == "control" else builder(items)
        if built is None:
            self.say("this row has no task id to act on", severity="warning", timeout=4)
            return
        title, body, label, options, run = built
        self.push_screen(ConfirmScreen(title, body, confirm_label=label, options=options),
                         partial(self._confirmed, run))

    def _confirmed(self, run: Callable[[Confirmation], tuple[str, str, str]],
                   answer: Confirmation | None) -> None:
        self.focus_table()
        if answer is None:
            return
        self._run_action(run, answer)

    @work(thread=True, group="actions", exit_on_error=False, description="write action")
    def _run_action(self, run: Callable[[Confirmation], tuple[str, str, str]],
                    answer: Confirmation) -> tuple[str, str, str]:
        try:
            return run(answer)
        except Exception as exc:  # noqa: BLE001 - ActionError / ReadOnlyError / Redis down: notify
            name = type(exc).__name__
            msg = mask_text(str(exc) or name, self.settings.broker_url, self.settings.backend_url)
            return ("Refused" if name in ("ActionError", "ReadOnlyError") else f"Failed ({name})", msg, "error")

    @staticmethod
    def _result(title: str, result: Any) -> tuple[str, str, str]:
        message = getattr(result, "message", None) or str(result)
        count = getattr(result, "count", None)
        severity = "information" if count is None or count > 0 else "warning"
        return (title, message, severity)

    # Each _confirm_<kind>(items) -> (title, body, button label, options, run(confirmation) -> result).
    def _confirm_requeue(self, items: tuple[Any, ...]) -> Any:
        tags = [e.delivery_tag for e in items]
        live = [e for e in items if getattr(e, "holder", None)]
        body = (f"Move {len(tags)} unacked message(s) back onto their queue (the end consumed next), "
                "removing them from unacked:\n" + _listing([_describe_entry(e) + f" · {e.state}" for e in items]))
        if live:
            body += (f"\n\n{len(live)} of them are reported by a live worker: requeueing those runs them "
                     "twice. They are refused unless you force.")
        options = [("force", "force (even if a live worker holds it)", False)] if live else []

        def run(c: Confirmation) -> tuple[str, str, str]:
            return self._result("Requeue", self.actions.requeue(tags, force=c.options.get("force", False)))

        return ("Requeue?", body, "Requeue", options, run)

    def _confirm_requeue_orphaned(self, items: tuple[Any, ...]) -> Any:
        tags = [e.delivery_tag for e in items]
        body = (f"Requeue the {len(tags)} message(s) orphaned at the last refresh (no live worker holds "
                "them) back onto their queues:\n" + _listing([_describe_entry(e) for e in items]))
        snap = self.snapshot
        if snap is not None and snap.unacked_total > len(snap.unacked):
            body += (f"\n\nOnly the {len(snap.unacked):,} oldest of {snap.unacked_total:,} unacked entries were "
                     "read in this refresh; `taskdash requeue --orphaned` handles every one.")

        def run(c: Confirmation) -> tuple[str, str, str]:
            return self._result("Requeue orphaned", self.actions.requeue(tags, force=False))

        return ("Requeue all orphaned?", body, "Requeue", [], run)

    def _confirm_quarantine(self, items: tuple[Any, ...]) -> Any:
        tags = [e.delivery_tag for e in items if hasattr(e, "delivery_tag") and hasattr(e, "reserved_at")]
        task_ids = [e.task_id for e in items if not (hasattr(e, "reserved_at") and e.delivery_tag)]
        reason = "quarantined from the taskdash TUI"
        deliveries: int | None = None
        if items and hasattr(items[0], "deliveries"):
            reason = f"poison suspect: {items[0].reason}"
            deliveries = max(self.deliveries_of(e) for e in items)
        body = (f"Move {len(items)} message(s) into taskdash's quarantine (out of their queue and of "
                "unacked; kept whole, replayable):\n" + _listing([_describe_entry(e) for e in items]))

        def run(c: Confirmation) -> tuple[str, str, str]:
            kwargs: dict[str, Any] = {"reason": reason}
            if deliveries is not None:
                kwargs["deliveries"] = deliveries
            if tags:
                kwargs["tags"] = tags
            if task_ids:
                kwargs["task_ids"] = task_ids
            result = self._result("Quarantine", self.actions.quarantine(**kwargs))
            self._forget(getattr(e, "task_id", None) for e in items)
            return result

        return ("Quarantine?", body, "Quarantine", [], run)

    def _confirm_revoke(self, items: tuple[Any, ...]) -> Any:
        item = items[0]
        task_id = item.task_id
        if not task_id:
            return None
        body = (f"Revoke task {_describe_entry(item)}.\nWorkers will discard it if it has not started; "
                "with terminate, the process running it gets SIGTERM.")

        def run(c: Confirmation) -> tuple[str, str, str]:
            result = self._result("Revoke", self.actions.revoke(task_id, terminate=c.options.get("terminate",
                                                                                                 False)))
            self._forget([task_id])
            return result

        return ("Revoke?", body, "Revoke", [("terminate", "terminate (SIGTERM the running process)", False)],
                run)

    def _confirm_control(self, items: tuple[Any, ...], command: Any) -> Any:
        hosts = [w.hostname for w in items]
        body = (f"Send to {len(hosts)} worker(s): {command.description}\n" + _listing(hosts))

        def run(c: Confirmation) -> tuple[str, str, str]:
            return self._result("Worker control", command.run(self.worker_control(), hosts))

        return ("Worker command?", body, "Send", [], run)

    def _confirm_retry(self, items: tuple[Any, ...]) -> Any:
        item = items[0]
        task_id = item.task_id
        body = (f"Send task {item.task or '?'} [{task_id}] again with its stored args and kwargs:\n"
                f"  args: {item.args or '–'}\n  kwargs: {item.kwargs or '–'}")

        def run(c: Confirmation) -> tuple[str, str, str]:
            return self._result("Retry", self.actions.retry(task_id))

        return ("Retry?", body, "Retry", [], run)

    def _confirm_replay(self, items: tuple[Any, ...]) -> Any:
        ids = [str(q_attr(e, "id", "qid", "task_id")) for e in items]
        body = (f"Put {len(ids)} quarantined message(s) back on their original queue:\n"
                + _listing([f"{q_attr(e, 'task') or '?'} [{q_attr(e, 'task_id') or '?'}] → "
                            f"{q_attr(e, 'queue') or '?'}" for e in items]))

        def run(c: Confirmation) -> tuple[str, str, str]:
            return self._result("Replay", self.actions.replay(ids))

        return ("Replay?", body, "Replay", [], run)

    def _confirm_delete_quarantined(self, items: tuple[Any, ...]) -> Any:
        ids = [str(q_attr(e, "id", "qid", "task_id")) for e in items]
        body = (f"Delete {len(ids)} quarantined message(s) for good (they cannot be replayed afterwards):\n"
                + _listing([f"{q_attr(e, 'task') or '?'} [{q_attr(e, 'task_id') or '?'}]" for e in items]))

        def run(c: Confirmation) -> tuple[str, str, str]:
            return self._result("Delete", self.actions.delete_quarantined(ids))

        return ("Delete from quarantine?", body, "Delete", [], run)

    # purge: preview first (Redis reads → thread), then the dialog, then the purge.
    @work(thread=True, group="preview", exit_on_error=False, description="purge preview")
    def _purge_preview(self, queue: Any) -> None:
        name = queue.name
        try:
            preview = self.actions.purge_preview(name)
        except Exception as exc:  # noqa: BLE001
            msg = mask_text(str(exc) or type(exc).__name__, self.settings.broker_url, self.settings.backend_url)
            self.call_from_thread(self.say, msg, title="Purge preview failed", severity="error")
            return
        self.call_from_thread(self._confirm_purge, name, preview)

    def _confirm_purge(self, name: str, preview: Any) -> None:
        export = default_export_path(name, self.clock(), self.export_dir)
        by_pri = getattr(preview, "by_priority", ()) or ()
        by_pri_items = list(by_pri.items()) if isinstance(by_pri, dict) else list(by_pri)
        total = getattr(preview, "total", 0)
        unacked = getattr(preview, "unacked", 0)
        orphaned = getattr(preview, "orphaned_unacked", 0)
        bands = ", ".join(f"priority {band}: {n:,}" for band, n in by_pri_items) or "–"
        body = (f"Delete the {total:,} ready message(s) of queue {name} ({bands}).\n"
                f"{unacked:,} unacked message(s) of this queue ({orphaned:,} orphaned) stay unless you "
                "include the orphaned ones below.\n"
                f"Everything purged is first written to {export}\n(undo with: taskdash restore FILE).")
        options = [("include_unacked", f"also purge the {orphaned:,} orphaned unacked message(s)", False)]

        def run(c: Confirmation) -> tuple[str, str, str]:
            result = self.actions.purge(name, include_unacked=c.options.get("include_unacked", False),
                                        export_path=str(export))
            return self._result("Purge", result)

        self.push_screen(ConfirmScreen(f"Purge queue {name}?", body, confirm_label="Purge", options=options),
                         partial(self._confirmed, run))

    # ---- quarantine list -------------------------------------------------------------------------
    def load_quarantine(self) -> None:
        """Read the quarantine list in a thread worker."""
        if self.actions is None:
            self.dash.query_one(QuarantinePanel).show_entries((), "actions are not available")
            return
        self._load_quarantine()

    @work(thread=True, group="quarantine", exclusive=True, exit_on_error=False, description="list quarantine")
    def _load_quarantine(self) -> None:
        try:
            entries = tuple(self.actions.list_quarantine())
            self.post_message(QuarantineListed(entries))
        except Exception as exc:  # noqa: BLE001
            msg = mask_text(str(exc) or type(exc).__name__, self.settings.broker_url, self.settings.backend_url)
            self.post_message(QuarantineListed((), msg))

    @on(QuarantineListed)
    def _quarantine_listed(self, message: QuarantineListed) -> None:
        if not self.screen_stack:
            return
        self.dash.query_one(QuarantinePanel).show_entries(message.entries, message.error)
        tab = self.dash.query_one("#views", TabbedContent).get_tab("quarantine")
        if message.error is None:
            tab.label = Text(f"Quarantine {len(message.entries)}")


def resolve_view(text: str) -> str | None:
    """``":unacked"`` / ``"un"`` / ``"2"`` → a view name (exact, then unique prefix, then first prefix)."""
    word = text.strip().lstrip(":").strip().lower()
    if not word:
        return None
    if word.isdigit() and 1 <= int(word) <= len(VIEWS):
        return VIEWS[int(word) - 1]
    if word in VIEWS:
        return word
    matches = [v for v in VIEWS if v.startswith(word)]
    return matches[0] if matches else None


def unreachable_snapshot(settings: Settings, error: str) -> Snapshot:
    """A snapshot that only says the broker is down (used when the collector cannot even start)."""
    return Snapshot(taken_at=time.time(), broker=SourceStatus(settings.broker_masked, False, error),
                    backend=SourceStatus(settings.backend_masked, False, error))


def setup_logging() -> Path | None:
    """Send logs to a file while the TUI owns the terminal (stderr output would corrupt the screen).

    Only when nothing configured logging already; returns the log file (None: logging discarded).
    """
    root = logging.getLogger()
    if root.handlers:
        return None
    try:
        from collectors.core.audit import state_dir

        path = state_dir() / "taskdash.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        path, handler = None, logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return path


def run(settings: Settings) -> int:
    """Build the real collector and actions, run the dashboard, return the exit code."""
    from collectors.collector import Collector as RealCollector

    setup_logging()

    app: TaskDashApp | None = None

    def make_actions() -> Any:
        from collectors.writes.actions import Actions

        return Actions(app.settings if app is not None else settings)  # :ctx may have switched

    collector = RealCollector(settings)
    try:
        from collectors.analysis.history import default_path

        app = TaskDashApp(collector, actions_factory=make_actions, collector_factory=RealCollector,
                          history_path=default_path())
        result = app.run()
    finally:
        (app.collector if app is not None else collector).close()
    return int(result or 0)
