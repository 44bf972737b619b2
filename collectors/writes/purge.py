"""Writes that empty a queue and put things back: purge (export first), its preview, and restore.

``purge`` RENAMEs a queue's priority lists to temporary keys in one script (``scripts.RENAME_LISTS``;
producers keep writing to fresh lists), writes every message to a JSONL export (:mod:`.export`),
fsyncs it, and only then deletes the temporaries; if the export fails they are put back
(``scripts.UNDO_RENAME``). ``restore`` validates a whole export before writing anything and appends
what it holds back where it came from, once (a marker key refuses a second restore unless forced).

A preview counts the lists at one moment; a purge takes whatever the lists hold when it runs, so
messages that arrive in between are purged (and exported) too. ``purge`` reports exactly what it
exported and deleted, and, when this object previewed the queue, how that differs from the preview
("purged 477 message(s) (11 arrived since the preview)"), so neither the CLI nor the TUI can show a
smaller number than what was deleted.
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
    taken_at: float = 0.0
    """When the lists were counted (epoch s): the counts are as of then, not of the purge."""


def _plural(n: int, what: str = "message(s)") -> str:
    return f"{n:,} {what}"


class PurgeWrites(ExportFiles, LedgerLookup):
    """Purges a queue (after exporting it) and restores exports (purges, deleted quarantine, exports)."""

    def _previews(self) -> dict[str, PurgePreview]:
        """The last preview of each queue this object read (``purge`` compares its result with it)."""
        return self.__dict__.setdefault("_purge_previews", {})  # type: ignore[no-any-return]

    def _liveness_orphaned(self, entries: Sequence[_Entry]) -> set[str] | None:
        """Tags of ``entries`` the liveness evidence (``self.evidence``, e.g. the dashboard's collector)
        calls orphaned: every worker that could have received them is proven dead. None without evidence.

        No inspect round trip: the evidence was already watched (heartbeats, inspect, connections).
        """
        evidence = getattr(self, "evidence", None)
        if not callable(evidence):
            return None
        return {tag for tag, u in self._classified(entries, evidence()).items() if u.state == "orphaned"}


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
        """Counts per priority list of ``queue`` (as of ``taken_at``), and how many of its unacked entries
        are orphaned.

        With liveness evidence (``self.evidence``: the dashboard sets it) the orphaned count comes from it
        and the preview costs a few round trips; without it the workers are asked (``live_task_ids``, about
        one ``inspect_timeout``). The preview is remembered, so ``purge`` can say what changed since.
        """
        with self._errors("purge preview"):
            keys = self.keys.queue_keys(queue)
            pipe = self.client.pipeline(transaction=False)
            for _band, key in keys:
                pipe.llen(key)
            taken_at = time.time()
            lens = [int(n) for n in pipe.execute()]
            unacked = orphaned = 0
            if callable(getattr(self, "evidence", None)):
                entries = [entry for entry, _orph in self._unacked_of_queue(queue, None, None)]
                unacked = len(entries)
                orphaned = len(self._liveness_orphaned(entries) or ())
            else:
                t0 = time.time()
                live = self.live_task_ids()
                cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(None))
                for _entry, orph in self._unacked_of_queue(queue, live, cutoff):
                    unacked += 1
                    orphaned += int(orph)
        by_pri = tuple((band, n) for (band, _k), n in zip(keys, lens, strict=True))
        preview = PurgePreview(queue, by_pri, sum(lens), unacked, orphaned, taken_at)
        self._previews()[queue] = preview
        return preview

    def purge(self, queue: str, *, include_unacked: bool = False, export_path: str | None = None) -> ActionResult:
        """Delete every waiting message of ``queue`` after writing them all to a JSONL export.

        The priority lists are first RENAMEd to temporary keys in one script (producers keep writing to
        fresh lists), exported from there, fsynced, and only then deleted; if the export fails they are
        put back. With ``include_unacked`` the queue's orphaned unacked entries are exported and then
        removed by compare-and-delete (no live worker reports them, and, with liveness evidence, every
        worker that could hold them is proven dead). ``restore(export)`` undoes it.

        The result counts what was exported and deleted (``details``: ``deleted``, ``exported``,
        ``by_priority``, ``unacked``) and, after a preview of the same queue, ``previewed`` /
        ``arrived_since_preview`` (negative: consumed meanwhile) / ``preview_age_s``.
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
            counts = [int(n) for n in scripts.rename_lists(self.client, [k for _b2, k in keys], tmp)]
            renamed_at = time.time()
            exported = 0
            try:
                with self._open_export(path, "purge", queue) as fh:
                    for (band, key), tkey, n in zip(keys, tmp, counts, strict=True):
                        by_band[band] = n
                        written = 0
                        for start in range(0, n, 1000):
                            for i, item in enumerate(self.client.lrange(tkey, start, start + 999)):
                                fh.write(json.dumps({"type": "message", "queue": queue, "key": key, "band": band,
                                                     "index": start + i, **_enc(item)}) + "\n")
                                written += 1
                        if written != n:  # never delete what the export does not hold
                            raise ActionError(f"purge of {queue}: {self.display_key(key)} held {n} message(s) "
                                              f"but {written} were read back for the export; nothing deleted")
                        exported += written
                    entries: list[_Entry] = []
                    if include_unacked:
                        candidates = [entry for entry, orphaned in self._unacked_of_queue(queue, live, cutoff)
                                      if orphaned]
                        proven = self._liveness_orphaned(candidates)
                        for entry in candidates:
                            if proven is not None and entry.tag not in proven:
                                continue  # not claimed, but a worker not proven dead may hold it
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
        deleted = sum(counts)
        total = deleted + len(unacked_done)
        details: dict[str, Any] = {
            "queue": queue, "export": str(path), "by_priority": by_band, "unacked": unacked_done,
            "deleted": deleted, "exported": {"messages": exported, "unacked": len(entries) if include_unacked else 0},
        }
        preview = self._previews().pop(queue, None)
        if preview is not None:
            details.update(previewed=preview.total, arrived_since_preview=deleted - preview.total,
                           preview_age_s=round(max(0.0, renamed_at - preview.taken_at), 3))
        self._record("purge", queue, total, **details)
        return ActionResult("purge", total, self._purge_message(queue, path, details), details)

    @staticmethod
    def _purge_message(queue: str, path: Path, d: Mapping[str, Any]) -> str:
        """One line with exactly what was deleted and exported, and how that differs from the preview.

        ``purged 477 message(s) from Q; export: FILE (all 477 exported; 11 arrived since the preview of 466)``
        (the text up to ``; export:`` is unchanged from before, scripts may read it).
        """
        deleted = int(d["deleted"])
        unacked = len(d["unacked"])
        exported = int(d["exported"]["messages"]) + int(d["exported"]["unacked"])
        msg = f"purged {_plural(deleted)} from {queue}"
        if d["exported"]["unacked"] or unacked:
            msg += f" and {_plural(unacked, 'orphaned unacked')}"
        notes = [f"{'all ' if exported == deleted + unacked else ''}{exported:,} exported"]
        skipped = int(d["exported"]["unacked"]) - unacked
        if skipped:
            notes.append(f"{skipped:,} unacked changed before the delete and were kept")
        delta = d.get("arrived_since_preview")
        if delta is not None:
            if delta > 0:
                notes.append(f"{delta:,} arrived since the preview of {d['previewed']:,}")
            elif delta < 0:
                notes.append(f"{-delta:,} fewer than the preview of {d['previewed']:,}: consumed meanwhile")
            else:
                notes.append("as previewed")
        return f"{msg}; export: {path} ({'; '.join(notes)})"

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
