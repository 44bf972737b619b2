"""collectors.analysis.liveness: the pure liveness decision and unacked classification (no Redis)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from collectors.analysis.liveness import BacklogClock, annotate_workers, classify_unacked, decide, decide_all
from collectors.core.models import QueueInfo, TaskRef, UnackedEntry, WorkerInfo
from collectors.reads.workers import ConnEvidence, Incarnation

NOW = 10_000.0
VT = 3600.0


def inc(host: str = "w1@h", **kw: Any) -> Incarnation:
    base: dict[str, Any] = dict(
        hostname=host, pid=100, first_seen=NOW - 600, boot_at=NOW - 600, last_heartbeat=NOW - 1,
        last_reply=NOW - 3, heartbeat_freq=2.0, replied=True, offline_at=None, replaced_at=None,
        replaced_by_pid=None, queues=("celery",), current_queues=("celery",), conn=None, processed=5,
        activity_changed_at=NOW - 500, active=0, reserved=0, concurrency=2, prefetch_count=8,
        visibility_timeout=None, current=True)
    base.update(kw)
    return Incarnation(**base)


def entry(tag: str = "t1", *, queue: str = "celery", at: float = NOW - 100, task_id: str = "id1") -> UnackedEntry:
    return UnackedEntry(delivery_tag=tag, task_id=task_id, task="x", queue=queue, priority=0, reserved_at=at,
                        age_s=NOW - at, redelivered=False, state="unknown", holder=None, stale=False,
                        time_to_redelivery_s=VT - (NOW - at), argsrepr=None)


def silent(**kw: Any) -> Incarnation:
    return inc(last_heartbeat=NOW - 40, last_reply=NOW - 45, replied=False, **kw)


def d(i: Incarnation, **kw: Any) -> Any:
    return decide(i, NOW, visibility_timeout=VT, **kw)


def test_responding_by_heartbeat_or_reply() -> None:
    assert (d(inc()).liveness, d(inc()).evidence) == ("responding", "heartbeat 1s ago")
    by_reply = d(inc(last_heartbeat=None))
    assert (by_reply.liveness, by_reply.evidence) == ("responding", "answered inspect 3s ago")


def test_silence_is_not_death() -> None:
    dec = d(silent())
    assert dec.liveness == "silent" and "nothing proves it gone" in dec.evidence and dec.since == NOW - 40
    still_there = silent(conn=ConnEvidence("CLIENT LIST", NOW, True, None, "3 connection(s) still open"))
    assert d(still_there).liveness == "silent"
    # connection evidence that cannot be attributed proves nothing
    unusable = silent(conn=ConnEvidence("CLIENT LIST", NOW, None, None, "boot time unknown"))
    assert d(unusable).liveness == "silent"


def test_each_proof_of_death() -> None:
    offline = d(inc(offline_at=NOW - 0.5))
    assert (offline.liveness, offline.evidence, offline.dead_at) == ("dead", "worker-offline event", NOW - 0.5)
    restarted = d(inc(replaced_at=NOW - 5, replaced_by_pid=4242, current=False))
    assert (restarted.liveness, restarted.evidence) == ("dead", "restarted: same hostname, new pid 4242")
    gone = d(silent(conn=ConnEvidence("CLIENT LIST", NOW, False, NOW - 12, "no Redis connection (CLIENT LIST)")))
    assert gone.liveness == "dead" and "no Redis connection" in gone.evidence and gone.dead_at == NOW - 12
    old = d(inc(last_heartbeat=NOW - 3 * 3600, last_reply=None, replied=False))
    assert (old.liveness, old.evidence) == ("dead", "silent 3h > visibility_timeout 1h")
    # the worker's own visibility timeout (from stats) wins over the setting
    assert d(inc(last_heartbeat=NOW - 700, last_reply=None, replied=False, visibility_timeout=600)).liveness == "dead"


def test_a_pid_conflict_is_no_restart_proof() -> None:
    assert d(inc(replaced_at=NOW - 5, replaced_by_pid=4242, pid_conflict=True)).liveness == "responding"


def test_ghost_needs_backlog_flat_progress_and_free_slots() -> None:
    backlog = {"celery": NOW - 60}
    ghost = d(inc(), backlog_since=backlog)
    assert ghost.liveness == "ghost" and "'celery' has a backlog for 60s" in ghost.evidence
    assert d(inc(active=2), backlog_since=backlog).liveness == "responding"  # no free slot
    assert d(inc(activity_changed_at=NOW - 5), backlog_since=backlog).liveness == "responding"  # progressing
    assert d(inc(), backlog_since={"celery": NOW - 5}).liveness == "responding"  # backlog too young
    assert d(inc(reserved=8), backlog_since=backlog).liveness == "responding"  # prefetch full
    dropped = d(inc(current_queues=()), backlog_since=backlog)
    assert dropped.liveness == "ghost" and "no longer consuming 'celery'" in dropped.evidence


def test_orphaned_only_when_every_possible_holder_is_dead() -> None:
    dead = inc("w1@h", offline_at=NOW - 10, last_heartbeat=NOW - 11, last_reply=None)
    alive_other_queue = inc("w2@h", queues=("other",), current_queues=("other",))
    out = classify_unacked([entry()], decide_all([dead, alive_other_queue], NOW, visibility_timeout=VT), {}, NOW)
    assert out[0].state == "orphaned" and out[0].possible_holders == ("w1@h",)
    assert "worker-offline event" in (out[0].state_reason or "")

    # a second worker on the same queue, alive at the delivery and now: it may hold it, whatever inspect says
    co = inc("w3@h")
    out = classify_unacked([entry()], decide_all([dead, co], NOW, visibility_timeout=VT), {}, NOW)
    assert out[0].state == "may-be-held" and set(out[0].possible_holders) == {"w1@h", "w3@h"}
    assert "kombu redelivers it in" in (out[0].state_reason or "")


def test_a_worker_started_after_the_delivery_cannot_hold_it() -> None:
    dead = inc("w1@h", offline_at=NOW - 30, last_heartbeat=NOW - 31, last_reply=None)
    newcomer = inc("w2@h", boot_at=NOW - 20, first_seen=NOW - 20)
    out = classify_unacked([entry(at=NOW - 100)], decide_all([dead, newcomer], NOW, visibility_timeout=VT), {}, NOW)
    assert out[0].state == "orphaned"
    # ... but it can hold what was delivered after it started
    late = entry("t2", at=NOW - 10, task_id="id2")
    out = classify_unacked([late], decide_all([dead, newcomer], NOW, visibility_timeout=VT), {}, NOW)
    assert out[0].state == "may-be-held" and out[0].possible_holders == ("w2@h",)


def test_restart_under_the_same_name() -> None:
    old = inc("w1@h", pid=100, replaced_at=NOW - 20, replaced_by_pid=200, last_heartbeat=NOW - 25, current=False)
    new = inc("w1@h", pid=200, boot_at=NOW - 25, first_seen=NOW - 20)
    decided = decide_all([old, new], NOW, visibility_timeout=VT)
    before, after = entry("a", at=NOW - 100, task_id="a"), entry("b", at=NOW - 5, task_id="b")
    out = {e.delivery_tag: e for e in classify_unacked([before, after], decided, {}, NOW)}
    assert out["a"].state == "orphaned" and out["a"].possible_holders == ("w1@h (pid 100)",)
    assert out["b"].state == "may-be-held" and out["b"].possible_holders == ("w1@h (pid 200)",)
    rows = annotate_workers([WorkerInfo(hostname="w1@h", online=True)], decided)
    assert rows[0].liveness == "responding" and "restarted (old pid 100 dead)" in (rows[0].liveness_evidence or "")


def test_silent_holder_and_claims() -> None:
    quiet = silent()
    out = classify_unacked([entry()], decide_all([quiet], NOW, visibility_timeout=VT), {}, NOW)
    assert (out[0].state, out[0].holder) == ("held-by-silent", "w1@h")
    claims = {"id1": TaskRef(task_id="id1", name="x", state="active", hostname="w1@h")}
    out = classify_unacked([entry()], decide_all([inc()], NOW, visibility_timeout=VT), claims, NOW)
    assert (out[0].state, out[0].holder) == ("active", "w1@h")
    # one silent and one dead possible holder: still held-by-silent, never orphaned
    dead = inc("w2@h", offline_at=NOW - 10, last_heartbeat=NOW - 11, last_reply=None)
    out = classify_unacked([entry()], decide_all([quiet, dead], NOW, visibility_timeout=VT), {}, NOW)
    assert out[0].state == "held-by-silent"


def test_unknown_queues_and_unknown_workers() -> None:
    # heartbeat-only worker (no inspect): its queues are unknown, so it may hold anything
    hb_only = replace(silent(), queues=None, current_queues=None)
    out = classify_unacked([entry(queue="zzz")], decide_all([hb_only], NOW, visibility_timeout=VT), None, NOW)
    assert out[0].state == "held-by-silent"
    out = classify_unacked([entry()], [], None, NOW)
    assert out[0].state == "unknown" and "no known worker" in (out[0].state_reason or "")


def test_backlog_clock() -> None:
    clock = BacklogClock()
    assert clock.observe([QueueInfo("a", 3), QueueInfo("b", 0)], 1.0) == {"a": 1.0}
    assert clock.observe([QueueInfo("a", 1), QueueInfo("b", 2)], 2.0) == {"a": 1.0, "b": 2.0}
    assert clock.observe([QueueInfo("a", 0), QueueInfo("b", 2)], 3.0) == {"b": 2.0}


def test_with_state_is_replace_of_the_classification_fields() -> None:
    """``UnackedEntry.with_state`` builds positionally (for speed): a field added or reordered must not
    shift values into the wrong field."""
    import dataclasses

    from collectors.core.models import UnackedEntry

    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(UnackedEntry)}
    entry = UnackedEntry(**values)  # type: ignore[arg-type]
    changed = entry.with_state("orphaned", "h", ("a", "b"), "why")
    assert changed == dataclasses.replace(entry, state="orphaned", holder="h", possible_holders=("a", "b"),
                                          state_reason="why")
    assert entry.state == "v-state"


def test_possible_holders_are_what_could_hold_admits() -> None:
    """classify_unacked tests each queue once per call (``_consumers_of``); the holders it names must stay
    exactly those ``could_hold``, the rule itself, admits: random workers (queues, boot times, deaths) and
    deliveries around them, edges within the skew included."""
    import random

    from collectors.analysis.liveness import Decision, could_hold

    rng = random.Random(7)
    queues = ["celery", "slow", "emails", None]
    for _ in range(200):
        decided = []
        for j in range(rng.randint(0, 6)):
            qs = None if rng.random() < 0.2 else tuple(q for q in queues[:3] if rng.random() < 0.5)
            boot = None if rng.random() < 0.2 else NOW - rng.uniform(0, 300)
            dead = rng.random() < 0.4
            dec = Decision("dead" if dead else rng.choice(["responding", "silent"]), "e", None,
                           dead_at=(NOW - rng.uniform(0, 300) if dead and rng.random() < 0.8 else None))
            decided.append((inc(f"w{j}@h", pid=100 + j, queues=qs, boot_at=boot), dec))
        entries = []
        for k in range(20):
            at = NOW - rng.uniform(0, 300)
            if decided and rng.random() < 0.3:  # on a boot or a death, ± the skew
                i0, d0 = rng.choice(decided)
                edge = i0.boot_at if rng.random() < 0.5 else d0.dead_at
                at = (edge if edge is not None else at) + rng.choice([-1.0, 1.0, 0.0, -1.0001, 1.0001])
            e = entry(f"t{k}", queue=rng.choice(queues), at=at, task_id=f"id{k}")
            entries.append(e)
        out = classify_unacked(entries, decided, None, NOW, unknown_workers=None)
        for e, got in zip(entries, out, strict=True):
            want = tuple(dict.fromkeys(i.hostname for i, dd in decided
                                       if could_hold(i, dd, e.queue, e.reserved_at or 0.0)))
            assert got.possible_holders == want, (e.queue, e.reserved_at, decided)
