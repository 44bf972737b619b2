"""Task search: the query language, a backend with thousands of results (ground truth), live sources."""

from __future__ import annotations

import gc
import json
import random
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from collectors.core.config import Settings
from collectors.reads.search import (
    SEARCH_HELP,
    SearchError,
    Term,
    parse_query,
    search_all,
    search_results,
)
from taskdash.cli import cli

NAMES = ("app.tasks.send_email", "app.tasks.resize_image", "billing.charge_card", "app.tasks.add")
WORKERS = ("w1@host-a", "w2@host-b", "celery@big")
STATES = ("SUCCESS", "FAILURE", "STARTED", "RETRY", "REVOKED")


def test_parse_query() -> None:
    q = parse_query('state:fail name:"send email" -worker:w1 hello "two words" -x id:ab')
    assert q.terms == (
        Term("fail", "state"), Term("send email", "name"), Term("w1", "worker", True), Term("hello"),
        Term("two words"), Term("x", None, True), Term("ab", "id"),
    )
    assert parse_query('"a:b"').terms == (Term("a:b"),)  # quoted: a phrase, not a field
    assert parse_query("").empty and parse_query("   ").empty
    assert parse_query("ARGS:User-42").terms == (Term("user-42", "args"),)
    with pytest.raises(SearchError, match="unknown field"):
        parse_query("color:red")
    with pytest.raises(SearchError, match="quote"):
        parse_query('name:"oops')
    with pytest.raises(SearchError, match="needs a value"):
        parse_query("state:")
    for f in ("name:", "id:", "state:", "worker:", "queue:", "exc:", "args:", "-word", '"'):
        assert f in SEARCH_HELP


def _meta(i: int, rng: random.Random) -> dict[str, Any]:
    state = rng.choice(STATES)
    task_id = str(uuid.UUID(int=rng.getrandbits(128)))
    meta: dict[str, Any] = {
        "status": state, "result": None, "traceback": None, "children": [],
        "date_done": "2026-11-25T16:34:07.736482+00:00" if state != "STARTED" else None, "task_id": task_id,
        "name": rng.choice(NAMES), "args": [i, f"user-{i % 97}"], "kwargs": {"tag": f"t{i % 13}"},
        "worker": rng.choice(WORKERS), "retries": 0, "queue": rng.choice(("celery", "slow", "emails")),
    }
    if state in ("FAILURE", "RETRY"):
        exc = rng.choice(("TimeoutError", "ValueError", "KeyError"))
        meta["result"] = {"exc_type": exc, "exc_message": [f"bad thing {i % 7}"], "exc_module": "builtins"}
        meta["traceback"] = f"Traceback (most recent call last):\n  ...\n{exc}: bad thing {i % 7}\n"
    elif state == "REVOKED":
        meta["result"] = {"exc_type": "TaskRevokedError", "exc_message": ["revoked"],
                          "exc_module": "celery.exceptions"}
    elif state == "STARTED":
        meta["result"] = {"pid": 100 + i, "hostname": meta["worker"]}
        del meta["worker"]  # STARTED metas carry the host in result, as Celery stores them
    else:
        meta["result"] = i * 2
    return meta


@pytest.fixture()
def backend(r: Any) -> list[dict[str, Any]]:
    """3000 stored results in Celery's result_extended format, written in one pipeline, plus noise keys."""
    rng = random.Random(7)
    metas = [_meta(i, rng) for i in range(3000)]
    pipe = r.pipeline(transaction=False)
    for m in metas:
        pipe.setex(f"celery-task-meta-{m['task_id']}", 3600, json.dumps(m))
    pipe.set("celery-task-meta-pickled", b"\x80\x04\x95...")  # never unpickled, matches on id only
    for i in range(500):
        pipe.set(f"other:key:{i}", "SUCCESS send_email")  # not result keys: must never match
    pipe.execute()
    return metas


def _truth(metas: list[dict[str, Any]], pred: Any) -> set[str]:
    return {m["task_id"] for m in metas if pred(m)}


def _exc(m: dict[str, Any]) -> str:
    res = m["result"]
    return f"{res['exc_type']}: {res['exc_message'][0]}\n{m['traceback'] or ''}" if isinstance(res, dict) and \
        "exc_type" in res else ""


