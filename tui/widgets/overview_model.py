"""What the Overview shows, computed from a Snapshot (no Textual import: unit-testable, cheap).

``problems()`` lists what needs a human, most serious first, one line per (kind, subject), each with
the view and row key that ``enter`` jumps to. ``Totals`` keeps the dashboard-wide series behind the
throughput sparklines and the recent failure rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from collectors.core.models import QueueInfo, Snapshot, UnackedEntry, WorkerInfo

Severity = Literal["error", "warning"]

HELD_BY_SILENT = "held-by-silent"
"""Unacked state of a message a silent (not proven dead) worker may hold (issue 12)."""
FAILURE_RATE_WARN = 0.10
"""Recent failure share (FAILURE / finished) above which the overview raises a problem."""
FAILURE_MIN = 3
"""…and only once at least this many failures were seen in the window (one failure is not a fire)."""
RATE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Problem:
    """One actionable overview line."""

    key: str
    """Stable row key: ``kind:subject``."""
    severity: Severity
    label: str
    """Short shouting label (``ORPHANED``, ``POISON``, …): readable with NO_COLOR too."""
    text: str
    view: str | None
    """View ``enter`` jumps to (None: nothing to jump to, the line is the whole story)."""
    row: str | None
    """Row key selected in that view."""
    hint: str
    """What to do from there (the view's keys)."""
    order: int = 0


_ORDER = {"orphaned": 0, "held": 1, "poison": 2, "noconsumer": 3, "paused": 3, "worker": 4, "failures": 5,
          "source": 6, "mover": 5}


def _oldest(entries: Iterable[UnackedEntry]) -> UnackedEntry:
    return max(entries, key=lambda e: e.age_s if e.age_s is not None else -1.0)


def _age(seconds: float | None) -> str:
    from tui.format import fmt_age_summary

    return fmt_age_summary(seconds)  # the Overview's precision: minutes after the first one


def _oldest_age(q: QueueInfo) -> str:
    """A queue's oldest-message age at the Overview's precision, ``≥`` when only a lower bound."""
    from tui.format import fmt_oldest_summary

    return fmt_oldest_summary(q.oldest_age_s, bool(getattr(q, "oldest_age_is_lower_bound", False)))


def worker_state(w: WorkerInfo) -> str:
    """responding / silent / dead / ghost / offline / no-reply (liveness when decided, else online flags)."""
    if w.liveness is not None:
        return w.liveness
    if not w.online:
        return "offline"
    return "responding" if w.responding else "no-reply"


BAD_WORKER: dict[str, tuple[Severity, str]] = {
    "dead": ("error", "DEAD"), "offline": ("error", "OFFLINE"), "ghost": ("error", "GHOST"),
    "silent": ("warning", "SILENT"), "no-reply": ("warning", "NO-REPLY"),
}


def _by_queue(entries: Iterable[UnackedEntry]) -> dict[str, list[UnackedEntry]]:
    out: dict[str, list[UnackedEntry]] = {}
    for e in entries:
        out.setdefault(e.queue or "?", []).append(e)
    return out


def problems(snap: Snapshot, *, failure_rate: tuple[float, int] | None = None,
             deliveries_of: Callable[[Any], int] | None = None) -> list[Problem]:
    """Every problem of ``snap``, most serious first (errors before warnings, then the issue's order).

    ``failure_rate``: (share of finished tasks that failed, failures) over the recent window, or None
    when unknown (fewer than two samples).
    """
    out: list[Problem] = []

    def add(kind: str, subject: str, severity: Severity, label: str, text: str, view: str | None,
            row: str | None, hint: str) -> None:
        out.append(Problem(f"{kind}:{subject}", severity, label, text, view, row, hint, _ORDER[kind]))

    orphaned = [e for e in snap.unacked if e.state == "orphaned"]
    for queue, group in sorted(_by_queue(orphaned).items(), key=lambda kv: -len(kv[1])):
        old = _oldest(group)
        add("orphaned", queue, "error", "ORPHANED",
            f"{len(group):,} unacked on {queue}, no live holder, oldest {_age(old.age_s)}",
            "unacked", old.delivery_tag, "r requeue · R all orphaned")
    held = [e for e in snap.unacked if e.state == HELD_BY_SILENT]
    for queue, group in sorted(_by_queue(held).items(), key=lambda kv: -len(kv[1])):
        old = _oldest(group)
        holders = sorted({h for e in group for h in e.possible_holders})
        who = f" ({', '.join(holders[:2])}{' …' if len(holders) > 2 else ''})" if holders else ""
        add("held", queue, "warning", "HELD-BY-SILENT",
            f"{len(group):,} unacked on {queue} a silent worker may hold{who}",
            "unacked", old.delivery_tag, "wait, or r (force) once dead")
    for p in sorted(snap.poison, key=lambda p: -(deliveries_of(p) if deliveries_of else p.deliveries)):
        n = deliveries_of(p) if deliveries_of else p.deliveries
        add("poison", p.task_id, "error", "POISON",
            f"{p.task or '?'} [{p.task_id[:8]}] delivered {n}× on {p.queue or '?'}",
            "poison", p.task_id, "Q quarantine · x revoke")
    for q in sorted((q for q in snap.queues if q.paused_by), key=lambda q: -q.messages):
        # paused on purpose (taskdash pause): not "no consumer", but never out of sight either
        since = "" if q.paused_since is None else f" {_age(max(0.0, snap.taken_at - q.paused_since))} ago"
        rogue = f"; consumed anyway by {', '.join(q.consumed_while_paused)}" if q.consumed_while_paused else ""
        add("paused", q.name, "warning", "PAUSED",
            f"{q.name}: paused by {q.paused_by}{since}, {q.messages:,} waiting{rogue}",
            "queues", q.name, "taskdash resume " + q.name)
    for q in sorted((q for q in snap.queues if q.no_consumer and not q.paused_by), key=lambda q: -q.messages):
        add("noconsumer", q.name, "error", "NO CONSUMER",
            f"{q.name}: {q.messages:,} waiting, oldest {_oldest_age(q)}, nobody consumes it",
            "queues", q.name, "start a worker with -Q · p purge")
    for w in snap.workers:
        state = worker_state(w)
        if state not in BAD_WORKER:
            continue
        severity, label = BAD_WORKER[state]
        why = w.liveness_evidence or (f"last seen {_age(w.last_seen_s)} ago" if w.last_seen_s is not None
                                      else "no reply")
        add("worker", w.hostname, severity, label, f"{w.hostname}: {why}", "workers", w.hostname,
            "T timeline · c control")
    if failure_rate is not None:
        share, failed = failure_rate
        if failed >= FAILURE_MIN and share >= FAILURE_RATE_WARN:
            last = max(snap.tasks.recent_failures, key=lambda f: f.date_done or "", default=None)
            exc = f", last: {last.exception}" if last is not None else ""
            add("failures", "rate", "warning", "FAILURES",
                f"{share:.0%} of finished tasks failed ({failed:,} in the last minute){exc}",
                "tasks", last.task_id if last is not None else None, "enter traceback · r retry")
    if snap.task_stats is not None and snap.task_stats.baselines:  # top movers vs 1 h ago (issue 15)
        from collectors.analysis.taskstats import movers

        for _score, text in movers(snap.task_stats)[:3]:
            name, what = text.split(" ", 2)[:2]
            add("mover", f"{name}:{what}", "warning", "MOVER", text, "tasks", None, "t sort · enter exceptions")
    for err in snap.errors:
        add("source", err.source, "warning", "SOURCE ERROR", f"{err.source}: {err.message}", None, None,
            "the rest of the screen is still live")
    if not snap.backend.ok and not any(e.source in ("backend", "results") for e in snap.errors):
        add("source", "backend", "warning", "SOURCE ERROR",
            f"result backend: {snap.backend.error or 'unreachable'}", None, None, "task counts are stale")
    out.sort(key=lambda p: (0 if p.severity == "error" else 1, p.order))
    return out


class Totals:
    """Dashboard-wide series (ready, processed/s, failed/s) for the sparklines and the failure rate."""

    def __init__(self, maxlen: int = 60) -> None:
        self.maxlen = maxlen
        self.points: deque[tuple[float, int, int | None, int, int]] = deque(maxlen=maxlen)
        """(taken_at, ready, processed over workers or None, FAILURE count, SUCCESS count)."""

    def add(self, snap: Snapshot) -> None:
        """Record one snapshot (ignored if not newer than the last one)."""
        if not snap.broker.ok or (self.points and snap.taken_at <= self.points[-1][0]):
            return
        ready = sum(q.messages for q in snap.queues)
        counts = [w.processed for w in snap.workers if w.processed is not None]
        states = dict(snap.tasks.states)
        self.points.append((snap.taken_at, ready, sum(counts) if counts else None,
                            states.get("FAILURE", 0), states.get("SUCCESS", 0)))

    def reset(self) -> None:
        self.points.clear()

    def ready(self) -> list[float]:
        """Waiting messages over every queue, oldest sample first."""
        return [float(p[1]) for p in self.points]

    def _rates(self, index: int) -> list[float]:
        pts = [(p[0], p[index]) for p in self.points if p[index] is not None]
        return [max(0.0, (v1 - v0) / (t1 - t0)) for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False)
                if t1 > t0]

    def done_rates(self) -> list[float]:
        """Tasks completed per second by all workers, per interval."""
        return self._rates(2)

    def failed_rates(self) -> list[float]:
        """FAILURE results stored per second, per interval."""
        return self._rates(3)

    def failure_rate(self, window_s: float = RATE_WINDOW_S) -> tuple[float, int] | None:
        """(failed / (failed + succeeded), failed) over the last ``window_s`` seconds; None if unknown."""
        if len(self.points) < 2:
            return None
        last = self.points[-1]
        first = last
        for p in reversed(self.points):
            if last[0] - p[0] > window_s:
                break
            first = p
        failed = max(0, last[3] - first[3])
        succeeded = max(0, last[4] - first[4])
        if failed + succeeded == 0:
            return (0.0, 0)
        return (failed / (failed + succeeded), failed)
