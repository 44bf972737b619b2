"""The audit log: one JSON line per write action (who, when, what, how many, how to undo it).

Every write in ``collectors.writes.actions`` appends exactly one line here after it changed something; a
refused write (read-only mode, a live worker owns the message, nothing matched before any change) writes
nothing. The default location is ``<user state dir>/taskdash/audit.jsonl`` (platformdirs); it can be set
with ``--audit-log`` / ``TASKDASH_AUDIT_LOG`` (``Settings.audit_log``).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from collectors.core.config import Settings, mask_text

_LOCK = threading.Lock()


def state_dir() -> Path:
    """taskdash's per-user state directory (audit log, purge exports)."""
    return Path(platformdirs.user_state_dir("taskdash"))


def default_audit_path() -> Path:
    """Where the audit log goes when nothing else is configured."""
    return state_dir() / "audit.jsonl"


def audit_path(settings: Settings) -> Path:
    """The audit log file: ``settings.audit_log``, else ``$TASKDASH_AUDIT_LOG``, else the default."""
    configured = settings.audit_log or os.environ.get("TASKDASH_AUDIT_LOG")
    if configured:
        return Path(configured).expanduser()
    return default_audit_path()


def default_actor() -> str:
    """``user@host`` of the person running taskdash (best effort, never raises)."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


class AuditLog:
    """Appends one JSON object per line to the audit file; thread-safe, fsynced, never rewritten.

    Args:
        path: The audit file (parent directories are created on first write).
        actor: Who performs the actions (``user@host``).
        broker: The broker URL; only its masked form is ever written.
    """

    def __init__(self, path: str | Path, actor: str, broker: str) -> None:
        self.path = Path(path)
        self.actor = actor
        self._broker_url = broker
        self.broker = mask_text(broker, broker)

    def record(self, action: str, target: Any, count: int, **details: Any) -> dict[str, Any]:
        """Append one line describing a write and return the object written.

        Args:
            action: The action name (``requeue``, ``purge``, ...).
            target: What was acted on (queue name, list of tags or task ids).
            count: How many messages/tasks were changed.
            **details: Whatever is needed to undo the action (tags, ids, export file path, ...).
        """
        entry: dict[str, Any] = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "actor": self.actor,
            "action": action,
            "target": target,
            "count": int(count),
            "broker": self.broker,
        }
        for key, value in details.items():
            if key not in entry:
                entry[key] = value
        line = json.dumps(entry, default=str, sort_keys=False)
        line = mask_text(line, self._broker_url)
        with _LOCK:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry


def read_audit(path: str | Path, limit: int | None = None) -> list[Mapping[str, Any]]:
    """The last ``limit`` audit entries of ``path`` (all when None); unparsable lines are skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out: list[Mapping[str, Any]] = []
    with p.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out if limit is None else out[-limit:]