def test_search_results_against_ground_truth(backend: list[dict[str, Any]], r: Any, redis_url: str) -> None:
    settings = Settings(broker_url=redis_url)
    cases = {
        "state:fail": lambda m: m["status"] == "FAILURE",
        "name:send_email -state:success": lambda m: m["name"].endswith("send_email") and m["status"] != "SUCCESS",
        "exc:timeouterror worker:w2": lambda m: "TimeoutError" in _exc(m) and m.get("worker") == "w2@host-b",
        'args:"user-42"': lambda m: any(a == "user-42" for a in m["args"]),
        "queue:emails state:retry": lambda m: m["queue"] == "emails" and m["status"] == "RETRY",
        "billing revoked": lambda m: m["name"].startswith("billing") and m["status"] == "REVOKED",
        '"bad thing 3" -keyerror': lambda m: "bad thing 3" in _exc(m) and "KeyError" not in _exc(m),
        "worker:celery@big state:started": lambda m: m["status"] == "STARTED" and
        m["result"].get("hostname") == "celery@big",
    }
    t0 = time.monotonic()
    for query, pred in cases.items():
        expected = _truth(backend, pred)
        assert expected, query  # each case selects something
        out = search_results(r, settings, query, limit=10_000, scan_budget=100_000)
        got = {h.task_id for h in out.hits}
        assert got == expected, query
        assert out.complete and not out.truncated and out.scanned == 3001
        assert all(h.source == "result" for h in out.hits)
    assert time.monotonic() - t0 < 15
    one = backend[1234]
    out = search_results(r, settings, one["task_id"][:13], limit=5)
    assert [h.task_id for h in out.hits] == [one["task_id"]]
    assert out.hits[0].name == one["name"] and out.hits[0].args == json.dumps(one["args"])
    pickled = search_results(r, settings, "id:pickled", limit=5)
    assert [(h.task_id, h.name) for h in pickled.hits] == [("pickled", None)]


def test_limit_and_budget_bound_the_scan(backend: list[dict[str, Any]], r: Any, redis_url: str) -> None:
    settings = Settings(broker_url=redis_url)
    out = search_results(r, settings, "", limit=25, scan_budget=100_000, batch=100)
    assert len(out.hits) == 25 and out.truncated and not out.complete and out.scanned < 1000
    out = search_results(r, settings, "no-such-thing-anywhere", limit=25, scan_budget=500, batch=100)
    assert out.hits == () and out.truncated and 0 < out.scanned < 1000
    # a whole task id reads one key instead of scanning
    target = backend[2999]
    out = search_results(r, settings, f"id:{target['task_id']}", limit=5)
    assert [h.task_id for h in out.hits] == [target["task_id"]] and out.scanned == 1 and out.complete
    out = search_results(r, settings, f"id:{target['task_id']} -state:{target['status']}", limit=5)
    assert out.hits == ()


def test_search_all_sources_with_a_real_worker(start_worker, demo_app: Any, r: Any, redis_url: str) -> None:
    # queued: nobody consumes "emails"; unacked: a slow acks_late task held by a worker; result: stored
    queued = [demo_app.send_task("demo_tasks.tasks.send_email", args=(f"user-{i}@x.org",)) for i in range(3)]
    start_worker(("slow", "celery"), concurrency=1)
    done = demo_app.send_task("demo_tasks.tasks.add", args=(20, 22))
    assert done.get(timeout=30) == 42
    running = demo_app.send_task("demo_tasks.tasks.slow", args=(20.0,), kwargs={"tag": "needle-9"})
    deadline = time.monotonic() + 20
    while not r.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.1)
    settings = Settings(broker_url=redis_url, app_queues=("celery", "slow", "emails"))
    out = search_all(settings, "needle-9", limit=10)
    assert [(h.source, h.task_id) for h in out.hits][:1] == [("unacked", running.id)]
    out = search_all(settings, "name:send_email user-1@", limit=10)
    assert [(h.source, h.task_id, h.queue, h.state) for h in out.hits] == [
        ("queued", queued[1].id, "emails", "queued")]
    out = search_all(settings, "name:add state:success", limit=10)
    assert [(h.source, h.task_id) for h in out.hits] == [("result", done.id)]
    assert out.hits[0].args == "[20, 22]" and out.hits[0].worker

    runner = CliRunner()
    res = runner.invoke(cli, ["search", "name:send_email", "--json", "--broker", redis_url])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {h["task_id"] for h in data["hits"]} == {a.id for a in queued}
    res = runner.invoke(cli, ["search", "nothing-like-this", "--broker", redis_url])
    assert res.exit_code == 1
    res = runner.invoke(cli, ["search", "colour:red", "--broker", redis_url])
    assert res.exit_code == 64 and "unknown field" in res.output  # usage error (64: 2 means unreachable)
    del queued, done, running  # drop result subscriptions while Redis is still up
    gc.collect()
