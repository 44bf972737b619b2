"""Benchmark scenarios written straight into Redis with pipelines, in the exact layout kombu/Celery use.

* :func:`load_broker` (S1 and its scaled variants): task queues with their binding rows
  (``_kombu.binding.<q>`` and ``_kombu.binding_permanent.<q>``, row ``q<sep><sep>q``), waiting messages
  spread over the priority keys ``q``, ``q<sep>3``, ``q<sep>6``, ``q<sep>9`` with a skewed (Zipf-like)
  depth per queue, and the unacked ledger: ``unacked`` hash values ``[envelope, "", q]`` plus
  ``unacked_index`` scores (reserve times in the last ~50 minutes, i.e. younger than the default
  visibility timeout, so no live worker restores them during the run).
* :func:`load_results` (S2): ``celery-task-meta-<id>`` strings with ``SET … EX 86400`` in Celery's JSON
  (``result_extended`` fields), mixed states and realistic payload sizes (small results, some large
  ones, FAILUREs with tracebacks).

Envelopes follow docs/redis-layout.md#message-envelope (protocol 2, JSON body, base64 body encoding; the delivery tag is in
``properties`` at the end of the JSON, where kombu puts it).
"""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

SEP = "\x06\x16"
BANDS = (0, 3, 6, 9)
TASK_NAMES = ("shop.tasks.charge_card", "shop.tasks.send_receipt", "reports.tasks.build_pdf",
              "sync.tasks.pull_inventory", "mail.tasks.deliver", "images.tasks.thumbnail")


