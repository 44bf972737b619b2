"""The plain-command twins of the broker scripts give exactly the scripts' replies on the same data."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis

from collectors.keyspace import scripts
from collectors.reads import broker_plain

SEP = "\x06\x16"
INLINE, HEAD, TAIL = 65536, 512, 16384


def _msg(tag: str, pad: int = 0, *, exchange: str = "", rk: str = "celery") -> bytes:
    return json.dumps({"body": "x" * pad, "headers": {"id": f"id-{tag}", "task": "t.add"},
                       "properties": {"delivery_tag": tag, "priority": 0,
                                      "delivery_info": {"exchange": exchange, "routing_key": rk}}}).encode()


def _unacked_value(tag: str, exchange: str, rk: str, pad: int = 0) -> bytes:
    return json.dumps([json.loads(_msg(tag, pad, exchange=exchange, rk=rk)), exchange, rk]).encode()


def _both(r: redis.Redis, lua: Callable[[Any], None],
          plain: Callable[[Any], tuple[int, broker_plain.Decoder]]) -> tuple[Any, Any]:
    pipe = r.pipeline(transaction=False)
    for s in scripts.BROKER_SCRIPTS:
        s.load(pipe)
    lua(pipe)
    lua_res = pipe.execute()[-1]
    pipe = r.pipeline(transaction=False)
    n, decode = plain(pipe)
    raw = pipe.execute(raise_on_error=False)
    assert len(raw) == n
    return lua_res, decode(raw)


def _norm(x: Any) -> Any:
    if isinstance(x, list | tuple):
        return [_norm(i) for i in x]
    if isinstance(x, str):
        return x.encode()
    return x


def test_queue_probe_twin(r: redis.Redis) -> None:
    # several queues: empty, band 0 only, priority bands, a big head, a wrong-type key, an unknown tag
    r.lpush("a", _msg("a1"), _msg("a2"))
    r.lpush(f"b{SEP}3", _msg("b3"))
    r.lpush("b", _msg("b0"))
    r.lpush("big", _msg("big1", pad=200_000))
    r.set(f"w{SEP}6", "not a list")
    r.lpush("w", _msg("w0"))
    r.lpush("notag", b"\x00binary without a tag")
    queues = ["a", "b", "big", "w", "empty", "notag"]
    steps = (0, 3, 6, 9)
    keys = [q if s == 0 else f"{q}{SEP}{s}" for q in queues for s in steps]
    for known in (["", "", "", "", "", ""], ["a1", "b3", "big1", "w0", "x", ""], ["zz"] * 6):
        lua, plain = _both(
            r, lambda p, k=known: scripts.queue_probe(p, keys, 4, INLINE, HEAD, TAIL, k),
            lambda p, k=known: broker_plain.queue_probe(p, keys, 4, INLINE, HEAD, TAIL, k))
        assert _norm(plain) == _norm(lua), known
    # head-only probes (one key per queue), as the reader sends for changed depths
    heads = ["a", f"b{SEP}3", "big", "empty"]
    lua, plain = _both(r, lambda p: scripts.queue_probe(p, heads, 1, INLINE, HEAD, TAIL, ["a1", "", "", ""]),
                       lambda p: broker_plain.queue_probe(p, heads, 1, INLINE, HEAD, TAIL, ["a1", "", "", ""]))
    assert _norm(plain) == _norm(lua)


def test_window_fetch_twin(r: redis.Redis) -> None:
    r.hset("unacked", mapping={"t1": _unacked_value("t1", "", "celery"),
                               "t2": _unacked_value("t2", "ex", "rk", pad=100_000),
                               "t3": b"garbage"})
    cases: list[tuple[Sequence[str], Sequence[str]]] = [
        (["t1", "t2", "t3", "gone"], []), (["t1"], ["t2", "gone", "t3"]), ([], ["t1", "nope"])]
    for fetch, check in cases:
        lua, plain = _both(
            r, lambda p, f=fetch, c=check: scripts.window_fetch(p, "unacked", INLINE, HEAD, TAIL, f, c),
            lambda p, f=fetch, c=check: broker_plain.window_fetch(p, "unacked", INLINE, HEAD, TAIL, f, c))
        assert _norm(plain) == _norm(lua), (fetch, check)


@pytest.mark.parametrize("key_kind", ["hash", "missing", "list"])
def test_unacked_routes_twin(r: redis.Redis, key_kind: str) -> None:
    if key_kind == "hash":
        values = {f"t{i}": _unacked_value(f"t{i}", ex, rk) for i, (ex, rk) in enumerate(
            [("", "celery"), ("", "celery"), ("ex", "rk"), ("", 'we"ird'), ("", "emails")] * 5)}
        values["odd"] = b"no route here"
        r.hset("unacked", mapping=values)
    elif key_kind == "list":
        r.lpush("unacked", "x")
    cursor = 0
    for _ in range(20):
        lua, plain = _both(r, lambda p, c=cursor: scripts.unacked_routes(p, "unacked", c, 1000),
                           lambda p, c=cursor: broker_plain.unacked_routes(p, "unacked", c, 1000))
        assert int(plain[0]) == int(lua[0])
        # the same routes with the same counts (line order follows HSCAN order on both sides)
        assert sorted(_norm(plain[1]).split(b"\n")) == sorted(_norm(lua[1]).split(b"\n"))
        cursor = int(lua[0])
        if cursor == 0:
            break


def test_delivery_tag_tail_matches_the_lua_window() -> None:
    tail = b'"delivery_tag": "late"'
    assert broker_plain.delivery_tag_tail(b"x" * 5000 + tail) == b"late"
    assert broker_plain.delivery_tag_tail(tail + b"y" * 1100) is None  # outside the last KiB
    assert broker_plain.delivery_tag_tail(b'"delivery_tag":"a" "delivery_tag": "b"') == b"b"
