"""Write actions on a Celery-on-Redis broker: requeue, quarantine, replay, purge, restore, revoke, retry.

Used by both the TUI (from a worker thread) and the CLI. Every method that changes Redis or Celery:

* raises :class:`ReadOnlyError` (and touches nothing, writes no audit line) when ``settings.read_only``;
* changes each message in ONE atomic step (a Lua script that compares-and-moves the exact bytes it read),
  so it cannot race a worker's ack, kombu's visibility restore or a producer into a loss or a duplicate;
* appends one JSON line to the audit log (``collectors.core.audit``) with enough detail to undo it.

:class:`Actions` is a facade: each group of writes lives with the keys it changes —

* :mod:`collectors.writes.requeue` — the unacked ledger: requeue, requeue_orphaned, orphaned;
* :mod:`collectors.writes.quarantine` — taskdash's dead-letter store: quarantine, replay, delete, export, list;
* :mod:`collectors.writes.purge` — queue lists: purge (export first), purge_preview, restore;
* :mod:`collectors.writes.control` — Celery control broadcasts: revoke, retry (and ``WorkerControl``);

on one guarded base (:mod:`collectors.writes.base`: read-only refusal, error masking, audit, control
connection) and the reads they need (:mod:`collectors.writes.lookup`). Key names come from
:class:`collectors.keyspace.keys.KeyLayout`, scripts from :mod:`collectors.keyspace.scripts`.
"""

from __future__ import annotations

from collectors.writes.base import (
    BATCH,
    FRESH_MARGIN,
    ActionError,
    ActionResult,
    BrokerUnreachableError,
    ReadOnlyError,
)
from collectors.writes.control import ControlWrites
from collectors.writes.export import EXPORT_VERSION
from collectors.writes.lookup import MAX_UNACKED_SCAN
from collectors.writes.purge import PurgePreview, PurgeWrites
from collectors.writes.quarantine import SEARCH_WINDOW, QuarantinedMessage, QuarantineWrites
from collectors.writes.requeue import RequeueWrites

__all__ = [
    "BATCH", "EXPORT_VERSION", "FRESH_MARGIN", "MAX_UNACKED_SCAN", "SEARCH_WINDOW", "ActionError", "ActionResult",
    "Actions", "BrokerUnreachableError", "PurgePreview", "QuarantinedMessage", "ReadOnlyError",
]


class Actions(RequeueWrites, QuarantineWrites, PurgeWrites, ControlWrites):
    """Every write taskdash can do on a broker (plus the reads they need), guarded and audited.

    Args:
        settings: Connection, key layout, read-only flag, audit log path.
        client: A redis-py client on the broker db (bytes responses); built from settings when None.
        app: A Celery app used for control (revoke, inspect) and send_task (retry); a minimal app on
            ``settings.broker_url`` is built when None. Control always runs on a connection with
            ``ack_emulation=False`` so taskdash never triggers kombu's visibility restore itself.
        actor: ``user@host`` written to the audit log (default: the current user).
    """
