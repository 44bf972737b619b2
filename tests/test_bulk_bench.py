"""The bulk-move benchmark phase (bench/s_bulk.py) runs and conserves every message (tiny size)."""

from __future__ import annotations

from bench.s_bulk import phase_bulk


def test_bulk_phase_smoke(redis_server, redis_url) -> None:
    out = phase_bulk(redis_server, n=600, batch=100)
    assert out["moved"] == 600 and out["conserved"]
    assert out["commands"]["lrem"] == 600 and out["audit_lines"] == 6
    assert out["redis_us_per_message"] > 0 and out["run_s"] > 0
