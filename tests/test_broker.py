"""collectors.reads.broker against a real Redis: queues published by real Celery producers (no worker needed)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import kombu.pools
import pytest
import redis
from kombu import Exchange, Queue

from collectors.core.config import Settings, app_queue_names
from collectors.keyspace.keys import KeyLayout
from collectors.reads.broker import HSCAN_COUNT, BrokerReader, BrokerView
from demo_tasks.celery_app import make_app


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> None:
    """kombu shares producer pools (and their "already declared" caches) between apps with the same URL;
    the test Redis is flushed between tests, so start from fresh pools or bindings are never re-declared."""
    kombu.pools.reset()


SEP = "\x06\x16"


class CountingConnection(redis.Connection):
    """Counts what really goes over the wire: one ``send_packed_command`` per round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def counting_client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


def llen_truth(r: redis.Redis, settings: Settings, queue: str) -> dict[int, int]:
    return {band: int(r.llen(key)) for band, key in KeyLayout.from_settings(settings).queue_keys(queue)}


def by_name(view: BrokerView) -> dict[str, Any]:
    return {q.name: q for q in view.queues}


def test_priority_bands_match_llen_and_oldest_age_grows(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    for rep in range(3):
        for p in range(10):
            demo_app.send_task("demo_tasks.tasks.prioritized", args=(p * 10 + rep,), priority=p)
    settings = Settings(broker_url=redis_url, app_queues=app_queue_names(demo_app))
    reader = BrokerReader(settings, r)
    t0 = time.time()
    view = reader.read(now=t0)
    q = by_name(view)["priority"]
    truth = llen_truth(r, settings, "priority")
    assert dict(q.by_priority) == truth == {0: 9, 3: 9, 6: 9, 9: 3}
    assert q.messages == sum(truth.values()) == 30
    assert q.oldest_age_s == 0.0  # first sighting
    assert q.consumers is None and not q.no_consumer  # inspect unavailable
    assert set(q.sources) == {"app", "binding"}
    # every app queue is listed even when empty (depth 0, no oldest message)
    names = by_name(view)
    assert {"celery", "slow", "priority", "risky", "emails"} <= set(names)
    assert names["emails"].messages == 0 and names["emails"].oldest_age_s is None
    # ages grow across reads while the same message waits at the consuming end
    v2 = reader.read(now=t0 + 7.5, worker_queues={"celery": 1})
    q2 = by_name(v2)["priority"]
    assert q2.oldest_age_s == pytest.approx(7.5)
    assert q2.consumers == 0 and q2.no_consumer
    assert by_name(v2)["celery"].consumers == 1
    # the band-0 tail is what BRPOP takes next; consuming it changes the oldest message (age restarts)
    r.rpop(KeyLayout.from_settings(settings).queue_key("priority", 0))
    q3 = by_name(reader.read(now=t0 + 9))["priority"]
    assert q3.messages == 29 and q3.oldest_age_s == 0.0
    assert by_name(reader.read(now=t0 + 10))["priority"].oldest_age_s == pytest.approx(1.0)


def test_eta_message_age_from_eta(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    eta = datetime.now(timezone.utc) - timedelta(seconds=120)
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="later", eta=eta)
    reader = BrokerReader(Settings(broker_url=redis_url), r)
    q = by_name(reader.read(now=time.time()))["later"]
    assert q.messages == 1 and q.oldest_age_s == pytest.approx(120, abs=5)


def test_discovery_from_producer_bindings_only_and_internal_excluded(
        demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="only_producer")
    # a topic exchange bound by a consumer declaration (no messages yet)
    with demo_app.connection_for_write() as conn:
        Queue("topic_q", Exchange("topx", type="topic"), routing_key="a.*").bind(conn.default_channel).declare()
    # internal rows shaped exactly as kombu writes them (pidbox, reply, events, worker-direct)
    r.sadd("_kombu.binding.celery.pidbox", f"{SEP}{SEP}w1@host.celery.pidbox")
    r.sadd("_kombu.binding.reply.celery.pidbox", f"abc{SEP}{SEP}abc.reply.celery.pidbox")
    r.sadd("_kombu.binding.celeryev", f"worker.#{SEP}{SEP}celeryev.1234", f"#{SEP}{SEP}celeryev.99")
    r.sadd("_kombu.binding.C.dq2", f"w1@host{SEP}{SEP}w1@host.dq2")
    r.sadd("_kombu.binding.sneaky", f"x{SEP}{SEP}w2@host.celery.pidbox")
    r.lpush("abc.reply.celery.pidbox", "{}")
    reader = BrokerReader(Settings(broker_url=redis_url), r)  # no -A app: bindings only
    view = reader.read(now=time.time())
    names = set(by_name(view))
    assert names == {"only_producer", "topic_q"}
    assert by_name(view)["only_producer"].messages == 1
    assert by_name(view)["only_producer"].sources == ("binding",)
    assert reader.queue_for("topx", "a.b") == "topic_q"
    assert reader.queue_for("topx", "b.c") is None
    assert reader.queue_for("", "anything") == "anything"
    # the binding table created after the first read is found on the next one
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="later_one")
    assert "later_one" in by_name(reader.read(now=time.time()))


