"""Quarantine stops a live poison loop; replay brings it back; queue-sourced quarantine is byte-exact."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collectors.core.audit import read_audit
from collectors.core.config import Settings
from collectors.writes.actions import ActionError, Actions


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, step: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what or pred}")


def kills(worker: Any) -> int:
    """Pool processes lost so far (each poison delivery kills one)."""
    return worker.log_text().count("signal 9 (SIGKILL)")


def present(r: Any, task_id: str, queue: str) -> bool:
    """Whether ``task_id`` is in the queue's lists or in unacked right now."""
    needle = task_id.encode()
    items = [m for key in (queue, f"{queue}\x06\x163", f"{queue}\x06\x166", f"{queue}\x06\x169")
             for m in r.lrange(key, 0, -1)]
    items += list(r.hvals("unacked"))
    return any(needle in m for m in items)


@pytest.fixture()
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"))


def test_quarantine_stops_poison_loop_and_replay_resumes_it(start_worker, demo_app, r, settings) -> None:
    worker = start_worker(("risky",), concurrency=1)
    poison = demo_app.send_task("demo_tasks.tasks.poison", args=("bad",))
    wait_for(lambda: kills(worker) >= 2, timeout=30, what="a looping poison task")
    actions = Actions(settings, r)

    res = None
    deadline = time.monotonic() + 20
    while res is None and time.monotonic() < deadline:  # it may be in flight inside the worker
        try:
            res = actions.quarantine(task_ids=[poison.id], reason="poison loop", deliveries=kills(worker),
                                     queues=["risky"])
        except ActionError:
            time.sleep(0.1)
    assert res is not None and res.count == 1, res
    assert not present(r, poison.id, "risky")
    # the worker may still run the copy it had reserved once; after that the loop is over
    time.sleep(6)
    settled = kills(worker)
    time.sleep(5)
    assert kills(worker) == settled, "the poison message was delivered again after quarantine"
    assert not present(r, poison.id, "risky")

    listed = actions.list_quarantine()
    assert [(q.task_id, q.task, q.queue, q.reason) for q in listed] == [
        (poison.id, "demo_tasks.tasks.poison", "risky", "poison loop")]
    assert listed[0].deliveries is not None and listed[0].deliveries >= 2
    assert listed[0].source in ("unacked", "queue")

    replayed = actions.replay([poison.id])
    assert replayed.count == 1
    assert actions.list_quarantine() == []
    wait_for(lambda: kills(worker) > settled, timeout=20, what="the replayed message delivered again")
    entries = read_audit(settings.audit_log or "")
    assert [e["action"] for e in entries] == ["quarantine", "replay"]
    assert entries[0]["items"][0]["task_id"] == poison.id and entries[0]["reason"] == "poison loop"
    # stop the loop again before teardown (keeps the worker's shutdown quick)
    wait_for(lambda: _try_quarantine(actions, poison.id), timeout=20, what="second quarantine")


def _try_quarantine(actions: Actions, task_id: str) -> bool:
    try:
        return actions.quarantine(task_ids=[task_id], queues=["risky"]).count == 1
    except ActionError:
        return False


def test_quarantine_from_queue_replay_delete_export_restore(demo_app, r, settings, tmp_path: Path) -> None:
    sent = [demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@x",), priority=p)
            for i, p in enumerate((0, 0, 5))]
    before = {k: r.lrange(k, 0, -1) for k in ("emails", "emails\x06\x163")}
    actions = Actions(settings, r)
    res = actions.quarantine(task_ids=[sent[1].id, sent[2].id], reason="bad address")
    assert res.count == 2 and {i["source"] for i in res.details["items"]} == {"queue"}
    assert r.llen("emails") == 1 and r.llen("emails\x06\x163") == 0
    stored = {q.task_id: q for q in actions.list_quarantine()}
    assert set(stored) == {sent[1].id, sent[2].id}
    assert stored[sent[2].id].queue == "emails"

    export = tmp_path / "q.jsonl"
    assert actions.export_quarantine(str(export)).count == 2

    # replay by quarantine id: back on the same priority list, byte-identical
    qid = stored[sent[2].id].id
    assert actions.replay([qid]).count == 1
    assert r.lrange("emails\x06\x163", 0, -1) == before["emails\x06\x163"]

    # delete keeps a copy, and restore of the export brings the record back into quarantine
    deleted = actions.delete_quarantined([sent[1].id])
    assert deleted.count == 1 and actions.list_quarantine() == []
    assert Path(deleted.details["export"]).exists()
    restored = actions.restore(str(export))
    assert restored.details["quarantine"] == 2
    assert {q.task_id for q in actions.list_quarantine()} == {sent[1].id, sent[2].id}
    # replay the whole set: both lists are exactly as before (old p0 message back in its place too)
    r.delete("emails\x06\x163")
    assert actions.replay([sent[1].id, sent[2].id]).count == 2
    assert sorted(r.lrange("emails", 0, -1)) == sorted(before["emails"])
    assert r.lrange("emails\x06\x163", 0, -1) == before["emails\x06\x163"]
    with pytest.raises(ActionError, match="nothing matched"):
        actions.quarantine(task_ids=["no-such-task"], queues=["emails"])
    actions_log = [e["action"] for e in read_audit(settings.audit_log or "")]
    assert actions_log == ["quarantine", "replay", "delete_quarantined", "restore", "replay"]
    assert json.loads(export.read_text().splitlines()[0])["format"] == "taskdash-export"
