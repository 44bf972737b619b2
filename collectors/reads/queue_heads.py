"""Oldest waiting age of each queue from evidence (issue 21): the broker reader's head tracking.

``QueueInfo.oldest_age_s`` is how long the message BRPOP takes next (the head of the highest-priority
non-empty band) has waited to run. Messages carry no enqueue time: Celery protocol 2 headers are
``lang task id shadow eta expires group group_index retries timelimit root_id parent_id argsrepr
kwargsrepr origin ignore_result replaced_task_nesting stamped_headers stamps`` and kombu's properties
``correlation_id reply_to delivery_mode delivery_info priority body_encoding delivery_tag`` — no
timestamp. So the age comes from the best evidence there is, named in ``oldest_age_source``:

1. ``task-sent``: the producer's ``task-sent`` event for the head's task id (``task_send_sent_event``;
   the collector hands the drained events to :meth:`BrokerReader.note_events
   <collectors.reads.broker.BrokerReader.note_events>` before the read; the last ``SENT_MEMORY`` sends
   of tasks not yet received are kept). Ignored when it is later than taskdash's first sighting
   (+ ``SENT_SKEW_S``): then it is another send of the same task id.
2. ``eta``: a countdown/ETA/retry message cannot run before its ``eta``, so it waits since then
   (``max(sent, eta)`` when both are known; an eta in the future: age 0). Assumes ``eta >= sent``,
   which is what Celery produces.
3. ``arrival``: the previous read (at most ``ARRIVAL_EXACT_S`` before) saw the queue empty, so the
   message arrived in between: exact to within that interval.
4. ``first-seen``: when taskdash first saw that exact message (by delivery tag, or a hash of a tag-less
   value) at the consuming end — remembered across restarts and shared between taskdash processes
   when the collector has a history store (``remembered``: :meth:`History.head_seen`). This is only
   **a lower bound** (``oldest_age_is_lower_bound``): a backlog found at start, or a message that
   moves up to the head after the one before it was consumed, had already waited for an unknown time.

The evidence costs no Redis command: :class:`QueueHeads` only looks at the head the broker reader's
probe reads anyway (decoded once per sighting), the events come from the worker monitor's
subscription, the history lookup is a dict lookup of rows loaded once. The last ``OLDEST_MEMORY``
heads per queue are remembered, so the age survives a higher-priority message jumping ahead and
being consumed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from collectors.core.messages import decode_envelope, decode_truncated, delivery_tag_of, eta_timestamp
from collectors.core.models import DecodedMessage
from collectors.reads.broker_plain import bytes_of

log = logging.getLogger(__name__)

OLDEST_MEMORY = 8
"""Heads remembered per queue (first-seen time and evidence)."""
SENT_MEMORY = 50_000
"""task id -> task-sent time kept for tasks not yet received (oldest sends forgotten first)."""
SENT_SKEW_S = 2.0
"""A task-sent time later than taskdash's first sighting by more than this is another send of the id."""
ARRIVAL_EXACT_S = 5.0
"""A head first seen within this long of a read that saw its queue empty counts as an exact ``arrival``."""
_LEAVES_QUEUE = frozenset({"task-received", "task-started", "task-succeeded", "task-failed", "task-rejected",
                           "task-revoked"})

HeadMemory = Callable[[str, str], "tuple[float, float, str] | None"]
"""(queue, head identity) -> (first seen, since, source) remembered by the history store, or None."""


@dataclass(slots=True)
class _Head:
    """What the reader knows about one message seen at the consuming end of a queue."""

    first_seen: float
    eta: float | None = None
    task_id: str | None = None
    since: float | None = None
    """Exact start of the wait from evidence (``source``), None while only first-seen is known."""
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Oldest:
    """The oldest waiting age of one queue and the evidence it stands on (the ``QueueInfo.oldest_*``)."""

    age: float
    lower_bound: bool
    source: Any
    since: float
    task_id: str | None
    identity: str | None


