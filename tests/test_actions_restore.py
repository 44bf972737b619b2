"""Restore validates the whole export before writing; routing never runs a planted binding regex.

Real redis-server (session fixture); exports are written by hand the way ``purge``/``export_quarantine``
write them, with one line damaged at a time.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from collectors.core.audit import read_audit
from collectors.core.config import Settings
from collectors.writes.actions import ActionError, Actions
from tests.hostile_data import SEP, envelope


@pytest.fixture()
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=0.5)


def write_export(path: Path, items: list[dict[str, Any]], export_id: str = "exp1") -> Path:
    header = {"type": "header", "format": "taskdash-export", "version": 1, "id": export_id, "action": "purge",
              "queue": "work"}
    path.write_text("\n".join(json.dumps(x) for x in [header, *items]) + "\n")
    return path


def msg(key: str, task_id: str) -> dict[str, Any]:
    return {"type": "message", "queue": key, "key": key, "band": 0, "raw": json.dumps(envelope(task_id))}


def quarantine_line(record: Any) -> dict[str, Any]:
    raw = record if isinstance(record, bytes) else json.dumps(record).encode()
    return {"type": "quarantine", "record_b64": base64.b64encode(raw).decode()}


GOOD_RECORD = {"id": "q1", "quarantined_at": 1.0, "raw": json.dumps(envelope("qt")), "queue": "work"}

DAMAGED: dict[str, dict[str, Any] | str] = {
    "bad_base64": {"type": "message", "queue": "o", "key": "o", "band": 0, "raw_b64": "%%% not base64"},
    "missing_key": {"type": "message", "queue": "o", "band": 0, "raw": "{}"},
    "no_raw": {"type": "message", "queue": "o", "key": "o", "band": 0},
    "unacked_bad_b64": {"type": "unacked", "queue": "work", "tag": "t1", "score": 1.0, "raw_b64": "@@"},
    "unacked_no_tag": {"type": "unacked", "queue": "work", "score": 1.0, "raw": "[]"},
    "unacked_bad_score": {"type": "unacked", "queue": "work", "tag": "t1", "score": "soon", "raw": "[]"},
    "record_not_json": quarantine_line(b"\x80 not json"),
    "record_without_id": quarantine_line({"quarantined_at": 1.0}),
    "record_not_object": quarantine_line([1, 2]),
    "line_not_json": "{truncated",
    "line_not_object": "[1, 2]",
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_damaged_line_refuses_whole_restore(damage: str, r, settings, tmp_path: Path) -> None:
    """Good lines first, then quarantine + unacked, then ONE damaged line: nothing written, marker unset."""
    bad = DAMAGED[damage]
    items = [msg("work", f"m{i}") for i in range(3)] + [quarantine_line(GOOD_RECORD)]
    items.append({"type": "unacked", "queue": "work", "tag": "ok-tag", "score": 5.0,
                  "raw": json.dumps([envelope("u1"), "", "work"])})
    path = tmp_path / "damaged.jsonl"
    write_export(path, items)
    with path.open("a") as fh:
        fh.write((bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
    bad_line = len(items) + 2
    actions = Actions(settings, r)
    with pytest.raises(ActionError, match=rf"line {bad_line} is damaged"):
        actions.restore(str(path))
    assert r.dbsize() == 0, sorted(r.scan_iter())
    assert read_audit(settings.audit_log) == []
    # the same file with the damaged line removed restores everything, once
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    res = actions.restore(str(path))
    assert (res.details["message"], res.details["unacked"], res.details["quarantine"]) == (3, 1, 1)
    assert r.llen("work") == 3 and r.hexists("unacked", "ok-tag") and r.hexists(actions.quarantine_hash, "q1")


def test_write_failure_midway_removes_marker_and_reports_what_was_restored(r, settings, tmp_path: Path) -> None:
    """A write Redis rejects (WRONGTYPE on a hash) after 3 messages were pushed: the error names the lines done."""
    r.hset("hkey", "f", "v")  # a message line targets this key: RPUSH fails with WRONGTYPE
    items = [msg("work", f"m{i}") for i in range(3)] + [msg("hkey", "h0"), msg("hkey", "h1"), msg("later", "l0")]
    path = write_export(tmp_path / "exp.jsonl", items, export_id="mid1")
    actions = Actions(settings, r)
    with pytest.raises(ActionError) as info:
        actions.restore(str(path))
    text = str(info.value)
    assert "failed at line 5" in text and "3 message(s), 0 unacked, 0 quarantined (lines 2-4)" in text, text
    assert "marker was removed" in text, text
    assert r.llen("work") == 3 and not r.exists("later")
    assert not r.exists("taskdash.restored.mid1")
    [entry] = read_audit(settings.audit_log)
    assert entry["partial"] is True and entry["failed_line"] == 5 and entry["restored_lines"] == "2-4"
    # not refused as "already restored" once the cause is gone (the report said lines 2-4 are re-added)
    r.delete("hkey")
    res = actions.restore(str(path))
    assert res.details["message"] == 6 and r.llen("hkey") == 2 and r.llen("later") == 1
    assert r.exists("taskdash.restored.mid1")
    # a FORCED re-run that fails keeps the marker of the earlier, complete restore
    r.delete("hkey")
    r.hset("hkey", "f", "v")
    with pytest.raises(ActionError, match="marker of the earlier restore was kept"):
        actions.restore(str(path), force=True)
    assert r.exists("taskdash.restored.mid1")


@pytest.mark.timeout(30)
def test_planted_regex_binding_row_cannot_freeze_routing(redis_url: str, r, settings) -> None:
    """A ``(a+)+$`` row in a topic exchange's bindings (catastrophic under re.match) is ignored in linear time."""
    ex = Exchange("evt", type="topic")
    with Connection(redis_url) as conn:  # a real kombu topic binding: work.* -> topicq
        Queue("topicq", ex, routing_key="work.*", channel=conn.default_channel).declare()
    r.sadd("_kombu.binding.evt", f"x{SEP}(a+)+${SEP}trap")
    victim = "a" * 40 + "!"
    for tag, rk in (("evil", victim), ("good", "work.x")):
        raw = json.dumps([envelope(f"id-{tag}", tag=tag), "evt", rk])
        r.hset("unacked", tag, raw)
        r.zadd("unacked_index", {tag: time.time() - 300})
    actions = Actions(settings, r)
    actions.observe_s = 0.5  # the liveness watch (no workers here) is not what this test times
    t0 = time.monotonic()
    res = actions.requeue(["evil", "good"], live=set())
    assert time.monotonic() - t0 < 3.0
    assert res.count == 1 and res.details["unroutable"] == ["evil"]
    assert r.llen("topicq") == 1 and not r.exists("trap")
    assert r.hexists("unacked", "evil")
