"""One call, one immutable Snapshot: the only thing the TUI and the CLI talk to.

``Collector.collect()`` reads every source (broker queues + unacked ledger, workers, result backend,
poison history) and never raises because one source failed: the failure is recorded in
``Snapshot.errors`` (and ``broker.ok``/``backend.ok``) and the other sources still show.

Cost of one refresh (see README): the broker read is a constant number of pipelined round trips
(BrokerReader); the result backend is counted by ResultsMonitor's own paced background thread (one
bounded SCAN step per refresh only when the Collector runs without background threads); worker state comes from the
WorkerMonitor's own cadence (inspect every ``inspect_interval`` s, heartbeats via PSUBSCRIBE), so a
refresh never waits for an inspect window except the very first one.

Attachments: a ``Forensics`` (crash forensics) and a persistent ``History`` (SQLite) can be given to
the constructor or to ``attach()``; ``collect()`` then feeds them itself, in the calling (poll)
thread, with the snapshot and the workers view of the same refresh, exactly as it feeds the poison
tracker. A failing attachment is logged and never breaks the refresh. The broker reader also looks up
in the History when it first saw each queue's head message (``History.head_seen``), and takes the
task-sent times of the drained task events (``BrokerReader.note_events``, before the read), so an
oldest-message age is exact when evidence exists and a lower bound that survives restarts otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis

from collectors.analysis.beat_canvas import BeatCanvasSource
from collectors.analysis.liveness import (
    BacklogClock,
    LivenessView,
    annotate_workers,
    classify_unacked,
    liveness_view,
)
from collectors.analysis.poison import PoisonTracker
from collectors.analysis.taskstats import TaskStatsAggregator
from collectors.core.config import ConfigError, Settings, mask_text, mask_url, redis_client
from collectors.core.errors import Kind, classify, user_of
from collectors.core.models import (
    QueueInfo,
    RefreshCost,
    Snapshot,
    SourceError,
    SourceState,
    SourceStatus,
    TaskStats,
    WorkerInfo,
)
from collectors.reads.broker import BrokerReader, BrokerView
from collectors.reads.results import ResultsMonitor
from collectors.reads.workers import WorkerMonitor, WorkersView

if TYPE_CHECKING:
    from collectors.analysis.forensics import Forensics
    from collectors.analysis.history import History

log = logging.getLogger(__name__)

NOT_READY = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
"""Error prefixes of a Redis that is up but cannot answer yet (a refresh reports it, then retries)."""


def source_states(errors: list[SourceError], bv: BrokerView | None, workers_read: bool,
                  backend_ok: bool) -> tuple[SourceState, ...]:
    """How each source of this refresh was read (DESIGN §2 least privilege: unreadable is never empty)."""
    def first(*names: str) -> str | None:
        return next((e.message for e in errors if e.source in names), None)

    out: list[SourceState] = []
    for name in ("queues", "unacked"):
        if bv is None:
            out.append(SourceState(name, "unreadable", first("broker")))
        elif first(name):
            out.append(SourceState(name, "partial", first(name)))
        elif bv.note:
            out.append(SourceState(name, "degraded", bv.note))
        else:
            out.append(SourceState(name))
    w = first("workers")
    out.append(SourceState("workers", "unreadable" if not workers_read else "partial" if w else "ok", w))
    r = first("results")
    out.append(SourceState("results", "unreadable" if not backend_ok else "partial" if r else "ok", r))
    return tuple(out)


def describe_error(exc: BaseException, settings: Settings) -> str:
    """A one-line, credential-free description of a connection or Redis error."""
    text = str(exc) or type(exc).__name__
    problem = classify(exc)
    if problem is not None and problem.kind is Kind.AUTH:
        text = f"authentication failed for user {user_of(settings.broker_url)}: {text}"
    elif problem is not None and problem.kind in (Kind.PERMISSION, Kind.UNKNOWN_COMMAND):
        text = f"permission denied ({problem.reason()}): {text}"
    elif isinstance(exc, redis.exceptions.BusyLoadingError) or (
            isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(NOT_READY)):
        text = f"Redis is not ready: {text}"
    elif isinstance(exc, redis.exceptions.ConnectionError):
        text = f"cannot connect: {text}"
    elif isinstance(exc, redis.exceptions.TimeoutError):
        text = f"timed out: {text}"
    return mask_text(text, settings.broker_url, settings.backend_url)


class _NoResults:
    """Stands in for ResultsMonitor when the result backend is not a Redis taskdash can read."""

    ok = False

    def __init__(self, reason: str) -> None:
        self.last_error = reason

    def start(self) -> None:
        """Nothing to watch."""

    def stop(self) -> None:
        """Nothing to stop."""

    def step(self) -> int:
        return 0

    def refresh(self) -> None:
        """Nothing to read."""

    @property
    def error(self) -> str | None:
        return self.last_error

    def stats(self) -> TaskStats:
        return TaskStats()

    def worker_lost(self) -> list[tuple[str, str | None, str | None, float]]:
        return []


class Collector:
    """Owns every connection and source; ``collect()`` returns a fresh frozen Snapshot.

    Not thread-safe for concurrent ``collect()`` calls: the TUI runs one poll at a time.
    """

    def __init__(self, settings: Settings, *, background: bool = True, forensics: Forensics | None = None,
                 history: History | None = None) -> None:
        """Open the connections (nothing is read before the first ``collect()``).

        Args:
            settings: Broker/backend URLs, timeouts, transport options.
            background: Run the results scan and the worker monitor in their own threads.
            forensics: Crash forensics fed by every ``collect()`` (see ``attach``).
            history: Persistent history recorded by every ``collect()`` (see ``attach``).
        """
        self.settings = settings
        self.forensics: Forensics | None = forensics
        """Crash forensics observing each refresh with a reachable broker (None: not fed)."""
        self.history: History | None = history
        """Persistent history recording each refresh with a reachable broker (None: not recorded)."""
        self._background = background
        self._lock = threading.Lock()
        self._broker_client = redis_client(settings.broker_url, settings)
        self._results: ResultsMonitor | _NoResults
        self._backend_client = self._broker_client
        if settings.backend_url and settings.backend_url != settings.broker_url:
            try:
                self._backend_client = redis_client(settings.backend_url, settings)
                self._results = ResultsMonitor(settings, self._backend_client)
            except ConfigError:
                # rpc://, db+postgresql://, django-db...: the broker is still worth showing.
                self._results = _NoResults(
                    f"result backend {mask_url(settings.backend_url)!r} is not Redis: task states unavailable")
        else:
            self._results = ResultsMonitor(settings, self._backend_client)
        self._reader = BrokerReader(settings, self._broker_client)
        self._workers = WorkerMonitor(settings)
        for own in {id(c): c for c in (self._broker_client, self._backend_client)}.values():
            self._workers.register_own_client(own)  # taskdash's connections are never a worker's
        self._workers.register_own_client(lambda: getattr(self._results, "_pubsub", None))
        self._backlog = BacklogClock()
        self._poison = PoisonTracker(settings.poison_threshold)
        self.task_stats = TaskStatsAggregator()
        """Per-task-name analytics from the task events (issue 15), fed by every ``collect()``."""
        self.beat_canvas = BeatCanvasSource(settings, self._broker_client, self._backend_client)
        """Beat and canvas (issue 16); ``chord_parts()`` is the detail behind the canvas view's enter."""
        self._started = False
        self._last_broker_view: BrokerView | None = None
        self._last_backlog: Mapping[str, float] = {}
        self._inspect_requested = False

    # ---- lifecycle ----------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        if self._background:
            self._results.start()  # first: a small backend is counted during the initial inspect window
            self.beat_canvas.start()
        try:
            # The first snapshot should already know which worker holds which message.
            self._workers.inspect_now()
        except Exception as exc:  # noqa: BLE001 - reported through the workers view
            log.debug("initial inspect failed: %s", exc)
        # ...and which connections are still there (the evidence an unclaimed entry needs to be orphaned).
        self._workers.probe_connections()
        if self._background:
            self._workers.start()

    def attach(self, *, forensics: Forensics | None, history: History | None) -> None:
        """Set what ``collect()`` feeds from now on (None detaches); takes effect at the next refresh."""
        self.forensics = forensics
        self.history = history

    def inspect_soon(self) -> None:
        """Ask for a fresh worker inspect on the next ``collect()``."""
        self._inspect_requested = True

    def liveness(self, now: float | None = None) -> LivenessView:
        """The liveness decision of every worker process now, for classifying unacked entries (writes)."""
        now = time.time() if now is None else now
        wv = self._workers.view(now)
        return self._liveness(wv, now, self._last_backlog)

    def _liveness(self, wv: WorkersView, now: float, backlog: Mapping[str, float]) -> LivenessView:
        return liveness_view(wv, now, self.settings, backlog)

    def workers_view(self, now: float | None = None) -> WorkersView:
        """The worker monitor's current view (pool pids, active tasks): what crash forensics observes."""
        return self._workers.view(time.time() if now is None else now)

    def close(self) -> None:
        """Stop background threads and close connections."""
        for stop in (self._workers.stop, self._results.stop, self.beat_canvas.stop):
            try:
                stop()
            except Exception:  # noqa: BLE001
                log.debug("stop failed", exc_info=True)
        for client in {id(c): c for c in (self._broker_client, self._backend_client)}.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the refresh --------------------------------------------------------------------------
    def ping_broker(self) -> str | None:
        """None when the broker answers PING, else a masked one-line reason."""
        try:
            self._broker_client.ping()
            return None
        except Exception as exc:  # noqa: BLE001
            return describe_error(exc, self.settings)

    def collect(self) -> Snapshot:
        """Read every source once and return a frozen Snapshot (never raises for one source)."""
        with self._lock:
            return self._collect()

    def _collect(self) -> Snapshot:
        s = self.settings
        t0 = time.perf_counter()
        self._ensure_started()
        if self._inspect_requested:
            self._inspect_requested = False
            try:
                self._workers.inspect_now()
            except Exception:  # noqa: BLE001
                log.debug("on-demand inspect failed", exc_info=True)
        if not self._background and self._workers.probe_due(time.time()):
            self._workers.probe_connections()  # no probe thread: probe here when one is due
        now = time.time()
        errors: list[SourceError] = []

        wv: WorkersView | None
        workers: tuple[WorkerInfo, ...] = ()
        try:
            wv = self._workers.view(now)
            workers = wv.workers
            if wv.error:
                errors.append(SourceError("workers", mask_text(wv.error, s.broker_url)))
        except Exception as exc:  # noqa: BLE001
            wv = None
            errors.append(SourceError("workers", describe_error(exc, s)))

        # Task events first: the broker read takes the task-sent times (exact ages of waiting messages).
        events: list[dict[str, Any]] = []
        drain_error: Exception | None = None
        try:
            events = self._workers.drain_events()
        except Exception as exc:  # noqa: BLE001 - reported with the poison source below, as before
            drain_error = exc
        try:
            self._reader.note_events(events)
        except Exception:  # noqa: BLE001 - task-sent evidence is optional
            log.warning("broker reader: task events not taken", exc_info=True)
        # First-seen times of queue heads survive a restart (and are shared) through the history store.
        self._reader.remembered = getattr(self.history, "head_seen", None)

        broker_ok, broker_err = True, None
        bv: BrokerView | None = None
        inspect_usable = wv is not None and bool(wv.inspect_ok)
        try:
            bv = self._reader.read(
                now=now,
                worker_queues=wv.worker_queues if wv is not None else None,
                claims=wv.claims if (wv is not None and inspect_usable) else None,
                inspected_at=wv.inspected_at if wv is not None else None,
                grace_s=max(2.0 * s.interval, 2.0),
            )
            # Classification by evidence (collectors.analysis.liveness): orphaned only when every
            # worker that could have received a message is proven dead.
            self._last_backlog = self._backlog.observe(bv.queues, now)
            if wv is not None:
                lv = self._liveness(wv, now, self._last_backlog)
                workers = annotate_workers(wv.workers, lv.decided)
                unacked = classify_unacked(bv.unacked, lv.decided, lv.claims, now,
                                           unknown_workers=lv.unknown_workers, evidence_source=lv.source)
            else:
                unacked = classify_unacked(bv.unacked, (), None, now)
            bv = replace(bv, unacked=unacked)
            self._last_broker_view = bv
            for problem in bv.errors:  # non-fatal: a wrong-type key, one failed probe, ...
                source = "unacked" if problem.startswith("unacked") else "queues"
                errors.append(SourceError(source, mask_text(problem, s.broker_url, s.backend_url)))
        except Exception as exc:  # noqa: BLE001
            broker_ok, broker_err = False, describe_error(exc, s)
            errors.append(SourceError("broker", broker_err))

        backend_ok, backend_err = True, None
        tasks = TaskStats()
        try:
            self._results.refresh()  # one SCAN step, or only a PING while the background scan runs
            if not self._results.ok and self._results.error:
                backend_ok = False
                backend_err = mask_text(str(self._results.error), s.broker_url, s.backend_url)
                errors.append(SourceError("results", backend_err))
        except Exception as exc:  # noqa: BLE001
            backend_ok, backend_err = False, describe_error(exc, s)
            errors.append(SourceError("results", backend_err))
        try:
            tasks = self._results.stats()
        except Exception as exc:  # noqa: BLE001
            errors.append(SourceError("results", describe_error(exc, s)))

        try:
            if bv is not None:
                self._poison.observe_unacked(bv.unacked, now)
            if wv is not None:
                self._poison.observe_active(wv.active, now)
            for task_id, name, worker, ts in self._results.worker_lost():
                self._poison.observe_worker_lost(task_id, name, worker, ts)
            if drain_error is not None:
                raise drain_error
            for event in events:
                self._poison.observe_event(event)
            poison = self._poison.suspects()
        except Exception as exc:  # noqa: BLE001
            poison = ()
            errors.append(SourceError("poison", describe_error(exc, s)))

        task_stats = None
        try:
            self.task_stats.observe_many(events, now)
            self.task_stats.observe_processed(
                sum(w.processed for w in workers if w.processed is not None) if workers else None)
            task_stats = self.task_stats.view(now, history=self.history)
        except Exception as exc:  # noqa: BLE001
            errors.append(SourceError("task_stats", describe_error(exc, s)))

        beat, canvas = self.beat_canvas.read(
            now, worker_queues=wv.worker_queues if wv is not None else None, events=events)

        if bv is not None:
            bv = replace(bv, queues=self._with_pauses(bv.queues, workers, now))
        wall_ms = (time.perf_counter() - t0) * 1000.0
        snapshot = Snapshot(
            taken_at=now,
            broker=SourceStatus(s.broker_masked, broker_ok, broker_err),
            backend=SourceStatus(s.backend_masked, backend_ok, backend_err),
            queues=bv.queues if bv else (),
            unacked=bv.unacked if bv else (),
            unacked_total=bv.unacked_total if bv else 0,
            workers=workers,
            tasks=tasks,
            poison=poison,
            errors=tuple(errors),
            cost=RefreshCost(
                round_trips=bv.round_trips if bv else 0,
                commands=bv.commands if bv else 0,
                wall_ms=round(wall_ms, 3),
            ),
            visibility_timeout=s.visibility_timeout,
            inspect_ok=wv.inspect_ok if wv else False,
            sources=source_states(errors, bv, wv is not None, backend_ok),
            beat=beat,
            canvas=canvas,
            task_stats=task_stats,
        )
        self._feed(snapshot, wv)
        return snapshot

    _paused_at: float = 0.0
    _paused: Mapping[str, Any] = {}

    def _with_pauses(self, queues: tuple[QueueInfo, ...], workers: tuple[WorkerInfo, ...],
                     now: float) -> tuple[QueueInfo, ...]:
        """Mark the queues ``taskdash pause`` paused (``taskdash.paused``, read at most every 5 s) and the
        workers that consume one anyway (issue 18)."""
        if now - self._paused_at >= 5.0:
            from collectors.keyspace.keys import KeyLayout
            from collectors.writes.pause import read_paused

            self._paused_at = now
            try:
                self._paused = read_paused(self._broker_client, KeyLayout.from_settings(self.settings))
            except (redis.RedisError, OSError):
                log.debug("paused queues unreadable", exc_info=True)
        if not self._paused:
            return queues
        out = []
        for q in queues:
            p = self._paused.get(q.name)
            if p is None:
                out.append(q)
                continue
            late = tuple(sorted(w.hostname for w in workers if q.name in w.queues))
            out.append(replace(q, paused_by=p.by, paused_since=p.since, consumed_while_paused=late))
        return tuple(out)

    def _feed(self, snapshot: Snapshot, view: WorkersView | None) -> None:
        """Feed the attachments with this refresh (only when the broker answered)."""
        if not snapshot.broker.ok:
            return
        forensics, history = self.forensics, self.history
        if forensics is not None:
            try:
                forensics.observe(snapshot, view)
            except Exception:  # noqa: BLE001 - forensics must never break a refresh
                log.warning("forensics.observe failed", exc_info=True)
        if history is not None:
            try:
                history.record(snapshot)
            except Exception:  # noqa: BLE001 - a full disk must not break the refresh
                log.warning("history.record failed", exc_info=True)
            try:
                history.record_tasks(self.task_stats, snapshot.taken_at)  # per-name minute rows (issue 15)
            except Exception:  # noqa: BLE001
                log.warning("history.record_tasks failed", exc_info=True)

    def forget_poison(self, task_id: str) -> None:
        """Drop a task's delivery history (after it was quarantined or revoked)."""
        self._poison.forget(task_id)

    def debug_state(self) -> dict[str, Any]:
        """Internal counters for diagnostics (not part of the JSON contract)."""
        return {"started": self._started}
