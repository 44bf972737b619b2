"""Typed faces of the write API: what a caller (the TUI, a test fake) may rely on.

``ActionsAPI`` mirrors the public methods of ``collectors.writes.actions.Actions`` and
``WorkerControlAPI`` those of ``collectors.writes.control.WorkerControl``, parameter for parameter
(tests/tui/test_api_contract.py compares the signatures of the Protocols, the real classes and the
TUI's fake). Callers type against these Protocols and read the real result types
(``ActionResult``, ``PurgePreview``, ``QuarantinedMessage``), never ``Any``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collectors.writes.actions import ActionResult, PurgePreview, QuarantinedMessage

__all__ = ["ActionsAPI", "WorkerControlAPI"]


@runtime_checkable
class ActionsAPI(Protocol):
    """Broker writes: requeue, quarantine/replay/delete, purge/restore, revoke, retry (all audited)."""

    def delete_quarantined(self, ids: Sequence[str]) -> ActionResult:
        """Drop quarantined messages for good."""
        ...

    def display_key(self, key: str) -> str:
        """A Redis key as shown to the user (prefix-aware)."""
        ...

    def export_quarantine(self, path: str) -> ActionResult:
        """Write the quarantine to a JSONL file."""
        ...

    def find_tags(self, task_id: str) -> list[str]:
        """Delivery tags of the unacked entries of ``task_id``."""
        ...

    def list_quarantine(self, limit: int = 500) -> list[QuarantinedMessage]:
        """The quarantined messages, newest first."""
        ...

    def live_task_ids(self) -> set[str] | None:
        """Task ids a live worker reports (None: inspect unavailable)."""
        ...

    def orphaned(self, *, older_than: float | None = None, live: set[str] | None = None,
                 limit: int | None = None) -> list[tuple[str, float, str | None, str | None]]:
        """Unacked entries no live worker holds: (tag, reserved_at, task_id, queue)."""
        ...

    def orphan_census(self, *, older_than: float | None = None, live: set[str] | None = None,
                      limit: int | None = None
                      ) -> tuple[list[tuple[str, float, str | None, str | None]], dict[str, Any]]:
        """``orphaned`` plus why the other old entries are not orphaned (``refused``, ``held``, ``why``)."""
        ...

    def purge(self, queue: str, *, include_unacked: bool = False, export_path: str | None = None) -> ActionResult:
        """Delete a queue's ready messages (exported first)."""
        ...

    def purge_preview(self, queue: str) -> PurgePreview:
        """What ``purge(queue)`` would delete."""
        ...

    def quarantine(self, *, tags: Sequence[str] = (), task_ids: Sequence[str] = (), reason: str = "",
                   deliveries: int | None = None, queues: Sequence[str] | None = None) -> ActionResult:
        """Move messages (unacked or queued) into taskdash's quarantine."""
        ...

    def replay(self, ids: Sequence[str]) -> ActionResult:
        """Put quarantined messages back on their original queue."""
        ...

    def requeue(self, tags: Sequence[str], *, force: bool = False, live: set[str] | None = None,
                expected: Mapping[str, float] | None = None) -> ActionResult:
        """Move unacked messages back onto their queue (``expected``: delivery times a plan saw)."""
        ...

    def requeue_orphaned(self, *, older_than: float | None = None, force: bool = False) -> ActionResult:
        """Requeue every orphaned unacked message."""
        ...

    def restore(self, path: str, *, force: bool = False) -> ActionResult:
        """Put the messages of a purge export back."""
        ...

    def retry(self, task_id: str) -> ActionResult:
        """Send a failed task again from its stored args."""
        ...

    def revoke(self, task_id: str, *, terminate: bool = False) -> ActionResult:
        """Revoke a task (optionally SIGTERM the process running it)."""
        ...


@runtime_checkable
class WorkerControlAPI(Protocol):
    """Celery control broadcasts to workers (pool size, consumers, limits, shutdown) and worker details."""

    def add_consumer(self, queue: str, destination: Sequence[str] | None = None) -> ActionResult:
        """Start consuming ``queue``."""
        ...

    def autoscale(self, max_: int, min_: int, destination: Sequence[str] | None = None) -> ActionResult:
        """Set the autoscaler bounds."""
        ...

    def broadcast(self, command: str, arguments: Mapping[str, Any] | None = None,
                  destination: Sequence[str] | None = None, *, reply: bool = True) -> dict[str, Any]:
        """Send a raw control command; replies by hostname."""
        ...

    def enable_events(self, destination: Sequence[str] | None = None) -> ActionResult:
        """Celery's ``enable_events``: workers start sending task events."""
        ...

    def cancel_consumer(self, queue: str, destination: Sequence[str] | None = None) -> ActionResult:
        """Stop consuming ``queue``."""
        ...

    def pool_grow(self, n: int = 1, destination: Sequence[str] | None = None) -> ActionResult:
        """Add pool processes."""
        ...

    def pool_restart(self, destination: Sequence[str] | None = None, *, modules: Sequence[str] | None = None,
                     reload: bool = False) -> ActionResult:
        """Restart the pool processes."""
        ...

    def pool_shrink(self, n: int = 1, destination: Sequence[str] | None = None) -> ActionResult:
        """Remove pool processes."""
        ...

    def rate_limit(self, task_name: str, rate: str | int | None,
                   destination: Sequence[str] | None = None) -> ActionResult:
        """Set a task's rate limit."""
        ...

    def shutdown(self, destination: Sequence[str] | None = None) -> ActionResult:
        """Warm-shutdown workers."""
        ...

    def time_limit(self, task_name: str, soft: float | None, hard: float | None,
                   destination: Sequence[str] | None = None) -> ActionResult:
        """Set a task's soft/hard time limits."""
        ...

    def worker_details(self, hostname: str) -> dict[str, Any]:
        """One worker describes itself (stats, pool, queues, registered, conf)."""
        ...
