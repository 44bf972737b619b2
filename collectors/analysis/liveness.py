"""Worker liveness by evidence, and the unacked classification that follows from it (issue 12).

Pure functions over the evidence ``collectors.reads.workers`` gathers (``Incarnation``: one worker
process, hostname + pid). No I/O, no clock: ``now`` is always passed in.

Liveness of one incarnation, first match wins:

``dead`` — only on proof:
    a ``worker-offline`` event (clean shutdown); another pid speaking under the same hostname (a restart;
    no proof when two live processes share the hostname); its Redis connections gone while it is silent
    (CLIENT LIST, or the pidbox subscriber count — see ``collectors.reads.workers``); or silence longer
    than the visibility timeout (kombu redelivers its messages by then anyway).
``responding`` — a fresh heartbeat (within 2 heartbeat periods + 1 s) or a reply in the last inspect
    window (``reply_fresh_s``);
``ghost`` — responding, but a queue it consumes (or consumed since it started) has had a backlog for
    ``ghost_after`` seconds while its processed count and active count stayed flat with free pool slots
    and prefetch room (the "stops consuming after a reconnect" failure). Shown and linted, never a
    reason to requeue anything.
``silent`` — nothing heard recently and nothing proves it gone. Silence is not death: a solo worker in
    a CPU-bound task, a SIGSTOPped or GC-paused process and a partitioned host all look like this.

Unacked classification (``classify_unacked``). The ``unacked`` hash does not record who took a message,
so an entry's *possible holders* are the incarnations that consume its queue (every queue they reported
since they started; unknown queues = any queue) and were alive at its delivery time (the
``unacked_index`` score, the consuming worker's clock, compared with boot times and death proofs with a
``skew_s`` margin: a process started after the delivery cannot hold it, one proven dead before it
neither). Then:

- a responding worker reports the task id (inspect) → ``active`` / ``reserved`` / ``scheduled``;
- every possible holder is proven dead → ``orphaned`` (the only state ``requeue --orphaned`` moves);
- a possible holder is silent → ``held-by-silent``;
- otherwise a responding (or ghost) possible holder may hold it without reporting it (rate limits, a
  prefetch buffer mid-handover, Celery versions that report less): "nobody claims it" is no proof, so
  → ``may-be-held``;
- no known worker could hold it (a worker taskdash never saw, the delivery before taskdash started) →
  ``orphaned`` when the connection probe shows no unseen live worker (``unknown_workers == 0``) or the
  entry is older than the visibility timeout (kombu redelivers it anyway), else ``unknown``.
Each entry carries its possible holders and a one-line reason; time to redelivery stays
``visibility_timeout - age``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from collectors.core.config import Settings
from collectors.core.models import Liveness, QueueInfo, TaskRef, UnackedEntry, WorkerInfo
from collectors.reads.workers import OFFLINE_SLACK_S, Incarnation, WorkersView

SKEW_S = 1.0
"""Clock margin between a delivery score (worker clock) and boot/death times (taskdash clock)."""
GHOST_AFTER_S = 30.0
"""A backlog this old on a consumed queue, with no progress and free slots, makes a ghost."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The liveness of one incarnation and the evidence that decided it."""

    liveness: Liveness
    evidence: str
    since: float | None
    dead_at: float | None = None
    """When death became provable (dead only): a delivery after this cannot be its."""


