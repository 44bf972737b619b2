"""Benchmark sizes: the scales of the S1-shaped broker scenario and the presets (full, quick, smoke)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scale:
    """One broker scenario size."""

    label: str
    queues: int
    messages: int
    unacked: int
    workers: int


@dataclass(frozen=True, slots=True)
class Preset:
    """Sizes and repetitions of one benchmark run."""

    name: str
    scales: tuple[Scale, ...]
    results: int
    refreshes: int
    s3_seconds: float
    s3_rate: int
    cli_reps: int
    latency_samples: int
    paced_s: float = 40.0
    """The paced S2 loop runs this long; its time to a complete count is extrapolated from its rate."""


PRESETS: dict[str, Preset] = {
    "full": Preset("full", (Scale("S1/10", 100, 200_000, 10_000, 2), Scale("S1", 1000, 2_000_000, 100_000, 20)),
                   results=1_000_000, refreshes=15, s3_seconds=15, s3_rate=300, cli_reps=1, latency_samples=10),
    "quick": Preset("quick", (Scale("S1/100", 10, 20_000, 1_000, 1), Scale("S1/10", 100, 200_000, 10_000, 4)),
                    results=100_000, refreshes=8, s3_seconds=6, s3_rate=150, cli_reps=1, latency_samples=5),
    "smoke": Preset("smoke", (Scale("tiny/10", 5, 500, 50, 1), Scale("tiny", 20, 5_000, 300, 1)),
                    results=3_000, refreshes=3, s3_seconds=2, s3_rate=50, cli_reps=1, latency_samples=2),
}
