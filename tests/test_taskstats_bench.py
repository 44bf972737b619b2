"""The aggregator's budget at 50,000 events/min (issue 15), on a short simulated run (bench/s_taskstats.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.s_taskstats import phase_taskstats, render, write_section  # noqa: E402


def test_short_run_is_within_budget(tmp_path: Path) -> None:
    res = phase_taskstats(0.5)
    assert 24_000 <= res["events"] <= 26_000
    assert res["cpu_share"] < 0.05, res
    assert res["peak_mb"] < 30, res
    out = tmp_path / "RESULTS.md"
    out.write_text("# results\n")
    write_section(out, res)
    write_section(out, res)  # replaced, not appended twice
    assert out.read_text().count("taskstats:begin") == 1 and "of a core" in render(res)
