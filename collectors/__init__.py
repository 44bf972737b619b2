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
    "Actions": "collectors.actions",
    "ActionError": "collectors.actions",
    "ActionResult": "collectors.actions",
    "ReadOnlyError": "collectors.actions",
    "Collector": "collectors.collector",
    "Settings": "collectors.config",
    "resolve_settings": "collectors.config",
    "Snapshot": "collectors.models",
}


def __getattr__(name: str) -> Any:
    """Import public names on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collectors' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
