"""TaskDashApp: the global half of the dashboard — the poll lifecycle, contexts, global keys, the store.

Timer → ``@work(thread=True)`` collect() → ``SnapshotReady`` → the dashboard screen shows it. Only
the app owns the collector and the actions; the collector feeds crash forensics and the persistent
history itself (they are attached to it). The rest lives at Textual's seams:

- ``tui.screens.dashboard.DashboardScreen`` (``get_default_screen()``): composition, tabs, the prompt,
  task search and the detail screens;
- ``tui.writes``: one straight-line write flow (``@work`` + ``push_screen_wait``) over a table of
  confirmation specs; results come back as ``ActionDone`` messages;
- ``tui.palette``: the command palette provider.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import Provider
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from collectors.analysis.forensics import Forensics
from collectors.core.config import Settings, mask_text
from collectors.core.models import Snapshot, SourceStatus
from tui import writes
from tui.format import safe
from tui.history import History
from tui.messages import ActionDone, CollectFailed, QuarantineListed, SnapshotReady, WriteRequested
from tui.palette import TaskDashCommands
from tui.screens.dashboard import TAB_LABELS, DashboardScreen, resolve_view
from tui.screens.help import HelpScreen
from tui.screens.welcome import WelcomeScreen
from tui.widgets.panels import VIEWS, Panel
from tui.widgets.status_bar import StatusState

if TYPE_CHECKING:
    from collectors.analysis.history import History as HistoryStore
    from collectors.writes.api import ActionsAPI, WorkerControlAPI

__all__ = ["CollectorAPI", "TaskDashApp", "resolve_view", "run", "setup_logging", "unreachable_snapshot"]

log = logging.getLogger(__name__)

GC_THRESHOLDS = (10_000, 20, 20)
"""The cyclic garbage collector's thresholds while the dashboard runs (CPython's are 700, 10, 10).

