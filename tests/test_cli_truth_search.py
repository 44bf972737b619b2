"""``taskdash search`` prints one line per match; ``--traceback`` adds the stored tracebacks (issue 21).

Real failures of a real Celery worker on a real redis-server.
"""

from __future__ import annotations

import gc
import json
from typing import Any

from click.testing import CliRunner


def _cli(*args: str) -> Any:
    from taskdash.cli import cli

    return CliRunner().invoke(cli, list(args), env={"TASKDASH_CONFIG": "/nonexistent"})


def test_search_prints_one_line_per_hit_and_tracebacks_on_request(start_worker, demo_app, redis_url) -> None:
    start_worker(("celery",), concurrency=2)
    results = [demo_app.send_task("demo_tasks.tasks.fail", args=(f"boom {i}",)) for i in range(15)]
    for res in results:
        res.get(timeout=30, propagate=False)
        assert res.state == "FAILURE"
    ids = {res.id for res in results}

    out = _cli("search", "state:failure", "--broker", redis_url)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert len(lines) == 15, out.stdout  # before: every hit's whole traceback (~12 lines each)
    for line in lines:
        assert "FAILURE" in line and "!! " in line and "Traceback" not in line, line
        assert any(i in line for i in ids)
    assert {ln.split("!! ", 1)[1] for ln in lines} == {f"ValueError: boom {i}" for i in range(15)}, lines
    assert "15 match(es) have a stored traceback: --traceback prints them" in out.stderr

    full = _cli("search", "state:failure", "--traceback", "--broker", redis_url)
    assert full.exit_code == 0, full.output
    assert full.stdout.count("Traceback (most recent call last):") == 15
    assert len(full.stdout.splitlines()) > 15 * 3
    tb_lines = [ln for ln in full.stdout.splitlines() if ln.startswith("    ")]
    assert tb_lines and all(ln.startswith("    ") for ln in tb_lines)
    assert "--traceback prints them" not in full.stderr

    as_json = _cli("search", "state:failure", "--json", "--broker", redis_url)
    hits = json.loads(as_json.stdout)["hits"]
    assert len(hits) == 15 and all("Traceback" in h["exception"] for h in hits)  # JSON keeps everything
    del results
    gc.collect()