class QueueHeads:
    """Head sightings per queue and task-sent times: the oldest waiting age of each queue.

    Owned by one :class:`~collectors.reads.broker.BrokerReader` (not thread-safe); never talks to Redis.
    """

    def __init__(self) -> None:
        self._seen: dict[str, OrderedDict[str, _Head]] = {}
        """queue -> identity -> head evidence of the last ``OLDEST_MEMORY`` heads seen (newest last)."""
        self.remembered: HeadMemory | None = None
        """First-seen times remembered across restarts (the collector sets the history store's lookup)."""
        self._sent: dict[str, float] = {}
        """task id -> task-sent time (producer clock) of tasks not yet received (insertion order)."""
        self._last_read_at: float | None = None

    def note_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Take the task events drained since the last read: ``task-sent`` times are the exact start of a
        waiting message's age; a task received (or finished) has left its queue and is forgotten."""
        sent = self._sent
        for ev in events:
            etype, uuid = ev.get("type"), ev.get("uuid")
            if not isinstance(uuid, str) or not uuid:
                continue
            if etype == "task-sent":
                ts = ev.get("timestamp")
                if isinstance(ts, int | float) and not isinstance(ts, bool) and ts == ts:
                    sent.pop(uuid, None)  # a retry's send replaces the first one (and moves to the end)
                    sent[uuid] = float(ts)
                    if len(sent) > SENT_MEMORY:
                        del sent[next(iter(sent))]
            elif etype in _LEAVES_QUEUE:
                sent.pop(uuid, None)

    def known(self, queue: str) -> bool:
        """True when a head of ``queue`` was seen (and is still remembered)."""
        return bool(self._seen.get(queue))

    def arrived(self, prev_lens: Sequence[int] | None, now: float) -> bool:
        """Did the previous read, at most ``ARRIVAL_EXACT_S`` ago, see the queue (``prev_lens``) empty?"""
        return (prev_lens is not None and not any(prev_lens) and self._last_read_at is not None
                and 0.0 <= now - self._last_read_at <= ARRIVAL_EXACT_S)

    def observe(self, queue: str, item: Any, size: int, now: float, arrived: bool) -> Oldest:
        """The oldest age of ``queue`` from a probe item that carries its head (length 4: the message seen
        last time, not transferred again; 5: the whole message; 6: size, head and tail of a big one)."""
        decode: Callable[[], DecodedMessage]
        if len(item) == 4:  # same message as last time: not transferred again
            identity = self.last_identity(queue)
            decode = DecodedMessage
        elif len(item) == 5:
            raw = bytes_of(item[4])
            identity = delivery_tag_of(raw) or "?"
            decode = partial(decode_envelope, raw)
        else:
            h, t = bytes_of(item[4]), bytes_of(item[5])
            identity = delivery_tag_of(t, fallback=False) or (
                f"len:{size}:" + hashlib.sha1(h + t).hexdigest())
            decode = partial(decode_truncated, size, h, t)
        return self._age_of(queue, identity, decode, now, arrived)

    def carry(self, queue: str, now: float) -> Oldest:
        """The oldest age of ``queue`` when it was not probed: the head seen last is still the next one."""
        return self._age_of(queue, next(reversed(self._seen[queue])), DecodedMessage, now, False)

    def forget(self, queue: str) -> None:
        """``queue`` has no head now (empty, or its head could not be read)."""
        self._seen.pop(queue, None)

    def end_read(self, names: Iterable[str], now: float) -> None:
        """A read at ``now`` saw the queues ``names``: forget the others."""
        for gone in set(self._seen) - set(names):
            del self._seen[gone]
        self._last_read_at = now

    def last_identity(self, queue: str) -> str:
        """Delivery tag of the message last seen at the consuming end of ``queue`` ('' if none)."""
        seen = self._seen.get(queue)
        if not seen:
            return ""
        last = next(reversed(seen))
        return "" if last.startswith(("sha1:", "len:")) else last

    def _age_of(self, queue: str, identity: str, decode: Callable[[], DecodedMessage], now: float,
                arrived: bool) -> Oldest:
        """Age of the message at the consuming end from the best evidence (module docstring); the message
        is decoded only on first sighting."""
        seen = self._seen.setdefault(queue, OrderedDict())
        head = seen.get(identity)
        if head is None:
            msg = decode()
            head = _Head(first_seen=now, eta=eta_timestamp(msg.eta), task_id=msg.task_id)
            if arrived:
                head.since, head.source = now, "arrival"
            elif self.remembered is not None and identity != "?":
                try:
                    mem = self.remembered(queue, identity)
                except Exception:  # noqa: BLE001 - a broken history store must not break the read
                    log.debug("remembered first-seen lookup failed", exc_info=True)
                    mem = None
                if mem is not None:
                    first, since, source = mem
                    head.first_seen = min(head.first_seen, float(first))
                    if source in ("task-sent", "eta", "arrival"):
                        head.since, head.source = float(since), source
            seen[identity] = head
            while len(seen) > OLDEST_MEMORY:
                seen.popitem(last=False)
        else:
            seen.move_to_end(identity)
        if head.task_id and head.source != "task-sent":
            sent = self._sent.get(head.task_id)
            if sent is not None and sent <= head.first_seen + SENT_SKEW_S:
                head.since, head.source = sent, "task-sent"  # kept when the send is forgotten
        since, source = head.since, head.source
        if head.eta is not None and (since is None or head.eta > since):
            since, source = head.eta, "eta"  # not runnable before its eta: it waits since then
        lower = since is None
        if since is None:
            since, source = head.first_seen, "first-seen"
        return Oldest(age=max(0.0, now - since), lower_bound=lower, source=source or "first-seen", since=since,
                      task_id=head.task_id, identity=None if identity == "?" else identity)
