"""Frozen data model of one taskdash refresh: the Snapshot and the rows it is made of.

Snapshots are immutable (frozen, slotted dataclasses holding tuples and primitives only) so they can
be handed from the collector thread to the UI thread without copying or locking. ``to_json()``
renders the snapshot JSON contract documented in the README ("taskdash snapshot").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from collectors.core.beat_canvas import BeatView, CanvasView
from collectors.core.taskstats import TaskStatsView

SCHEMA_VERSION = 6
"""2: adds ``beat`` and ``canvas`` (issue 16; README, "beat and canvas JSON"). 4: adds ``task_stats``
(issue 15; README, "task_stats JSON"). 5: worker ``liveness``/``liveness_evidence``/``liveness_since``/
``boot_at`` and the unacked states ``held-by-silent``/``may-be-held`` with ``possible_holders`` and
``state_reason`` (issue 12; README, "Safety"). 6: queue ``oldest_age_is_lower_bound``,
``oldest_age_source``, ``oldest_since`` and ``oldest_task_id`` (issue 21: ``oldest_age_s`` is the age
of the message BRPOP takes next from the best evidence, and says when it is only a lower bound)."""

OldestAgeSource = Literal["task-sent", "eta", "arrival", "first-seen"]
"""Evidence behind a queue's ``oldest_age_s`` (the message BRPOP takes next; messages carry no enqueue time):

* ``task-sent``: the producer's ``task-sent`` event for the message's task id (``task_send_sent_event``);
  exact (the producer's clock).
* ``eta``: the message's ``eta`` (countdown/ETA/retry): it cannot run before, so it waits since then;
  exact (an eta in the future: age 0, not due yet).
* ``arrival``: taskdash read the queue empty at its previous read (at most ``ARRIVAL_EXACT_S`` = 5 s
  before), so the message arrived in between; exact to within that interval.
* ``first-seen``: when taskdash first saw that exact message (by delivery tag) at the consuming end,
  remembered in the history store across restarts; **a lower bound** (``oldest_age_is_lower_bound``):
  the message was already waiting then, for an unknown time.
"""

UnackedState = Literal["active", "reserved", "scheduled", "orphaned", "unknown", "held-by-silent", "may-be-held"]
"""``held-by-silent``: a silent (not proven dead) worker that was alive at the delivery and consumes the
queue may hold it; ``may-be-held``: no worker reports it, but a responding worker alive at the delivery and
consuming the queue may hold it unreported (rate limit, prefetch). Neither is ever requeued without force."""

Liveness = Literal["responding", "silent", "dead", "ghost"]
"""Worker liveness decided by evidence (collectors/analysis/liveness.py)."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Reachability of one connection (broker or backend); ``url`` is always masked."""

    url: str
    ok: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "error": self.error}


