"""Frozen rows of the snapshot's ``beat`` and ``canvas`` keys (issue 16): periodic tasks and chords.

Kept apart from ``models.py`` so the two features can grow without touching the core rows; ``Snapshot``
holds one :class:`BeatView` and one :class:`CanvasView` (README, "beat and canvas JSON").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

BeatState = Literal["alive", "dead", "unknown", "off"]
"""``off``: no beat configured (no RedBeat keys, no ``beat_schedule``): nothing to watch."""
ChordState = Literal["running", "stuck", "failed", "done"]


@dataclass(frozen=True, slots=True)
class BeatEntry:
    """One periodic task of the schedule and what taskdash saw of its runs."""

    name: str
    task: str | None
    schedule: str
    """Human form: ``every 5s`` or ``crontab(minute=*/5 ...)``."""
    interval_s: float | None = None
    """Seconds between runs for interval schedules (None for crontab/solar)."""
    queue: str | None = None
    last_run_at: float | None = None
    """Epoch seconds of the last run (RedBeat meta) or of the last observed send (default scheduler)."""
    next_due_at: float | None = None
    total_run_count: int | None = None
    missed_runs: int = 0
    """Runs that should have happened and did not (due passed by more than the tolerance), cumulative
    while taskdash watches."""
    overdue_s: float | None = None
    """How long the current due time has passed (None when not overdue)."""
    enabled: bool = True
    evidence: str | None = None
    """Where last_run_at came from (``redbeat meta``, ``result``, ``task-received event``, ``queued message``)."""
    observed_runtime_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "task": self.task, "schedule": self.schedule, "interval_s": self.interval_s,
            "queue": self.queue, "last_run_at": self.last_run_at, "next_due_at": self.next_due_at,
            "total_run_count": self.total_run_count, "missed_runs": self.missed_runs,
            "overdue_s": self.overdue_s, "enabled": self.enabled, "evidence": self.evidence,
            "observed_runtime_s": self.observed_runtime_s,
        }


@dataclass(frozen=True, slots=True)
class BeatLock:
    """RedBeat's distributed lock (a redis-py lock: the value is the holder's token, TTL extended each tick)."""

    key: str
    holder: str | None
    """The lock token (beat holds it; a new token means a new beat process)."""
    ttl_s: float | None
    holder_since: float | None = None
    """When taskdash first saw this token (epoch seconds)."""
    last_extended_s: float | None = None
    """Seconds since beat last extended the lock (lock timeout − TTL), when the timeout is known."""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "holder": self.holder, "ttl_s": self.ttl_s, "holder_since": self.holder_since,
                "last_extended_s": self.last_extended_s}


@dataclass(frozen=True, slots=True)
class BeatFinding:
    """A lint result about the schedule (``rule`` names the check)."""

    rule: str
    """``interval-shorter-than-runtime`` | ``no-consumer`` | ``two-beats``."""
    entry: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "entry": self.entry, "message": self.message}


@dataclass(frozen=True, slots=True)
class BeatView:
    """Beat as seen from Redis: alive or not, with the evidence, and every entry."""

    scheduler: Literal["redbeat", "default", "none"] = "none"
    state: BeatState = "off"
    evidence: str | None = None
    dead_since: float | None = None
    """Epoch seconds since when beat looks dead (its last sign of life)."""
    entries: tuple[BeatEntry, ...] = ()
    lock: BeatLock | None = None
    findings: tuple[BeatFinding, ...] = ()
    key_prefix: str | None = None
    tolerance_s: float = 0.0
    error: str | None = None
    commands: int = 0
    """Redis commands this refresh's beat read sent."""

    @property
    def problem(self) -> str | None:
        """One line for the overview when something is wrong (None: nothing to say)."""
        missed = [e.name for e in self.entries if e.overdue_s is not None]
        if self.state == "dead":
            return f"beat looks dead: {self.evidence or '?'}" + (f"; missed: {', '.join(missed[:5])}" if missed else "")
        if missed:
            return f"beat: {len(missed)} entr{'y' if len(missed) == 1 else 'ies'} overdue: {', '.join(missed[:5])}"
        if self.findings:
            return f"beat: {self.findings[0].message}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler, "state": self.state, "alive": self.state == "alive",
            "evidence": self.evidence, "dead_since": self.dead_since, "key_prefix": self.key_prefix,
            "tolerance_s": self.tolerance_s,
            "lock": self.lock.to_json() if self.lock else None,
            "entries": [e.to_json() for e in self.entries],
            "missed_runs": sum(e.missed_runs for e in self.entries),
            "findings": [f.to_json() for f in self.findings],
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ChordInfo:
    """One group or chord from the result backend's ``celery-taskset-meta-<gid>*`` keys."""

    group_id: str
    kind: Literal["chord", "group"]
    state: ChordState
    size: int | None
    """Header parts (``.s`` plus the ``.t`` adjustment); None when unknown (size key gone)."""
    done: int
    """Header parts that returned (``ZCARD``/``LLEN`` of ``.j``)."""
    failed: int
    """Parts seen with FAILURE/REVOKED (lower bound until ``parts_scanned`` reaches ``done``)."""
    parts_scanned: int = 0
    body: str | None = None
    """The body task name (from a part message's ``chord`` option), when seen."""
    last_progress_at: float | None = None
    """When the last part finished (a part result's date_done, or when taskdash saw ``done`` grow)."""
    last_progress_age_s: float | None = None
    first_seen: float | None = None
    reason: str | None = None

    @property
    def missing(self) -> int | None:
        return None if self.size is None else max(self.size - self.done, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id, "kind": self.kind, "state": self.state, "size": self.size,
            "done": self.done, "failed": self.failed, "missing": self.missing,
            "parts_scanned": self.parts_scanned, "body": self.body, "last_progress_at": self.last_progress_at,
            "last_progress_age_s": self.last_progress_age_s, "first_seen": self.first_seen, "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ChordPart:
    """One header part of a chord (the detail read behind enter)."""

    index: int | None
    task_id: str | None
    state: str
    """A result state (SUCCESS, FAILURE, ...) or where its message is: ``queued``, ``unacked``,
    ``quarantined``, ``lost`` (in no queue, ledger or quarantine, and no result)."""
    where: str | None = None
    """Queue name, ``unacked <tag>`` or quarantine id for a missing part's message."""
    task: str | None = None
    delivery_tag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "task_id": self.task_id, "state": self.state, "where": self.where,
                "task": self.task, "delivery_tag": self.delivery_tag}


@dataclass(frozen=True, slots=True)
class CanvasView:
    """Every chord/group taskdash knows in the result backend."""

    chords: tuple[ChordInfo, ...] = ()
    scan_complete: bool = False
    """A full SCAN pass over ``celery-taskset-meta-*`` finished at least once."""
    stuck_after_s: float = 300.0
    error: str | None = None
    commands: int = 0

    @property
    def problem(self) -> str | None:
        stuck = [c for c in self.chords if c.state == "stuck"]
        failed = [c for c in self.chords if c.state == "failed"]
        if not stuck and not failed:
            return None
        parts = []
        if stuck:
            parts.append(f"{len(stuck)} stuck chord{'s' if len(stuck) > 1 else ''}")
        if failed:
            parts.append(f"{len(failed)} failed chord{'s' if len(failed) > 1 else ''}")
        return "canvas: " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for c in self.chords:
            counts[c.state] = counts.get(c.state, 0) + 1
        return {"chords": [c.to_json() for c in self.chords], "states": counts,
                "scan_complete": self.scan_complete, "stuck_after_s": self.stuck_after_s, "error": self.error}
