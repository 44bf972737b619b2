"""Healthy and on-fire snapshot series for the Overview tests and screenshots (fixed clock)."""

from __future__ import annotations

from dataclasses import replace

from tui_fakes import QUEUES, T0, UNACKED, WORKERS, entry, make_snapshot

from collectors.core.models import QueueInfo, Snapshot, SourceError, TaskStats, WorkerInfo


def healthy_series(n: int = 8) -> list[Snapshot]:
    """A quiet system: every queue consumed, every worker responding, nothing orphaned, few failures."""
    out = []
    for i in range(n):
        t = T0 - (n - 1 - i) * 2.0
        queues = tuple(replace(q, consumers=max(1, q.consumers or 0), messages=q.messages + (i * 3) % 7)
                       for q in QUEUES)
        workers = tuple(replace(w, online=True, responding=True, liveness="responding", last_seen_s=0.8,
                                processed=(w.processed or 0) + i * 6) for w in WORKERS)
        unacked = tuple(e for e in UNACKED if e.state != "orphaned")
        stats = TaskStats((("SUCCESS", 1204 + i * 12), ("FAILURE", 2), ("RETRY", 3)), 1209 + i * 12, True,
                          (), 1)
        out.append(make_snapshot(taken_at=t, queues=queues, workers=workers, unacked=unacked,
                                 unacked_total=len(unacked), tasks=stats, poison=()))
    return out


def fire_series(n: int = 8) -> list[Snapshot]:
    """Orphans, a poison loop, a backlog nobody consumes, an offline and a silent worker, a failure
    spike and a failing source: everything the Overview must put first."""
    base = make_snapshot()
    out = []
    held = entry("tag-h1", "h1h1h1h1-0000-4000-8000-000000000009", queue="celery", state="held-by-silent",
                 age=48.0)
    held = replace(held, possible_holders=("w4@quiet",))
    for i in range(n):
        t = T0 - (n - 1 - i) * 2.0
        queues = (*base.queues[:1], replace(base.queues[1], messages=7 + i * 40, oldest_age_s=310.0 + 2 * i),
                  *base.queues[2:], QueueInfo("reports", 2_400 + i * 90, ((0, 2_400 + i * 90),), 1_800.0, 0, 0))
        workers = (*tuple(replace(w, processed=(w.processed or 0) + i * 4) for w in WORKERS),
                   WorkerInfo("w4@quiet", True, "prefork", 4, 0, 0, 0, 400, ("celery",), 75.0, responding=False,
                              liveness="silent", liveness_evidence="no heartbeat for 75s, connections still open"))
        stats = TaskStats((("SUCCESS", 1204 + i * 5), ("FAILURE", 2 + i * 3), ("RETRY", 3)), 1209 + i * 8, True,
                          base.tasks.recent_failures, 1)
        unacked = (*base.unacked, held)
        out.append(replace(base, taken_at=t, queues=queues, workers=workers, tasks=stats, unacked=unacked,
                           unacked_total=len(unacked),
                           errors=(SourceError("workers", "inspect timed out after 1.0s (2 of 4 replied)"),)))
    return out
