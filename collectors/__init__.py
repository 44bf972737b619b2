"""taskdash collectors: read Celery-on-Redis state into immutable Snapshots (no Textual here).

The public surface: ``Collector`` (one ``collect()`` → ``Snapshot``), ``Settings``/``resolve_settings``,
the snapshot models, and ``Actions`` for writes. Imports are lazy so ``import collectors`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Actions",
    "ActionError",
    "ActionResult",
    "Collector",
    "ReadOnlyError",
    "Settings",
    "Snapshot",
    "resolve_settings",
]

_LAZY = {
    "Actions": "collectors.writes.actions",
    "ActionError": "collectors.writes.base",
    "ActionResult": "collectors.writes.base",
    "ReadOnlyError": "collectors.writes.base",
    "Collector": "collectors.collector",
    "Settings": "collectors.core.config",
    "resolve_settings": "collectors.core.config",
    "Snapshot": "collectors.core.models",
}


def __getattr__(name: str) -> Any:
    """Import public names on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collectors' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