def ago(seconds: float) -> str:
    """``12s`` / ``4m`` / ``3h`` / ``2d`` (whole units, for evidence strings)."""
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def decide(inc: Incarnation, now: float, *, visibility_timeout: float, reply_fresh_s: float = 12.0,
           backlog_since: Mapping[str, float] | None = None, ghost_after: float = GHOST_AFTER_S) -> Decision:
    """Liveness of one incarnation (see the module docstring for the rules, in order)."""
    last = inc.last_seen
    if inc.offline_at is not None and (last is None or inc.offline_at >= last):
        return Decision("dead", "worker-offline event", inc.offline_at, inc.offline_at)
    if inc.replaced_at is not None and not inc.pid_conflict:
        pid = f" {inc.replaced_by_pid}" if inc.replaced_by_pid is not None else ""
        return Decision("dead", f"restarted: same hostname, new pid{pid}", inc.replaced_at, inc.replaced_at)
    hb_fresh = inc.last_heartbeat is not None and now - inc.last_heartbeat <= 2 * inc.heartbeat_freq + OFFLINE_SLACK_S
    reply_fresh = inc.replied and inc.last_reply is not None and now - inc.last_reply <= reply_fresh_s
    if hb_fresh or reply_fresh:
        ghost = _ghost(inc, now, backlog_since or {}, ghost_after)
        if ghost is not None:
            return Decision("ghost", ghost[0], ghost[1])
        if hb_fresh:
            assert inc.last_heartbeat is not None
            return Decision("responding", f"heartbeat {ago(now - inc.last_heartbeat)} ago", inc.last_heartbeat)
        assert inc.last_reply is not None
        return Decision("responding", f"answered inspect {ago(now - inc.last_reply)} ago", inc.last_reply)
    silent_for = None if last is None else now - last
    conn = inc.conn
    if conn is not None and conn.present is False and conn.gone_since is not None:
        gone = f"{ago(now - last)}" if last is not None else "a while"
        return Decision("dead", f"no Redis connection, silent {gone} ({conn.source}: {conn.detail})",
                        conn.gone_since, conn.gone_since)
    vt = inc.visibility_timeout or visibility_timeout
    if last is not None and silent_for is not None and silent_for > vt:
        return Decision("dead", f"silent {ago(silent_for)} > visibility_timeout {ago(vt)}", last + vt, last + vt)
    why = f"no heartbeat or reply for {ago(silent_for)}" if silent_for is not None else "never heard"
    if conn is not None and conn.detail:
        why += f"; {conn.detail}"
    else:
        why += "; nothing proves it gone"
    return Decision("silent", why, last)


def _ghost(inc: Incarnation, now: float, backlog_since: Mapping[str, float], ghost_after: float
           ) -> tuple[str, float] | None:
    if not inc.queues or inc.concurrency is None or inc.active >= inc.concurrency:
        return None
    if inc.prefetch_count and inc.active + inc.reserved >= inc.prefetch_count:
        return None
    flat_since = max(inc.activity_changed_at, inc.first_seen)
    if now - flat_since < ghost_after:
        return None
    for q in inc.queues:
        since = backlog_since.get(q)
        if since is None or now - since < ghost_after:
            continue
        dropped = inc.current_queues is not None and q not in inc.current_queues
        text = (f"ghost: {q!r} has a backlog for {ago(now - since)}, processed flat at {inc.processed} for "
                f"{ago(now - flat_since)}, {inc.active}/{inc.concurrency} slots busy")
        if dropped:
            text += f"; no longer consuming {q!r} (not in active_queues)"
        return text, max(since, flat_since)
    return None


_GHOST_QUEUE = re.compile(r"^ghost: '((?:[^'\\]|\\.)*)' has a backlog")


def ghost_queue(evidence: str | None) -> str | None:
    """The queue a ghost's evidence names (``ghost: 'q' has a backlog ...``), for the fix to print."""
    m = _GHOST_QUEUE.match(evidence or "")
    return m.group(1) if m else None


def decide_all(incarnations: Iterable[Incarnation], now: float, *, visibility_timeout: float,
               reply_fresh_s: float = 12.0, backlog_since: Mapping[str, float] | None = None,
               ghost_after: float = GHOST_AFTER_S) -> list[tuple[Incarnation, Decision]]:
    """``decide`` for every incarnation, paired with it."""
    return [(inc, decide(inc, now, visibility_timeout=visibility_timeout, reply_fresh_s=reply_fresh_s,
                         backlog_since=backlog_since, ghost_after=ghost_after)) for inc in incarnations]


