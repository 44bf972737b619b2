"""Smoke test of the benchmark: ``bench/run.py`` at a tiny scale still runs end to end.

Not a timed test: it only proves the benchmark code has not rotted (scenario loaders, child-process
measurements, report rendering). The big run is ``python bench/run.py`` (see bench/RESULTS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_bench_tiny_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    raw = tmp_path / "raw.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--preset", "smoke", "--skip", "workers",
         "--out", str(out), "--json", str(raw)],
        capture_output=True, text=True, timeout=110, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("## Headline", "## Targets (issue 6)", "## Broker + unacked refresh", "## S2:", "## Machine"):
        assert heading in text
    data = json.loads(raw.read_text())
    big = data["scales"][-1]
    # taskdash saw every waiting message the scenario wrote, and so did the Flower re-implementation
    assert big["taskdash"]["messages_seen"] == big["scale"]["messages"]
    assert big["flower"]["messages_seen"] == big["scale"]["messages"]
    assert big["redis_cli"]["messages_seen"] == big["scale"]["messages"]
    assert big["taskdash"]["unacked_total"] == big["scale"]["unacked"]
    rows = big["taskdash"]["rows"]
    assert rows and all(r["round_trips"] >= 1 and r["server_calls"] >= 1 for r in rows)
    s2 = data["s2"]
    assert s2["unpaced"]["complete"] and s2["unpaced"]["counted"] == s2["total"]
    assert s2["latency"]["snapshot_ms"]["n"] >= 1
    # the committed report is never touched by the smoke run
    assert out.resolve() != (ROOT / "bench" / "RESULTS.md").resolve()
