"""``taskdash snapshot`` tells the truth about what it can see (issue 21): readable tables use the
terminal's width (never cut a cell that fits), and ``--fail-on poison`` observes long enough to see a
loop instead of exiting 0 after one refresh. Real redis-server, real workers."""

from __future__ import annotations

import json
import time
from typing import Any

from click.testing import CliRunner

from collectors.core.errors import EXIT_FOUND
from taskdash.cmd_snapshot import POISON_OBSERVE_S

LONG_TASK = "demo_tasks.tasks.a_task_name_long_enough_to_be_cut_at_120_columns"


def _cli(*args: str, env: dict[str, str | None] | None = None) -> Any:
    from taskdash.cli import cli

    return CliRunner().invoke(cli, list(args), env={"TASKDASH_CONFIG": "/nonexistent", **(env or {})})


def _plant(r: Any, tag: str, task: str, queue: str = "work", age: float = 30.0) -> None:
    payload = {"body": "W10=", "headers": {"id": f"id-{tag}-0000-0000-0000-000000000000"[:36], "task": task},
               "properties": {"priority": 0, "delivery_tag": tag,
                              "delivery_info": {"exchange": "", "routing_key": queue}}}
    r.hset("unacked", tag, json.dumps([payload, "", queue]))
    r.zadd("unacked_index", {tag: time.time() - age})


def _unacked_rows(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Unacked"))
    return lines[start:start + 8]


def test_tables_use_the_terminal_width_and_cut_nothing_that_fits(r: Any, redis_url: str) -> None:
    for i in range(3):
        _plant(r, f"tag-{i}", LONG_TASK, queue="a_queue_with_a_long_name")
    wide = _cli("snapshot", "--broker", redis_url, env={"COLUMNS": "200"})
    assert wide.exit_code == 0, wide.output
    assert LONG_TASK in wide.stdout, _unacked_rows(wide.stdout)  # before: cut with "…" at 120 columns
    assert max(len(ln) for ln in wide.stdout.splitlines()) <= 200
    assert any(len(ln) > 120 for ln in _unacked_rows(wide.stdout))  # it used the room it has

    narrow = _cli("snapshot", "--broker", redis_url, env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert max(len(ln) for ln in narrow.stdout.splitlines()) <= 80  # a narrow terminal still fits

    piped = _cli("snapshot", "--broker", redis_url, env={"COLUMNS": None})  # no terminal, no COLUMNS
    assert piped.exit_code == 0, piped.output
    assert LONG_TASK in piped.stdout and "…" not in "\n".join(_unacked_rows(piped.stdout))


def test_fail_on_poison_observes_by_default_and_finds_a_live_loop(start_worker, demo_app, redis_url) -> None:
    start_worker(("risky",), hostname="risky@truth", concurrency=1)
    tid = demo_app.send_task("demo_tasks.tasks.poison", args=("kill me",), queue="risky").id
    t0 = time.monotonic()
    res = _cli("snapshot", "--json", "--fail-on", "poison", "--broker", redis_url)
    took = time.monotonic() - t0
    # before: one refresh, exit 0 in silence during the loop
    assert res.exit_code == EXIT_FOUND, (res.exit_code, res.stderr)
    assert "poison suspect" in res.stderr
    assert tid in {p["task_id"] for p in json.loads(res.stdout)["poison"]}
    assert took >= POISON_OBSERVE_S

    # an explicit one-refresh check says that it cannot see a loop
    once = _cli("snapshot", "--json", "--fail-on", "poison", "--observe", "0", "--broker", redis_url)
    assert "cannot" not in once.stdout and "a poison loop needs successive reads" in once.stderr, once.stderr
    # --fail-on orphans and no --fail-on do not wait
    t0 = time.monotonic()
    plain = _cli("snapshot", "--json", "--broker", redis_url)
    assert plain.exit_code == 0 and time.monotonic() - t0 < POISON_OBSERVE_S
    assert "successive reads" not in plain.stderr