def annotate_workers(workers: Sequence[WorkerInfo], decided: Sequence[tuple[Incarnation, Decision]]
                     ) -> tuple[WorkerInfo, ...]:
    """Worker rows with ``liveness``/``liveness_evidence``/``liveness_since`` of their current incarnation."""
    current = {inc.hostname: (inc, d) for inc, d in decided if inc.current}
    restarts = {inc.hostname: inc for inc, d in decided if not inc.current and inc.replaced_at is not None}
    out: list[WorkerInfo] = []
    for w in workers:
        pair = current.get(w.hostname)
        if pair is None:
            out.append(w)
            continue
        _inc, d = pair
        evidence = d.evidence
        old = restarts.get(w.hostname)
        if old is not None and d.liveness != "dead":
            evidence += f"; restarted (old pid {old.pid} dead)"
        out.append(replace(w, liveness=d.liveness, liveness_evidence=evidence, liveness_since=d.since))
    return tuple(out)


def could_hold(inc: Incarnation, d: Decision, queue: str | None, delivered_at: float,
               skew_s: float = SKEW_S) -> bool:
    """Could this process have received a message of ``queue`` delivered at ``delivered_at``?"""
    if queue is not None and inc.queues is not None and queue not in inc.queues:
        return False
    return _alive_at(inc.boot_at, d.dead_at if d.liveness == "dead" else None, delivered_at, skew_s)


def _alive_at(boot_at: float | None, dead_at: float | None, delivered_at: float, skew_s: float) -> bool:
    """``could_hold``'s time rule: not started after the delivery, not proven dead before it (± ``skew_s``)."""
    return (boot_at is None or boot_at <= delivered_at + skew_s) and (dead_at is None or dead_at >= delivered_at - skew_s)


def classify_unacked(entries: Iterable[UnackedEntry], decided: Sequence[tuple[Incarnation, Decision]],
                     claims: Mapping[str, TaskRef] | None, now: float, *, skew_s: float = SKEW_S,
                     unknown_workers: int | None = None, evidence_source: str = "connections"
                     ) -> tuple[UnackedEntry, ...]:
    """Each entry's state by the rule of the module docstring (``state``, ``holder``, holders, reason).

    ``claims``: task id → TaskRef reported by a responding worker in the last inspect (None: no inspect).
    ``unknown_workers``: pidbox subscriber connections no known worker accounts for (``WorkersView``);
    0 proves that no worker taskdash never saw is alive, so an entry no known worker could hold is
    orphaned (its holder is gone); None or more: such an entry stays ``unknown``.
    """
    out: list[UnackedEntry] = []
    labels = _labels(decided)  # once per call (per candidate it was O(workers²) per entry)
    held_by: dict[tuple[int, ...], tuple[str, ...]] = {}
    consumers: dict[str | None, list[tuple[int, float | None, float | None]]] = {}
    for e in entries:
        claim = claims.get(e.task_id) if (claims is not None and e.task_id) else None
        if e.reserved_at is None:
            out.append(e.with_state("unknown", None, e.possible_holders, "no delivery time in unacked_index"))
            continue
        per_q = consumers.get(e.queue)
        if per_q is None:
            per_q = consumers[e.queue] = _consumers_of(decided, e.queue)
        cands = [i for i, boot, dead in per_q if _alive_at(boot, dead, e.reserved_at, skew_s)]
        key = tuple(cands)
        names = held_by.get(key)
        if names is None:
            names = held_by[key] = tuple(dict.fromkeys(labels[i] for i in cands))
        if claim is not None:
            out.append(e.with_state(claim.state, claim.hostname, names, f"{claim.hostname} reports it {claim.state}"))
            continue
        redeliver = (f"; kombu redelivers it in {ago(e.time_to_redelivery_s)}"
                     if e.time_to_redelivery_s is not None and e.time_to_redelivery_s > 0
                     else "; past the visibility timeout: the next restore sweep redelivers it")
        if not cands:
            if unknown_workers == 0:
                out.append(e.with_state("orphaned", None, (), (
                    f"no known worker consumed {e.queue!r} at its delivery, and every live worker's pidbox "
                    f"subscription belongs to a known one ({evidence_source}): its holder is gone")))
            elif e.stale:
                out.append(e.with_state("orphaned", None, (), (
                    f"no known worker consumed {e.queue!r} at its delivery, and it is older than the visibility "
                    "timeout: any holder has been silent that long, and kombu's next restore sweep redelivers "
                    "it anyway")))
            else:
                out.append(e.with_state("unknown", None, (), (
                    f"no known worker consumed {e.queue!r} at its delivery; a worker taskdash never saw may "
                    "hold it" + redeliver)))
            continue
        dead = [i for i in cands if decided[i][1].liveness == "dead"]
        if len(dead) == len(cands):
            proofs = "; ".join(f"{labels[i]}: {decided[i][1].evidence}" for i in dead)
            out.append(e.with_state("orphaned", None, names, f"every possible holder is dead ({proofs})"))
            continue
        silent = [i for i in cands if decided[i][1].liveness == "silent"]
        if silent:
            who = ", ".join(labels[i] for i in silent)
            out.append(e.with_state("held-by-silent", decided[silent[0]][0].hostname if len(silent) == 1 else None,
                                    names, f"may be held by silent {who} (not proven dead)" + redeliver))
            continue
        alive = [i for i in cands if decided[i][1].liveness != "dead"]
        who = ", ".join(labels[i] for i in alive)
        out.append(e.with_state("may-be-held", decided[alive[0]][0].hostname if len(alive) == 1 else None, names,
                                (f"not reported, but {who} (alive) consumed {e.queue!r} at its delivery "
                                 "and may hold it unreported (rate limit, prefetch)") + redeliver))
    return tuple(out)


