"""Issue 21, purge: the dialog's count is as of the preview; the result says exactly what was exported and
deleted, and how that differs from the preview (real Redis; the export file is the ground truth)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from collectors.analysis.liveness import LivenessView
from collectors.core.config import Settings
from collectors.writes.actions import Actions
from collectors.writes.purge import PurgePreview
from tui.writes import purge_body


@pytest.fixture()
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=0.5)


def export_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def test_messages_arriving_after_the_preview_are_counted_in_the_result(r: Any, settings: Settings,
                                                                       tmp_path: Path) -> None:
    r.rpush("work", *[f"m{i}".encode() for i in range(466)])
    actions = Actions(settings, r)
    preview = actions.purge_preview("work")
    assert preview.total == 466 and preview.taken_at > 0
    r.rpush("work", *[f"late{i}".encode() for i in range(11)])  # producers keep publishing meanwhile
    export = tmp_path / "purge.jsonl"
    res = actions.purge("work", export_path=str(export))

    assert r.llen("work") == 0
    lines = export_lines(export)
    assert len(lines) == 477 and res.count == 477
    assert res.details["deleted"] == 477 and res.details["exported"] == {"messages": 477, "unacked": 0}
    assert res.details["previewed"] == 466 and res.details["arrived_since_preview"] == 11
    assert res.details["preview_age_s"] >= 0
    assert res.message == (f"purged 477 message(s) from work; export: {export} "
                           "(all 477 exported; 11 arrived since the preview of 466)")


def test_fewer_than_previewed_and_no_preview(r: Any, settings: Settings, tmp_path: Path) -> None:
    r.rpush("work", b"a", b"b", b"c")
    actions = Actions(settings, r)
    actions.purge_preview("work")
    r.lpop("work")  # a worker took one meanwhile
    res = actions.purge("work", export_path=str(tmp_path / "one.jsonl"))
    assert res.details["arrived_since_preview"] == -1
    assert res.message.endswith("(all 2 exported; 1 fewer than the preview of 3: consumed meanwhile)")

    r.rpush("work", b"d")  # no preview of this purge: nothing to compare with, the counts are still exact
    res = actions.purge("work", export_path=str(tmp_path / "two.jsonl"))
    assert "previewed" not in res.details
    assert res.message == f"purged 1 message(s) from work; export: {tmp_path / 'two.jsonl'} (all 1 exported)"


def test_the_cli_prints_the_exact_numbers(r: Any, redis_url: str, tmp_path: Path) -> None:
    from taskdash.cli import cli

    r.rpush("work", b"x1", b"x2", b"x3")
    export = tmp_path / "cli.jsonl"
    res = CliRunner().invoke(cli, ["purge", "work", "--yes", "--broker", redis_url, "--export", str(export),
                                    "--audit-log", str(tmp_path / "audit.jsonl")],
                            catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"purged 3 message(s) from work; export: {export} (all 3 exported; as previewed)"


def test_preview_with_liveness_evidence_does_not_ask_the_workers(r: Any, settings: Settings) -> None:
    """The dashboard's preview classifies with the evidence it watched: no inspect round trip (~1 s)."""
    r.rpush("work", b"m")
    for tag, age in (("a", 120.0), ("b", 300.0)):
        payload = {"body": "W10=", "headers": {"id": f"id-{tag}", "task": "t"},
                   "properties": {"delivery_tag": tag, "delivery_info": {"exchange": "", "routing_key": "work"}}}
        r.hset("unacked", tag, json.dumps([payload, "", "work"]))
        r.zadd("unacked_index", {tag: time.time() - age})
    actions = Actions(settings, r)

    def no_inspect() -> set[str] | None:
        raise AssertionError("the preview asked the workers although liveness evidence was given")

    actions.live_task_ids = no_inspect  # type: ignore[method-assign]
    actions.evidence = lambda: LivenessView((), {}, 0, "test")  # no worker could hold them: orphaned
    preview = actions.purge_preview("work")
    assert (preview.total, preview.unacked, preview.orphaned_unacked) == (1, 2, 2)
    actions.evidence = lambda: LivenessView((), {}, None, "test")  # unknown workers may be alive
    assert actions.purge_preview("work").orphaned_unacked == 0


def test_dialog_says_the_count_is_as_of_the_preview() -> None:
    preview = PurgePreview("emails", ((0, 400), (3, 66)), 466, 2, 1, 1000.0)
    body = purge_body("emails", preview, 3.2, Path("/x/purge.jsonl"))
    assert body.startswith("Delete the 466 ready message(s) of queue emails as of 3s ago\n"
                           "(priority 0: 400, priority 3: 66).\n"
                           "Messages arriving before the purge are purged and exported too.\n")
