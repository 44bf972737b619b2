"""Hostile and odd broker contents for the hardening tests: what can sit in a queue or the unacked hash."""

from __future__ import annotations

import base64
import json
import time
import zlib
from typing import Any

import redis

SEP = "\x06\x16"


class Evil:
    """Unpickling this creates a marker file: proof that nothing was unpickled if the file is absent."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))

    def __repr__(self) -> str:
        return "Evil()"


def envelope(task_id: str, *, task: str = "demo_tasks.tasks.add", tag: str | None = None, queue: str = "celery",
             body: Any = None, headers: dict[str, Any] | None = None, ctype: str = "application/json",
             compression: str | None = None, priority: int = 0) -> dict[str, Any]:
    """A kombu envelope in the exact layout kombu's Redis transport writes (body first, properties last)."""
    raw_body = json.dumps(body if body is not None else [[1, 2], {}, {}]).encode()
    if compression:
        raw_body = zlib.compress(raw_body)
    h: dict[str, Any] = {"lang": "py", "task": task, "id": task_id, "argsrepr": "(1, 2)", "kwargsrepr": "{}",
                         "retries": 0, "root_id": task_id, "parent_id": None, "origin": "gen1@test"}
    if compression:
        h["compression"] = compression
    h.update(headers or {})
    return {
        "body": base64.b64encode(raw_body).decode(),
        "content-encoding": "utf-8",
        "content-type": ctype,
        "headers": h,
        "properties": {"correlation_id": task_id, "reply_to": "r", "priority": priority,
                       "body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": queue},
                       "delivery_mode": 2, "delivery_tag": tag or f"tag-{task_id}"},
    }


def hostile_values() -> dict[str, bytes]:
    """Name -> raw value of every kind of odd message (as it would sit in a queue list)."""
    missing = envelope("id-missing")
    del missing["headers"]["id"]
    del missing["properties"]["delivery_info"]
    p1 = envelope("id-p1", headers={}, body={"task": "demo_tasks.tasks.add", "id": "id-p1", "args": [3, 4],
                                             "kwargs": {}, "retries": 0, "eta": None})
    p1["headers"] = {}
    bad_b64 = envelope("id-b64", headers={"argsrepr": None, "kwargsrepr": None})
    del bad_b64["headers"]["argsrepr"], bad_b64["headers"]["kwargsrepr"]
    bad_b64["body"] = "%%% not base64 !!!"
    compressed = envelope("id-gz", compression="application/x-gzip", body=[[5, 6], {"k": 1}, {}])
    del compressed["headers"]["argsrepr"], compressed["headers"]["kwargsrepr"]
    return {
        "non_json": b"\x00\x01\x02 this is not json \xff\xfe",
        "json_not_envelope": json.dumps({"hello": "world", "n": [1, 2, 3]}).encode(),
        "json_scalar": b"42",
        "missing_fields": json.dumps(missing).encode(),
        "protocol1": json.dumps(p1).encode(),
        "wrong_base64": json.dumps(bad_b64).encode(),
        "compressed": json.dumps(compressed).encode(),
        "empty": b"",
        "unicode": json.dumps(envelope("id-ü☃", task="tâsk.ünï☃", headers={"argsrepr": "('☃',)"}),
                              ensure_ascii=False).encode(),
    }


def plant_unacked(r: redis.Redis, tag: str, value: bytes, *, age: float = 60.0, ex: str = "",
                  queue: str = "celery") -> None:
    """Put a raw envelope (or garbage) into the unacked ledger the way kombu does ([msg, ex, rk])."""
    if value.startswith(b"{"):
        data = b"[" + value + b", " + json.dumps(ex).encode() + b", " + json.dumps(queue).encode() + b"]"
    else:
        data = value
    r.hset("unacked", tag, data)
    r.zadd("unacked_index", {tag: time.time() - age})


def bind(r: redis.Redis, queue: str | bytes, exchange: str | bytes | None = None) -> None:
    """Declare a queue the way kombu does: a row ``rk<sep><sep>queue`` in ``_kombu.binding.<exchange>``."""
    q = queue.encode() if isinstance(queue, str) else queue
    ex = exchange if exchange is not None else queue
    exb = ex.encode() if isinstance(ex, str) else ex
    r.sadd(b"_kombu.binding." + exb, q + SEP.encode() + SEP.encode() + q)
