"""taskdash's Textual dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collectors.core.config import Settings


def run_tui(settings: Settings) -> int:
    """Open the dashboard; returns the process exit code."""
    from tui.app import run

    return run(settings)
