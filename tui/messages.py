"""App-wide messages: snapshots from the poll thread, requests from panels, action results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from collectors.core.models import Snapshot


@dataclass
class SnapshotReady(Message):
    """A fresh snapshot, posted from the poll worker thread."""

    snapshot: Snapshot
    generation: int = 0
    """Which collector produced it (bumped by ``:ctx``: a late snapshot of the old context is dropped)."""

    def can_replace(self, message: Message) -> bool:
        """Only the newest queued snapshot is rendered."""
        return isinstance(message, SnapshotReady)


@dataclass
class CollectFailed(Message):
    """``collect()`` raised (a bug or an unexpected error); the app keeps running and retries."""

    error: str
    generation: int = 0


@dataclass
class QuarantineListed(Message):
    """The quarantine list, read in a thread worker."""

    entries: tuple[Any, ...]
    error: str | None = None


@dataclass
class WriteRequested(Message):
    """A panel asks the app to run a write action (after confirmation).

    Attributes:
        kind: "requeue", "requeue_orphaned", "quarantine", "purge", "revoke", "retry", "replay",
            "delete_quarantined".
        items: The model objects the action applies to, captured when the key was pressed.
    """

    kind: str
    items: tuple[Any, ...] = ()
    command: Any = None
    """For "control": the parsed ``collectors.writes.control.ControlCommand``."""


@dataclass
class ActionDone(Message):
    """A write finished (or was refused): posted by the action thread worker, notified by the app.

    Unexpected crashes of the worker still arrive as ``Worker.StateChanged`` (state ERROR).
    """

    title: str
    """Notification title ("Requeue", "Refused", "Failed (ConnectionError)", ...)."""
    message: str
    """Result line (credentials masked)."""
    severity: str = "information"
    """"information", "warning" (nothing changed) or "error"."""
    quarantine_changed: bool = False
    """The quarantine list changed: the app re-reads it."""


@dataclass
class DetailRequested(Message):
    """A panel asks for the detail screen of one row."""

    kind: str
    item: Any
