"""Requeue against real workers: orphans of a SIGKILLed worker run exactly once; live tasks are refused."""

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
from tests.liveness_helpers import connections_recognised


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, step: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what or pred}")


def unacked_task_tags(r: Any) -> dict[str, str]:
    """task id -> delivery tag for every unacked entry (test ground truth, small ledgers only)."""
    out: dict[str, str] = {}
    for tag, raw in r.hgetall("unacked").items():
        payload = json.loads(raw)[0]
        out[payload["headers"]["id"]] = tag.decode()
    return out


@pytest.fixture()
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl"), inspect_timeout=1.0)


def test_requeue_orphans_of_killed_worker_run_exactly_once(start_worker, demo_app, r, settings) -> None:
    dead = start_worker(("slow",), concurrency=1)
    orphans = [demo_app.send_task("demo_tasks.tasks.slow", args=(1.0,), kwargs={"tag": f"orphan{i}"})
               for i in range(4)]
    # 1 active + 3 prefetched (acks_late): all four sit in unacked
    wait_for(lambda: r.hlen("unacked") == 4, what="4 unacked entries")
    dead.kill9()
    orphan_tags = unacked_task_tags(r)
    assert set(orphan_tags) == {o.id for o in orphans}

    # a worker booted within a second of a delivery could be its holder (liveness, issue 12): restart later
    time.sleep(2)
    start_worker(("slow",), concurrency=3)
    live = demo_app.send_task("demo_tasks.tasks.slow", args=(40.0,), kwargs={"tag": "live"})
    actions = Actions(settings, r)
    wait_for(lambda: live.id in (actions.live_task_ids() or set()), what="live task reported active")
    live_tag = unacked_task_tags(r)[live.id]

    result = actions.requeue_orphaned(older_than=0)
    assert result.count == 4, result
    assert sorted(result.details["tags"]) == sorted(orphan_tags.values())
    assert result.details["refused"] == [live_tag]  # the live one is not an orphan
    assert r.hexists("unacked", live_tag)

    # the new worker runs each orphan exactly once, nothing of them is left in unacked
    wait_for(lambda: all(r.get(f"demo:runs:orphan{i}") for i in range(4)), timeout=30, what="orphans ran")
    wait_for(lambda: not (set(orphan_tags.values()) & {t.decode() for t in r.hkeys("unacked")}),
             what="orphans acked")
    time.sleep(1.0)
    assert [int(r.get(f"demo:runs:orphan{i}")) for i in range(4)] == [1, 1, 1, 1]
    assert r.llen("slow") == 0

    # requeueing the task a live worker runs is refused, and allowed with force
    with pytest.raises(ActionError, match="live worker"):
        actions.requeue([live_tag])
    assert r.hexists("unacked", live_tag)
    forced = actions.requeue([live_tag], force=True)
    assert forced.count == 1 and forced.details["task_ids"] == [live.id]

    def redelivered_copy() -> bool:  # force means a second delivery (queued, or already taken again)
        payloads = [json.loads(m) for m in r.lrange("slow", 0, -1)]
        payloads += [json.loads(v)[0] for v in r.hvals("unacked")]
        return any(p["headers"]["id"] == live.id and p["headers"].get("redelivered") for p in payloads)

    wait_for(redelivered_copy, what="the forced requeue delivered again")

    entries = read_audit(settings.audit_log or "")
    assert [e["action"] for e in entries] == ["requeue_orphaned", "requeue"]
    assert entries[0]["count"] == 4 and sorted(entries[0]["tags"]) == sorted(orphan_tags.values())
    assert entries[1]["tags"] == [live_tag] and entries[1]["force"] is True
    assert "actor" in entries[0] and entries[0]["broker"].startswith("redis://")


