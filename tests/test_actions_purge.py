"""Purge exports first and restore puts everything back byte-identical; read-only refuses every write."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from collectors.core.audit import read_audit
from collectors.core.config import Settings
from collectors.writes.actions import ActionError, Actions, ReadOnlyError

PRIO_KEYS = ("priority", "priority\x06\x163", "priority\x06\x166", "priority\x06\x169")


def snapshot_db(r: Any) -> dict[bytes, Any]:
    """Every key of the (small) test db with its type and full value: ground truth for "untouched"."""
    out: dict[bytes, Any] = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == b"hash":
            out[key] = r.hgetall(key)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = r.smembers(key)
        else:
            out[key] = r.get(key)
    return out


def plant_orphan(r: Any, queue: str, tag: str, age: float = 300.0) -> bytes:
    payload = {"body": "W1tdLCB7fSwge31d", "headers": {"id": f"id-{tag}", "task": "demo_tasks.tasks.prioritized"},
               "properties": {"priority": 6, "delivery_tag": tag,
                              "delivery_info": {"exchange": "", "routing_key": queue}}}
    raw = json.dumps([payload, "", queue]).encode()
    r.hset("unacked", tag, raw)
    r.zadd("unacked_index", {tag: time.time() - age})
    return raw


@pytest.fixture()
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=0.5)


def test_purge_exports_then_restore_is_byte_identical(demo_app, r, settings, tmp_path: Path) -> None:
    for i, pri in enumerate((0, 9, 3, 5, 0, 7, 9, 1)):
        demo_app.send_task("demo_tasks.tasks.prioritized", args=(i,), priority=pri)
    demo_app.send_task("demo_tasks.tasks.send_email", args=("keep@x",))
    raw_orphan = plant_orphan(r, "priority", "orphan-1")
    plant_orphan(r, "emails", "other-queue")
    before = {k: r.lrange(k, 0, -1) for k in PRIO_KEYS}
    emails_before = r.lrange("emails", 0, -1)
    actions = Actions(settings, r)

    preview = actions.purge_preview("priority")
    assert preview.by_priority == ((0, 3), (3, 2), (6, 1), (9, 2))
    assert (preview.total, preview.unacked, preview.orphaned_unacked) == (8, 1, 1)

    export = tmp_path / "purge.jsonl"
    res = actions.purge("priority", include_unacked=True, export_path=str(export))
    assert res.count == 9 and res.details["unacked"] == ["orphan-1"]
    assert all(r.exists(k) == 0 for k in PRIO_KEYS)
    assert not r.hexists("unacked", "orphan-1") and r.hexists("unacked", "other-queue")
    assert r.lrange("emails", 0, -1) == emails_before  # other queues untouched
    assert not list(r.scan_iter(match="taskdash.purging.*"))  # temporary keys gone
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert lines[0]["type"] == "header" and sum(x["type"] == "message" for x in lines) == 8

    restored = actions.restore(str(export))
    assert restored.count == 9
    assert {k: r.lrange(k, 0, -1) for k in PRIO_KEYS} == before
    assert r.hget("unacked", "orphan-1") == raw_orphan and r.zscore("unacked_index", "orphan-1")
    with pytest.raises(ActionError, match="already restored"):
        actions.restore(str(export))

    entries = read_audit(settings.audit_log or "")
    assert [e["action"] for e in entries] == ["purge", "restore"]
    assert entries[0]["export"] == str(export) and entries[0]["count"] == 9


def test_purge_appends_restored_messages_after_new_arrivals(demo_app, r, settings, tmp_path: Path) -> None:
    """Restored (older) messages go to the end consumed next; messages published meanwhile stay."""
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"old{i}@x",))
    old = r.lrange("emails", 0, -1)
    actions = Actions(settings, r)
    res = actions.purge("emails")
    assert res.count == 3 and Path(res.details["export"]).exists()
    demo_app.send_task("demo_tasks.tasks.send_email", args=("new@x",))
    new = r.lrange("emails", 0, -1)
    actions.restore(res.details["export"])
    assert r.lrange("emails", 0, -1) == new + old  # RPOP/BRPOP takes the old ones first, in order


def test_read_only_refuses_every_write_and_touches_nothing(demo_app, r, redis_url, tmp_path: Path) -> None:
    audit = tmp_path / "ro-audit.jsonl"
    demo_app.send_task("demo_tasks.tasks.send_email", args=("a@x",))
    plant_orphan(r, "priority", "t-ro")
    rw = Actions(Settings(broker_url=redis_url, audit_log=str(tmp_path / "rw.jsonl")), r)
    rw.quarantine(task_ids=[json.loads(r.lindex("emails", 0))["headers"]["id"]], queues=["emails"])
    qid = rw.list_quarantine()[0].id
    export = tmp_path / "exp.jsonl"
    rw.export_quarantine(str(export))
    before = snapshot_db(r)

    ro = Actions(Settings(broker_url=redis_url, audit_log=str(audit), read_only=True), r)
    calls = {
        "requeue": lambda: ro.requeue(["t-ro"], force=True),
        "requeue_orphaned": lambda: ro.requeue_orphaned(older_than=0, force=True),
        "quarantine": lambda: ro.quarantine(tags=["t-ro"]),
        "replay": lambda: ro.replay([qid]),
        "delete_quarantined": lambda: ro.delete_quarantined([qid]),
        "purge": lambda: ro.purge("priority", include_unacked=True, export_path=str(tmp_path / "p.jsonl")),
        "restore": lambda: ro.restore(str(export)),
        "revoke": lambda: ro.revoke("some-id", terminate=True),
        "retry": lambda: ro.retry("some-id"),
    }
    for name, call in calls.items():
        with pytest.raises(ReadOnlyError, match="read-only"):
            call()
        assert snapshot_db(r) == before, f"{name} changed Redis in read-only mode"
    assert not audit.exists()
    assert not (tmp_path / "p.jsonl").exists()
    # reads still work
    assert ro.purge_preview("priority").unacked == 1
    assert [q.id for q in ro.list_quarantine()] == [qid]
    assert ro.find_tags("id-t-ro") == ["t-ro"]
