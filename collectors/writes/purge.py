"""Writes that empty a queue and put things back: purge (export first), its preview, and restore.

``purge`` RENAMEs a queue's priority lists to temporary keys in one script (``scripts.RENAME_LISTS``;
producers keep writing to fresh lists), writes every message to a JSONL export (:mod:`.export`),
fsyncs it, and only then deletes the temporaries; if the export fails they are put back
(``scripts.UNDO_RENAME``). ``restore`` validates a whole export before writing anything and appends
what it holds back where it came from, once (a marker key refuses a second restore unless forced).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import redis

from collectors.keyspace import scripts
from collectors.writes.base import (
    FRESH_MARGIN,
    ActionError,
    ActionResult,
    BrokerUnreachableError,
    _enc,
    _Entry,
    _line_ranges,
    _parse_entry,
)
from collectors.writes.export import ExportFiles
from collectors.writes.lookup import LedgerLookup


@dataclass(frozen=True, slots=True)
class PurgePreview:
    """What ``purge(queue)`` would delete: per priority band counts, and the queue's unacked entries."""

    queue: str
    by_priority: tuple[tuple[int, int], ...]
    total: int
    unacked: int
    orphaned_unacked: int


class PurgeWrites(ExportFiles, LedgerLookup):
    """Purges a queue (after exporting it) and restores exports (purges, deleted quarantine, exports)."""


    def _unacked_of_queue(self, queue: str, live: set[str] | None,
                          cutoff: float | None) -> Iterator[tuple[_Entry, bool]]:
        """(entry, orphaned) for every unacked entry that belongs to ``queue`` (bounded pages)."""
        for page in self._iter_unacked_batches(None):
            raws = self.client.hmget(self.keys.unacked, [t for t, _ in page])
            for (tag, score), raw in zip(page, raws, strict=True):
                entry = _parse_entry(tag, raw, score)
                if entry is None or queue not in self._queues_for(entry.exchange, entry.routing_key):
                    continue
                orphaned = (live is not None and not (entry.task_id and entry.task_id in live)
                            and cutoff is not None and score <= cutoff)
                yield entry, orphaned

    def purge_preview(self, queue: str) -> PurgePreview:
        """Counts per priority list of ``queue``, and how many of its unacked entries are orphaned."""
        with self._errors("purge preview"):
            keys = self.keys.queue_keys(queue)
            pipe = self.client.pipeline(transaction=False)
            for _band, key in keys:
                pipe.llen(key)
            lens = [int(n) for n in pipe.execute()]
            t0 = time.time()
            live = self.live_task_ids()
            cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(None))
            unacked = orphaned = 0
            for _entry, orph in self._unacked_of_queue(queue, live, cutoff):
                unacked += 1
                orphaned += int(orph)
        by_pri = tuple((band, n) for (band, _k), n in zip(keys, lens, strict=True))
        return PurgePreview(queue, by_pri, sum(lens), unacked, orphaned)

    def purge(self, queue: str, *, include_unacked: bool = False, export_path: str | None = None) -> ActionResult:
        """Delete every waiting message of ``queue`` after writing them all to a JSONL export.

        The priority lists are first RENAMEd to temporary keys in one script (producers keep writing to
        fresh lists), exported from there, fsynced, and only then deleted; if the export fails they are
        put back. With ``include_unacked`` the queue's orphaned unacked entries are exported and then
        removed by compare-and-delete. ``restore(export)`` undoes it.
        """
        self._guard("purge")
        self._check_reachable("purge")
        path = Path(export_path).expanduser() if export_path else self._default_export_path(f"purge-{queue}")
        if path.exists():
            raise ActionError(f"purge refused: export file {path} already exists")
        live: set[str] | None = None
        cutoff: float | None = None
        if include_unacked:
            t0 = time.time()
            live = self.live_task_ids()
            if live is None:
                raise ActionError("purge refused: cannot ask the workers which unacked messages are theirs "
                                  "(no reply to inspect); purge without --include-unacked")
            cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(None))
        token = uuid.uuid4().hex[:12]
        keys = self.keys.queue_keys(queue)
        tmp = [self.keys.purge_temp(token, band) for band, _k in keys]
        by_band: dict[int, int] = {}
        unacked_done: list[str] = []
        with self._errors("purge"):
            counts = scripts.rename_lists(self.client, [k for _b2, k in keys], tmp)
            try:
                with self._open_export(path, "purge", queue) as fh:
                    for (band, key), tkey, n in zip(keys, tmp, counts, strict=True):
                        by_band[band] = n
                        for start in range(0, n, 1000):
                            for i, item in enumerate(self.client.lrange(tkey, start, start + 999)):
                                fh.write(json.dumps({"type": "message", "queue": queue, "key": key, "band": band,
                                                     "index": start + i, **_enc(item)}) + "\n")
                    entries: list[_Entry] = []
                    if include_unacked:
                        for entry, orphaned in self._unacked_of_queue(queue, live, cutoff):
                            if orphaned:
                                entries.append(entry)
                                fh.write(json.dumps({"type": "unacked", "queue": queue, "tag": entry.tag,
                                                     "score": entry.score, **_enc(entry.raw)}) + "\n")
            except BaseException as exc:
                try:
                    scripts.undo_rename(self.client, [k for _b2, k in keys], tmp)
                except redis.RedisError as undo_exc:
                    raise ActionError(self._mask(
                        f"purge of {queue} failed ({exc}) and its messages could not be put back "
                        f"({undo_exc}): they are safe in {', '.join(tmp)}")) from exc
                with suppress(OSError):
                    path.unlink()
                raise
            self.client.delete(*tmp)
            if include_unacked:
                skipped: list[str] = []
                for entry in entries:
                    score = "" if entry.score is None else repr(float(entry.score))
                    if scripts.delete_unacked(self.client, unacked=self.keys.unacked, index=self.keys.unacked_index,
                                              tag=entry.tag, expected=entry.raw, score=score):
                        unacked_done.append(entry.tag)
                    else:
                        skipped.append(entry.tag)
                if skipped:  # changed between export and delete (acked/restored): restore must skip them
                    with path.open("a", encoding="utf-8") as fh2:
                        for tag in skipped:
                            fh2.write(json.dumps({"type": "skipped", "tag": tag}) + "\n")
        total = sum(counts) + len(unacked_done)
        details = {"queue": queue, "export": str(path), "by_priority": by_band, "unacked": unacked_done}
        self._record("purge", queue, total, **details)
        msg = f"purged {sum(counts)} message(s) from {queue}"
        if include_unacked:
            msg += f" and {len(unacked_done)} orphaned unacked"
        msg += f"; export: {path}"
        return ActionResult("purge", total, msg, details)

    def restore(self, path: str, *, force: bool = False) -> ActionResult:
        """Put back what an export holds: messages (byte-identical, same keys, same order) appended at
        the end consumed next, unacked entries back into ``unacked``, quarantine records back into the
        quarantine. A second restore of the same export is refused unless ``force``.

        The whole file is validated first (a damaged line refuses the restore before anything is
        written, the "already restored" marker included). If Redis fails midway, the marker is removed
        again and the error says exactly which lines were restored.
        """
        self._guard("restore")
        self._check_reachable("restore")
        p = Path(path).expanduser()
        header, items = self._parse_export(p)
        marker = self.keys.restored_marker(header["id"])
        counts = {"message": 0, "unacked": 0, "quarantine": 0}
        done_lines: list[int] = []
        with self._errors("restore"):
            created = bool(self.client.set(marker, str(time.time()), nx=True))
            if not created and not force:
                raise ActionError(f"restore: {p} was already restored (use force to restore it again)")
        pending: list[bytes] = []
        pending_lines: list[int] = []
        pending_key: str | None = None
        current = 0

        def flush() -> None:
            nonlocal current
            if pending and pending_key is not None:
                current = pending_lines[0]
                self.client.rpush(pending_key, *pending)
                counts["message"] += len(pending)
                done_lines.extend(pending_lines)
                pending.clear()
                pending_lines.clear()

        try:
            for n, kind, data in items:
                if kind == "message":
                    key, raw = data
                    if key != pending_key or len(pending) >= 1000:
                        flush()
                        pending_key = key
                    pending.append(raw)
                    pending_lines.append(n)
                    continue
                flush()
                current = n
                pipe = self.client.pipeline(transaction=True)
                if kind == "unacked":
                    tag, raw, score = data
                    pipe.hsetnx(self.keys.unacked, tag, raw)
                    pipe.zadd(self.keys.unacked_index, {tag: time.time() if score is None else score}, nx=True)
                else:
                    qid, rec_raw, at = data
                    pipe.hsetnx(self.quarantine_hash, qid, rec_raw)
                    pipe.zadd(self.quarantine_index, {qid: at}, nx=True)
                if pipe.execute()[0]:
                    counts[kind] += 1
                done_lines.append(n)
            flush()
        except (redis.RedisError, ConnectionError, TimeoutError, OSError) as exc:
            self._restore_failed(p, header, marker if created else None, current, exc, counts, done_lines)
        total = sum(counts.values())
        self._record("restore", str(p), total, export_id=header.get("id"), source_action=header.get("action"),
                     **counts)
        return ActionResult("restore", total, f"restored {counts['message']} message(s), {counts['unacked']} "
                            f"unacked, {counts['quarantine']} quarantined from {p}", {"path": str(p), **counts})

    def _restore_failed(self, p: Path, header: Mapping[str, Any], marker: str | None, line: int,
                        exc: BaseException, counts: Mapping[str, int], done_lines: Sequence[int]) -> NoReturn:
        """A write failed midway: remove the marker we set, audit the partial restore, raise what was done.

        ``marker`` is None on a forced re-run: the marker then records an earlier restore and is kept.
        """
        if marker is None:
            marker_note = "the marker of the earlier restore was kept"
        else:
            try:
                self.client.delete(marker)
                marker_note = "the 'already restored' marker was removed"
            except (redis.RedisError, OSError) as del_exc:
                marker_note = f"the 'already restored' marker {marker} could not be removed ({del_exc})"
        done = (f"{counts['message']} message(s), {counts['unacked']} unacked, {counts['quarantine']} quarantined"
                f" (lines {_line_ranges(done_lines)})" if done_lines else "nothing")
        msg = self._mask(f"restore of {p} failed at line {line} ({type(exc).__name__}: {exc}); restored before "
                         f"the failure: {done}; {marker_note}. Restoring the file again re-adds those lines.")
        with suppress(ActionError):
            self._record("restore", str(p), sum(counts.values()), export_id=header.get("id"),
                         source_action=header.get("action"), partial=True, failed_line=line,
                         restored_lines=_line_ranges(done_lines), error=self._mask(str(exc)), **counts)
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | ConnectionError | TimeoutError):
            raise BrokerUnreachableError(msg) from exc
        raise ActionError(msg) from exc
