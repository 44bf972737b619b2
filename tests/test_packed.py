"""collectors.core.packed on a real redis-server: the pre-packed tail is the same bytes redis-py would send,
its replies come back in order with errors in place, the pipeline's own replies keep redis-py's parsing,
and a killed connection is replaced."""

from __future__ import annotations

import redis

from collectors.core import packed
from taskdash.procs import RedisServer


def test_pack_is_the_bytes_redis_py_sends(r: redis.Redis) -> None:
    conn = r.connection_pool.get_connection()
    try:
        py = redis.connection.PythonRespSerializer(6000, conn.encoder.encode) if hasattr(
            redis.connection, "PythonRespSerializer") else None
        for args in (("LLEN", "celery"), ("LLEN", "q\x06\x169"), ("EXISTS", "a", b"b\xff", 7),
                     ("LLEN", "bin\udcff"), ("LLEN", "ünïcode")):
            raw = tuple(a.encode("utf-8", "surrogateescape") if isinstance(a, str) else a for a in args)
            want = b"".join(py.pack(*raw)) if py else b"".join(conn.pack_command(*raw))
            assert packed.pack(*args) == want
    finally:
        r.connection_pool.release(conn)


def test_execute_orders_replies_errors_in_place_and_parses_the_pipeline(r: redis.Redis) -> None:
    r.rpush("q1", "a", "b", "c")
    r.set("str", "x")
    r.zadd("z", {"m1": 1.5, "m2": 2.0})
    pipe = r.pipeline(transaction=False)
    pipe.zrange("z", 0, -1, withscores=True)
    pipe.llen("str")  # an error inside the pipeline part
    pipe.scan(0, match="q*", count=100)
    tail = [packed.pack("LLEN", "q1"), packed.pack("LLEN", "str"), packed.pack("LLEN", "missing"),
            packed.pack("EXISTS", "q1", "z", "nope")]
    out = packed.execute(pipe, tail)
    assert out[0] == [(b"m1", 1.5), (b"m2", 2.0)]
    assert isinstance(out[1], redis.ResponseError) and "WRONGTYPE" in str(out[1])
    assert out[2][1] == [b"q1"]
    assert out[3] == 3
    assert isinstance(out[4], redis.ResponseError) and "WRONGTYPE" in str(out[4])
    assert out[5:] == [0, 2]
    assert r.ping()  # the connection went back to the pool in sync
    assert r.llen("q1") == 3


def test_execute_replaces_a_killed_connection(r: redis.Redis, redis_server: RedisServer) -> None:
    r.rpush("q1", "a")
    pipe = r.pipeline(transaction=False)
    pipe.ping()
    assert packed.execute(pipe, [packed.pack("LLEN", "q1")]) == [True, 1]
    # kill every connection of this client: the pooled one is now stale
    killer = redis_server.client()
    own = killer.client_id()
    killed = [c["id"] for c in killer.client_list() if int(c["id"]) != own]
    assert killed
    for cid in killed:
        killer.client_kill_filter(_id=cid)
    pipe = r.pipeline(transaction=False)
    assert packed.execute(pipe, [packed.pack("LLEN", "q1")]) == [1]
