"""Frozen rows of the snapshot's ``task_stats`` key (issue 15): per-task-name analytics from task events.

Kept apart from ``models.py`` like ``beat_canvas``: ``Snapshot.task_stats`` holds one
:class:`TaskStatsView` built by :class:`collectors.analysis.taskstats.TaskStatsAggregator`
(README, "task_stats JSON").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

OUTCOMES: tuple[str, ...] = ("sent", "received", "started", "succeeded", "failed", "retried", "rejected",
                             "revoked")
"""The task event types counted per name (``task-<outcome>``), in JSON order."""

EventsState = Literal["ok", "off", "idle", "unknown"]
"""``ok`` task events arrive; ``off`` workers ran tasks but sent no task events (no ``-E``); ``idle``
no task event yet and nothing proves tasks ran; ``unknown`` the event feed is not read."""

WaitSource = Literal["sent→started", "received→started"]


def _r(v: float | None, nd: int = 6) -> float | None:
    return None if v is None else round(v, nd)


@dataclass(frozen=True, slots=True)
class TaskException:
    """Failures of one task name grouped by exception type and message prefix."""

    exception: str
    """``ValueError: boom`` (type, then at most 80 characters of the message)."""
    count: int
    sample: str | None = None
    """One traceback (the latest, truncated)."""

    def to_json(self) -> dict[str, Any]:
        return {"exception": self.exception, "count": self.count, "sample": self.sample}


@dataclass(frozen=True, slots=True)
class TaskNameStats:
    """One task name over the window (counts, rates, quantiles) plus cumulative series for Prometheus."""

    name: str
    counts: tuple[int, ...]
    """Per outcome of :data:`OUTCOMES`, within the window."""
    per_min: float
    """Finished (succeeded + failed) per minute over the covered window."""
    failure_rate: float | None
    """failed / (succeeded + failed); None when nothing finished."""
    runtime_p50: float | None = None
    runtime_p95: float | None = None
    runtime_p99: float | None = None
    runtime_max: float | None = None
    wait_p50: float | None = None
    wait_p95: float | None = None
    wait_source: WaitSource | None = None
    top_exceptions: tuple[TaskException, ...] = ()
    last_seen: float | None = None
    totals: tuple[int, ...] = ()
    """Per outcome since taskdash started (Prometheus counters)."""
    runtime_hist: tuple[tuple[float, int], ...] = ()
    """Cumulative ``(le, count)`` since start, last ``le`` is +inf (Prometheus histogram)."""
    runtime_sum: float = 0.0
    wait_hist: tuple[tuple[float, int], ...] = ()
    wait_sum: float = 0.0

    def count(self, outcome: str) -> int:
        return self.counts[OUTCOMES.index(outcome)] if self.counts else 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for outcome, n in zip(OUTCOMES, self.counts or (0,) * len(OUTCOMES), strict=True):
            out[outcome] = n
        out["per_min"] = round(self.per_min, 3)
        out["failure_rate"] = _r(self.failure_rate, 4)
        out["runtime_s"] = {"p50": _r(self.runtime_p50), "p95": _r(self.runtime_p95), "p99": _r(self.runtime_p99),
                            "max": _r(self.runtime_max)}
        out["wait_s"] = {"p50": _r(self.wait_p50), "p95": _r(self.wait_p95), "source": self.wait_source}
        out["top_exceptions"] = [e.to_json() for e in self.top_exceptions]
        return out


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One task event of the live stream (newest last in :attr:`TaskStatsView.recent`)."""

    ts: float
    type: str
    """``received``, ``started``, ``succeeded``, ``failed``, ... (the event type without ``task-``)."""
    name: str | None
    task_id: str | None
    hostname: str | None = None
    runtime: float | None = None
    exception: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "type": self.type, "name": self.name, "task_id": self.task_id,
                "hostname": self.hostname, "runtime": self.runtime, "exception": self.exception}


@dataclass(frozen=True, slots=True)
class TaskBaseline:
    """One task name over the same window length at an earlier time (from the history's minute rows)."""

    name: str
    label: str
    """``1h ago`` or ``yesterday``."""
    per_min: float
    failure_rate: float | None
    runtime_p95: float | None
    wait_p95: float | None

    def to_json(self) -> dict[str, Any]:
        return {"per_min": round(self.per_min, 3), "failure_rate": _r(self.failure_rate, 4),
                "runtime_p95": _r(self.runtime_p95), "wait_p95": _r(self.wait_p95)}


@dataclass(frozen=True, slots=True)
class TaskStatsView:
    """Per-task-name analytics of one refresh (``Snapshot.task_stats``)."""

    window_s: float
    """Seconds the counts cover (the rolling window, or less right after start)."""
    tasks: tuple[TaskNameStats, ...] = ()
    source: str = "events"
    state: EventsState = "unknown"
    note: str | None = None
    """Why there are no stats and how to get them (events off)."""
    events_seen: int = 0
    """Task events received since taskdash started."""
    recent: tuple[TaskEvent, ...] = ()
    enable_events: bool = False
    """taskdash sends the ``enable_events`` broadcast (``--enable-events``)."""
    baselines: tuple[TaskBaseline, ...] = ()
    """The same window 1 h ago and 24 h ago per name (empty without history)."""

    def baseline(self, name: str, label: str) -> TaskBaseline | None:
        for b in self.baselines:
            if b.name == name and b.label == label:
                return b
        return None

    def get(self, name: str) -> TaskNameStats | None:
        for t in self.tasks:
            if t.name == name:
                return t
        return None

    def to_json(self) -> dict[str, Any]:
        return {"window_s": round(self.window_s, 3), "source": self.source, "state": self.state,
                "note": self.note, "events_seen": self.events_seen, "enable_events": self.enable_events,
                "tasks": [self._task_json(t) for t in self.tasks]}

    def _task_json(self, t: TaskNameStats) -> dict[str, Any]:
        out = t.to_json()
        for label, key in (("1h ago", "vs_1h_ago"), ("yesterday", "vs_yesterday")):
            b = self.baseline(t.name, label)
            if b is not None:
                out[key] = b.to_json()
        return out