def uuid4_str(rng: random.Random) -> str:
    """A random UUID4-shaped string (much faster than ``uuid.uuid4()`` for millions of ids)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def envelope_template(queue: str, task: str, priority: int, n_args: int, rng: random.Random) -> str:
    """A kombu envelope as JSON with ``%(id)s``/``%(tag)s`` placeholders (fill with ``tmpl % {...}``)."""
    args = [rng.randrange(10**6) for _ in range(n_args)]
    kwargs = {"customer": f"c{rng.randrange(10**5)}", "retry": False}
    body = json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    env: dict[str, Any] = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": "@@ID@@", "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
            "root_id": "@@ID@@", "parent_id": None, "argsrepr": repr(tuple(args)),
            "kwargsrepr": repr(kwargs), "origin": "gen4242@web-7f9c", "ignore_result": False,
            "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": "@@ID@@", "reply_to": "3b1e0f9a-5c1d-4e0b-9a51-2f0c8d1e7a66", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": priority,
            "body_encoding": "base64", "delivery_tag": "@@TAG@@",
        },
    }
    text = json.dumps(env).replace("%", "%%")
    return text.replace("@@ID@@", "%(id)s").replace("@@TAG@@", "%(tag)s")


@dataclass(slots=True)
class BrokerScenario:
    """What :func:`load_broker` wrote (enough for the alternatives and for checking taskdash's answer)."""

    queues: list[str]
    depth: dict[str, int]
    """queue -> waiting messages over all priority keys."""
    keys: list[str]
    """Every priority list key that exists (what a user would LLEN)."""
    messages: int
    unacked: int
    held: list[tuple[str, str, str]] = field(default_factory=list)
    """(task id, delivery tag, queue) of ledger entries declared live-held (synthetic inspect claims)."""
    setup_s: float = 0.0


def _depths(n_queues: int, total: int, rng: random.Random) -> list[int]:
    """Skewed queue depths summing to ``total``: a few deep queues, a long tail, ~10 % empty."""
    weights = [1.0 / (i + 1) ** 0.9 for i in range(n_queues)]
    rng.shuffle(weights)
    for i in rng.sample(range(n_queues), n_queues // 10):
        weights[i] = 0.0
    s = sum(weights)
    depths = [int(total * w / s) for w in weights]
    depths[max(range(n_queues), key=lambda i: weights[i])] += total - sum(depths)
    return depths


def _band_split(depth: int, prioritised: bool) -> dict[int, int]:
    if not prioritised:
        return {0: depth}
    b3, b6, b9 = int(depth * 0.20), int(depth * 0.15), int(depth * 0.05)
    return {0: depth - b3 - b6 - b9, 3: b3, 6: b6, 9: b9}


def _chunks(n: int, size: int) -> Iterator[int]:
    while n > 0:
        yield min(n, size)
        n -= size


class RawWriter:
    """Fast bulk loader: RESP-encoded commands over a plain socket, replies counted (all single-line).

    redis-py spends ~20 µs packing each command; millions of SET/RPUSH need a leaner path.
    """

    def __init__(self, host: str, port: int, db: int = 0, batch_bytes: int = 4 << 20) -> None:
        self._sock = socket.create_connection((host, port))
        self._buf: list[bytes] = []
        self._size = 0
        self._pending = 0
        self._batch = batch_bytes
        self.command(b"SELECT", str(db).encode())
        self.flush()

    def command(self, *args: bytes) -> None:
        """Queue one command (arguments already bytes)."""
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        chunk = b"".join(parts)
        self._buf.append(chunk)
        self._size += len(chunk)
        self._pending += 1
        if self._size >= self._batch:
            self.flush()

    def flush(self) -> None:
        """Send what is queued and wait for every reply; raises on an error reply."""
        if not self._buf:
            return
        self._sock.sendall(b"".join(self._buf))
        self._buf, self._size = [], 0
        need, got, tail = self._pending, 0, b""
        while got < need:
            data = self._sock.recv(1 << 20)
            if not data:
                raise ConnectionError("redis closed the connection during bulk load")
            if b"-" in data and (b"\r\n-" in tail + data or (tail + data).startswith(b"-")):
                raise RuntimeError(f"bulk load error: {(tail + data)[:300]!r}")
            got += data.count(b"\r\n")
            tail = data[-2:]
        self._pending = 0

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        self._sock.close()


def raw_writer(client: redis.Redis) -> RawWriter:
    """A :class:`RawWriter` on the same server and db as ``client``."""
    kw = client.connection_pool.connection_kwargs
    return RawWriter(kw.get("host", "127.0.0.1"), int(kw.get("port", 6379)), int(kw.get("db", 0)))


def load_broker(client: redis.Redis, *, n_queues: int, n_messages: int, n_unacked: int,
                held_fraction: float = 0.3, seed: int = 7, prefix: str = "bench.q") -> BrokerScenario:
    """Write an S1-shaped broker state into ``client``'s db with pipelines; see the module docstring.

    Args:
        client: a redis client on the (empty) broker db.
        n_queues: task queues (each with binding rows).
        n_messages: waiting messages over all queues and priority keys.
        n_unacked: entries in ``unacked`` + ``unacked_index``.
        held_fraction: share of the ledger declared live-held (returned in ``held`` for synthetic claims);
            the rest is orphaned (no worker claims it).
        seed: RNG seed (the scenario is reproducible).
        prefix: queue name prefix.
    """
    t0 = time.perf_counter()
    rng = random.Random(seed)
    width = len(str(n_queues))
    queues = [f"{prefix}{i:0{width}d}" for i in range(n_queues)]
    depths = _depths(n_queues, n_messages, rng)
    prioritised = set(rng.sample(queues, n_queues // 4))
    templates = {q: envelope_template(q, rng.choice(TASK_NAMES), 0, rng.randrange(1, 4), rng) for q in queues}
    depth_of: dict[str, int] = {}
    keys: list[str] = []

    w = raw_writer(client)
    for q in queues:
        row = f"{q}{SEP}{SEP}{q}".encode()
        w.command(b"SADD", f"_kombu.binding.{q}".encode(), row)
        w.command(b"SADD", f"_kombu.binding_permanent.{q}".encode(), row)

    for q, depth in zip(queues, depths, strict=True):
        depth_of[q] = depth
        for band, n in _band_split(depth, q in prioritised).items():
            if n <= 0:
                continue
            key = q if band == 0 else f"{q}{SEP}{band}"
            keys.append(key)
            tmpl = templates[q] if band == 0 else templates[q].replace('"priority": 0', f'"priority": {band}')
            for size in _chunks(n, 1000):
                values = [(tmpl % {"id": uuid4_str(rng), "tag": uuid4_str(rng)}).encode() for _ in range(size)]
                w.command(b"RPUSH", key.encode(), *values)

    now = time.time()
    held: list[tuple[str, str, str]] = []
    busy = [q for q in queues if depth_of[q] > 0] or queues
    n_held = int(n_unacked * held_fraction)
    for start in range(0, n_unacked, 1000):
        hargs: list[bytes] = []
        zargs: list[bytes] = []
        for i in range(start, min(start + 1000, n_unacked)):
            q = rng.choice(busy)
            tid, tag = uuid4_str(rng), uuid4_str(rng)
            hargs += [tag.encode(), f'[{templates[q] % {"id": tid, "tag": tag}}, "", "{q}"]'.encode()]
            zargs += [repr(now - rng.uniform(5.0, 3000.0)).encode(), tag.encode()]
            if i < n_held:
                held.append((tid, tag, q))
        w.command(b"HSET", b"unacked", *hargs)
        w.command(b"ZADD", b"unacked_index", *zargs)
    w.close()
    return BrokerScenario(queues=queues, depth=depth_of, keys=keys, messages=n_messages, unacked=n_unacked,
                          held=held, setup_s=time.perf_counter() - t0)


# ---- S2: result backend ---------------------------------------------------------------------------
_TRACEBACK_LINE = '  File "/srv/app/shop/tasks.py", line %d, in charge_card\n    resp = gateway.charge(card, amount)\n'

STATE_MIX = (("SUCCESS", 0.85), ("FAILURE", 0.07), ("REVOKED", 0.03), ("RETRY", 0.02), ("STARTED", 0.03))


def _result_value(state: str, tid: str, rng: random.Random) -> str:
    name = rng.choice(TASK_NAMES)
    meta: dict[str, Any] = {"status": state, "result": None, "traceback": None, "children": [],
                            "date_done": None}
    if state == "SUCCESS":
        r = rng.random()
        if r < 0.90:
            meta["result"] = {"ok": True, "id": rng.randrange(10**9), "amount": round(rng.random() * 500, 2)}
        elif r < 0.99:
            meta["result"] = {"rows": [[rng.randrange(10**6), "x" * 20] for _ in range(60)]}  # ~2 KB
        else:
            meta["result"] = {"report": "y" * 20_000}  # 20 KB
        meta["date_done"] = "2026-11-25T16:34:07.736482+00:00"
    elif state == "FAILURE":
        meta["result"] = {"exc_type": "GatewayTimeout", "exc_message": ["gateway did not answer in 30s"],
                          "exc_module": "shop.errors"}
        meta["traceback"] = "Traceback (most recent call last):\n" + "".join(
            _TRACEBACK_LINE % (10 + i) for i in range(rng.randrange(8, 25))) + "shop.errors.GatewayTimeout\n"
        meta["date_done"] = "2026-11-25T16:35:11.002211+00:00"
    elif state == "REVOKED":
        meta["result"] = {"exc_type": "TaskRevokedError", "exc_message": ["revoked"],
                          "exc_module": "celery.exceptions"}
        meta["date_done"] = "2026-11-25T16:36:00.000001+00:00"
    elif state == "RETRY":
        meta["result"] = {"exc_type": "RuntimeError", "exc_message": ["try again"], "exc_module": "builtins"}
        meta["traceback"] = "Traceback (most recent call last):\n" + _TRACEBACK_LINE % 3 + "RuntimeError\n"
    else:  # STARTED
        meta["result"] = {"pid": rng.randrange(1000, 60000), "hostname": "w3@worker-2"}
    meta.update({"name": name, "args": [rng.randrange(10**6)], "kwargs": {"customer": "c1"},
                 "worker": f"w{rng.randrange(20)}@worker-{rng.randrange(5)}", "retries": 0,
                 "queue": f"bench.q{rng.randrange(1000):03d}", "task_id": tid})
    return json.dumps(meta)


@dataclass(slots=True)
class ResultsScenario:
    """What :func:`load_results` wrote."""

    total: int
    states: dict[str, int]
    bytes: int
    setup_s: float


def load_results(client: redis.Redis, n: int, *, seed: int = 11, ttl: int = 86400) -> ResultsScenario:
    """Write ``n`` ``celery-task-meta-*`` results (mixed states and sizes) into ``client``'s db."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    names = [s for s, _ in STATE_MIX]
    weights = [w for _, w in STATE_MIX]
    # 2,000 distinct values (states, sizes, tracebacks) as templates; each key gets its own task id
    pool: list[tuple[str, str, int]] = []
    for _ in range(2000):
        state = rng.choices(names, weights)[0]
        tmpl = _result_value(state, "@@ID@@", rng).replace("%", "%%").replace("@@ID@@", "%s")
        pool.append((state, tmpl, len(tmpl) + 34))
    states: dict[str, int] = {}
    total_bytes = 0
    w = raw_writer(client)
    ex = str(ttl).encode()
    for _ in range(n):
        state, tmpl, size = pool[rng.randrange(2000)]
        tid = uuid4_str(rng)
        total_bytes += size
        states[state] = states.get(state, 0) + 1
        w.command(b"SET", f"celery-task-meta-{tid}".encode(), (tmpl % tid).encode(), b"EX", ex)
    w.close()
    return ResultsScenario(total=n, states=states, bytes=total_bytes, setup_s=time.perf_counter() - t0)
