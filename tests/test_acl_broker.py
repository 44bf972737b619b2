"""The broker reader without scripting: same truth on every read path, chosen automatically per user.

Three readers on the same data — full Lua, read-only Lua (EVAL_RO/EVALSHA_RO) and plain commands — give
equal BrokerViews over several refreshes (depths per band, oldest, unacked total + window + entries +
per-queue counts), with a constant number of round trips; a read-only ACL user lands on the plain path
by itself, a scripting-but-no-writes user on EVAL_RO, and the note says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from collectors.core.config import Settings
from collectors.reads.broker import BrokerReader, BrokerView
from taskdash.procs import RedisServer
from tests.acl_helpers import PASSWORD, acl_output, apply_lines
from tests.hostile_data import SEP, bind, envelope, plant_unacked


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    yield s
    s.cleanup()


@pytest.fixture()
def admin(server: RedisServer) -> redis.Redis:
    c = server.client()
    c.flushall()
    c.script_flush()
    c.execute_command("ACL", "LOG", "RESET")
    for name in c.execute_command("ACL", "USERS"):
        name = name.decode() if isinstance(name, bytes) else name
        if name != "default":
            c.execute_command("ACL", "DELUSER", name)
    return c


def _seed(r: redis.Redis, *, unacked: int = 40) -> None:
    """Queues with priority bands, a big head, a wrong-type band and a ledger bigger than the window."""
    for q in ("celery", "emails", "priority", "big", "odd"):
        bind(r, q)
    bind(r, "routed", exchange="direct-ex")
    for i in range(5):
        r.lpush("celery", json.dumps(envelope(f"c{i}", tag=f"tc{i}", queue="celery")))
    for i in range(3):
        r.lpush("emails", json.dumps(envelope(f"e{i}", tag=f"te{i}", queue="emails")))
    for band, n in ((0, 2), (3, 1), (9, 4)):
        key = "priority" if band == 0 else f"priority{SEP}{band}"
        for i in range(n):
            r.lpush(key, json.dumps(envelope(f"p{band}-{i}", tag=f"tp{band}-{i}", queue="priority", priority=band)))
    r.lpush("big", json.dumps(envelope("big", tag="tbig", queue="big", body=["x" * 200_000])))
    r.lpush("odd", json.dumps(envelope("odd0", tag="todd", queue="odd")))
    r.set(f"odd{SEP}6", "not a list")
    for i in range(unacked):
        q = ("celery", "emails", "routed")[i % 3]
        value = json.dumps(envelope(f"u{i}", tag=f"u{i}", queue=q)).encode()
        plant_unacked(r, f"u{i}", value, age=600.0 - i, ex="direct-ex" if q == "routed" else "", queue=q)


def _reader(url_or_client: Any, mode: str | None = None, window: int = 10) -> BrokerReader:
    settings = Settings(broker_url="redis://x", unacked_window=window)
    client = url_or_client if isinstance(url_or_client, redis.Redis) else redis.Redis.from_url(url_or_client)
    reader = BrokerReader(settings, client)
    if mode is not None:
        reader.mode = mode
        reader.mode_reason = "forced by the test"
    return reader


def _truth(v: BrokerView) -> dict[str, Any]:
    # Per-queue unacked counts of a ledger bigger than the window come from an HSCAN in progress until its
    # pass completes (exact False): HSCAN may return an entry twice while Redis rehashes the hash, so two
    # readers a moment apart can count 10 and 11. Compared only once exact.
    return {
        "queues": [(q.name, q.messages, q.by_priority, q.oldest_age_s,
                    q.unacked if v.unacked_counts_exact else None, q.consumers, q.no_consumer,
                    q.wrong_type if hasattr(q, "wrong_type") else None) for q in v.queues],
        "unacked_total": v.unacked_total, "index_total": v.unacked_index_total,
        "window": [e.to_json() for e in v.unacked], "exact": v.unacked_counts_exact,
        "errors": sorted(v.errors), "tables": v.binding_tables,
    }


def test_plain_and_read_only_lua_views_equal_the_lua_view(admin: redis.Redis) -> None:
    _seed(admin)
    readers = {m: _reader(admin, m) for m in ("lua", "lua-ro", "plain")}
    now = 1_000_000.0
    for step in range(6):
        views = {m: r.read(now=now + step) for m, r in readers.items()}
        truth = _truth(views["lua"])
        assert {q[0] for q in truth["queues"]} >= {"celery", "emails", "priority", "big", "odd", "routed"}
        for mode in ("lua-ro", "plain"):
            assert _truth(views[mode]) == truth, (mode, step)
            assert views[mode].round_trips <= 3
        if step == 2:  # the ledger and the queues move between refreshes: all paths follow
            admin.hdel("unacked", "u0", "u1")
            admin.zrem("unacked_index", "u0", "u1")
            admin.rpop("celery")
            admin.lpush(f"emails{SEP}3", json.dumps(envelope("e-hi", tag="te-hi", queue="emails", priority=3)))
    prio = next(q for q in views["plain"].queues if q.name == "priority")
    assert prio.by_priority == ((0, 2), (3, 1), (6, 0), (9, 4)) and prio.messages == 7
    assert views["plain"].unacked_total == 38 and len(views["plain"].unacked) == 10
    assert views["lua"].read_mode == "lua" and views["lua"].note is None
    assert views["plain"].note and "plain reads" in views["plain"].note


def test_read_only_user_switches_to_plain_reads_by_itself(server: RedisServer, admin: redis.Redis) -> None:
    _seed(admin)
    apply_lines(admin, acl_output("--broker", server.url, "--password", PASSWORD, "--watch-only"))
    ro = _reader(f"redis://taskdash-ro:{PASSWORD}@127.0.0.1:{server.port}/0")
    full = _reader(admin)
    now = 2_000_000.0
    first = ro.read(now=now)
    assert first.read_mode == "plain" and ro.mode_reason == "NOPERM SCRIPT|LOAD"
    assert first.note.startswith("scripting not permitted (NOPERM SCRIPT|LOAD): plain reads, ")
    ref = full.read(now=now)
    assert _truth(first) == _truth(ref)
    for step in range(1, 4):  # remembered: no more refused commands, still the same truth
        v, w = ro.read(now=now + step), full.read(now=now + step)
        assert v.read_mode == "plain" and _truth(v) == _truth(w)
        assert v.round_trips <= 3 and v.round_trips <= w.round_trips + 1
    extra = int(v.note.split("plain reads, ")[1].split()[0])
    assert 0 <= extra <= v.commands
    refused = {e.get("object") for e in _acl_log(admin) if e.get("username") == "taskdash-ro"}
    assert refused == {"script|load", "eval_ro"}  # once each, in the first read; nothing since


def test_scripting_user_without_writes_uses_eval_ro(server: RedisServer, admin: redis.Redis) -> None:
    _seed(admin)
    apply_lines(admin, acl_output("--broker", server.url, "--password", PASSWORD, "--watch-only", "--scripting"))
    ro = _reader(f"redis://taskdash-ro:{PASSWORD}@127.0.0.1:{server.port}/0")
    full = _reader(admin)
    for step in range(4):
        v, w = ro.read(now=3_000_000.0 + step), full.read(now=3_000_000.0 + step)
        assert v.read_mode == "lua-ro" and _truth(v) == _truth(w)
        assert "EVAL_RO" in (v.note or "")
    admin.script_flush()  # Redis forgot the scripts: EVAL_RO sends the source again
    v, w = ro.read(now=3_000_010.0), full.read(now=3_000_010.0)
    assert v.read_mode == "lua-ro" and _truth(v) == _truth(w)


def _acl_log(admin: redis.Redis) -> list[dict[str, Any]]:
    from tests.acl_helpers import acl_log

    return acl_log(admin)