def test_requeue_restores_like_kombu_with_prefix_and_custom_steps(r, redis_url, tmp_path) -> None:
    """Prefix-aware keys, custom priority steps, redelivered flags, RPUSH (consumed next), index cleaned."""
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl"), global_keyprefix="app:",
                        priority_steps=(0, 5, 9))
    payload = {"body": "W10=", "content-type": "application/json", "headers": {"id": "t-1", "task": "x"},
               "properties": {"priority": 7, "delivery_tag": "tag-1",
                              "delivery_info": {"exchange": "", "routing_key": "work"}}}
    raw = json.dumps([payload, "", "work"])
    r.hset("app:unacked", "tag-1", raw)
    r.zadd("app:unacked_index", {"tag-1": time.time() - 100})
    r.lpush("app:work\x06\x165", "older")
    actions = Actions(settings, r)
    res = actions.requeue(["tag-1"], live=set())
    assert res.count == 1
    assert r.hlen("app:unacked") == 0 and r.zcard("app:unacked_index") == 0
    items = r.lrange("app:work\x06\x165", 0, -1)
    assert items[0] == b"older"  # pushed at the right end: BRPOP takes it next
    restored = json.loads(items[-1])
    assert restored["headers"]["redelivered"] is True
    assert restored["properties"]["delivery_info"]["redelivered"] is True
    assert restored["properties"]["delivery_tag"] == "tag-1"
    # a second requeue finds nothing (already restored) and cleans a dangling index entry
    r.zadd("app:unacked_index", {"tag-1": 1.0})
    again = actions.requeue(["tag-1"], live=set())
    assert again.count == 0 and again.details["gone"] == ["tag-1"]
    assert r.zcard("app:unacked_index") == 0
    assert len(read_audit(settings.audit_log or "")) == 1  # nothing changed: no second line


def test_requeue_by_exchange_binding_and_unroutable_kept(r, redis_url, tmp_path) -> None:
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl"))
    r.sadd("_kombu.binding.media", "video\x06\x16\x06\x16videos")
    for tag, rk in (("t-a", "video"), ("t-b", "nowhere")):
        payload = {"headers": {"id": tag}, "properties": {"delivery_tag": tag, "delivery_info": {}}}
        r.hset("unacked", tag, json.dumps([payload, "media", rk]))
        r.zadd("unacked_index", {tag: time.time() - 50})
    res = Actions(settings, r).requeue(["t-a", "t-b"], live=set())
    assert res.count == 1 and res.details["unroutable"] == ["t-b"]
    assert r.llen("videos") == 1
    assert r.hexists("unacked", "t-b")  # never dropped when no queue matches


