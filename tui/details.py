"""Pure builders of detail-screen sections from snapshot rows (no Textual import)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from collectors.core.models import (
    PoisonSuspect,
    QueueInfo,
    Snapshot,
    TaskFailure,
    UnackedEntry,
    WorkerInfo,
)
from tui.format import by_priority_text, fmt_age, fmt_int, sparkline

Fields = list[tuple[str, str]]
Section = tuple[str, "Fields | str"]


def _s(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def fmt_time(epoch: float | None) -> str:
    """An epoch time as UTC ISO text."""
    if epoch is None:
        return "–"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_when(epoch: float | None, now: float | None = None) -> str:
    """An epoch time as people read it: relative age, then local wall time.

    ``"3m05s ago, 2026-12-02 11:04:05 local"`` (``"in 2m, …"`` for a time still ahead); ``"–"`` when unknown.
    """
    if epoch is None:
        return "–"
    now = time.time() if now is None else now
    delta = now - epoch
    rel = f"{fmt_age(delta)} ago" if delta >= 0 else f"in {fmt_age(-delta)}"
    local = datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{rel}, {local} local"


_EPOCH_NAMES = frozenset({"ts", "timestamp", "first_seen", "last_seen", "since", "boot_at"})
_EPOCH_RANGE = (1e9, 1e10)
"""Plausible epoch seconds (2001 … 2286): a float field of that size named like a time is shown as one."""


def _is_epoch_field(name: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    named = name in _EPOCH_NAMES or name.endswith(("_at", "_since", "_ts"))
    return named and _EPOCH_RANGE[0] < float(value) < _EPOCH_RANGE[1]


def _failure_for(snapshot: Snapshot, task_id: str | None) -> TaskFailure | None:
    if not task_id:
        return None
    return next((f for f in snapshot.tasks.recent_failures if f.task_id == task_id), None)


def _poison_for(snapshot: Snapshot, task_id: str | None) -> PoisonSuspect | None:
    if not task_id:
        return None
    return next((p for p in snapshot.poison if p.task_id == task_id), None)


def delivery_history(p: PoisonSuspect | None, snapshot: Snapshot) -> Section:
    """What taskdash saw of the deliveries of one task id."""
    if p is None:
        return ("Delivery history", [("deliveries", "no repeated delivery seen")])
    return ("Delivery history", [
        ("deliveries seen", str(p.deliveries)),
        ("first seen", f"{fmt_time(p.first_seen)} ({fmt_age(snapshot.taken_at - p.first_seen)} ago)"),
        ("last seen", f"{fmt_time(p.last_seen)} ({fmt_age(snapshot.taken_at - p.last_seen)} ago)"),
        ("workers", ", ".join(p.workers) or "–"),
        ("reason", p.reason),
    ])


def result_sections(f: TaskFailure | None) -> list[Section]:
    """Result/exception and traceback of a failed task."""
    if f is None:
        return [("Result", [("state", "no failure stored for this task id")])]
    return [
        ("Result", [("state", "FAILURE"), ("exception", f.exception), ("date done", _s(f.date_done)),
                    ("worker", _s(f.worker))]),
        ("Traceback", f.traceback or "(no traceback stored)"),
    ]


def queue_sections(q: QueueInfo, snapshot: Snapshot, depth_history: Sequence[float]) -> list[Section]:
    """Detail of one queue."""
    consumers = [w.hostname for w in snapshot.workers if q.name in w.queues]
    states: dict[str, int] = {}
    for e in snapshot.unacked:
        if e.queue == q.name:
            states[e.state] = states.get(e.state, 0) + 1
    return [
        ("Queue", [
            ("name", q.name), ("ready", fmt_int(q.messages)), ("oldest waiting", fmt_age(q.oldest_age_s)),
            ("unacked", fmt_int(q.unacked)), ("consumers", "?" if q.consumers is None else str(q.consumers)),
            ("no consumer", _s(q.no_consumer)), ("declared by", ", ".join(q.sources) or "–"),
            ("wrong key type", _s(q.wrong_type)),
        ]),
        ("Ready per priority band", [(f"band {band}", fmt_int(n)) for band, n in q.by_priority]
         or [("all", by_priority_text(q.by_priority))]),
        ("Consuming workers", [(h, "") for h in consumers]),
        ("Unacked of this queue (in the window)", sorted((k, str(v)) for k, v in states.items())),
        ("Depth history", sparkline(depth_history, 60) or "(no history yet)"),
    ]


def unacked_sections(e: UnackedEntry, snapshot: Snapshot) -> list[Section]:
    """Detail of one unacked message."""
    sections: list[Section] = [
        ("Message", [
            ("task", _s(e.task)), ("task id", _s(e.task_id)), ("delivery tag", e.delivery_tag),
            ("queue", _s(e.queue)), ("priority", str(e.priority)), ("exchange", _s(e.exchange)),
            ("routing key", _s(e.routing_key)), ("eta", _s(e.eta)), ("size", f"{e.size:,} bytes"),
            ("decode error", _s(e.decode_error)),
        ]),
        ("Delivery", [
            ("state", e.state), ("holder", _s(e.holder)), ("reserved at", fmt_time(e.reserved_at)),
            ("age", fmt_age(e.age_s)), ("redelivered", _s(e.redelivered)),
            ("stale", _s(e.stale) + ("  (older than visibility_timeout: the next restore sweep requeues it)"
                                     if e.stale else "")),
            ("redelivery in", "now" if e.stale else fmt_age(e.time_to_redelivery_s)),
            *([("why", e.state_reason)] if e.state_reason else []),
            *([("possible holders", ", ".join(e.possible_holders))] if e.possible_holders else []),
        ]),
        ("Arguments", [("args", _s(e.argsrepr)), ("kwargs", _s(e.kwargsrepr))]),
        delivery_history(_poison_for(snapshot, e.task_id), snapshot),
    ]
    sections.extend(result_sections(_failure_for(snapshot, e.task_id)))
    return sections


LIVENESS_WORDS = {"responding": "RESPONDING", "silent": "SILENT (not proven dead)", "dead": "DEAD (proven)",
                  "ghost": "GHOST (heartbeating and answering, not consuming)"}


def liveness_fields(w: WorkerInfo, now: float) -> Fields:
    """The liveness of one worker, the whole evidence that decided it, since when, and the process
    (pid, boot time): the Liveness section of both worker detail screens."""
    if w.liveness is None:
        state = "not decided yet" + ("" if w.online else " (offline: no heartbeat)")
    else:
        state = LIVENESS_WORDS.get(w.liveness, w.liveness)
    since = "–"
    if w.liveness_since is not None:
        since = f"{fmt_time(w.liveness_since)} ({fmt_age(now - w.liveness_since)} ago)"
    boot = "–"
    if w.boot_at is not None:
        boot = f"{fmt_time(w.boot_at)} (up {fmt_age(now - w.boot_at)})"
    fields: Fields = [("liveness", state), ("evidence", _s(w.liveness_evidence)), ("since", since),
                      ("pid", _s(w.pid)), ("booted", boot)]
    if w.liveness == "ghost":
        from collectors.analysis.liveness import ghost_queue

        queue = ghost_queue(w.liveness_evidence) or "QUEUE"
        fields.append(("fix", f"restart the worker, or make it consume again: taskdash worker add-consumer "
                              f"{queue} -d {w.hostname}"))
    elif w.liveness == "silent":
        fields.append(("meaning", "its messages are HELD-BY-SILENT, never orphaned: requeueing them needs force "
                                  "and may run them twice"))
    return fields


def worker_sections(w: WorkerInfo, snapshot: Snapshot) -> list[Section]:
    """Detail of one worker: liveness and its evidence, then the worker, and the unacked messages it holds
    (reported) or may hold (held-by-silent / may-be-held with it among the possible holders)."""
    held = [e for e in snapshot.unacked if e.holder == w.hostname or w.hostname in e.possible_holders]
    return [
        ("Liveness", liveness_fields(w, snapshot.taken_at)),
        ("Worker", [
            ("hostname", w.hostname), ("online", _s(w.online)), ("answers inspect", _s(w.responding)),
            ("last seen", fmt_age(w.last_seen_s) + " ago" if w.last_seen_s is not None else "–"),
            ("pid", _s(w.pid)), ("version", _s(w.sw_ver)), ("pool", _s(w.pool)),
            ("concurrency", _s(w.concurrency)), ("pool pids", ", ".join(map(str, w.pool_pids)) or "–"),
            ("prefetch count", _s(w.prefetch_count)), ("visibility timeout", _s(w.visibility_timeout)),
            ("processed", fmt_int(w.processed)),
        ]),
        ("Tasks", [("active", str(w.active)), ("reserved", str(w.reserved)), ("scheduled", str(w.scheduled))]),
        ("Queues", [(q, "") for q in w.queues]),
        ("Unacked messages it holds", [(e.task_id or e.delivery_tag, f"{e.task} · {e.state} · "
                                        f"{fmt_age(e.age_s)}") for e in held[:50]]),
    ]


def failure_sections(f: TaskFailure, snapshot: Snapshot) -> list[Section]:
    """Detail of one failed task."""
    return [
        ("Task", [("task", _s(f.task)), ("task id", f.task_id), ("queue", _s(f.queue)),
                  ("worker", _s(f.worker))]),
        ("Arguments", [("args", _s(f.args)), ("kwargs", _s(f.kwargs))]),
        delivery_history(_poison_for(snapshot, f.task_id), snapshot),
        *result_sections(f),
    ]


def poison_sections(p: PoisonSuspect, snapshot: Snapshot) -> list[Section]:
    """Detail of one poison suspect."""
    entry = next((e for e in snapshot.unacked if e.task_id == p.task_id), None)
    sections: list[Section] = [
        ("Suspect", [("task", _s(p.task)), ("task id", p.task_id), ("queue", _s(p.queue)),
                     ("delivery tag", _s(p.delivery_tag))]),
        delivery_history(p, snapshot),
    ]
    if entry is not None:
        sections.append(("Current unacked entry", [
            ("state", entry.state), ("holder", _s(entry.holder)), ("age", fmt_age(entry.age_s)),
            ("args", _s(entry.argsrepr)), ("kwargs", _s(entry.kwargsrepr)),
        ]))
    sections.extend(result_sections(_failure_for(snapshot, p.task_id)))
    return sections


def generic_sections(title: str, item: Any, now: float | None = None) -> list[Section]:
    """Every public field of an object (or mapping), for entries with no dedicated layout.

    Fields holding epoch seconds (``quarantined_at``, ``*_at``, ``last_seen``, …) are shown with
    :func:`fmt_when` (age and local time, as of ``now``), never as raw numbers.
    """
    if isinstance(item, dict):
        data = item
    elif hasattr(item, "to_json"):
        data = item.to_json()
    elif hasattr(item, "__dataclass_fields__"):
        data = {k: getattr(item, k) for k in item.__dataclass_fields__}
    else:
        data = {k: v for k, v in vars(item).items() if not k.startswith("_")}
    long = [(k, v) for k, v in data.items() if isinstance(v, str) and "\n" in v]
    fields = [(str(k), fmt_when(float(v), now) if _is_epoch_field(str(k), v) else _s(v))
              for k, v in data.items() if (k, v) not in long]
    return [(title, fields), *[(str(k).capitalize(), str(v)) for k, v in long]]


def forensics_section(victims: Sequence[str], took_down: Sequence[Any], now: float) -> Section:
    """What crash forensics linked to one task: the workers it took processes down on, and each death."""
    if not victims and not took_down:
        return ("Crash forensics", [("took down", "no pool process death linked to this task (yet)")])
    fields: Fields = [("victims", ", ".join(victims) or "–"), ("took down", f"{len(took_down)} process(es)")]
    for c in took_down[-10:]:
        fields.append((f"{fmt_age(now - c.ts)} ago", f"{c.hostname} pid {c.pid if c.pid is not None else '?'}"
                                                      f" ({c.culprit})"))
    return ("Crash forensics", fields)
