"""Move messages between queues (issue 18): waiting messages of one queue, or unacked entries, onto another.

A moved message is rewritten the way Celery and kombu would have written it had it been sent to the
target queue (celery/app/amqp.py ``send_task_message``: a direct queue named by the caller becomes the
anonymous exchange ``''`` with routing key = the queue name; kombu virtual ``_inplace_augment_message``
puts both into ``properties.delivery_info``): ``delivery_info`` becomes ``{"exchange": "", "routing_key":
<target>}`` (an unacked entry also keeps ``redelivered``), headers, body, ``properties.priority`` and the
delivery tag stay as they are. It is LPUSHed (like kombu's ``_put``: the back of the line) onto the target
list of the same priority band (``KeyLayout.queue_key``), so a consumer of the target takes it in band
order; kombu's visibility restore of the target's later delivery routes it back to the target.

Atomicity: waiting messages move in batches of one script call each (``scripts.LIST_BATCH``: LREM of the
exact bytes read, searched from the end consumed next, then LPUSH) — a message that a worker took in the
meantime is "gone", never duplicated. Unacked entries move one CAS script each
(``scripts.MOVE_UNACKED``) while kombu's ``unacked_mutex`` is held, and only the entries the requeue
liveness guard calls orphaned (:meth:`RequeueWrites.orphaned`) move without ``force``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.keyspace import scripts
from collectors.writes.base import _Entry, _kombu_dumps, _priority_of
from collectors.writes.requeue import RequeueWrites


def rewrite_for_queue(payload: Mapping[str, Any], target: str, *, redelivered: bool = False) -> str:
    """The envelope as a publish to ``target`` (Celery's anonymous-exchange routing) would carry it."""
    msg = json.loads(json.dumps(payload))  # a deep copy; what was read stays untouched
    props = msg.get("properties")
    if not isinstance(props, dict):
        props = msg["properties"] = {}
    dinfo = props.get("delivery_info")
    if not isinstance(dinfo, dict):
        dinfo = {}
    dinfo.update(exchange="", routing_key=target)
    if redelivered:
        dinfo["redelivered"] = True
        headers = msg.get("headers")
        if isinstance(headers, dict):
            headers["redelivered"] = True
    # delivery_tag stays last (kombu adds it last; taskdash's readers look for it at the end)
    tag = props.pop("delivery_tag", None)
    props["delivery_info"] = dinfo
    if tag is not None:
        props["delivery_tag"] = tag
    return _kombu_dumps(msg)


class MoveWrites(RequeueWrites):
    """The per-batch moves bulk actions and ``move`` are made of (no guard here: callers guard)."""

    def _target_key(self, target: str, payload: Mapping[str, Any]) -> str:
        return self.keys.queue_key(target, _priority_of(payload))

    def _list_batch(self, source: str, ops: Sequence[tuple[bytes, bytes | str, str | None, str, str]]) -> str:
        """One atomic batch on the list ``source``: ops are (expected, payload, target key | None for
        delete | "" for quarantine, qid, time). Returns '1'/'0' (done / gone) per op."""
        targets: list[str] = []
        coded: list[tuple[bytes, bytes | str, int, str, str]] = []
        for expected, payload, target, qid, now in ops:
            if target is None:
                op = 0
            elif target == "":
                op = -1
            else:
                if target not in targets:
                    targets.append(target)
                op = targets.index(target) + 1
            coded.append((expected, payload, op, qid, now))
        return scripts.list_batch(self.client, source=source, quarantine=self.keys.quarantine,
                                  quarantine_index=self.keys.quarantine_index, targets=targets, ops=coded)

    def _move_unacked(self, entries: Sequence[_Entry], target: str, *, force: bool) -> dict[str, list[str]]:
        """Move unacked entries onto ``target`` (CAS each, mutex held). Returns tags by outcome:
        ``moved``, ``gone`` (acked/restored meanwhile), ``changed`` (redelivered meanwhile)."""
        out: dict[str, list[str]] = {"moved": [], "gone": [], "changed": []}
        with self._sweep_mutex(force):
            for e in entries:
                score = "" if e.score is None else repr(float(e.score))
                rc = scripts.move_unacked(self.client, unacked=self.keys.unacked, index=self.keys.unacked_index,
                                          targets=[self._target_key(target, e.payload)], tag=e.tag, expected=e.raw,
                                          score=score, message=rewrite_for_queue(e.payload, target, redelivered=True),
                                          end="L")
                out["moved" if rc == 1 else "gone" if rc == 0 else "changed"].append(e.tag)
        return out

    def movable_unacked(self, *, force: bool, older_than: float | None = None) -> set[str] | None:
        """Tags the requeue liveness guard allows to move (every possible holder proven dead); None with
        ``force`` (everything may move). Asks the workers (:meth:`RequeueWrites.orphaned`)."""
        if force:
            return None
        return {tag for tag, _score, _tid, _q in self.orphaned(older_than=older_than)}

    @staticmethod
    def _now() -> str:
        return repr(time.time())
