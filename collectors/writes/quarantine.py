"""Writes to taskdash's dead-letter store: quarantine, replay, delete, export and list quarantined messages.

The store is the hash ``taskdash.quarantine`` (``id -> record JSON``, the whole message kept byte-exact)
and its index zset ``taskdash.quarantine.index`` (``id -> quarantined_at``), prefix-aware
(:class:`collectors.keyspace.keys.KeyLayout`). Every move in or out is one compare-and-swap script
(``scripts.UNACKED_TO_QUARANTINE``, ``LIST_TO_QUARANTINE``, ``QUARANTINE_POP``): a message is never
lost nor duplicated by a race with a worker, kombu's restore or a producer.

A record's ``deliveries`` is the caller's count (the TUI passes the poison tracker's); without one it is
the persistent history's count for the task id (``deliveries`` table of ``history.sqlite3``, written by
the dashboard's poison tracker, read-only here), and only when neither knows it the lower bound the
message itself proves (``redelivered``: 2). ``deliveries_source`` in the record says which.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.keyspace import scripts
from collectors.writes.base import (
    BATCH,
    ActionError,
    ActionResult,
    _b,
    _dec,
    _enc,
    _Entry,
    _priority_of,
    _restored_payload,
    _s,
    _task_id_of,
    _task_name_of,
)
from collectors.writes.export import ExportFiles
from collectors.writes.lookup import LedgerLookup

SEARCH_WINDOW = 1000
"""Messages looked at from each end of a priority list when searching a queue for a task id."""


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """One message held in taskdash's dead-letter store (the body is kept whole in Redis)."""

    id: str
    task_id: str | None
    task: str | None
    queue: str | None
    reason: str
    quarantined_at: float
    deliveries: int | None
    source: str  # "unacked" | "queue"