def _consumers_of(decided: Sequence[tuple[Incarnation, Decision]], queue: str | None
                  ) -> list[tuple[int, float | None, float | None]]:
    """The incarnations ``could_hold`` admits for ``queue`` whatever the delivery time, each as (index,
    boot time, death time if dead): a 500-entry window × 20 workers was 10,000 ``could_hold`` calls a
    refresh, most of them for queues the worker never consumed."""
    out: list[tuple[int, float | None, float | None]] = []
    for i, (inc, d) in enumerate(decided):
        if queue is not None and inc.queues is not None and queue not in inc.queues:
            continue
        out.append((i, inc.boot_at, d.dead_at if d.liveness == "dead" else None))
    return out


def _labels(decided: Sequence[tuple[Incarnation, Decision]]) -> list[str]:
    """Each incarnation of ``decided`` by name, in order: the hostname, with the pid when the hostname has
    several incarnations."""
    counts: dict[str, int] = {}
    for inc, _ in decided:
        counts[inc.hostname] = counts.get(inc.hostname, 0) + 1
    return [f"{inc.hostname} (pid {inc.pid})" if counts[inc.hostname] > 1 and inc.pid is not None else inc.hostname
            for inc, _ in decided]


class BacklogClock:
    """Since when each queue has had waiting messages without a break (for the ghost rule)."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def observe(self, queues: Iterable[QueueInfo], now: float) -> Mapping[str, float]:
        seen: dict[str, float] = {}
        for q in queues:
            if q.messages > 0:
                seen[q.name] = self._since.get(q.name, now)
        self._since = seen
        return dict(seen)


@dataclass(frozen=True, slots=True)
class LivenessView:
    """Every worker process's liveness decision, and what the unacked classification needs besides."""

    decided: tuple[tuple[Incarnation, Decision], ...]
    claims: Mapping[str, TaskRef] | None
    unknown_workers: int | None
    source: str

    def classify(self, entries: Iterable[UnackedEntry], now: float) -> tuple[UnackedEntry, ...]:
        """``classify_unacked`` with this evidence."""
        return classify_unacked(entries, self.decided, self.claims, now, unknown_workers=self.unknown_workers,
                                evidence_source=self.source)


def liveness_view(wv: WorkersView, now: float, settings: Settings,
                  backlog_since: Mapping[str, float] | None = None) -> LivenessView:
    """Decide every incarnation of a workers view with the settings' cadences (what the collector shows)."""
    s = settings
    decided = decide_all(wv.incarnations, now, visibility_timeout=s.visibility_timeout,
                         reply_fresh_s=2 * s.inspect_interval + s.inspect_timeout + 1.0,
                         backlog_since=backlog_since, ghost_after=max(GHOST_AFTER_S, 3 * s.inspect_interval))
    return LivenessView(decided=tuple(decided), claims=wv.claims if wv.inspect_ok else None,
                        unknown_workers=wv.unknown_workers, source=wv.conn_note or "no connection evidence")
