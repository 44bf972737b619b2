"""Beat: alive or dead, missed runs and schedule lint, decided from successive reads (issue 16).

Missed runs of an entry are counted the same way at every moment: the due times after a run ``a``
that passed by more than the tolerance before ``t`` (the next run, or now). While beat is down the
current gap's count grows; when beat comes back, its first run closes the gap with the same count,
so the total stops growing (``missed_runs`` is cumulative while taskdash watches).

RedBeat's own state says when each entry last ran and is due next; its lock says whether a beat holds
it (and, when its timeout is known, how long ago beat last extended it). For the default scheduler the
runs are observed: result-backend state changes with the task's name (``result_extended``), task
events (``task-received``), and beat's sends still waiting in a queue (``celery_beat_task`` /
``periodic_task_name`` headers). A result of the same task sent by something other than beat also
counts as a run: the evidence says which source was used.

Lint rules (``BeatFinding.rule``): ``interval-shorter-than-runtime`` (runs pile up), ``no-consumer``
(the entry's queue has no live consumer), ``two-beats`` (two sends of one entry within half an interval).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from collectors.core.beat_canvas import BeatEntry, BeatFinding, BeatLock, BeatView
from collectors.core.config import Settings, mask_text, redis_client
from collectors.keyspace.keys import KeyLayout
from collectors.reads.beat import (
    BeatConfig,
    QueuedSend,
    RedBeatRead,
    RedBeatReader,
    ScheduleSpec,
    peek_beat_sends,
)
from collectors.reads.result_stream import ResultEvent, ResultStream

log = logging.getLogger(__name__)

MAX_DUES = 10_000
"""Due times counted per gap (a very long outage of a very frequent entry says "10000+")."""


def tolerance_for(spec: ScheduleSpec, fixed: float | None = None) -> float:
    """How late a run may be before it counts as missed: fixed, else half the interval within 1–60 s."""
    if fixed is not None:
        return fixed
    if spec.interval_s:
        return min(max(0.5 * spec.interval_s, 1.0), 60.0)
    return 60.0


def _next_cron(sched: Any, after: float) -> float | None:
    try:
        dt = datetime.fromtimestamp(after, tz=timezone.utc)
        now = sched.now() if hasattr(sched, "now") else datetime.now(timezone.utc)
        delta = sched.remaining_estimate(dt)
        if delta is None:
            return None
        nxt = now.timestamp() + delta.total_seconds()
        return nxt if nxt > after else after + 60.0
    except Exception:  # noqa: BLE001 - solar or user schedule classes
        return None


def next_due(spec: ScheduleSpec, after: float) -> float | None:
    """The first due time after a run at ``after``."""
    if spec.interval_s:
        return after + spec.interval_s
    if spec.cron is not None:
        return _next_cron(spec.cron, after)
    return None


def missed_between(spec: ScheduleSpec, a: float, t: float, tol: float) -> int:
    """Due times after a run at ``a`` that passed by more than ``tol`` before ``t``."""
    if t <= a:
        return 0
    if spec.interval_s:
        n = math.ceil((t - a - tol) / spec.interval_s) - 1
        return max(0, min(n, MAX_DUES))
    if spec.cron is None:
        return 0
    n, d = 0, next_due(spec, a)
    while d is not None and d + tol < t and n < MAX_DUES:
        n += 1
        d = next_due(spec, d)
    return n


@dataclass
class _History:
    runs: list[float] = field(default_factory=list)
    ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    gap_missed: int = 0
    evidence: str | None = None
    runtime: float | None = None
    duplicate_at: float | None = None
    duplicate_gap: float | None = None
    reported: int = 0
    """The highest missed count reported: the cumulative count never goes down."""


class BeatTracker:
    """Runs per entry over time (bounded memory), and the decisions drawn from them."""

    def __init__(self, now: float | None = None) -> None:
        self.watch_start = time.time() if now is None else now
        self._hist: dict[str, _History] = {}
        self._started: OrderedDict[str, float] = OrderedDict()
        self._lock_seen: dict[str, tuple[float, int]] = {}
        """lock token -> (first seen, highest PTTL seen in ms)."""
        self.last_lock_seen: float | None = None

    def history(self, name: str) -> _History:
        h = self._hist.get(name)
        if h is None:
            h = self._hist[name] = _History()
        return h

    def record_run(self, spec: ScheduleSpec, ts: float, task_id: str | None, evidence: str,
                   tol: float, *, timed: bool = True, runs: int = 1) -> None:
        """One run of ``spec`` at ``ts`` (a task id is counted once, whatever the source).

        ``runs``: how many runs happened since the previous one recorded, this one included (RedBeat's
        ``total_run_count`` grew by that much): a refresh slower than the schedule still sees them.
        """
        h = self.history(spec.name)
        if task_id is not None:
            if task_id in h.ids:
                return
            h.ids[task_id] = None
            if len(h.ids) > 256:
                h.ids.popitem(last=False)
        if h.runs and ts <= h.runs[-1]:
            if task_id is None:
                return  # the same RedBeat last_run_at again
            # a send earlier than the newest one we know (sources report with delays): only duplicates
            if timed and spec.interval_s and h.runs[-1] - ts < spec.interval_s / 2:
                h.duplicate_at, h.duplicate_gap = ts, h.runs[-1] - ts
            return
        if h.runs:
            gap = ts - h.runs[-1]
            if timed and spec.interval_s and gap < spec.interval_s / 2 and task_id is not None:
                h.duplicate_at, h.duplicate_gap = ts, gap
            h.gap_missed += max(0, missed_between(spec, h.runs[-1], ts, tol) - max(runs - 1, 0))
        h.runs.append(ts)
        del h.runs[:-64]
        h.evidence = evidence

    def note_started(self, task_id: str, ts: float) -> None:
        self._started[task_id] = ts
        if len(self._started) > 4096:
            self._started.popitem(last=False)

    def note_runtime(self, name: str, runtime: float) -> None:
        h = self.history(name)
        h.runtime = runtime if h.runtime is None else max(h.runtime * 0.8, runtime)

    def started_at(self, task_id: str) -> float | None:
        return self._started.pop(task_id, None)

    def lock(self, key: str, token: str | None, pttl_ms: int | None, timeout_s: float | None,
             now: float) -> BeatLock:
        if token is None:
            return BeatLock(key, None, None)
        self.last_lock_seen = now
        first, high = self._lock_seen.get(token, (now, 0))
        high = max(high, pttl_ms or 0)
        self._lock_seen[token] = (first, high)
        if len(self._lock_seen) > 16:
            self._lock_seen.pop(next(iter(self._lock_seen)))
        ttl = None if pttl_ms is None else pttl_ms / 1000.0
        full = timeout_s if timeout_s else high / 1000.0
        since = None if ttl is None or not full else max(full - ttl, 0.0)
        return BeatLock(key, token, ttl, first, None if since is None else round(since, 3))


def _entry_for(specs: Sequence[ScheduleSpec], task: str | None, ptn: str | None, ts: float,
               tracker: BeatTracker) -> ScheduleSpec | None:
    if ptn:
        for s in specs:
            if s.name == ptn:
                return s
    cands = [s for s in specs if task and s.task == task]
    if len(cands) <= 1:
        return cands[0] if cands else None

    def distance(s: ScheduleSpec) -> float:
        runs = tracker.history(s.name).runs
        due = next_due(s, runs[-1]) if runs else None
        return abs(ts - due) if due is not None else 0.0

    return min(cands, key=distance)


class BeatMonitor:
    """Reads beat's state each refresh (bounded) and keeps the run history that decides alive/dead."""

    def __init__(self, settings: Settings, broker_client: Any, *, stream: ResultStream | None = None,
                 config: BeatConfig | None = None, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.config = config or BeatConfig.from_settings(settings, env)
        self.layout = KeyLayout.from_settings(settings)
        self._broker = broker_client
        self._client = broker_client
        if self.config.redbeat_url and self.config.redbeat_url != settings.broker_url:
            self._client = redis_client(self.config.redbeat_url, settings)
        self.redbeat = RedBeatReader(self._client, self.config)
        self.stream = stream
        self.tracker = BeatTracker()
        self._queued_seen: dict[str, float] = {}
        self._totals: dict[str, int] = {}

    def close(self) -> None:
        if self._client is not self._broker:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass

    def read(self, now: float | None = None, *, worker_queues: Mapping[str, int] | None = None,
             events: Iterable[Mapping[str, Any]] = (), results: Iterable[ResultEvent] | None = None) -> BeatView:
        """One refresh of the beat view (never raises: a failure becomes ``error``)."""
        now = time.time() if now is None else now
        if results is None:
            results = self.stream.drain() if self.stream is not None else ()
        results, events = list(results), list(events)
        try:
            exists = self.redbeat.exists()
        except Exception as exc:  # noqa: BLE001
            return BeatView("redbeat" if self.config.redbeat_configured else "none", "unknown",
                            error=mask_text(str(exc), self.settings.broker_url, self.config.redbeat_url))
        if exists:
            return self._redbeat(now, worker_queues, events, results)
        if self.config.schedule:
            return self._default(now, worker_queues, events, results)
        if self.config.redbeat_configured:
            return BeatView("redbeat", "unknown", evidence=(
                f"RedBeat is configured but its schedule {self.redbeat.schedule_key!r} does not exist "
                "(beat never started, or another key prefix)"), key_prefix=self.config.redbeat_prefix, commands=1)
        return BeatView("none", "off", evidence="no RedBeat schedule and no beat_schedule in the app", commands=1)

    # ---- shared observations ----------------------------------------------------------------------
    def _observe(self, specs: Sequence[ScheduleSpec], events: list[Mapping[str, Any]],
                 results: list[ResultEvent], queued: Sequence[QueuedSend], now: float, *,
                 count_runs: bool) -> None:
        """Feed runtimes (and, for the default scheduler, runs) from results, events and queued sends."""
        fixed = self.config.tolerance_s
        for r in results:
            if r.state == "STARTED":
                self.tracker.note_started(r.task_id, r.seen_at)
            elif r.state in ("SUCCESS", "FAILURE"):
                began = self.tracker.started_at(r.task_id)
                spec = _entry_for(specs, r.name, None, r.seen_at, self.tracker)
                if began is not None and spec is not None:
                    self.tracker.note_runtime(spec.name, r.seen_at - began)
            spec = _entry_for(specs, r.name, None, r.seen_at, self.tracker)
            if spec is not None and count_runs:
                self.tracker.record_run(spec, r.seen_at, r.task_id, "result", tolerance_for(spec, fixed))
        for ev in events:
            etype, name, tid = ev.get("type"), ev.get("name"), ev.get("uuid")
            ts = float(ev.get("timestamp") or now)
            spec = _entry_for(specs, name if isinstance(name, str) else None, None, ts, self.tracker)
            if etype == "task-succeeded" and isinstance(ev.get("runtime"), int | float):
                # task-succeeded carries no name; its run was named by task-received
                for s in specs:
                    if isinstance(tid, str) and tid in self.tracker.history(s.name).ids:
                        self.tracker.note_runtime(s.name, float(ev["runtime"]))
            if spec is None or not isinstance(tid, str):
                continue
            if count_runs and etype in ("task-received", "task-sent"):
                self.tracker.record_run(spec, ts, tid, f"{etype} event", tolerance_for(spec, fixed))
        if count_runs:
            first = not self._queued_seen
            for q in queued:  # newest first; a message's time is when taskdash first saw it
                if q.task_id in self._queued_seen:
                    continue
                self._queued_seen[q.task_id] = now
                spec = _entry_for(specs, q.task, q.periodic_task_name, now, self.tracker)
                if spec is None or (first and self.tracker.history(spec.name).runs):
                    continue  # the backlog found at the first look: only its newest send is a run "now"
                self.tracker.record_run(spec, now, q.task_id, f"message queued on {q.queue}",
                                        tolerance_for(spec, fixed), timed=False)
            if len(self._queued_seen) > 4096:
                for k in list(self._queued_seen)[:-2048]:
                    del self._queued_seen[k]

    def _findings(self, entries: Sequence[BeatEntry], worker_queues: Mapping[str, int] | None
                  ) -> tuple[BeatFinding, ...]:
        out: list[BeatFinding] = []
        for e in entries:
            if e.interval_s and e.observed_runtime_s and e.observed_runtime_s > e.interval_s:
                out.append(BeatFinding("interval-shorter-than-runtime", e.name, (
                    f"{e.name}: runs every {e.interval_s:g}s but {e.task} takes {e.observed_runtime_s:.1f}s: "
                    "runs pile up")))
            if e.queue and worker_queues is not None and worker_queues.get(e.queue, 0) == 0:
                out.append(BeatFinding("no-consumer", e.name, (
                    f"{e.name}: {e.task} goes to queue {e.queue!r}, which no live worker consumes")))
            h = self.tracker.history(e.name)
            if h.duplicate_at is not None:
                out.append(BeatFinding("two-beats", e.name, (
                    f"{e.name}: two sends {h.duplicate_gap:.1f}s apart (interval {e.interval_s:g}s): "
                    "two beats running?")))
        return tuple(out)

    def _entry(self, spec: ScheduleSpec, now: float, *, last: float | None, due: float | None,
               total: int | None, evidence: str | None) -> BeatEntry:
        tol = tolerance_for(spec, self.config.tolerance_s)
        h = self.tracker.history(spec.name)
        ref = last if last is not None else None
        if due is None and ref is not None:
            due = next_due(spec, ref)
        current = 0
        overdue = None
        if spec.enabled and due is not None and now - due > tol:
            overdue = round(now - due, 3)
        if spec.enabled and ref is not None:
            # counted from the last run, not from the due time: a restarted RedBeat resets an overdue
            # entry's due time to "now" before its first run closes the gap
            current = missed_between(spec, ref, now, tol)
        elif overdue is not None:
            current = 1 + (int((now - due - tol) // spec.interval_s) if spec.interval_s else 0)
        h.reported = max(h.reported, h.gap_missed + current)
        return BeatEntry(
            name=spec.name, task=spec.task, schedule=spec.schedule_text, interval_s=spec.interval_s,
            queue=spec.queue, last_run_at=last, next_due_at=due, total_run_count=total,
            missed_runs=h.reported, overdue_s=overdue, enabled=spec.enabled,
            evidence=evidence or h.evidence,
            observed_runtime_s=None if h.runtime is None else round(h.runtime, 3),
        )

    # ---- RedBeat ---------------------------------------------------------------------------------
    def _redbeat(self, now: float, worker_queues: Mapping[str, int] | None, events: list[Mapping[str, Any]],
                 results: list[ResultEvent]) -> BeatView:
        read: RedBeatRead = self.redbeat.read()
        specs = [e.spec for e in read.entries]
        self._observe(specs, events, results, (), now, count_runs=False)
        entries: list[BeatEntry] = []
        for raw in read.entries:
            tol = tolerance_for(raw.spec, self.config.tolerance_s)
            if raw.last_run_at is not None:
                before = self._totals.get(raw.name)
                grew = (raw.total_run_count - before) if (
                    raw.total_run_count is not None and before is not None and raw.total_run_count > before) else 1
                if raw.total_run_count is not None:
                    self._totals[raw.name] = raw.total_run_count
                self.tracker.record_run(raw.spec, raw.last_run_at, None, "redbeat meta", tol, runs=grew)
            entries.append(self._entry(raw.spec, now, last=raw.last_run_at, due=raw.due_at,
                                       total=raw.total_run_count, evidence="redbeat meta"))
        lock = None
        if read.lock_key:
            lock = self.tracker.lock(read.lock_key, read.lock_token, read.lock_pttl_ms, self.config.lock_timeout_s, now)
        due_entries = [e for e in entries if e.enabled and e.next_due_at is not None]
        overdue = [e for e in due_entries if e.overdue_s is not None]
        last_sign = max([e.last_run_at for e in entries if e.last_run_at is not None], default=None)
        if lock is not None and lock.holder is not None and lock.last_extended_s is not None:
            ext = now - lock.last_extended_s
            last_sign = ext if last_sign is None else max(last_sign, ext)
        state, evidence, dead_since = "alive", None, None
        if lock is not None and lock.holder is None:
            state = "dead"
            evidence = f"lock {lock.key!r} is gone (released by a clean stop, or expired)"
            dead_since = last_sign
        elif due_entries and len(overdue) == len(due_entries):
            state = "dead"
            worst = max(overdue, key=lambda e: e.overdue_s or 0)
            evidence = (f"every entry is overdue (e.g. {worst.name} due {worst.overdue_s:.0f}s ago)"
                        + (f"; lock not extended for {lock.last_extended_s:.0f}s"
                           if lock and lock.last_extended_s is not None else ""))
            dead_since = last_sign
        elif overdue:
            evidence = f"{len(overdue)} of {len(due_entries)} entries overdue; lock held"
        else:
            recent = max(entries, key=lambda e: e.last_run_at or 0, default=None)
            evidence = "lock held" + (f"; last run {recent.name} {now - recent.last_run_at:.0f}s ago"
                                      if recent and recent.last_run_at else "")
        if read.total > len(read.entries):
            evidence = f"{evidence}; {read.total - len(read.entries)} later entries not read"
        return BeatView("redbeat", state, evidence, dead_since, tuple(entries), lock,
                        self._findings(entries, worker_queues), self.config.redbeat_prefix,
                        self.config.tolerance_s or 0.0, None, 1 + read.commands)

    # ---- the default scheduler ------------------------------------------------------------------
    def _default(self, now: float, worker_queues: Mapping[str, int] | None, events: list[Mapping[str, Any]],
                 results: list[ResultEvent]) -> BeatView:
        specs = list(self.config.schedule)
        queues = sorted({s.queue for s in specs if s.queue})
        queued, commands = [], 1
        try:
            queued, n = peek_beat_sends(self._broker, self.layout, queues)
            commands += n
        except Exception as exc:  # noqa: BLE001
            log.debug("beat peek failed: %s", exc)
        self._observe(specs, events, results, queued, now, count_runs=True)
        observing = self.stream is not None and self.stream.running
        since = self.tracker.watch_start
        entries: list[BeatEntry] = []
        for spec in specs:
            runs = self.tracker.history(spec.name).runs
            last = runs[-1] if runs else None
            due = next_due(spec, last if last is not None else since)
            entries.append(self._entry(spec, now, last=last, due=due, total=None, evidence=None))
        sources = "results" + (" and task events" if events else "") + " and queued messages"
        timed = [e for e in entries if e.enabled and e.next_due_at is not None]
        overdue = [e for e in timed if e.overdue_s is not None]
        last_sign = max([e.last_run_at for e in entries if e.last_run_at is not None], default=None)
        if not observing and not any(e.last_run_at for e in entries):
            state, evidence, dead_since = "unknown", (
                "default scheduler: runs are observed over time (results, events, queued messages); "
                "watch with the TUI or snapshot --observe"), None
        elif timed and len(overdue) == len(timed):
            worst = max(overdue, key=lambda e: e.overdue_s or 0)
            state = "dead"
            dead_since = last_sign if last_sign is not None else since
            seen = (f"last run seen {datetime.fromtimestamp(last_sign, timezone.utc):%H:%M:%S} UTC"
                    if last_sign else "no run seen since taskdash started watching")
            evidence = (f"beat looks dead: no entry ran on time ({worst.name} due {worst.overdue_s:.0f}s ago); "
                        f"{seen}; watched {sources}")
        elif overdue:
            state = "alive"
            evidence = f"{len(overdue)} of {len(timed)} entries overdue; others run on time ({sources})"
        elif last_sign is None:
            state, evidence, dead_since = "unknown", f"no run seen yet (watching {now - since:.0f}s)", None
        else:
            state, dead_since = "alive", None
            evidence = f"last run seen {now - last_sign:.0f}s ago ({sources})"
        return BeatView("default", state, evidence, dead_since if state == "dead" else None, tuple(entries),
                        None, self._findings(entries, worker_queues), None, self.config.tolerance_s or 0.0,
                        None, commands)