def test_custom_priority_steps_and_sep(redis_url: str, r: redis.Redis) -> None:
    opts = {"priority_steps": [0, 5, 8], "sep": ":"}
    app = make_app(redis_url, redis_url, transport_options=opts)
    try:
        for p in range(10):
            app.send_task("demo_tasks.tasks.prioritized", args=(p,), priority=p)
    finally:
        app.close()
    keys = {k.decode() for k in r.keys("priority*")}  # ground truth (tests may use KEYS)
    assert keys == {"priority", "priority:5", "priority:8"}
    settings = Settings(broker_url=redis_url, priority_steps=(0, 5, 8), sep=":")
    view = BrokerReader(settings, r).read(now=time.time())
    q = by_name(view)["priority"]  # found through a binding row split on ":"
    assert dict(q.by_priority) == llen_truth(r, settings, "priority") == {0: 5, 5: 3, 8: 2}


def test_key_prefixed_producer(redis_url: str, r: redis.Redis) -> None:
    app = make_app(redis_url, redis_url, transport_options={"global_keyprefix": "myapp:"})
    try:
        for p in (0, 4, 9, 9):
            app.send_task("demo_tasks.tasks.prioritized", args=(p,), priority=p)
        app.send_task("demo_tasks.tasks.send_email", args=("a@b",))
    finally:
        app.close()
    r.lpush("priority", "unprefixed noise")  # another app without prefix in the same db
    settings = Settings(broker_url=redis_url, global_keyprefix="myapp:")
    view = BrokerReader(settings, r).read(now=time.time())
    q = by_name(view)
    assert set(q) == {"priority", "emails"}
    assert dict(q["priority"].by_priority) == {0: 1, 3: 1, 6: 0, 9: 2}
    assert dict(q["priority"].by_priority) == llen_truth(r, settings, "priority")
    assert q["emails"].messages == 1
    # the unprefixed reader sees only the noise list (and no bindings: they are prefixed)
    plain = BrokerReader(Settings(broker_url=redis_url, app_queues=("priority",)), r).read(now=time.time())
    assert by_name(plain)["priority"].messages == 1


