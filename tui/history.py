"""Rolling history derived from successive snapshots: queue depth trends and rates (no Textual)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from collectors.core.models import Snapshot


@dataclass
class Series:
    """The last ``maxlen`` (time, value) samples of one counter or gauge."""

    maxlen: int = 60
    points: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, t: float, value: float) -> None:
        """Append a sample (ignored if it is not newer than the last one)."""
        if self.points and t <= self.points[-1][0]:
            return
        self.points.append((t, value))
        while len(self.points) > self.maxlen:
            self.points.popleft()

    def values(self) -> list[float]:
        """The sampled values, oldest first."""
        return [v for _, v in self.points]

    def rate(self, window_s: float = 10.0) -> float | None:
        """Change per second over (at most) the last ``window_s`` seconds; None with < 2 samples."""
        if len(self.points) < 2:
            return None
        t1, v1 = self.points[-1]
        t0, v0 = self.points[-2]
        for t, v in reversed(self.points):
            if t1 - t > window_s:
                break
            t0, v0 = t, v
        if t1 <= t0:
            return None
        return (v1 - v0) / (t1 - t0)


class History:
    """Per-queue depth and per-worker processed-count history, fed one snapshot at a time."""

    def __init__(self, maxlen: int = 60) -> None:
        self.maxlen = maxlen
        self.depth: dict[str, Series] = {}
        self.processed: dict[str, Series] = {}

    def _series(self, table: dict[str, Series], key: str) -> Series:
        s = table.get(key)
        if s is None:
            s = table[key] = Series(self.maxlen)
        return s

    def add(self, snapshot: Snapshot) -> None:
        """Record a snapshot; queues and workers that vanished are forgotten."""
        if not snapshot.broker.ok:
            return
        t = snapshot.taken_at
        self._prune(self.depth, (q.name for q in snapshot.queues))
        for q in snapshot.queues:
            self._series(self.depth, q.name).add(t, float(q.messages))
        self._prune(self.processed, (w.hostname for w in snapshot.workers))
        for w in snapshot.workers:
            if w.processed is not None:
                self._series(self.processed, w.hostname).add(t, float(w.processed))

    @staticmethod
    def _prune(table: dict[str, Series], keep: Iterable[str]) -> None:
        alive = set(keep)
        for key in [k for k in table if k not in alive]:
            del table[key]

    def prefill_depth(self, queue: str, points: Iterable[tuple[float, float]]) -> None:
        """Seed ``queue``'s depth trend with stored (time, depth) samples (oldest first)."""
        series = self._series(self.depth, queue)
        for t, v in points:
            series.add(t, float(v))

    def depth_values(self, queue: str) -> list[float]:
        """Depth samples of ``queue``, oldest first."""
        s = self.depth.get(queue)
        return s.values() if s else []

    def depth_rate(self, queue: str) -> float | None:
        """Net change of ``queue``'s depth per second (positive: growing)."""
        s = self.depth.get(queue)
        return s.rate() if s else None

    def processed_rate(self, hostname: str) -> float | None:
        """Tasks per second completed by ``hostname`` (from its ``processed`` counter)."""
        s = self.processed.get(hostname)
        if s is None:
            return None
        r = s.rate()
        return None if r is None else max(0.0, r)
