"""Write layer: every change taskdash makes to the broker, grouped by what it changes. All writes share
one guarded base (read-only refusal, error masking, audit line). Depends on every layer below it.

- ``base``: the guarded base, ``ActionError``/``ReadOnlyError``/``BrokerUnreachableError``, ``ActionResult``;
- ``lookup``: the reads writes need (live task ids, unacked pages, routing);
- ``requeue``: the unacked ledger; ``quarantine``: the dead-letter store; ``purge``: queue lists and
  ``restore``; ``export``: the JSONL export file; ``control``: Celery control broadcasts and
  ``WorkerControl``;
- ``actions``: the ``Actions`` facade over all of them.

The public names are importable from here too (lazily, so ``import collectors.writes`` stays cheap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collectors.writes.actions import Actions
    from collectors.writes.base import ActionError, ActionResult, BrokerUnreachableError, ReadOnlyError
    from collectors.writes.control import ControlCommand, WorkerControl, parse_command
    from collectors.writes.purge import PurgePreview
    from collectors.writes.quarantine import QuarantinedMessage

__all__ = [
    "ActionError",
    "ActionResult",
    "Actions",
    "BrokerUnreachableError",
    "ControlCommand",
    "PurgePreview",
    "QuarantinedMessage",
    "ReadOnlyError",
    "WorkerControl",
    "parse_command",
]

_LAZY = {
    "Actions": "collectors.writes.actions",
    "ActionError": "collectors.writes.base",
    "ActionResult": "collectors.writes.base",
    "BrokerUnreachableError": "collectors.writes.base",
    "ReadOnlyError": "collectors.writes.base",
    "ControlCommand": "collectors.writes.control",
    "WorkerControl": "collectors.writes.control",
    "parse_command": "collectors.writes.control",
    "PurgePreview": "collectors.writes.purge",
    "QuarantinedMessage": "collectors.writes.quarantine",
}


def __getattr__(name: str) -> Any:
    """Import public names on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collectors.writes' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
