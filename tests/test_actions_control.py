"""Celery-control actions against a real worker: revoke (terminate) and retry from stored args."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collectors.core.audit import read_audit
from collectors.core.config import Settings
from collectors.writes.actions import ActionError, Actions, BrokerUnreachableError
from taskdash.procs import free_port


def test_retry_and_revoke_with_a_real_worker(start_worker, demo_app, r, redis_url, tmp_path: Path) -> None:
    start_worker(("celery", "slow"), concurrency=2)
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=1.0)
    actions = Actions(settings, r)

    failed = demo_app.send_task("demo_tasks.tasks.fail", kwargs={"message": "boom-42"})
    with pytest.raises(Exception, match="boom-42"):
        failed.get(timeout=30)
    res = actions.retry(failed.id)
    new_id = res.details["new_task_id"]
    assert res.count == 1 and new_id != failed.id and res.details["queue"] == "celery"
    with pytest.raises(Exception, match="boom-42"):
        demo_app.AsyncResult(new_id).get(timeout=30)
    meta = json.loads(r.get(f"celery-task-meta-{new_id}"))
    assert (meta["name"], meta["kwargs"], meta["status"]) == ("demo_tasks.tasks.fail", {"message": "boom-42"},
                                                              "FAILURE")
    ok = demo_app.send_task("demo_tasks.tasks.add", args=(1, 2))
    assert ok.get(timeout=30) == 3
    with pytest.raises(ActionError, match="only FAILURE"):
        actions.retry(ok.id)

    running = demo_app.send_task("demo_tasks.tasks.slow", args=(30.0,), kwargs={"tag": "revoked"})
    deadline = time.monotonic() + 20
    while running.id not in (actions.live_task_ids() or set()):
        assert time.monotonic() < deadline, "task never became active"
        time.sleep(0.2)
    rv = actions.revoke(running.id, terminate=True)
    assert rv.count == 1
    deadline = time.monotonic() + 20
    while demo_app.AsyncResult(running.id).state != "REVOKED":
        assert time.monotonic() < deadline, "task was not revoked"
        time.sleep(0.2)
    assert r.get("demo:runs:revoked") is None
    entries = read_audit(settings.audit_log or "")
    assert [(e["action"], e["target"]) for e in entries] == [("retry", failed.id), ("revoke", running.id)]
    assert entries[0]["new_task_id"] == new_id and entries[1]["terminate"] is True


def test_unreachable_broker_is_masked(tmp_path: Path) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    actions = Actions(Settings(broker_url=url, audit_log=str(tmp_path / "a.jsonl"), socket_timeout=1.0))
    for call in (lambda: actions.requeue(["x"], force=True), lambda: actions.purge("q"),
                 lambda: actions.revoke("x"), lambda: actions.quarantine(task_ids=["x"])):
        with pytest.raises(BrokerUnreachableError) as info:
            call()
        assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert not (tmp_path / "a.jsonl").exists()
