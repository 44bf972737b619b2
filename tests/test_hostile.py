"""Hostile and odd input in queues and the unacked ledger: shown as what it is, counted, never a crash.

Real redis-server (the session fixture); the garbage is written with plain redis commands in the
exact places kombu uses, then read through ``Collector.collect()`` and the ``taskdash snapshot`` CLI.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
import redis
from click.testing import CliRunner

from collectors.collector import Collector
from collectors.core.config import resolve_settings
from collectors.core.models import Snapshot
from demo_tasks.celery_app import make_app
from taskdash.cli import cli
from taskdash.cmd_snapshot import render_tables
from tests.hostile_data import SEP, Evil, bind, envelope, hostile_values, plant_unacked

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> None:
    """kombu caches "already declared" bindings per pool; the test Redis is flushed between tests."""
    kombu.pools.reset()


def collector(url: str, **kw: Any) -> Collector:
    settings = resolve_settings(broker=url, env={}, interval=0.5, inspect_interval=60.0, inspect_timeout=0.2, **kw)
    return Collector(settings, background=False)


def cli_snapshot(url: str, *extra: str) -> Any:
    res = CliRunner().invoke(cli, ["snapshot", *extra, "--broker", url], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def queues(snap: Snapshot) -> dict[str, Any]:
    return {q.name: q for q in snap.queues}


def test_hostile_queue_heads_are_counted_and_never_break_a_refresh(redis_url: str, r: redis.Redis) -> None:
    values = hostile_values()
    good = [json.dumps(envelope(f"ok-{i}")).encode() for i in range(2)]
    for kind, raw in values.items():
        name = f"h_{kind}"
        bind(r, name)
        r.rpush(name, *good, raw)  # RPUSH last = index -1 = the message BRPOP takes next
    with collector(redis_url) as col:
        for _ in range(2):  # first sighting decodes the head; the second uses the cache
            snap = col.collect()
            assert snap.broker.ok, snap.errors
            qs = queues(snap)
            for kind in values:
                q = qs[f"h_{kind}"]
                assert q.messages == 3 and q.by_priority[0] == (0, 3), (kind, q)
                assert not q.wrong_type and q.oldest_age_s is not None
    json.dumps(snap.to_json())
    assert "h_non_json" in render_tables(snap)
    out = json.loads(cli_snapshot(redis_url, "--json").stdout)
    assert {q["name"]: q["messages"] for q in out["queues"]}["h_wrong_base64"] == 3


def test_hostile_unacked_entries_shown_as_what_they_are(redis_url: str, r: redis.Redis) -> None:
    values = hostile_values()
    for i, (kind, raw) in enumerate(values.items()):
        plant_unacked(r, f"tag-{kind}", raw, age=100 + i)
    with collector(redis_url) as col:
        snap = col.collect()
    assert snap.broker.ok and snap.unacked_total == len(values) == r.hlen("unacked")
    by_tag = {e.delivery_tag: e for e in snap.unacked}
    assert set(by_tag) == {f"tag-{k}" for k in values}, "every entry is shown, none dropped"
    for kind in ("non_json", "json_not_envelope", "json_scalar", "empty", "missing_fields"):
        e = by_tag[f"tag-{kind}"]
        assert e.decode_error, kind
        assert e.task_id is None, kind
    assert "binary" in by_tag["tag-non_json"].decode_error or "JSON" in by_tag["tag-non_json"].decode_error
    assert by_tag["tag-missing_fields"].task == "demo_tasks.tasks.add" or by_tag["tag-missing_fields"].task is None
    p1 = by_tag["tag-protocol1"]
    assert p1.decode_error is None and p1.task == "demo_tasks.tasks.add" and p1.task_id == "id-p1"
    assert p1.argsrepr == "[3, 4]" and p1.queue == "celery"
    gz = by_tag["tag-compressed"]
    assert gz.decode_error is None and gz.argsrepr == "[5, 6]" and gz.kwargsrepr == "{'k': 1}"
    b64 = by_tag["tag-wrong_base64"]
    assert b64.task_id == "id-b64" and b64.argsrepr is None  # headers still shown, body unreadable
    uni = by_tag["tag-unicode"]
    assert uni.task == "tâsk.ünï☃" and uni.task_id == "id-ü☃" and uni.argsrepr == "('☃',)"
    # every form of output survives it
    json.dumps(snap.to_json())
    text = render_tables(snap)
    assert "tâsk.ünï☃" in text
    out = json.loads(cli_snapshot(redis_url, "--json").stdout)
    assert out["unacked_total"] == len(values) and len(out["unacked"]) == len(values)
    assert cli_snapshot(redis_url).stdout.count("tag-") + text.count("?") > 0


def test_keys_of_the_wrong_type(redis_url: str, r: redis.Redis) -> None:
    """Strings/hashes/sets where kombu keeps lists, hashes and zsets: flagged, counted as 0, refresh goes on."""
    bind(r, "celery")
    bind(r, "emails")
    bind(r, "fine")
    r.rpush("fine", json.dumps(envelope("f1")))
    r.hset("celery", "a", "b")  # a queue key that is a hash
    r.sadd(f"emails{SEP}3", "x")  # a priority band that is a set
    r.set("_kombu.binding.weird", "not a set")  # a binding table that is a string
    r.set("unacked", "not a hash")
    r.rpush("unacked_index", "not a zset")
    with collector(redis_url) as col:
        for _ in range(2):
            snap = col.collect()
            assert snap.broker.ok
            qs = queues(snap)
            assert qs["celery"].wrong_type and qs["celery"].messages == 0
            assert qs["emails"].wrong_type and qs["emails"].messages == 0
            assert not qs["fine"].wrong_type and qs["fine"].messages == 1
            assert snap.unacked == () and snap.unacked_total == 0
            unacked_errors = [e for e in snap.errors if "unacked" in e.message]
            assert unacked_errors and "WRONGTYPE" in unacked_errors[0].message, snap.errors
        # fixed by hand while taskdash runs: it recovers on the next refresh
        r.delete("unacked", "unacked_index")
        plant_unacked(r, "t1", json.dumps(envelope("id-t1")).encode())
        snap = col.collect()
        assert snap.unacked_total == 1 and not [e for e in snap.errors if "unacked" in e.message]
    res = cli_snapshot(redis_url)
    assert "celery" in res.stdout


def test_unicode_and_binary_queue_names(redis_url: str, r: redis.Redis, demo_app: Any) -> None:
    uni = "ünï☃-queue"
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 1), queue=uni)
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue=uni, priority=9)
    binary = b"bin\xff\xfe\x00q"
    bind(r, binary)
    r.rpush(binary, json.dumps(envelope("b1")), json.dumps(envelope("b2")))
    for name in ("[/oops]", "\x1b[2Jcleared"):  # rich markup and a terminal escape sequence
        bind(r, name)
        r.rpush(name, json.dumps(envelope(f"m-{name}", task=name)))
    with collector(redis_url) as col:
        snap = col.collect()
    qs = queues(snap)
    assert qs[uni].messages == 2 and dict(qs[uni].by_priority) == {0: 1, 3: 0, 6: 0, 9: 1}
    bin_q = [q for q in snap.queues if q.name.startswith("bin")]
    assert len(bin_q) == 1, [q.name for q in snap.queues]
    assert bin_q[0].messages == 2, "a binary queue name must address the same key it came from"
    out = json.loads(json.dumps(snap.to_json()))
    assert uni in {q["name"] for q in out["queues"]}
    assert qs["[/oops]"].messages == 1 and qs["\x1b[2Jcleared"].messages == 1
    text = cli_snapshot(redis_url).stdout  # printing to a terminal must not choke on undecodable names
    assert uni in text and "bin\\xff\\xfe\\x00q" in text
    assert "[/oops]" in text and "\\x1b[2Jcleared" in text and "\x1b" not in text
    assert json.loads(cli_snapshot(redis_url, "--json").stdout)["schema"] >= 2


def net_out(r: redis.Redis) -> int:
    return int(r.info("stats")["total_net_output_bytes"])


def test_50mb_messages_stay_cheap(redis_url: str, r: redis.Redis) -> None:
    """A 50 MB message at a queue head and in the ledger: a refresh transfers KiBs, not MBs, and stays fast."""
    big_body = base64.b64encode(b"\x00" * (38 * MB)).decode()  # ~50 MB of base64
    env = envelope("id-huge", tag="tag-huge", queue="huge")
    env["body"] = big_body
    raw = json.dumps(env).encode()
    assert len(raw) > 50 * 10**6
    bind(r, "huge")
    r.rpush("huge", json.dumps(envelope("small")), raw)
    plant_unacked(r, "tag-huge", raw, queue="huge")
    del raw, big_body, env
    with collector(redis_url) as col:
        col.collect()  # scripts loaded, inspect window done
        for attempt in range(2):
            before = net_out(r)
            t0 = time.perf_counter()
            snap = col.collect()
            elapsed = time.perf_counter() - t0
            sent = net_out(r) - before
            assert sent < 256 * 1024, f"refresh {attempt} transferred {sent} bytes"
            assert elapsed < 2.0, f"refresh {attempt} took {elapsed:.2f}s"
    q = queues(snap)["huge"]
    assert q.messages == 2 and q.oldest_age_s is not None
    (e,) = snap.unacked
    assert e.task_id == "id-huge" and e.task == "demo_tasks.tasks.add" and e.size > 50 * 10**6
    assert e.queue == "huge"
    # the CLI too (fresh process-less run: first read of both)
    t0 = time.perf_counter()
    out = json.loads(cli_snapshot(redis_url, "--json").stdout)
    assert time.perf_counter() - t0 < 10
    assert out["unacked"][0]["task_id"] == "id-huge"


def test_pickle_messages_never_executed_end_to_end(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """Pickle bodies that would create a file if unpickled: the whole CLI snapshot path never loads them."""
    marker = tmp_path / "unpickled.marker"
    app = make_app(redis_url, redis_url, transport_options={}, task_serializer="pickle",
                   accept_content=["json", "pickle"])
    try:
        app.send_task("demo_tasks.tasks.add", args=(Evil(str(marker)), 8), kwargs={"k": Evil(str(marker))},
                      queue="picklq", task_id="pk-queued")
        app.send_task("demo_tasks.tasks.add", args=(Evil(str(marker)), 9), queue="picklq", task_id="pk-unacked")
    finally:
        app.close()
    # move the second one into the ledger, the way a worker's BRPOP + ack emulation does
    raw = r.lpop("picklq")  # the newest (LPUSHed last)
    env = json.loads(raw)
    assert env["content-type"] == "application/x-python-serialize" and env["headers"]["id"] == "pk-unacked"
    plant_unacked(r, env["properties"]["delivery_tag"], raw, queue="picklq")
    # a protocol-2 entry without argsrepr forces a body look-up, a protocol-1 entry has only the body
    bare = json.loads(raw)
    del bare["headers"]["argsrepr"], bare["headers"]["kwargsrepr"]
    bare["properties"]["delivery_tag"] = "tag-bare"
    plant_unacked(r, "tag-bare", json.dumps(bare).encode(), queue="picklq")
    p1 = json.loads(raw)
    p1["headers"] = {}
    p1["properties"]["delivery_tag"] = "tag-p1"
    plant_unacked(r, "tag-p1", json.dumps(p1).encode(), queue="picklq")
    r.rpush("picklq", json.dumps(p1))  # and one at the queue head

    outputs = {}
    for args in (("snapshot", "--json"), ("snapshot",), ("snapshot", "--json", "--observe", "1")):
        proc = subprocess.run([sys.executable, "-m", "taskdash", *args, "--broker", redis_url],
                              capture_output=True, text=True, env=dict(os.environ), timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert not marker.exists(), f"{args}: a pickle body was unpickled"
        outputs[args] = proc.stdout
    assert "demo_tasks.tasks.add" in outputs[("snapshot",)]
    snap = json.loads(outputs[("snapshot", "--json")])
    by_tag = {e["delivery_tag"]: e for e in snap["unacked"]}
    main = by_tag[env["properties"]["delivery_tag"]]
    assert main["task"] == "demo_tasks.tasks.add" and main["task_id"] == "pk-unacked"
    assert main["argsrepr"] == "(Evil(), 9)" and main["decode_error"] is None
    assert by_tag["tag-bare"]["task_id"] == "pk-unacked" and by_tag["tag-bare"]["argsrepr"] is None
    assert "pickle" in (by_tag["tag-p1"]["decode_error"] or "")
    assert {q["name"]: q["messages"] for q in snap["queues"]}["picklq"] == 2
    assert not marker.exists()
    # sanity: the payload really is armed, so the assertions above can fail
    pickle.loads(base64.b64decode(env["body"]))
    assert marker.exists()


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    from collectors.core.messages import printable

    assert printable("plain ünï☃ [b]x[/b]") == "plain ünï☃ [b]x[/b]"
    assert printable("a\x1b[2Jb\x07c\td\ne") == "a\\x1b[2Jb\\x07c\\x09d\ne"
    assert printable(b"q\xff\xfe".decode("utf-8", "surrogateescape")) == "q\\xff\\xfe"
    assert printable("\x9b31m") == "\\x9b31m"  # 8-bit CSI


def test_hostile_topic_binding_cannot_freeze_a_refresh(redis_url: str, r: redis.Redis) -> None:
    """A binding row whose "pattern" is a catastrophic regex ((a+)+$) must not be run: the refresh stays
    fast; real kombu topic bindings still route unacked entries to their queue."""
    import random
    import re

    from kombu.transport.virtual.exchange import TopicExchange

    from collectors.reads.broker import topic_match

    topic = TopicExchange(None)
    r.sadd("_kombu.binding.evil", f"x{SEP}(a+)+$" + SEP + "trap")
    for bk, q in (("tasks.*.high", "high"), ("tasks.#", "all_tasks")):
        r.sadd("_kombu.binding.topicx", SEP.join((bk, topic.key_to_pattern(bk), q)))
    body = json.dumps(envelope("e1")).encode()
    r.hset("unacked", "evil", b"[" + body + b', "evil", "' + b"a" * 40 + b'!"]')
    r.hset("unacked", "hi", b"[" + body.replace(b"tag-e1", b"hi") + b', "topicx", "tasks.eu.high"]')
    r.hset("unacked", "lo", b"[" + body.replace(b"tag-e1", b"lo") + b', "topicx", "tasks.eu.low"]')
    r.zadd("unacked_index", {"evil": time.time() - 5, "hi": time.time() - 4, "lo": time.time() - 3})
    with collector(redis_url) as col:
        t0 = time.perf_counter()
        snap = col.collect()
        assert time.perf_counter() - t0 < 3.0
    queue_of = {e.delivery_tag: e.queue for e in snap.unacked}
    assert queue_of == {"evil": None, "hi": "all_tasks", "lo": "all_tasks"} or queue_of == {
        "evil": None, "hi": "high", "lo": "all_tasks"}, queue_of
    # the linear matcher agrees with kombu's own regex on kombu-made patterns
    rnd = random.Random(7)
    for _ in range(3000):
        bk = ".".join(rnd.choice(["a", "b", "*", "#", ""]) for _ in range(rnd.randint(1, 4)))
        key = ".".join(rnd.choice(["a", "b", "ab", ""]) for _ in range(rnd.randint(1, 5)))
        pattern = topic.key_to_pattern(bk)
        assert topic_match(bk, pattern, key) == (re.match(pattern, key) is not None), (bk, key)


def test_corrupt_export_file_restores_nothing(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """A hand-edited or damaged export (bad base64 / missing key on one line): refused whole, nothing written."""
    from collectors.core.config import Settings
    from collectors.writes.actions import ActionError, Actions

    export = tmp_path / "damaged.jsonl"
    lines = [{"type": "header", "format": "taskdash-export", "version": 1, "id": "dmg1", "action": "purge",
              "queue": "work"}]
    lines += [{"type": "message", "queue": "work", "key": "work", "band": 0, "raw": json.dumps(envelope(f"m{i}"))}
              for i in range(3)]
    lines += [{"type": "message", "queue": "second", "key": "second", "band": 0,
               "raw": json.dumps(envelope(f"s{i}"))} for i in range(2)]
    lines += [{"type": "message", "queue": "other", "key": "other", "band": 0, "raw_b64": "%%% not base64"}]
    export.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    actions = Actions(Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl")), r)
    err: Exception | None = None
    try:
        actions.restore(str(export))
    except Exception as exc:  # noqa: BLE001 - the type is asserted below, after the state
        err = exc
    assert r.dbsize() == 0, f"half-applied restore: {sorted(r.scan_iter())} ({err!r})"
    assert isinstance(err, ActionError), repr(err)