class QuarantineWrites(ExportFiles, LedgerLookup):
    """Moves messages into the quarantine and out of it again (replay, delete), and reads it."""

    history_path: Path | None = None
    """The persistent history whose delivery counts a quarantine without ``deliveries`` uses (default:
    ``collectors.analysis.history.default_path()``, the file the dashboard writes)."""

    def _history_deliveries(self, task_id: str | None) -> int | None:
        """Deliveries the dashboard's poison tracker recorded for ``task_id`` (None: unknown).

        Read-only (``mode=ro``): a missing file is not created, nothing is pruned or written.
        """
        if not task_id:
            return None
        path = self.history_path
        if path is None:
            from collectors.analysis.history import default_path

            path = default_path()
        if not Path(path).exists():
            return None
        scope = self.settings.context or self.settings.broker_masked
        try:
            db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
            try:
                row = db.execute("SELECT deliveries FROM deliveries WHERE scope = ? AND task_id = ?",
                                 (scope, task_id)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return int(row[0]) if row and row[0] is not None else None

    def _deliveries(self, given: int | None, task_id: str | None, payload: Mapping[str, Any],
                    proven: int) -> tuple[int, str]:
        """(deliveries, where the count comes from) for one quarantined message."""
        if given is not None:
            return given, "caller"
        known = self._history_deliveries(task_id)
        redelivered = bool((payload.get("headers") or {}).get("redelivered"))
        floor = proven + 1 if redelivered else proven
        if known is not None and known >= floor:
            return known, "history"
        return floor, "message"


    def _new_qid(self) -> str:
        return "q-" + uuid.uuid4().hex[:16]

    def _record_json(self, *, qid: str, raw: bytes, message: bytes | str, key: str, queue: str | None,
                     band: int, payload: Mapping[str, Any], source: str, reason: str, deliveries: int | None,
                     tag: str | None, exchange: str, routing_key: str, now: float,
                     deliveries_source: str | None = None) -> str:
        rec: dict[str, Any] = {
            "id": qid, "task_id": _task_id_of(payload), "task": _task_name_of(payload), "queue": queue,
            "key": key, "band": band, "exchange": exchange, "routing_key": routing_key, "tag": tag,
            "reason": reason, "quarantined_at": now, "deliveries": deliveries, "source": source,
            "actor": self.actor,
        }
        if deliveries_source is not None:
            rec["deliveries_source"] = deliveries_source
        rec.update(_enc(raw, "raw"))
        rec.update(_enc(_b(message), "message"))
        return json.dumps(rec, sort_keys=True)

    def _quarantine_unacked(self, entry: _Entry, reason: str, deliveries: int | None,
                            done: list[dict[str, Any]]) -> int:
        queues = self._queues_for(entry.exchange, entry.routing_key)
        queue = queues[0] if queues else (entry.routing_key or None)
        pri = _priority_of(entry.payload)
        key = self.keys.queue_key(queue, pri) if queue else ""
        now = time.time()
        qid = self._new_qid()
        count, src = self._deliveries(deliveries, entry.task_id, entry.payload, 1)
        rec = self._record_json(qid=qid, raw=entry.raw, message=_restored_payload(entry), key=key,
                                queue=queue, band=self.keys.band(pri), payload=entry.payload,
                                source="unacked", reason=reason, deliveries=count, tag=entry.tag,
                                exchange=entry.exchange, routing_key=entry.routing_key, now=now,
                                deliveries_source=src)
        rc = scripts.unacked_to_quarantine(
            self.client, unacked=self.keys.unacked, index=self.keys.unacked_index, quarantine=self.quarantine_hash,
            quarantine_index=self.quarantine_index, tag=entry.tag, expected=entry.raw, qid=qid, record=rec,
            now=repr(now))
        if rc == 1:
            done.append({"id": qid, "task_id": entry.task_id, "source": "unacked", "tag": entry.tag,
                         "queue": queue, "deliveries": count, "deliveries_source": src})
        return 1 if rc == 1 else 0

    def _search_queue(self, queue: str, task_id: str) -> list[tuple[str, int, bytes, dict[str, Any]]]:
        """(key, band, exact bytes, payload) of messages of ``task_id`` near both ends of each list."""
        needle = task_id.encode("utf-8")
        out: list[tuple[str, int, bytes, dict[str, Any]]] = []
        for band, key in self.keys.queue_keys(queue):
            pipe = self.client.pipeline(transaction=False)
            pipe.llen(key)
            pipe.lrange(key, 0, SEARCH_WINDOW - 1)
            pipe.lrange(key, -SEARCH_WINDOW, -1)
            length, head, tail = pipe.execute()
            items = list(head) if length <= SEARCH_WINDOW else list(head) + list(tail)
            seen: set[bytes] = set()
            for item in items:
                data = _b(item)
                if needle not in data or data in seen:
                    continue
                seen.add(data)
                try:
                    payload = json.loads(data)
                except ValueError:
                    continue
                if isinstance(payload, dict) and _task_id_of(payload) == task_id:
                    out.append((key, band, data, payload))
        return out

    def quarantine(self, *, tags: Sequence[str] = (), task_ids: Sequence[str] = (), reason: str = "",
                   deliveries: int | None = None, queues: Sequence[str] | None = None) -> ActionResult:
        """Move messages (unacked or waiting in a queue) into taskdash's dead-letter store, atomically.

        A message is found by delivery tag (``unacked``) or by task id (``unacked`` and the queues, both
        ends of each priority list within ``SEARCH_WINDOW``). Each move is one script: the exact bytes
        are removed from where they were (HDEL+ZREM, or LREM of that element) and the whole message is
        stored with metadata. A worker that still holds the message can finish (or crash) once, but any
        requeue it then attempts finds nothing, so a poison loop stops.

        Args:
            tags: Delivery tags in ``unacked``.
            task_ids: Task ids to look for in ``unacked`` and in the queues.
            reason: Why (kept with the message, shown in the Quarantine view).
            deliveries: Deliveries seen so far (from the poison detector), kept as metadata.
            queues: Queues to search for ``task_ids`` (default: the app's and every bound queue).
        """
        self._guard("quarantine")
        if not tags and not task_ids:
            return ActionResult("quarantine", 0, "nothing to quarantine", {})
        self._check_reachable("quarantine")
        done: list[dict[str, Any]] = []
        missing: list[str] = []
        reason = reason or "quarantined by taskdash"
        with self._errors("quarantine"):
            for tag in dict.fromkeys(str(t) for t in tags):
                entry = self._read_entries([tag])[tag]
                if entry is None or not self._quarantine_unacked(entry, reason, deliveries, done):
                    missing.append(tag)
            search = list(queues) if queues is not None else None
            for task_id in dict.fromkeys(str(t) for t in task_ids):
                found = 0
                # a message can be in flight (BRPOPed, not yet in unacked) for a few ms: look a few times
                for attempt in range(6):
                    for tag in self.find_tags(task_id):
                        entry = self._read_entries([tag])[tag]
                        if entry is not None:
                            found += self._quarantine_unacked(entry, reason, deliveries, done)
                    if search is None:
                        search = self._known_queues()
                    elif attempt == 1 and queues is None:
                        search = list(dict.fromkeys(search + self._scanned_queues()))
                    for queue in search:
                        for key, band, data, payload in self._search_queue(queue, task_id):
                            found += self._quarantine_listed(queue, key, band, data, payload, reason,
                                                             deliveries, done)
                    if found:
                        break
                    if attempt < 5:
                        time.sleep(0.2)
                if not found:
                    missing.append(task_id)
        count = len(done)
        if count == 0:
            raise ActionError(f"quarantine: nothing matched {', '.join(missing)[:300]} "
                              "(not in unacked nor in the searched queues)")
        self._record("quarantine", list(tags) + list(task_ids), count, reason=reason, items=done,
                     missing=missing, store=self.quarantine_hash)
        msg = f"quarantined {count} message(s)"
        if missing:
            msg += f"; not found: {', '.join(missing)[:200]}"
        return ActionResult("quarantine", count, msg, {"items": done, "missing": missing})

    def _quarantine_listed(self, queue: str, key: str, band: int, data: bytes, payload: Mapping[str, Any],
                           reason: str, deliveries: int | None, done: list[dict[str, Any]]) -> int:
        now = time.time()
        qid = self._new_qid()
        props = payload.get("properties") or {}
        dinfo = props.get("delivery_info") or {} if isinstance(props, Mapping) else {}
        count, src = self._deliveries(deliveries, _task_id_of(payload), payload, 0)
        rec = self._record_json(qid=qid, raw=data, message=data, key=key, queue=queue, band=band,
                                payload=payload, source="queue", reason=reason, deliveries=count,
                                tag=str(props.get("delivery_tag")) if isinstance(props, Mapping) else None,
                                exchange=str(dinfo.get("exchange") or ""),
                                routing_key=str(dinfo.get("routing_key") or queue), now=now,
                                deliveries_source=src)
        rc = scripts.list_to_quarantine(self.client, source=key, quarantine=self.quarantine_hash,
                                        quarantine_index=self.quarantine_index, message=data, qid=qid, record=rec,
                                        now=repr(now))
        if rc == 1:
            done.append({"id": qid, "task_id": _task_id_of(payload), "source": "queue", "key": key,
                         "queue": queue, "deliveries": count, "deliveries_source": src})
        return rc

    def _quarantine_records(self, limit: int | None = None) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
        """(id, exact record bytes, record) newest first, in bounded pages."""
        offset = 0
        yielded = 0
        while True:
            ids = [_s(i) for i in self.client.zrevrange(self.quarantine_index, offset, offset + BATCH - 1)]
            if not ids:
                return
            raws = self.client.hmget(self.quarantine_hash, ids)
            for qid, raw in zip(ids, raws, strict=True):
                if raw is None:
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                yield qid, _b(raw), rec
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            if len(ids) < BATCH:
                return
            offset += BATCH

    def list_quarantine(self, limit: int = 500) -> list[QuarantinedMessage]:
        """Quarantined messages, newest first (at most ``limit``)."""
        out: list[QuarantinedMessage] = []
        with self._errors("quarantine list"):
            for qid, _raw, rec in self._quarantine_records(limit):
                out.append(QuarantinedMessage(
                    id=qid, task_id=rec.get("task_id"), task=rec.get("task"), queue=rec.get("queue"),
                    reason=str(rec.get("reason") or ""), quarantined_at=float(rec.get("quarantined_at") or 0.0),
                    deliveries=rec.get("deliveries"), source=str(rec.get("source") or "")))
        return out

    def _resolve_quarantine(self, ids: Sequence[str]) -> tuple[list[tuple[str, bytes, dict[str, Any]]], list[str]]:
        """Records for quarantine ids or task ids; (found, not found)."""
        found: list[tuple[str, bytes, dict[str, Any]]] = []
        missing: list[str] = []
        wanted = list(dict.fromkeys(str(i) for i in ids))
        direct = self.client.hmget(self.quarantine_hash, wanted) if wanted else []
        by_task: list[str] = []
        for ident, raw in zip(wanted, direct, strict=True):
            if raw is not None:
                try:
                    found.append((ident, _b(raw), json.loads(raw)))
                except ValueError:
                    missing.append(ident)
            else:
                by_task.append(ident)
        if by_task:
            left = set(by_task)
            for qid, raw, rec in self._quarantine_records():
                if rec.get("task_id") in left:
                    found.append((qid, raw, rec))
            matched = {rec.get("task_id") for _, _, rec in found}
            missing.extend(t for t in by_task if t not in matched)
        return found, missing

    def replay(self, ids: Sequence[str]) -> ActionResult:
        """Put quarantined messages back on their original queue's priority list (LPUSH, like a publish).

        ``ids`` are quarantine ids or task ids. Removal from quarantine and the push are one script.
        """
        self._guard("replay")
        self._check_reachable("replay")
        done: list[dict[str, Any]] = []
        with self._errors("replay"):
            found, missing = self._resolve_quarantine(ids)
            for qid, raw, rec in found:
                message = _dec(rec, "message")
                key = rec.get("key")
                if message is None or not key:
                    missing.append(qid)
                    continue
                rc = scripts.quarantine_pop(self.client, quarantine=self.quarantine_hash,
                                            quarantine_index=self.quarantine_index, target=key, qid=qid,
                                            expected=raw, message=message, end="L")
                if rc == 1:
                    done.append({"id": qid, "task_id": rec.get("task_id"), "key": key})
                else:
                    missing.append(qid)
        if not done:
            raise ActionError(f"replay: nothing matched {', '.join(str(i) for i in ids)[:300]}")
        self._record("replay", list(ids), len(done), items=done, missing=missing)
        keys = sorted({self.display_key(str(d["key"])) for d in done})
        msg = f"replayed {len(done)} message(s) to {', '.join(keys)}"
        if missing:
            msg += f"; not found: {', '.join(missing)[:200]}"
        return ActionResult("replay", len(done), msg, {"items": done, "missing": missing})

    def delete_quarantined(self, ids: Sequence[str]) -> ActionResult:
        """Drop quarantined messages for good (after confirmation); their records go to a JSONL file first.

        The file (in the state dir) is named in the audit line, so ``restore`` can undo the deletion.
        """
        self._guard("delete")
        self._check_reachable("delete")
        with self._errors("delete"):
            found, missing = self._resolve_quarantine(ids)
            if not found:
                raise ActionError(f"delete: nothing matched {', '.join(str(i) for i in ids)[:300]}")
            path = self._default_export_path("quarantine-deleted")
            with self._open_export(path, "delete_quarantined", None) as fh:
                for _qid, raw, _rec in found:
                    fh.write(json.dumps({"type": "quarantine", **_enc(raw, "record")}) + "\n")
            done: list[str] = []
            for qid, raw, _rec in found:
                rc = scripts.quarantine_pop(self.client, quarantine=self.quarantine_hash,
                                            quarantine_index=self.quarantine_index, target=self.quarantine_hash,
                                            qid=qid, expected=raw, message="", end="L")
                if rc == 1:
                    done.append(qid)
                else:
                    missing.append(qid)
        if not done:
            raise ActionError("delete: the messages changed meanwhile; nothing deleted")
        self._record("delete_quarantined", list(ids), len(done), ids=done, export=str(path), missing=missing)
        return ActionResult("delete_quarantined", len(done),
                            f"deleted {len(done)} quarantined message(s) (copy in {path})",
                            {"ids": done, "export": str(path), "missing": missing})

    def export_quarantine(self, path: str) -> ActionResult:
        """Write every quarantined message (whole record, exact bytes) to ``path`` as JSONL.

        Reads only; allowed in read-only mode and not audited. ``restore(path)`` puts them back.
        """
        count = 0
        with self._errors("export"):
            with self._open_export(Path(path), "export_quarantine", None) as fh:
                for _qid, raw, _rec in self._quarantine_records():
                    fh.write(json.dumps({"type": "quarantine", **_enc(raw, "record")}) + "\n")
                    count += 1
        return ActionResult("export_quarantine", count, f"exported {count} quarantined message(s) to {path}",
                            {"path": str(path)})
