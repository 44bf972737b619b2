"""One source for the Collector: beat and canvas views of a refresh (issue 16).

Owns the live result stream (started only in background mode), the :class:`BeatMonitor` and the
:class:`CanvasReader`; ``read()`` never raises. Costs nothing when unused: no RedBeat schedule, no
``beat_schedule`` and no chords means one ``EXISTS`` and one (paced) ``SCAN`` step per refresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from collectors.analysis.beat_rules import BeatMonitor
from collectors.core.beat_canvas import BeatView, CanvasView, ChordPart
from collectors.core.config import Settings, mask_text
from collectors.reads.canvas import CanvasReader
from collectors.reads.result_stream import ResultStream

log = logging.getLogger(__name__)


class BeatCanvasSource:
    """Beat + canvas for the Collector."""

    def __init__(self, settings: Settings, broker_client: Any, backend_client: Any, *,
                 env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.stream = ResultStream(settings)
        self.beat = BeatMonitor(settings, broker_client, stream=None, env=env)
        self.beat.stream = self.stream
        self.canvas = CanvasReader(settings, backend_client, env=env)

    def start(self) -> None:
        """Start the live result feed (background mode only)."""
        self.stream.start()

    def stop(self) -> None:
        self.stream.stop()
        self.beat.close()

    def read(self, now: float | None = None, *, worker_queues: Mapping[str, int] | None = None,
             events: Iterable[Mapping[str, Any]] = ()) -> tuple[BeatView, CanvasView]:
        now = time.time() if now is None else now
        results = self.stream.drain()
        s = self.settings
        try:
            beat = self.beat.read(now, worker_queues=worker_queues, events=events, results=results)
        except Exception as exc:  # noqa: BLE001 - one source never breaks the refresh
            log.debug("beat read failed", exc_info=True)
            beat = BeatView(state="unknown", error=mask_text(str(exc), s.broker_url, s.backend_url))
        try:
            self.canvas.feed_results(results)
            canvas = self.canvas.read(now)
        except Exception as exc:  # noqa: BLE001
            log.debug("canvas read failed", exc_info=True)
            canvas = CanvasView(error=mask_text(str(exc), s.broker_url, s.backend_url))
        return beat, canvas

    def chord_parts(self, group_id: str, *, queues: tuple[str, ...] = (),
                    unacked_states: Mapping[str, str] | None = None) -> tuple[ChordPart, ...]:
        """The detail of one chord (O(parts), on demand)."""
        return self.canvas.parts(group_id, queues=queues, unacked_states=unacked_states)