@pytest.mark.parametrize("remove", [False, True])
def test_unacked_pages_visit_every_entry_once_with_ties(r, redis_url, tmp_path, remove: bool) -> None:
    """Score-cursor paging (ZRANGE BYSCORE REV LIMIT) never skips or repeats, even across equal scores
    and when the caller removes what it was given (as requeue does)."""
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl"))
    base = time.time() - 500
    r.zadd("unacked_index", {f"t{i:03d}": base + (i // 7) for i in range(450)})
    actions = Actions(settings, r)
    seen: list[str] = []
    for page in actions._iter_unacked_batches(base + 1000, batch=50):
        assert len(page) <= 50
        seen.extend(t for t, _ in page)
        if remove:
            r.zrem("unacked_index", *[t for t, _ in page])
    assert sorted(seen) == sorted(f"t{i:03d}" for i in range(450))
    assert len(seen) == len(set(seen))


def test_purge_and_restore_with_prefix_and_custom_steps(r, redis_url, tmp_path) -> None:
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl"), global_keyprefix="p:",
                        priority_steps=(0, 5, 9))
    r.rpush("p:jobs", b"m0", b"\xff\xfebinary")
    r.rpush("p:jobs\x06\x165", b"m5")
    r.rpush("p:jobs\x06\x169", b"m9a", b"m9b")
    before = {k: r.lrange(k, 0, -1) for k in ("p:jobs", "p:jobs\x06\x165", "p:jobs\x06\x169")}
    actions = Actions(settings, r)
    assert actions.purge_preview("jobs").by_priority == ((0, 2), (5, 1), (9, 2))
    res = actions.purge("jobs", export_path=str(tmp_path / "x.jsonl"))
    assert res.count == 5 and not any(r.exists(k) for k in before)
    actions.restore(str(tmp_path / "x.jsonl"))
    assert {k: r.lrange(k, 0, -1) for k in before} == before


def test_prefixed_broker_live_detection_and_orphan_requeue(start_worker, r, redis_url, tmp_path) -> None:
    """global_keyprefix: control (pidbox) and keys are prefixed; a killed worker's message goes to pfx:slow."""
    from demo_tasks.celery_app import make_app

    opts = {"global_keyprefix": "pfx:"}
    app = make_app(redis_url, redis_url, transport_options=opts)
    settings = Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl"), global_keyprefix="pfx:",
                        transport_options=opts)
    try:
        worker = start_worker(("slow",), env={"DEMO_GLOBAL_KEYPREFIX": "pfx:"})
        res = app.send_task("demo_tasks.tasks.slow", args=(20.0,), kwargs={"tag": "pfx"})
        actions = Actions(settings, r)
        wait_for(lambda: res.id in (actions.live_task_ids() or set()), what="prefixed worker reports the task")
        assert r.hlen("pfx:unacked") == 1 and not r.exists("unacked")
        assert actions.requeue_orphaned(older_than=0).count == 0  # it is live, not orphaned
        # A connection that no probe recognised while its worker spoke proves nothing when it goes (the
        # safe side: held-by-silent until kombu's visibility timeout). The watch requeue_orphaned started
        # may not have probed yet on a loaded machine (seen in CI), so wait for it before the kill.
        monitor = actions.own_monitor
        assert monitor is not None
        wait_for(lambda: connections_recognised(monitor), timeout=20, what="the worker's connections recognised")
        worker.kill9()
        assert actions.live_task_ids() == set()
        # orphaned once its death is provable (silent past its heartbeat window, connections gone: issue 12)
        tries: list[Any] = []  # every attempt's result: on a timeout the last says why it was held

        def orphaned_now() -> Any:
            tries.append(m := actions.requeue_orphaned(older_than=0))
            return m.count and m

        try:
            moved = wait_for(orphaned_now, timeout=20, what="the killed worker's message orphaned")
        except AssertionError as exc:
            last = tries[-1] if tries else None
            raise AssertionError(f"{exc}; {len(tries)} tries, last: {last and last.message}; why: "
                                 f"{last and last.details.get('why')}; watch: {actions.last_watch}") from None
        assert moved.count == 1 and moved.details["targets"] == {"pfx:slow": 1}
        assert r.hlen("pfx:unacked") == 0 and json.loads(r.lindex("pfx:slow", 0))["headers"]["id"] == res.id
    finally:
        app.close()


def test_forced_moves_wait_for_a_live_sweep_and_ignore_only_a_dead_mutex(r, redis_url, tmp_path) -> None:
    """``force`` ignores kombu's unacked mutex only when its holder shows no sign of life (same token, the
    ledger unchanged) for the whole wait: a live restore sweep that holds it longer than the wait (a big
    ledger under load) is waited for — moving beside it can deliver a message twice."""
    import threading

    actions = Actions(Settings(broker_url=redis_url, audit_log=str(tmp_path / "a.jsonl")))
    for i in range(40):
        r.hset("unacked", f"t{i}", "x")
        r.zadd("unacked_index", {f"t{i}": i})
    # a live sweeper: holds the mutex for 2 s (4x the wait), restoring an entry every 50 ms
    r.set("unacked_mutex", "sweeper", px=300_000)

    def sweep() -> None:
        for i in range(40):
            r.zrem("unacked_index", f"t{i}")
            r.hdel("unacked", f"t{i}")
            time.sleep(0.05)
        r.delete("unacked_mutex")

    th = threading.Thread(target=sweep)
    t0 = time.monotonic()
    th.start()
    with actions._sweep_mutex(True, wait=0.5) as acquired:  # noqa: SLF001
        waited = time.monotonic() - t0
        assert acquired and waited >= 1.9
        assert r.zcard("unacked_index") == 0
    th.join()
    assert not r.exists("unacked_mutex")  # released after the moves
    # a dead holder (a crashed sweeper's mutex, nothing moving): ignored after the wait, left as it was
    r.set("unacked_mutex", "crashed", px=300_000)
    t0 = time.monotonic()
    with actions._sweep_mutex(True, wait=0.5) as acquired:  # noqa: SLF001
        assert not acquired and 0.5 <= time.monotonic() - t0 < 2.0
    assert r.get("unacked_mutex") == b"crashed"
    # without force, a held mutex is an error after the wait, as before
    with pytest.raises(ActionError, match="holds the unacked mutex"):
        with actions._sweep_mutex(False, wait=0.2):  # noqa: SLF001
            pass