@dataclass(frozen=True, slots=True)
class SourceError:
    """One source that failed during a refresh (the rest of the snapshot is still valid)."""

    source: str  # "broker" | "unacked" | "workers" | "results" | "poison" | ...
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "message": self.message}


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One task queue: ready messages per priority band, oldest waiting age and consumers."""

    name: str
    messages: int
    by_priority: tuple[tuple[int, int], ...] = ()
    """(band, LLEN) for every priority band of the queue, band 0 first."""
    oldest_age_s: float | None = None
    """How long the message BRPOP takes next has waited (None: empty or head unreadable); see
    ``oldest_age_source``: a ``first-seen`` age is a lower bound (``oldest_age_is_lower_bound``)."""
    unacked: int = 0
    consumers: int | None = None
    """Workers consuming the queue (from active_queues); None when inspect has not answered."""
    sources: tuple[str, ...] = ()
    """Where the name came from: "binding", "app", "worker"."""
    wrong_type: bool = False
    """A priority key of this queue holds something other than a list."""
    paused_by: str | None = None
    """Who paused the queue with ``taskdash pause`` (issue 18); None when not paused."""
    paused_since: float | None = None
    """When it was paused (epoch s)."""
    consumed_while_paused: tuple[str, ...] = ()
    """Workers consuming the queue although it is paused (started later, or the cancel did not reach them)."""
    oldest_age_is_lower_bound: bool = False
    """True when ``oldest_age_s`` is only a lower bound (the message was waiting before taskdash first saw
    it): show "≥ 9m", never "9m"."""
    oldest_age_source: OldestAgeSource | None = None
    """The evidence behind ``oldest_age_s`` (None when there is no age): see :data:`OldestAgeSource`."""
    oldest_since: float | None = None
    """Epoch seconds ``oldest_age_s`` counts from (``taken_at - oldest_age_s``, before clamping at 0)."""
    oldest_task_id: str | None = None
    """Task id of the message BRPOP takes next, when it could be decoded."""
    oldest_identity: str | None = None
    """Delivery tag (or a content hash of a tag-less value) of that message: the history store's key for
    its first-seen time. Not in the JSON."""

    @property
    def no_consumer(self) -> bool:
        """True when messages are waiting and no live worker consumes the queue."""
        return self.messages > 0 and self.consumers == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "messages": self.messages,
            "by_priority": {str(band): n for band, n in self.by_priority},
            "oldest_age_s": self.oldest_age_s,
            "oldest_age_is_lower_bound": self.oldest_age_is_lower_bound,
            "oldest_age_source": self.oldest_age_source,
            "oldest_since": self.oldest_since,
            "oldest_task_id": self.oldest_task_id,
            "unacked": self.unacked,
            "consumers": self.consumers,
            "no_consumer": self.no_consumer,
            "sources": list(self.sources),
            "wrong_type": self.wrong_type,
            "paused_by": self.paused_by,
            "paused_since": self.paused_since,
            "consumed_while_paused": list(self.consumed_while_paused),
        }


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """What a Celery/kombu message says about itself, decoded safely (never unpickled)."""

    task_id: str | None = None
    task: str | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    eta: str | None = None
    expires: str | None = None
    retries: int | None = None
    priority: int = 0
    delivery_tag: str | None = None
    redelivered: bool = False
    content_type: str | None = None
    content_encoding: str | None = None
    compression: str | None = None
    protocol: int | None = None
    root_id: str | None = None
    parent_id: str | None = None
    origin: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    size: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    """Every header as (name, short repr), for detail screens."""
    error: str | None = None
    """Why the message could not be (fully) decoded; None for a clean Celery message."""

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task": self.task,
            "argsrepr": self.argsrepr,
            "kwargsrepr": self.kwargsrepr,
            "eta": self.eta,
            "expires": self.expires,
            "retries": self.retries,
            "priority": self.priority,
            "delivery_tag": self.delivery_tag,
            "redelivered": self.redelivered,
            "content_type": self.content_type,
            "compression": self.compression,
            "protocol": self.protocol,
            "size": self.size,
            "error": self.error,
        }


@dataclass(slots=True, eq=True)
class UnackedEntry:
    """One delivered-but-unacknowledged message from kombu's ``unacked`` hash.

    Treat it as immutable, like every model here; it is the one not declared ``frozen`` because up to
    two of them are built per window entry per refresh (500 a second in the TUI), and a frozen slots
    dataclass of this width costs four times as much to build (6.5 vs 1.5 µs each, measured): that was
    a quarter of ``collect()`` at 10,000 unacked. Derive a changed copy with ``with_state``, never by
    assignment."""

    delivery_tag: str
    task_id: str | None
    task: str | None
    queue: str | None
    priority: int
    reserved_at: float | None
    """Score in ``unacked_index``: delivery time on the consuming worker's clock (epoch seconds)."""
    age_s: float | None
    redelivered: bool
    state: UnackedState
    holder: str | None
    """Hostname of the worker that reports this task (active/reserved/scheduled), else None."""
    stale: bool
    """Older than visibility_timeout: the next restore sweep of any consumer will requeue it."""
    time_to_redelivery_s: float | None
    argsrepr: str | None
    kwargsrepr: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    eta: str | None = None
    size: int = 0
    decode_error: str | None = None
    possible_holders: tuple[str, ...] = ()
    """Workers that could have received it (consuming its queue, alive at its delivery) — liveness issue."""
    state_reason: str | None = None
    """Why the entry has its state (the evidence, in words)."""

    __hash__ = None  # type: ignore[assignment]  # (mutable in principle: not a dict key)

    def with_state(self, state: UnackedState, holder: str | None, possible_holders: tuple[str, ...],
                   state_reason: str | None) -> UnackedEntry:
        """A copy with the classification fields replaced (``dataclasses.replace`` costs 5x this)."""
        return UnackedEntry(
            self.delivery_tag, self.task_id, self.task, self.queue, self.priority, self.reserved_at,
            self.age_s, self.redelivered, state, holder, self.stale, self.time_to_redelivery_s,
            self.argsrepr, self.kwargsrepr, self.exchange, self.routing_key, self.eta, self.size,
            self.decode_error, possible_holders, state_reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "possible_holders": list(self.possible_holders),
            "state_reason": self.state_reason,
            "delivery_tag": self.delivery_tag,
            "task_id": self.task_id,
            "task": self.task,
            "queue": self.queue,
            "priority": self.priority,
            "reserved_at": self.reserved_at,
            "age_s": self.age_s,
            "redelivered": self.redelivered,
            "state": self.state,
            "holder": self.holder,
            "stale": self.stale,
            "time_to_redelivery_s": self.time_to_redelivery_s,
            "argsrepr": self.argsrepr,
            "kwargsrepr": self.kwargsrepr,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "eta": self.eta,
            "size": self.size,
            "decode_error": self.decode_error,
        }


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A task a worker reports through inspect (active, reserved or scheduled)."""

    task_id: str
    name: str | None
    state: Literal["active", "reserved", "scheduled"]
    hostname: str
    delivery_tag: str | None = None
    queue: str | None = None
    priority: int | None = None
    redelivered: bool = False
    time_start: float | None = None
    worker_pid: int | None = None
    eta: str | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One Celery worker as seen through inspect and heartbeats."""

    hostname: str
    online: bool
    pool: str | None = None
    concurrency: int | None = None
    active: int = 0
    reserved: int = 0
    scheduled: int = 0
    processed: int | None = None
    queues: tuple[str, ...] = ()
    last_seen_s: float | None = None
    """Seconds since the last reply or heartbeat from this worker."""
    pid: int | None = None
    sw_ver: str | None = None
    prefetch_count: int | None = None
    visibility_timeout: float | None = None
    responding: bool = True
    """False when heartbeats arrive but inspect got no reply (hung or busy main process)."""
    pool_pids: tuple[int, ...] = ()
    liveness: Liveness | None = None
    """responding / silent / dead / ghost (None: not decided yet)."""
    liveness_evidence: str | None = None
    """The evidence that decided ``liveness``, in words ("worker-offline event", "heartbeat 1s ago")."""
    liveness_since: float | None = None
    """Epoch seconds since when the evidence holds."""
    boot_at: float | None = None
    """When this worker process started (stats uptime or worker-online event), taskdash's clock."""

    def to_json(self) -> dict[str, Any]:
        return {
            "liveness": self.liveness,
            "liveness_evidence": self.liveness_evidence,
            "liveness_since": self.liveness_since,
            "boot_at": self.boot_at,
            "hostname": self.hostname,
            "online": self.online,
            "pool": self.pool,
            "concurrency": self.concurrency,
            "active": self.active,
            "reserved": self.reserved,
            "scheduled": self.scheduled,
            "processed": self.processed,
            "queues": list(self.queues),
            "last_seen_s": self.last_seen_s,
            "pid": self.pid,
            "sw_ver": self.sw_ver,
            "prefetch_count": self.prefetch_count,
            "visibility_timeout": self.visibility_timeout,
            "responding": self.responding,
        }


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A FAILURE stored in the result backend."""

    task_id: str
    task: str | None
    exception: str
    traceback: str | None
    date_done: str | None
    args: str | None = None
    kwargs: str | None = None
    worker: str | None = None
    queue: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task": self.task,
            "exception": self.exception,
            "traceback": self.traceback,
            "date_done": self.date_done,
            "args": self.args,
            "kwargs": self.kwargs,
            "worker": self.worker,
            "queue": self.queue,
        }


@dataclass(frozen=True, slots=True)
class TaskStats:
    """Counts per state in the result backend (incremental SCAN plus live PUBLISH updates)."""

    states: tuple[tuple[str, int], ...] = ()
    scanned: int = 0
    complete: bool = False
    recent_failures: tuple[TaskFailure, ...] = ()
    passes: int = 0
    """Completed full SCAN passes since taskdash started."""

    def to_json(self) -> dict[str, Any]:
        return {
            "states": dict(self.states),
            "scanned": self.scanned,
            "complete": self.complete,
            "passes": self.passes,
            "recent_failures": [f.to_json() for f in self.recent_failures],
        }


@dataclass(frozen=True, slots=True)
class PoisonSuspect:
    """A task id delivered again and again: probably kills its worker on each delivery."""

    task_id: str
    task: str | None
    queue: str | None
    deliveries: int
    first_seen: float
    last_seen: float
    reason: str
    workers: tuple[str, ...] = ()
    delivery_tag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task": self.task,
            "queue": self.queue,
            "deliveries": self.deliveries,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "reason": self.reason,
            "workers": list(self.workers),
            "delivery_tag": self.delivery_tag,
        }


SourceReadState = Literal["ok", "degraded", "partial", "unreadable"]


@dataclass(frozen=True, slots=True)
class SourceState:
    """How one source of a refresh was read: never an empty panel where the truth is "could not read".

    ``ok``: read in full; ``degraded``: read in full another way (e.g. plain commands because scripting
    is not permitted), ``reason`` says how; ``partial``: some of it could not be read (see ``errors``);
    ``unreadable``: nothing could be read, ``reason`` says why (its rows in the snapshot are empty
    because they are unknown, not because there are none).
    """

    source: str
    """"queues" | "unacked" | "workers" | "results"."""
    state: SourceReadState = "ok"
    reason: str | None = None

    @property
    def readable(self) -> bool:
        return self.state != "unreadable"

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "readable": self.readable, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RefreshCost:
    """What one refresh cost: Redis round trips and client wall time."""

    round_trips: int = 0
    commands: int = 0
    wall_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"round_trips": self.round_trips, "commands": self.commands, "wall_ms": self.wall_ms}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything taskdash knows after one refresh. Immutable; one per refresh."""

    taken_at: float
    broker: SourceStatus
    backend: SourceStatus
    queues: tuple[QueueInfo, ...] = ()
    unacked: tuple[UnackedEntry, ...] = ()
    unacked_total: int = 0
    workers: tuple[WorkerInfo, ...] = ()
    tasks: TaskStats = field(default_factory=TaskStats)
    poison: tuple[PoisonSuspect, ...] = ()
    errors: tuple[SourceError, ...] = ()
    cost: RefreshCost = field(default_factory=RefreshCost)
    visibility_timeout: float = 3600.0
    inspect_ok: bool | None = None
    """Did the last inspect window succeed (None: not run yet)."""
    sources: tuple[SourceState, ...] = ()
    """How each source was read (empty: every source ok, e.g. a hand-made snapshot)."""
    beat: BeatView | None = None
    """Periodic tasks (issue 16); None when the collector did not read beat."""
    canvas: CanvasView | None = None
    """Groups and chords in the result backend (issue 16); None when not read."""
    task_stats: TaskStatsView | None = None
    """Per-task-name analytics from task events (issue 15); None when not aggregated."""

    def source(self, name: str) -> SourceState:
        """The read state of ``name`` ("queues", "unacked", "workers", "results"); ok when not recorded."""
        for st in self.sources:
            if st.source == name:
                return st
        return SourceState(name)

    @property
    def orphaned(self) -> tuple[UnackedEntry, ...]:
        return tuple(e for e in self.unacked if e.state == "orphaned")

    def to_json(self) -> dict[str, Any]:
        """The snapshot JSON object documented in the README, "taskdash snapshot" (extra fields allowed)."""
        return {
            "schema": SCHEMA_VERSION,
            "taken_at": self.taken_at,
            "broker": self.broker.to_json(),
            "backend": self.backend.to_json(),
            "queues": [q.to_json() for q in self.queues],
            "unacked": [e.to_json() for e in self.unacked],
            "unacked_total": self.unacked_total,
            "workers": [w.to_json() for w in self.workers],
            "tasks": self.tasks.to_json(),
            "poison": [p.to_json() for p in self.poison],
            "errors": [e.to_json() for e in self.errors],
            "cost": self.cost.to_json(),
            "visibility_timeout": self.visibility_timeout,
            "inspect_ok": self.inspect_ok,
            "sources": {name: self.source(name).to_json() for name in ("queues", "unacked", "workers", "results")},
            "beat": self.beat.to_json() if self.beat is not None else None,
            "canvas": self.canvas.to_json() if self.canvas is not None else None,
            "task_stats": self.task_stats.to_json() if self.task_stats is not None else None,
        }