A refresh replaces thousands of objects that live about a second (a snapshot, its rows, their rendered
cells): at the default thresholds they survive the young generations and trigger a full collection
about every 1.5 s, ~120 ms each at S1 (1,000 queues): 8 % of a core, and the pause lands in key presses
(view switches measured 150-250 ms median). At these thresholds the young collections run ~5 times a
second (~3 ms each) and a full one about every 90 s; the garbage that waits meanwhile is bounded by the
first threshold (10,000 allocations)."""


def tune_gc() -> None:
    """Raise the collector's thresholds to ``GC_THRESHOLDS`` (never lower ones someone set higher)."""
    current = gc.get_threshold()
    if current[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


class CollectorAPI(Protocol):
    """What the app needs from a collector (``collectors.collector.Collector`` or a test fake)."""

    settings: Settings

    def collect(self) -> Snapshot:
        """Blocking refresh; never raises for one failed source; feeds the attachments."""
        ...

    def attach(self, *, forensics: Forensics | None, history: HistoryStore | None) -> None:
        """Set the crash forensics and the persistent history that ``collect()`` feeds (None detaches)."""
        ...

    def inspect_soon(self) -> None:
        """Ask for a fresh worker inspect on the next collect."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


class TaskDashApp(App[int]):
    """The taskdash dashboard: polls the collector and owns the state every screen reads."""

    CSS_PATH = "app.tcss"
    TITLE = "taskdash"
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = App.COMMANDS | {TaskDashCommands}
    # One key table (order = footer order, ids = keymap ids); the dashboard keys act on the dashboard.
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
        *[Binding(str(i), f"show_view('{v}')", TAB_LABELS[v], show=False, id=f"taskdash.view.{v}")
          for i, v in enumerate(VIEWS)],
    ]

    def __init__(self, collector: CollectorAPI, *, actions: ActionsAPI | None = None,
                 actions_factory: Callable[[], ActionsAPI] | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time, show_welcome: bool = True,
                 max_backoff: float | None = None, load_details: bool = True,
                 export_dir: Path | None = None,
                 collector_factory: Callable[[Settings], CollectorAPI] | None = None,
                 history_path: str | Path | None = None, control: WorkerControlAPI | None = None) -> None:
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
            control: A ``WorkerControl`` (or a fake); built on first use otherwise.
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
        """Crash forensics (worker timelines, pool process deaths), fed by the collector in the poll thread."""
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
        self._refreshes = 0
        self.apply_ms = 0.0
        """How long the UI thread spent applying the last snapshot (milliseconds)."""
        self._control: WorkerControlAPI | None = control
        self._control_lock = threading.Lock()
        self._collector_factory = collector_factory
        self._generation = 0
        """Bumped when ``:ctx`` replaces the collector: results of the old one are dropped."""
        self.history_path = history_path
        self.store: HistoryStore | None = None
        """``collectors.analysis.history.History`` (SQLite) when ``history_path`` is given."""
        self._stored_deliveries: dict[str, int] = {}
        self._open_store()
        self._attach()

    def get_default_screen(self) -> DashboardScreen:
        """The dashboard is the bottom of the screen stack."""
        return DashboardScreen()

    # ---- persistent history + forensics (attached to the collector) ----------------------------
    def _attach(self) -> None:
        """Let the current collector feed this context's forensics and persistent history."""
        self.collector.attach(forensics=self.forensics, history=self.store)

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

    def forget_deliveries(self, task_ids: Iterable[str | None]) -> None:
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

    def _read_deliveries(self, snapshot: Snapshot) -> None:
        """Read back the stored delivery counts of this refresh's suspects (poll thread, after recording)."""
        store = self.store
        if store is None or not snapshot.broker.ok:
            return
        try:
            self._stored_deliveries = {p.task_id: store.deliveries(p.task_id) for p in snapshot.poison}
        except Exception:  # noqa: BLE001 - a broken file must not break the refresh
            log.warning("history.deliveries failed", exc_info=True)

    def say(self, message: str, *, title: str = "", severity: str = "information", timeout: float | None = None) -> None:
        """``notify`` without markup: messages carry task ids, URLs and error text with brackets."""
        self.notify(safe(message), title=safe(title), severity=severity, timeout=timeout,  # type: ignore[arg-type]
                    markup=False)

    # ---- lifecycle -----------------------------------------------------------------------------
    @on(DashboardScreen.Ready)
    def _dashboard_ready(self) -> None:
        """Start the poll lifecycle once the dashboard can show what it brings."""
        tune_gc()
        self.update_status()
        self.set_interval(1.0, self.update_status, name="status-age")
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.start_poll()

    def on_unmount(self) -> None:
        self._close_store()
        if self._gc_resume is not None:  # never leave the process without its garbage collector
            self._resume_gc()

    def _theme_changed(self, theme: Any) -> None:
        self.dash.redraw()
        self.update_status()

    @property
    def dash(self) -> DashboardScreen:
        """The dashboard screen (the bottom of the stack, whatever dialog is open above it)."""
        return self.screen_stack[0]  # type: ignore[return-value]

    # Conveniences over the dashboard (palette, write flow, tests).
    @property
    def current_view(self) -> str:
        """The active view name."""
        return self.dash.current_view

    def panel(self, view: str | None = None) -> Panel:
        """The panel of ``view`` (default: the active one)."""
        return self.dash.panel(view)

    def focus_table(self) -> None:
        """Give the keyboard to the active panel's table."""
        self.dash.focus_table()

    def show_view(self, view: str) -> None:
        """Switch to ``view`` and focus its table."""
        self.dash.show_view(view)

    KEY_GC_PAUSE_S = 0.3
    """The cyclic garbage collector waits this long after a key press (``_pause_gc``)."""
    KEY_GC_PAUSE_MAX_S = 1.0
    """... but never more than this in a row (a held key): the garbage it leaves stays bounded."""
    _gc_resume: Timer | None = None
    _gc_paused_at = 0.0
    _gc_free_until = 0.0

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self._pause_gc()
        await super().on_event(event)

    def _pause_gc(self) -> None:
        """Keep the cyclic GC from running while a key is answered. At 1,000 queues a young collection
        takes 3-15 ms and a middle one 25-45 ms (``GC_THRESHOLDS``), and one landing in a view switch
        was the slowest answers; the collection runs ``KEY_GC_PAUSE_S`` later instead (as Textual does
        for smooth scrolling)."""
        now = time.monotonic()
        if self._gc_resume is None:
            if not gc.isenabled() or now < self._gc_free_until:  # off already (Textual's scroll pause,
                return  # or the embedding program), or just let run after a long pause
            gc.disable()
            self._gc_paused_at = now
        else:
            self._gc_resume.stop()
            if now - self._gc_paused_at > self.KEY_GC_PAUSE_MAX_S:
                self._resume_gc()
                self._gc_free_until = now + self.KEY_GC_PAUSE_S  # time to run before the next pause
                return
        self._gc_resume = self.set_timer(self.KEY_GC_PAUSE_S, self._resume_gc, name="gc-resume")

    def _resume_gc(self) -> None:
        if self._gc_resume is not None:
            self._gc_resume.stop()
            self._gc_resume = None
        gc.enable()

    # ---- polling -----------------------------------------------------------------------------
    def start_poll(self) -> None:
        """Start a refresh unless one is already in flight (polls never stack behind a slow broker)."""
        self._stop_timer()
        if self._poll is not None and not self._poll.is_finished:
            return
        self._poll = self._collect()
        if self.last_ok_at is None or self.failures or self.crash:
            # "connecting…" / the retry countdown depend on the poll state. Otherwise a poll start only
            # moved the age to "1s ago" for the ~10-40 ms until its snapshot lands: a second repaint a
            # second (the status line spans the screen) for a figure that is about to be replaced.
            self.update_status()

    def _stop_timer(self) -> None:
        if self._next is not None:
            self._next.stop()
            self._next = None
            self._next_due = None

    @work(thread=True, group="poll", exit_on_error=False, description="collect a snapshot")
    def _collect(self) -> None:
        collector, generation = self.collector, self._generation
        try:
            snapshot = collector.collect()  # also feeds forensics and the persistent history
        except Exception as exc:  # noqa: BLE001 - a crashed refresh must never take the app down
            log.warning("collect() failed", exc_info=True)
            self.post_message(CollectFailed(f"{type(exc).__name__}: {exc}", generation))
            return
        if generation == self._generation:
            self._read_deliveries(snapshot)
        self.post_message(SnapshotReady(snapshot, generation))

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
        """Poll workers re-arm the timer; any other worker only reports here when it crashed."""
        worker = event.worker
        if worker.group == "poll":
            if worker is not self._poll:
                return  # a poll of a context switched away from
            if event.state == WorkerState.SUCCESS:
                self._schedule_next()
            elif event.state == WorkerState.ERROR:
                self._collect_failed(CollectFailed(f"{type(worker.error).__name__}: {worker.error}"))
                self._schedule_next()
        elif worker.group in ("actions", "preview", "quarantine", "flows") and event.state == WorkerState.ERROR:
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
        self.update_status()

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
                self.dash.show_snapshot(snap)
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
        self.update_status()

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

    def update_status(self) -> None:
        """Redraw the status bar from the poll state."""
        if not self.screen_stack:
            return
        self.dash.show_status(self._status_state(), (self.settings.broker_url, self.settings.backend_url))

    # ---- dashboard keys (the binding table above; what they do is the dashboard's) -----------------
    def action_show_view(self, view: str) -> None:
        """Key/palette action: switch view."""
        self.show_view(view)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_view", "prev_view"):
            # Only on the dashboard itself: dialogs and the prompt keep tab for focus moves.
            if len(self.screen_stack) > 1:
                return False
            return not self.dash.prompt_open
        return True

    def action_next_view(self) -> None:
        """Next view (wraps)."""
        self.dash.step_view(+1)

    def action_prev_view(self) -> None:
        """Previous view (wraps)."""
        self.dash.step_view(-1)

    def action_filter(self) -> None:
        """Open the filter prompt for the current view (the Tasks view searches instead)."""
        self.dash.action_filter()

    def action_jump(self) -> None:
        """Open the ``:`` prompt to jump to a view."""
        self.dash.action_jump()

    def action_escape(self) -> None:
        """Close the prompt / clear the filter / clear marks."""
        self.dash.action_escape()

    # ---- global keys and ``:`` commands ----------------------------------------------------------
    def action_refresh(self) -> None:
        """Refresh now (also retries at once while the broker is down)."""
        self.start_poll()

    def action_pause(self) -> None:
        """Pause / resume the refresh."""
        self.paused = not self.paused
        if self.paused:
            self._stop_timer()
            self.say("refresh paused (P resumes)", title="Paused", timeout=3)
        else:
            self.say("refresh resumed", title="Resumed", timeout=2)
            self.start_poll()
        self.update_status()

    def action_help(self) -> None:
        """Show the key reference."""
        self.push_screen(HelpScreen(self.read_only))

    def action_beat(self) -> None:
        """``:beat``: periodic tasks — beat alive or dead, entries, missed runs (issue 16)."""
        from tui.screens.beat import BeatScreen

        self.push_screen(BeatScreen())

    def action_canvas(self) -> None:
        """``:canvas``: groups and chords; enter lists a chord's parts (issue 16)."""
        from tui.screens.canvas import CanvasScreen

        self.push_screen(CanvasScreen())

    def action_bulk(self) -> None:
        """``:bulk``: bulk actions by query with a dry run first, stoppable with escape (issue 18)."""
        from collectors.writes.bulk import BulkActions
        from tui.screens.bulk import BulkScreen

        def factory() -> BulkActions:
            actions = BulkActions(self.settings)
            live = getattr(self.collector, "liveness", None)
            if callable(live):
                actions.evidence = live  # the requeue liveness guard classifies with what we watched
            return actions

        self.push_screen(BulkScreen(factory, read_only=self.read_only))

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

        snap = self.snapshot  # the ghost rule reads the liveness the collector has been deciding all along
        workers = snap.workers if snap is not None and any(w.liveness for w in snap.workers) else None
        self.push_screen(LintScreen(partial(run_lint, self.settings, workers=workers)))

    def action_crash(self, hostname: str = "") -> None:
        """``:crash [HOST]`` / ``T`` on a worker: the crash-forensics timeline (one worker or all)."""
        from tui.screens.health import TimelineScreen

        self.push_screen(TimelineScreen(self.forensics, hostname or None), lambda _: self.focus_table())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh now", "Poll Redis and the workers immediately", self.action_refresh)
        yield SystemCommand("Pause / resume refresh", "Stop or restart the periodic refresh", self.action_pause)
        yield SystemCommand("Help: keys", "Every key of every view", self.action_help)
        yield SystemCommand("Redis health (:health)", "Memory, eviction policy, clients, persistence",
                            self.action_health)
        yield SystemCommand("Lint the Celery config (:lint)", "Settings behind duplicates and poison loops",
                            self.action_lint)

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
        self._stop_timer()
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
        old.attach(forensics=None, history=None)  # a late refresh of the old broker feeds nothing
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
            self.dash.reset()
        self.say(f"{settings.context or '?'}: {settings.broker_masked}", title="Context switched", timeout=4)
        self.update_status()
        self.start_poll()

    def _on_context_switched(self) -> None:
        """Per-context state: forensics (and the persistent history) start over for the new broker."""
        self.forensics = Forensics()
        self._stored_deliveries = {}
        self._close_store()
        self._open_store()
        self._attach()

    @work(thread=True, group="ctx-close", exit_on_error=False, description="close the old collector")
    def _close_collector(self, collector: CollectorAPI) -> None:
        try:
            collector.close()
        except Exception:  # noqa: BLE001 - best effort
            log.warning("closing the previous collector failed", exc_info=True)

    # ---- writes ----------------------------------------------------------------------------------
    @property
    def actions(self) -> ActionsAPI | None:
        """The actions object (built on first use)."""
        if self._actions is None and self._actions_factory is not None:
            self._actions = self._actions_factory()
        return self._actions

    def worker_control(self) -> WorkerControlAPI:
        """The ``WorkerControl`` (built on first use, from any thread)."""
        with self._control_lock:
            if self._control is None:
                from collectors.writes.control import WorkerControl

                self._control = WorkerControl(self.settings)
            return self._control

    def worker_details(self, hostname: str) -> dict[str, Any]:
        """Ask one worker for its details (runs in the detail screen's thread worker)."""
        return self.worker_control().worker_details(hostname)

    @on(WriteRequested)
    @work(group="flows", exit_on_error=False, description="confirm and run a write")
    async def _write_requested(self, message: WriteRequested) -> None:
        await writes.write_flow(self, message)

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.say(message.message, title=message.title, severity=message.severity, timeout=6)
        self.collector.inspect_soon()
        self.action_refresh()
        if self.current_view == "quarantine" or message.quarantine_changed:
            self.load_quarantine()

    def load_quarantine(self) -> None:
        """Read the quarantine list in a thread worker."""
        if self.actions is None:
            self.dash.show_quarantine((), "actions are not available")
            return
        self._load_quarantine()

    @work(thread=True, group="quarantine", exclusive=True, exit_on_error=False, description="list quarantine")
    def _load_quarantine(self) -> None:
        actions = self.actions
        assert actions is not None
        try:
            entries = tuple(actions.list_quarantine())
            self.post_message(QuarantineListed(entries))
        except Exception as exc:  # noqa: BLE001
            msg = mask_text(str(exc) or type(exc).__name__, self.settings.broker_url, self.settings.backend_url)
            self.post_message(QuarantineListed((), msg))

    @on(QuarantineListed)
    def _quarantine_listed(self, message: QuarantineListed) -> None:
        if not self.screen_stack:
            return
        self.dash.show_quarantine(message.entries, message.error)


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

    def make_actions() -> ActionsAPI:
        from collectors.writes.actions import Actions

        actions = Actions(app.settings if app is not None else settings)  # :ctx may have switched
        live = getattr(app.collector if app is not None else collector, "liveness", None)
        if callable(live):
            actions.evidence = live  # classify with what the dashboard has watched (issue 12)
        return actions

    collector = RealCollector(settings)
    try:
        from collectors.analysis.history import default_path

        app = TaskDashApp(collector, actions_factory=make_actions, collector_factory=RealCollector,
                          history_path=default_path())
        result = app.run()
    finally:
        (app.collector if app is not None else collector).close()
    return int(result or 0)