def test_wrong_type_keys_do_not_break_the_refresh(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    demo_app.send_task("demo_tasks.tasks.prioritized", args=(1,), priority=9)
    r.set("celery", "a string where a list belongs")
    r.set("unacked", "not a hash")
    settings = Settings(broker_url=redis_url, app_queues=app_queue_names(demo_app))
    view = BrokerReader(settings, r).read(now=time.time())
    q = by_name(view)
    assert q["celery"].wrong_type and q["celery"].messages == 0
    assert not q["priority"].wrong_type and q["priority"].messages == 1
    assert q["priority"].oldest_age_s == 0.0
    assert view.unacked_total == 0 and any("unacked" in e for e in view.errors)


def _declare_queues(app: Any, n: int) -> None:
    with app.connection_for_write() as conn:
        ch = conn.default_channel
        for i in range(n):
            name = f"bulk{i:04d}"
            Queue(name, Exchange(name), routing_key=name).bind(ch).declare()
        producer = app.amqp.Producer(ch)
        for i in range(0, n, 7):
            producer.publish({"x": i}, routing_key=f"bulk{i:04d}", exchange="", priority=i % 10)


def test_round_trips_do_not_grow_with_queue_count(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    settings = Settings(broker_url=redis_url)
    trips: dict[int, tuple[int, int, int]] = {}
    for n in (10, 300):
        r.flushall()
        _declare_queues(demo_app, n)
        client = counting_client(redis_url)
        reader = BrokerReader(settings, client)
        reader.read(now=time.time())  # first read: script loads, discovery of new tables
        before = CountingConnection.sends
        view = reader.read(now=time.time())
        sent = CountingConnection.sends - before
        assert len(view.queues) == n
        for i in range(0, n, 7):
            assert by_name(view)[f"bulk{i:04d}"].messages == 1
        trips[n] = (view.round_trips, sent, view.commands)
        client.close()
    assert trips[10][0] == trips[300][0] == 2
    assert trips[10][1] == trips[300][1] == 2  # measured on the wire
    assert trips[300][2] > trips[10][2]  # commands do grow (one probe per queue)


def test_big_messages_are_not_transferred_whole(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    big = "y" * (8 * 1024 * 1024)
    res = demo_app.send_task("demo_tasks.tasks.add", args=(big, 1), queue="bigq")
    raw = r.lindex("bigq", -1)
    assert raw is not None and len(raw) > 8 * 1024 * 1024
    # a copy of the message in the ledger, exactly as kombu's QoS.append writes it
    env = json.loads(raw)
    tag = env["properties"]["delivery_tag"]
    r.hset("unacked", tag, json.dumps([env, "", "bigq"]))
    r.zadd("unacked_index", {tag: time.time() - 50})
    client = counting_client(redis_url)
    reader = BrokerReader(Settings(broker_url=redis_url, visibility_timeout=40), client)
    out_before = int(r.info("stats")["total_net_output_bytes"])
    reader.read(now=time.time())
    t0 = time.monotonic()
    view = reader.read(now=time.time(), claims={}, inspected_at=time.time())
    assert time.monotonic() - t0 < 2
    q = by_name(view)["bigq"]
    assert q.messages == 1 and q.oldest_age_s is not None and q.unacked == 1
    (entry,) = view.unacked
    assert (entry.task_id, entry.queue, entry.delivery_tag) == (res.id, "bigq", tag)
    assert entry.size > 8 * 1024 * 1024 and entry.decode_error is None
    assert entry.state == "orphaned" and entry.stale and entry.time_to_redelivery_s < -9
    sent = int(r.info("stats")["total_net_output_bytes"]) - out_before
    assert sent < 512 * 1024  # two reads; neither transferred the 8 MB message (twice present)
    client.close()


def _fake_ledger(r: redis.Redis, demo_app: Any, per_queue: dict[str, int], t0: float) -> dict[str, str]:
    """Fill unacked/unacked_index exactly as kombu's QoS.append does, from real envelopes."""
    tags: dict[str, str] = {}
    pipe = r.pipeline(transaction=False)
    n = 0
    for queue, count in per_queue.items():
        demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue=queue)
        env = json.loads(r.rpop(queue))
        for i in range(count):
            tag = f"{queue}-tag-{i}"
            env["properties"]["delivery_tag"] = tag
            env["headers"]["id"] = f"{queue}-id-{i}"
            pipe.zadd("unacked_index", {tag: t0 - 1000 + n})
            pipe.hset("unacked", tag, json.dumps([env, "", queue]))
            tags[tag] = queue
            n += 1
    pipe.execute()
    return tags


def test_big_ledger_window_and_converging_counts(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    t0 = time.time()
    per_queue = {"qa": 2500, "qb": 1500, "qc": 500}
    _fake_ledger(r, demo_app, per_queue, t0)
    r.zadd("unacked_index", {"acked-meanwhile": t0 - 5000})  # in the index, not in the hash
    settings = Settings(broker_url=redis_url, unacked_window=50, app_queues=tuple(per_queue))
    reader = BrokerReader(settings, r)
    view = reader.read(now=t0, claims={}, inspected_at=t0)
    assert view.unacked_total == 4500 and view.unacked_index_total == 4501
    assert len(view.unacked) == 49  # window of 50 index entries minus the one missing from the hash
    scores = [e.reserved_at for e in view.unacked]
    assert scores == sorted(scores) and view.unacked[0].delivery_tag == "qa-tag-0"
    assert all(e.queue == "qa" and e.state == "orphaned" and e.task == "demo_tasks.tasks.add"
               for e in view.unacked)
    assert not view.unacked_counts_exact
    assert view.round_trips == 2  # the app queues' own tables are read in the first round trip
    # counts converge over HSCAN steps of HSCAN_COUNT entries per refresh: one pass ≈ total / HSCAN_COUNT reads
    reads = 2 * (4500 // HSCAN_COUNT) + 10
    for _ in range(reads):
        view = reader.read(now=t0, claims={}, inspected_at=t0)
        assert view.round_trips == 2
        if {q.name: q.unacked for q in view.queues} == per_queue:
            break
    assert {q.name: q.unacked for q in view.queues} == per_queue
    # ack 1000 qa entries (as kombu does); a new full pass later the counts follow
    pipe = r.pipeline()
    for i in range(1000, 2000):
        pipe.zrem("unacked_index", f"qa-tag-{i}")
        pipe.hdel("unacked", f"qa-tag-{i}")
    pipe.execute()
    for _ in range(reads):
        view = reader.read(now=t0, claims={}, inspected_at=t0)
        if {q.name: q.unacked for q in view.queues} == {"qa": 1500, "qb": 1500, "qc": 500}:
            break
    assert {q.name: q.unacked for q in view.queues} == {"qa": 1500, "qb": 1500, "qc": 500}
    # a small ledger is counted exactly from the window
    r.delete("unacked", "unacked_index")
    _fake_ledger(r, demo_app, {"qb": 3, "qc": 2}, t0)
    view = reader.read(now=t0, claims=None)
    assert view.unacked_counts_exact
    assert {q.name: q.unacked for q in view.queues} == {"qa": 0, "qb": 3, "qc": 2}
    assert {e.state for e in view.unacked} == {"unknown"}  # inspect failed


def test_classification_rules(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    from collectors.core.models import TaskRef

    now = time.time()
    _fake_ledger(r, demo_app, {"qa": 4}, now - 3)  # reserved at now-1003 .. now-1000
    r.zadd("unacked_index", {"qa-tag-3": now - 1})  # just reserved
    settings = Settings(broker_url=redis_url, visibility_timeout=1002.5)
    reader = BrokerReader(settings, r)
    claims = {
        "qa-id-0": TaskRef(task_id="qa-id-0", name="demo_tasks.tasks.add", state="active", hostname="w1"),
        "qa-id-1": TaskRef(task_id="qa-id-1", name="demo_tasks.tasks.add", state="scheduled", hostname="w2"),
    }
    view = reader.read(now=now, claims=claims, inspected_at=now - 0.5)
    got = {e.task_id: (e.state, e.holder, e.stale) for e in view.unacked}
    assert got == {
        "qa-id-0": ("active", "w1", True),
        "qa-id-1": ("scheduled", "w2", False),
        "qa-id-2": ("orphaned", None, False),
        "qa-id-3": ("unknown", None, False),  # reserved after the last inspect: cannot know yet
    }
    e0 = view.unacked[0]
    assert e0.age_s == pytest.approx(1003) and e0.time_to_redelivery_s == pytest.approx(-0.5)


def test_scripts_reloaded_after_script_flush(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="flushq")
    reader = BrokerReader(Settings(broker_url=redis_url), r)
    assert by_name(reader.read(now=time.time()))["flushq"].messages == 1
    r.script_flush()
    demo_app.send_task("demo_tasks.tasks.add", args=(3, 4), queue="flushq")  # depth changed: probe script runs
    view = reader.read(now=time.time())
    assert by_name(view)["flushq"].messages == 2 and view.round_trips >= 3
    assert reader.read(now=time.time()).round_trips == 2


def test_unchanged_window_entries_are_not_transferred_again(demo_app: Any, r: redis.Redis, redis_url: str) -> None:
    now = time.time()
    _fake_ledger(r, demo_app, {"qa": 200}, now - 100)
    reader = BrokerReader(Settings(broker_url=redis_url), r)

    def read_bytes() -> tuple[BrokerView, int]:
        before = int(r.info("stats")["total_net_output_bytes"])
        v = reader.read(now=time.time(), claims={}, inspected_at=time.time())
        return v, int(r.info("stats")["total_net_output_bytes"]) - before

    v1, b1 = read_bytes()
    v2, b2 = read_bytes()
    assert [e.to_json() | {"age_s": 0, "time_to_redelivery_s": 0} for e in v1.unacked] == \
        [e.to_json() | {"age_s": 0, "time_to_redelivery_s": 0} for e in v2.unacked]
    assert len(v2.unacked) == 200 and b2 < b1 / 5
    # a restore + redelivery keeps the tag but changes value and score: the new value is read
    value = json.loads(r.hget("unacked", "qa-tag-5"))
    value[0]["headers"]["redelivered"] = True
    r.hset("unacked", "qa-tag-5", json.dumps(value))
    r.zadd("unacked_index", {"qa-tag-5": now + 1})
    r.hdel("unacked", "qa-tag-7")  # acked between ZREM and HDEL (half state): skipped
    v3, _ = read_bytes()
    got = {e.delivery_tag: e for e in v3.unacked}
    assert got["qa-tag-5"].redelivered and got["qa-tag-5"].reserved_at == pytest.approx(now + 1)
    assert not got["qa-tag-4"].redelivered and "qa-tag-7" not in got
    assert v3.unacked[-1].delivery_tag == "qa-tag-5"  # oldest first: it is now the newest


def test_garbage_at_the_head_of_a_queue(r: redis.Redis, redis_url: str) -> None:
    r.lpush("junk", b"\x00\xffnot json at all")
    r.lpush("junk\x06\x169", b"x" * 200_000)  # huge tag-less value in a lower-priority band
    settings = Settings(broker_url=redis_url, app_queues=("junk",))
    reader = BrokerReader(settings, r)
    t0 = time.time()
    q = by_name(reader.read(now=t0))["junk"]
    assert q.messages == 2 and dict(q.by_priority)[9] == 1 and q.oldest_age_s == 0.0
    assert by_name(reader.read(now=t0 + 3))["junk"].oldest_age_s == pytest.approx(3)
    r.rpop("junk")  # band 0 drained: the huge band-9 value is next
    assert by_name(reader.read(now=t0 + 4))["junk"].oldest_age_s == 0.0
    assert by_name(reader.read(now=t0 + 6))["junk"].oldest_age_s == pytest.approx(2)


def test_incremental_reads_follow_new_bands_heads_and_window_changes(demo_app: Any, r: redis.Redis,
                                                                     redis_url: str) -> None:
    """The per-refresh shortcuts (known bands only, head probes of changed queues, fingerprinted window)
    never hide a change: a new priority band, a head replaced at equal depth, an ack inside the window."""
    settings = Settings(broker_url=redis_url, app_queues=("priority", "celery"), unacked_window=20)
    now = time.time()
    _fake_ledger(r, demo_app, {"qa": 60}, now - 100)
    demo_app.send_task("demo_tasks.tasks.add", args=(1, 2), queue="celery")
    reader = BrokerReader(settings, r)
    t0 = time.time()
    v1 = reader.read(now=t0, claims={}, inspected_at=t0)
    assert by_name(v1)["celery"].messages == 1 and len(v1.unacked) == 20
    reader.read(now=t0 + 1, claims={}, inspected_at=t0)  # steady: bands known, window fingerprinted
    # a band that did not exist before (priority 9 -> band key 'priority\x06\x169') shows at the next read
    demo_app.send_task("demo_tasks.tasks.prioritized", args=(1,), priority=9)
    q = by_name(reader.read(now=t0 + 2, claims={}, inspected_at=t0))["priority"]
    assert q.messages == 1 and dict(q.by_priority) == llen_truth(r, settings, "priority")
    assert q.oldest_age_s == 0.0
    # the head is consumed and another message published between two reads: same depth, new head
    assert by_name(reader.read(now=t0 + 10, claims={}, inspected_at=t0))["celery"].oldest_age_s == pytest.approx(10)
    r.rpop("celery")
    demo_app.send_task("demo_tasks.tasks.add", args=(3, 4), queue="celery")
    ages = [by_name(reader.read(now=t0 + 11 + i, claims={}, inspected_at=t0))["celery"].oldest_age_s
            for i in range(3)]
    assert ages[0] == 0.0 and ages[-1] == pytest.approx(2)  # re-read at once (few queues: all in the slice)
    # an ack inside the fingerprinted window (kombu: ZREM + HDEL) is seen at the next read
    before = {e.delivery_tag for e in reader.read(now=t0 + 20, claims={}, inspected_at=t0).unacked}
    assert "qa-tag-3" in before
    r.zrem("unacked_index", "qa-tag-3")
    r.hdel("unacked", "qa-tag-3")
    after = reader.read(now=t0 + 21, claims={}, inspected_at=t0)
    tags = [e.delivery_tag for e in after.unacked]
    assert "qa-tag-3" not in tags and len(tags) == 20 and tags[-1] == "qa-tag-20"
    assert after.unacked_total == 59 and after.round_trips <= 3
