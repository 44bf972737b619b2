"""taskdash's JSONL export file: written before anything is deleted, read back by ``restore``.

One header line (``{"type": "header", "format": "taskdash-export", "version", "id", "action", ...}``),
then one line per item: ``message`` (a queued message, exact bytes, its list key and band), ``unacked``
(an unacked entry with its tag and delivery time), ``quarantine`` (a whole quarantine record) or
``skipped`` (an unacked tag that changed between export and delete, so restore leaves it out). Values
are byte-exact: UTF-8 text as is, anything else base64 (``raw`` / ``raw_b64``).
"""

from __future__ import annotations

import binascii
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from collectors.core.audit import default_audit_path, state_dir
from collectors.writes.base import ActionError, WriteBase, _dec_strict, _finite, _safe_name

EXPORT_VERSION = 1


class ExportFiles(WriteBase):
    """Creates export files (header first, fsynced before the caller deletes) and validates them for restore."""


    def _default_export_path(self, what: str) -> Path:
        """A new file under ``exports/`` beside the audit log (the user's state dir by default)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        base = self.audit.path.parent if self.audit.path != default_audit_path() else state_dir()
        return base / "exports" / f"{_safe_name(what)}-{stamp}.jsonl"

    @contextmanager
    def _open_export(self, path: Path, action: str, queue: str | None) -> Iterator[TextIO]:
        """A new export file with a header line; flushed and fsynced before the caller deletes anything."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            header = {"type": "header", "format": "taskdash-export", "version": EXPORT_VERSION,
                      "id": uuid.uuid4().hex, "action": action, "queue": queue, "ts": time.time(),
                      "broker": self.settings.broker_masked, "prefix": self.settings.global_keyprefix,
                      "actor": self.actor}
            fh.write(json.dumps(header) + "\n")
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def _parse_export(self, p: Path) -> tuple[dict[str, Any], list[tuple[int, str, Any]]]:
        """Read, decode and validate a whole export before anything is written.

        Returns the header and ``(line, kind, data)`` items: ``("message", (key, raw))``,
        ``("unacked", (tag, raw, score))`` or ``("quarantine", (id, record_bytes, quarantined_at))``.
        Any damaged line (not JSON, bad base64, missing key/tag, a quarantine record that is not JSON
        or has no id) raises ActionError naming its line number; unacked entries whose tag a
        ``skipped`` line names are left out.
        """
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ActionError(self._mask(f"restore: cannot read {p}: {exc}")) from exc
        header: dict[str, Any] = {}
        items: list[tuple[int, str, Any]] = []
        skipped: set[str] = set()
        skipped_lines: set[int] = set()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                kind = obj.get("type")
                if kind == "header":
                    header = obj
                elif kind == "skipped":
                    if isinstance(obj.get("line"), int):  # a bulk batch's message that was gone (issue 18)
                        skipped_lines.add(int(obj["line"]))
                    else:
                        skipped.add(str(obj.get("tag")))
                elif kind == "message":
                    key = obj.get("key")
                    if not isinstance(key, str) or not key:
                        raise ValueError("no 'key'")
                    items.append((n, kind, (key, _dec_strict(obj, "raw"))))
                elif kind == "unacked":
                    tag = obj.get("tag")
                    if not isinstance(tag, str) or not tag:
                        raise ValueError("no 'tag'")
                    score = obj.get("score")
                    items.append((n, kind, (tag, _dec_strict(obj, "raw"),
                                            None if score is None else _finite(score, "score"))))
                elif kind == "quarantine":
                    rec_raw = _dec_strict(obj, "record")
                    rec = json.loads(rec_raw)
                    if not isinstance(rec, dict):
                        raise ValueError("the quarantine record is not a JSON object")
                    qid = rec.get("id")
                    if not isinstance(qid, str) or not qid:
                        raise ValueError("the quarantine record has no 'id'")
                    items.append((n, kind, (qid, rec_raw, _finite(rec.get("quarantined_at") or 0, "quarantined_at"))))
            except (ValueError, TypeError, binascii.Error) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
                raise ActionError(self._mask(f"restore refused, nothing was changed: {p} line {n} is damaged "
                                             f"({type(exc).__name__}: {exc})")) from exc
        if header.get("format") != "taskdash-export":
            raise ActionError(self._mask(f"restore: {p} is not a taskdash export"))
        if not isinstance(header.get("id"), str) or not header["id"]:
            raise ActionError(self._mask(f"restore: {p} has no export id in its header"))
        items = [it for it in items if not (it[1] == "unacked" and it[2][0] in skipped)]
        items = [it for it in items if it[0] not in skipped_lines]
        return header, items
