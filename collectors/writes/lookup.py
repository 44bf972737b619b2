"""The reads that writes need: which tasks live workers hold, unacked entries, and where a message routes.

:class:`LedgerLookup` pages ``unacked_index`` by score (never the whole ledger), parses entries, asks the
workers what they run (``live_task_ids``), resolves an (exchange, routing key) to its queues the way
kombu's ``_lookup`` does, and lists the task queues a message may wait in. Requeue, quarantine and purge
build on it. Nothing here changes Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from collectors.core.models import UnackedEntry
from collectors.reads.broker import topic_match
from collectors.writes.base import BATCH, WriteBase, _b, _Entry, _parse_entry, _s, log

if TYPE_CHECKING:
    from collectors.analysis.liveness import LivenessView

MAX_UNACKED_SCAN = 200_000
"""Upper bound on unacked entries read by one ``find_tags`` call."""


class LedgerLookup(WriteBase):
    """Read helpers shared by the unacked, quarantine and purge writes (guarded base included)."""

    def live_task_ids(self) -> set[str] | None:
        """Task ids that live workers report active, reserved or scheduled; None if we could not ask.

        Pings first (one ``inspect_timeout``); nodes named in the pidbox bindings that stayed silent get
        a second, longer directed ping (a slow live worker must not pass for a dead one); then exactly
        the nodes that answered are asked, so each question returns as soon as they all replied. A node
        that answered the ping but not a later question makes the answer unknown (None): callers then
        refuse unless forced.
        """
        try:
            app = self._control_app()
            with self._connection() as conn:
                timeout = self.settings.inspect_timeout
                replies = app.control.ping(timeout=timeout, connection=conn) or []
                nodes = sorted({node for reply in replies if isinstance(reply, Mapping) for node in reply})
                silent = sorted(self._pidbox_nodes() - set(nodes))
                if silent:  # known nodes that did not answer: dead (kill -9 leaves rows) or just slow
                    again = app.control.ping(destination=silent, timeout=timeout, connection=conn) or []
                    nodes = sorted(set(nodes) | {n for reply in again if isinstance(reply, Mapping) for n in reply})
                if not nodes:
                    return set()
                insp = app.control.inspect(destination=nodes, timeout=max(timeout, 1.0) * 2, connection=conn)
                ids: set[str] = set()
                for method in ("active", "reserved", "scheduled"):
                    rep = getattr(insp, method)() or {}
                    if not set(nodes) <= set(rep):
                        log.warning("workers %s did not answer %s", sorted(set(nodes) - set(rep)), method)
                        return None
                    for items in rep.values():
                        for item in items or ():
                            info = item.get("request", item) if isinstance(item, Mapping) else {}
                            if isinstance(info, Mapping) and info.get("id"):
                                ids.add(str(info["id"]))
                return ids
        except Exception as exc:  # noqa: BLE001 - unknown is a valid answer, callers decide
            log.warning("cannot inspect workers: %s", self._mask(str(exc)))
            return None

    def _pidbox_nodes(self) -> set[str]:
        """Worker node names bound to the control exchange (live ones, and dead ones kill -9 left)."""
        suffix = self.keys.pidbox_queue_suffix
        out: set[str] = set()
        for row in self.client.smembers(self.keys.binding(self.keys.pidbox_exchange)) or ():
            queue = self.keys.binding_row(_s(row))[-1]
            if queue.endswith(suffix):
                out.add(queue[: -len(suffix)])
        return out

    def _read_entries(self, tags: Sequence[str]) -> dict[str, _Entry | None]:
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.hget(self.keys.unacked, tag)
            pipe.zscore(self.keys.unacked_index, tag)
        res = pipe.execute()
        out: dict[str, _Entry | None] = {}
        for i, tag in enumerate(tags):
            out[tag] = _parse_entry(tag, res[2 * i], res[2 * i + 1])
        return out

    def _iter_unacked_batches(self, max_score: float | None = None, batch: int = BATCH,
                              limit: int | None = None) -> Iterator[list[tuple[str, float]]]:
        """(tag, score) pages of ``unacked_index`` with score <= max_score, newest first, bounded pages.

        Pages are found by score (ZRANGE BYSCORE REV LIMIT), not by offset, so entries the caller
        removes while iterating do not make the scan skip others; ties at a page boundary are handled by
        remembering the tags already yielded at that exact score.
        """
        upper = "+inf" if max_score is None else repr(float(max_score))
        at_upper: set[str] = set()
        seen = 0
        while True:
            want = batch + len(at_upper)
            rows = self.client.zrange(self.keys.unacked_index, upper, "-inf", desc=True, byscore=True,
                                      offset=0, num=want, withscores=True)
            fresh = [(_s(t), float(s)) for t, s in rows if _s(t) not in at_upper][:batch]
            if limit is not None:
                fresh = fresh[: max(0, limit - seen)]
            if not fresh:
                return
            yield fresh
            seen += len(fresh)
            last = fresh[-1][1]
            if repr(last) != upper:
                at_upper = set()
            at_upper |= {t for t, s in fresh if s == last}
            upper = repr(last)
            if len(rows) < want or (limit is not None and seen >= limit):
                return

    def find_tags(self, task_id: str) -> list[str]:
        """Delivery tags in ``unacked`` whose message is task ``task_id`` (bounded scan, newest first)."""
        needle = task_id.encode("utf-8")
        found: list[str] = []
        with self._errors("find"):
            for page in self._iter_unacked_batches(limit=MAX_UNACKED_SCAN, batch=500):
                tags = [t for t, _ in page]
                raws = self.client.hmget(self.keys.unacked, tags)
                for tag, raw in zip(tags, raws, strict=True):
                    if raw is None or needle not in _b(raw):
                        continue
                    entry = _parse_entry(tag, raw, None)
                    if entry is not None and entry.task_id == task_id:
                        found.append(tag)
        return found

    def _classified(self, entries: Sequence[_Entry], view: LivenessView) -> dict[str, UnackedEntry]:
        """The liveness classification of parsed ledger entries, by tag (requeue, move, purge)."""
        now = time.time()
        vt = self.settings.visibility_timeout
        rows: list[UnackedEntry] = []
        for e in entries:
            queues = self._queues_for(e.exchange, e.routing_key)
            age = None if e.score is None else max(0.0, now - e.score)
            rows.append(UnackedEntry(
                delivery_tag=e.tag, task_id=e.task_id, task=e.task, queue=queues[0] if queues else None,
                priority=0, reserved_at=e.score, age_s=age, redelivered=False, state="unknown", holder=None,
                stale=age is not None and age > vt, time_to_redelivery_s=None if age is None else vt - age,
                argsrepr=None))
        return {u.delivery_tag: u for u in view.classify(rows, now)}

    def _queues_for(self, exchange: str, routing_key: str) -> list[str]:
        """The queues a message published to (exchange, routing_key) belongs to (kombu ``_lookup``)."""
        if not exchange:
            return [routing_key] if routing_key else []
        rows = self.client.smembers(self.keys.binding(exchange)) or set()
        out: list[str] = []
        for row in rows:
            parts = self.keys.binding_row(_s(row))
            if len(parts) != 3:
                continue
            rk, pattern, queue = parts
            if pattern:  # never run the stored regex: a planted row like ``(a+)+$`` would hang us
                ok = topic_match(rk, pattern, routing_key)
            else:
                ok = rk == routing_key
            if ok and queue not in out:
                out.append(queue)
        return sorted(out)

    def _known_queues(self) -> list[str]:
        """Task queues to search for a message: the app's queues plus bound queues (bounded SCAN)."""
        names: dict[str, None] = dict.fromkeys(self.settings.app_queues)
        prefix = self.keys.binding_prefix
        internal = self.keys.control_event_exchanges
        for i, key in enumerate(self.client.scan_iter(match=self.keys.binding_pattern, count=1000)):
            if i > 2000:
                break
            exchange = _s(key)[len(prefix):]
            if exchange in internal:
                continue
            for row in self.client.smembers(key) or ():
                parts = self.keys.binding_row(_s(row))
                if len(parts) != 3 or not parts[2]:
                    continue
                queue = parts[2]
                if self.keys.is_control_or_event_queue(queue):
                    continue
                names.setdefault(queue, None)
        return list(names)

    def _scanned_queues(self, max_keys: int = 100_000) -> list[str]:
        """Queue names derived from the list keys that exist (SCAN ... TYPE list, bounded).

        The fallback when bindings do not name a queue (a producer that never declared it, bindings
        swept away): band keys map back to their queue (``q<sep>3`` -> ``q``).
        """
        prefix = self.keys.global_keyprefix
        suffixes = self.keys.band_suffixes
        names: dict[str, None] = {}
        for i, key in enumerate(self.client.scan_iter(match=f"{prefix}*" if prefix else None, count=1000,
                                                      _type="list")):
            if i >= max_keys:
                break
            name = _s(key)[len(prefix):]
            for suffix in suffixes:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            if self.keys.is_pidbox_queue(name) or not name:
                continue
            names.setdefault(name, None)
        return list(names)

    def display_key(self, key: str) -> str:
        """A list key for humans: ``app:q\x06\x163`` -> ``q (priority 3)``."""
        return self.keys.display_key(key)

    def _grace(self, older_than: float | None) -> float:
        if older_than is not None:
            return max(0.0, float(older_than))
        return max(2.0 * self.settings.interval, 2.0 * self.settings.inspect_timeout, 2.0)
