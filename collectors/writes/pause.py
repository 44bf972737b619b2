"""Pause / resume a queue fleet-wide (issue 18): ``cancel_consumer`` on every worker consuming it, remembered
in Redis so ``resume`` re-adds exactly those consumers.

``taskdash.paused`` (prefix-aware, :attr:`KeyLayout.paused`) is a hash ``queue -> JSON {"queue",
"workers": [hostnames], "by": actor, "since": epoch s}``. Which workers consume a queue is asked with
Celery's ``active_queues`` broadcast; the pause is written to Redis *before* the consumers are cancelled
(so a crash in between still lets ``resume`` find them) and removed only after ``resume`` re-added them.
A worker that starts later and consumes a paused queue is reported by :meth:`PauseControl.late_consumers`
(and told to cancel it with ``enforce``). Refused in read-only mode; each pause/resume is one audit line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collectors.core.config import Settings, redis_client
from collectors.keyspace.keys import KeyLayout
from collectors.writes.base import ActionError, ActionResult, Guarded, _s
from collectors.writes.control import WorkerControl


@dataclass(frozen=True, slots=True)
class PausedQueue:
    """One paused queue, as remembered in ``taskdash.paused``."""

    queue: str
    workers: tuple[str, ...]
    by: str
    since: float

    def line(self, now: float | None = None) -> str:
        ago = max(0.0, (now or time.time()) - self.since)
        return (f"{self.queue}: paused by {self.by} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"
                f" ({ago:.0f}s ago); consumers cancelled on {', '.join(self.workers) or 'no worker'}")


def read_paused(client: Any, keys: KeyLayout) -> dict[str, PausedQueue]:
    """Every paused queue (read-only: also what the collector shows)."""
    out: dict[str, PausedQueue] = {}
    for name, raw in (client.hgetall(keys.paused) or {}).items():
        try:
            rec = json.loads(raw)
            out[_s(name)] = PausedQueue(_s(name), tuple(str(w) for w in rec.get("workers") or ()),
                                        str(rec.get("by") or "?"), float(rec.get("since") or 0.0))
        except (ValueError, TypeError, AttributeError):
            continue
    return out


class PauseControl(Guarded):
    """Pause/resume queues on the whole fleet, guarded and audited.

    Args:
        settings: Connection, read-only flag, audit log path.
        client: redis-py client on the broker db (built from settings when None).
        control: the WorkerControl to broadcast with (built when None).
    """

    def __init__(self, settings: Settings, client: Any = None, *, control: WorkerControl | None = None,
                 actor: str | None = None) -> None:
        self.actor = self._init_guarded(settings, actor)
        self.keys = KeyLayout.from_settings(settings)
        self.client = client if client is not None else redis_client(settings.broker_url, settings)
        self.control = control if control is not None else WorkerControl(settings, actor=self.actor)

    def consumers(self) -> dict[str, list[str]]:
        """``{hostname: [queue names it consumes]}`` from one ``active_queues`` broadcast."""
        replies = self.control.broadcast("active_queues")
        out: dict[str, list[str]] = {}
        for host, queues in replies.items():
            names = [str(q.get("name")) for q in queues or () if isinstance(q, Mapping) and q.get("name")]
            out[host] = names
        return out

    def paused(self) -> dict[str, PausedQueue]:
        return read_paused(self.client, self.keys)

    def pause(self, queue: str) -> ActionResult:
        """Cancel ``queue``'s consumer on every worker consuming it and remember which ones."""
        self._guard("pause")
        if not queue:
            raise ActionError("pause: no queue given")
        known = self.paused().get(queue)
        workers = sorted(h for h, qs in self.consumers().items() if queue in qs)
        if known is not None:
            workers = sorted(set(workers) | set(known.workers))
        now = known.since if known else time.time()
        rec = {"queue": queue, "workers": workers, "by": known.by if known else self.actor, "since": now}
        self.client.hset(self.keys.paused, queue, json.dumps(rec))  # first: a crash still lets resume find them
        res = self.control._run("pause", "cancel_consumer", {"queue": queue}, workers, f"pause {queue}") \
            if workers else None
        refused = list(res.details.get("refused") or []) if res else []
        no_reply = list(res.details.get("no_reply") or []) if res else []
        msg = (f"paused {queue}: consumer cancelled on {', '.join(w for w in workers if w not in refused)}"
               if workers else f"paused {queue}: no worker consumes it now (workers that start consuming it are flagged)")
        if refused or no_reply:
            msg += f"; refused: {', '.join(refused)}" if refused else ""
            msg += f"; no reply: {', '.join(no_reply)}" if no_reply else ""
        self.audit.record("pause", queue, len(workers), workers=workers, refused=refused, no_reply=no_reply)
        return ActionResult("pause", len(workers) or 1, self._mask(msg),
                            {"queue": queue, "workers": workers, "refused": refused, "no_reply": no_reply})

    def resume(self, queue: str) -> ActionResult:
        """Re-add ``queue``'s consumer on exactly the workers ``pause`` cancelled it on, and forget the pause."""
        self._guard("resume")
        known = self.paused().get(queue)
        if known is None:
            raise ActionError(f"resume: {queue} is not paused (by taskdash)")
        workers = list(known.workers)
        res = None
        if workers:
            res = self.control._run("resume", "add_consumer",
                                    {"queue": queue, "exchange": None, "exchange_type": "direct",
                                     "routing_key": None, "options": {}}, workers, f"resume {queue}")
        no_reply = list(res.details.get("no_reply") or []) if res else []
        self.client.hdel(self.keys.paused, queue)
        self.audit.record("resume", queue, len(workers), workers=workers, paused_by=known.by,
                          paused_since=known.since, no_reply=no_reply)
        msg = (f"resumed {queue} on {', '.join(workers)}" if workers else f"resumed {queue} (no consumer to re-add)")
        if no_reply:
            msg += f"; no reply from {', '.join(no_reply)} (gone? start it again or add-consumer)"
        return ActionResult("resume", len(workers) or 1, self._mask(msg),
                            {"queue": queue, "workers": workers, "no_reply": no_reply})

    def late_consumers(self, *, enforce: bool = False,
                       consumers: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
        """``{queue: [workers consuming it although it is paused]}``; with ``enforce`` they are told to cancel
        it (guarded, audited, and added to the pause so resume re-adds them too)."""
        paused = self.paused()
        if not paused:
            return {}
        cons = consumers if consumers is not None else self.consumers()
        out: dict[str, list[str]] = {}
        for queue in paused:
            late = sorted(h for h, qs in cons.items() if queue in qs)
            if late:
                out[queue] = late
        if enforce and out:
            self._guard("pause")
            for queue in out:
                self.pause(queue)
        return out
