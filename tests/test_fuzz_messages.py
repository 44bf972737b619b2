"""Property-based fuzzing of the message decoder: whatever sits in Redis, decoding never raises.

Over 100,000 generated cases in total (``MIN_CASES``, counted by the tests) across three strategies: structured envelopes
with random fields, random bytes, and real Celery envelopes (made by kombu/Celery themselves on the
in-memory transport) mutated at the byte and at the JSON level. Every case goes through
``decode_envelope`` and ``decode_unacked`` (and the truncated forms), which must return a
``DecodedMessage`` and never raise.
"""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import pickle
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.core.messages import (
    decode_envelope,
    decode_truncated,
    decode_unacked,
    decode_unacked_truncated,
)
from collectors.core.models import DecodedMessage

EXAMPLES = {"structured": 300, "bytes": 1000, "mutated": 500}
"""Hypothesis examples per strategy. Each example is expanded into ``VARIANTS`` derived inputs
(truncations, byte corruptions, inserted JSON tokens, chosen by a Hypothesis-drawn seed), and every
input is decoded both as a queue element and as an ``unacked`` value."""
VARIANTS = 30
MIN_CASES = 100_000

_cases = {k: 0 for k in EXAMPLES}
"""Decoder calls made per strategy (checked by ``test_case_count_reached``)."""
FUZZ = settings(deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck))


def _real_envelopes() -> list[bytes]:
    """Real kombu envelopes of several shapes, made by Celery on the in-memory transport."""
    from demo_tasks.celery_app import make_app

    out: list[bytes] = []
    shapes: list[dict[str, Any]] = [
        dict(args=(1, 2), kwargs={"tag": "x"}, priority=5),
        dict(args=("ü\u2603", [1, {"a": None}]), countdown=60, expires=3600, retries=2),
        dict(args=(1,), compression="gzip"),
    ]
    for proto, serializer in ((2, "json"), (1, "json"), (2, "pickle")):
        app = make_app("memory://", "cache+memory://", transport_options={}, task_protocol=proto,
                       task_serializer=serializer, accept_content=["json", "pickle"])
        try:
            for shape in shapes:
                app.send_task("demo_tasks.tasks.add", queue="fuzzq", **shape)
            with app.connection_for_write() as conn:
                q = conn.default_channel.queues["fuzzq"]
                while not q.empty():
                    out.append(json.dumps(q.get_nowait()).encode())
        finally:
            app.close()
    return out


SEEDS = _real_envelopes()

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                      st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                          max_size=3), max_leaves=4)
CONTENT_TYPES = ["application/json", "application/x-python-serialize", "application/x-msgpack",
                 "application/x-yaml", "text/plain", "", "APPLICATION/JSON"]
COMPRESSIONS = [None, "application/x-gzip", "zlib", "application/x-bz2", "application/x-lzma", "snappy", ""]


def _compress(data: bytes, kind: str | None) -> bytes:
    if kind in ("application/x-gzip", "zlib"):
        return zlib.compress(data)
    if kind == "application/x-bz2":
        return bz2.compress(data)
    if kind == "application/x-lzma":
        return lzma.compress(data)
    return data


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Envelope-shaped dicts whose every field may be missing, of the wrong type or inconsistent."""
    env: dict[str, Any] = {}
    if draw(st.booleans()):
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        env["content-type"] = ctype
    comp = draw(st.sampled_from(COMPRESSIONS))
    payload = draw(st.one_of(
        st.builds(lambda a, k: json.dumps([a, k, {}]).encode(), st.lists(json_value, max_size=3),
                  st.dictionaries(st.text(max_size=5), json_value, max_size=3)),
        st.builds(lambda t, i, a: json.dumps({"task": t, "id": i, "args": a}).encode(), json_value, json_value,
                  json_value),
        st.binary(max_size=64),
        st.just(pickle.dumps((1, 2))),
    ))
    body_kind = draw(st.sampled_from(["b64", "b64-bad", "text", "json", "missing", "random"]))
    data = _compress(payload, comp)
    if body_kind == "b64":
        env["body"] = base64.b64encode(data).decode()
    elif body_kind == "b64-bad":
        env["body"] = base64.b64encode(data).decode()[:-1] + "!"
    elif body_kind == "text":
        env["body"] = payload.decode("utf-8", "replace")
    elif body_kind == "json":
        env["body"] = draw(json_value)
    elif body_kind == "random":
        env["body"] = draw(json_leaf)
    if draw(st.booleans()):
        env["content-encoding"] = draw(st.sampled_from(["utf-8", "binary", "latin-1", "no-such-codec", None]))
    headers: Any = draw(st.one_of(
        st.fixed_dictionaries({}, optional={
            "task": json_value, "id": json_value, "argsrepr": json_value, "kwargsrepr": json_value,
            "eta": st.one_of(json_value, st.just("2030-01-01T00:00:00"), st.just("2030-13-45")),
            "expires": json_value, "retries": json_value, "redelivered": json_value,
            "compression": st.sampled_from(COMPRESSIONS) if comp is None else st.just(comp),
            "root_id": json_value, "parent_id": json_value, "origin": json_value,
        }),
        json_value,
    ))
    if isinstance(headers, dict) and comp and draw(st.booleans()):
        headers["compression"] = comp
    env["headers"] = headers
    props: Any = draw(st.one_of(
        st.fixed_dictionaries({}, optional={
            "body_encoding": st.sampled_from(["base64", "utf-8", None, 7]),
            "delivery_tag": json_value, "priority": json_value,
            "delivery_info": st.one_of(json_value, st.fixed_dictionaries(
                {}, optional={"exchange": json_value, "routing_key": json_value, "redelivered": json_value})),
        }),
        json_value,
    ))
    if body_kind in ("b64", "b64-bad") and isinstance(props, dict) and draw(st.booleans()):
        props["body_encoding"] = "base64"
    env["properties"] = props
    for _ in range(draw(st.integers(0, 2))):
        env[draw(st.text(max_size=6))] = draw(json_value)
    return env


def check(msg: Any) -> None:
    assert isinstance(msg, DecodedMessage)
    assert msg.error is None or isinstance(msg.error, str)
    for name in ("task", "task_id", "argsrepr", "kwargsrepr", "delivery_tag"):
        value = getattr(msg, name)
        assert value is None or isinstance(value, str), (name, value)
    assert isinstance(msg.priority, int)


def check_unacked(value: Any) -> None:
    msg, ex, rk = value
    check(msg)
    assert ex is None or isinstance(ex, str)
    assert rk is None or isinstance(rk, str)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


_TOKENS = (b'"', b"{", b"}", b"[", b"]", b"\\", b"\x00", b"\xff\xfe", b"null", b",,", b'"body": ', b"1e999")


def variants(raw: bytes, seed: int) -> list[bytes]:
    """``VARIANTS`` inputs derived from ``raw``: itself, truncations, corrupted bytes, inserted tokens."""
    import random

    rnd = random.Random(seed)
    n = len(raw)
    out = [raw]
    while len(out) < VARIANTS:
        kind = len(out) % 3
        pos = rnd.randrange(n + 1)
        if kind == 0:
            out.append(raw[:pos])
        elif kind == 1 and n:
            p = min(pos, n - 1)
            out.append(raw[:p] + bytes([rnd.randrange(256)]) + raw[p + 1:])
        else:
            out.append(raw[:pos] + rnd.choice(_TOKENS) + raw[pos:])
    return out


def decode_all(kind: str, inputs: list[bytes]) -> None:
    """Decode every input as a queue element and as an ``unacked`` value; count the cases."""
    for raw in inputs:
        check(decode_envelope(raw))
        check_unacked(decode_unacked(b"[" + raw + b', "", "fuzzq"]'))
    _cases[kind] += 2 * len(inputs)


@settings(FUZZ, max_examples=EXAMPLES["structured"])
@given(envelopes(), json_value, json_value, st.integers(0, 2**32))
def test_structured_envelopes(env: dict[str, Any], ex: Any, rk: Any, seed: int) -> None:
    raw = _dumps(env)
    check(decode_envelope(env, size=len(raw)))
    check_unacked(decode_unacked(_dumps([env, ex, rk])))
    _cases["structured"] += 2
    decode_all("structured", variants(raw, seed))


@settings(FUZZ, max_examples=EXAMPLES["bytes"])
@given(st.binary(max_size=512), st.integers(0, 600), st.integers(0, 2**32))
def test_random_bytes(data: bytes, cut: int, seed: int) -> None:
    check(decode_truncated(len(data) + 70_000, data[:cut], data[cut:]))
    check_unacked(decode_unacked_truncated(len(data) + 70_000, data[:cut], data[cut:]))
    _cases["bytes"] += 2
    decode_all("bytes", variants(data, seed))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real envelope, mutated at the JSON level (a random field replaced) or the byte level."""
    seed = draw(st.sampled_from(SEEDS))
    if draw(st.booleans()):
        obj = json.loads(seed)
        node: Any = obj
        for _ in range(draw(st.integers(1, 3))):
            if isinstance(node, dict) and node:
                key = draw(st.sampled_from(sorted(node)))
                if draw(st.booleans()) or not isinstance(node[key], dict | list):
                    node[key] = draw(json_value)
                    break
                node = node[key]
            elif isinstance(node, list) and node:
                i = draw(st.integers(0, len(node) - 1))
                node[i] = draw(json_value)
                break
        return _dumps(obj)
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b'"', b"{", b"]", b"\\", b"\x00", b"\xff", b"null", b",,"]))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 32))]
    return bytes(data)


@settings(FUZZ, max_examples=EXAMPLES["mutated"])
@given(mutated(), st.integers(0, 2000), st.integers(0, 2**32))
def test_mutated_real_envelopes(raw: bytes, cut: int, seed: int) -> None:
    unacked = b"[" + raw + b', "", "fuzzq"]'
    check(decode_truncated(len(raw) + 70_000, raw[:512], raw[cut:]))
    check_unacked(decode_unacked_truncated(len(unacked) + 70_000, unacked[:512], unacked[cut:]))
    _cases["mutated"] += 2
    decode_all("mutated", variants(raw, seed))


def test_seeds_are_real_celery_messages() -> None:
    """The mutation seeds decode cleanly (else the mutated strategy would only fuzz garbage)."""
    assert len(SEEDS) == 9
    decoded = [decode_envelope(s) for s in SEEDS]
    assert all(m.task == "demo_tasks.tasks.add" and m.task_id for m in decoded), [m.error for m in decoded]
    assert {m.protocol for m in decoded} == {1, 2}


def test_case_count_reached() -> None:
    """Runs after the fuzz tests of this module: at least 100,000 decoder cases were generated."""
    assert sum(EXAMPLES.values()) * 2 * VARIANTS >= MIN_CASES
    if all(_cases.values()):  # the module ran whole (not a -k selection)
        assert sum(_cases.values()) >= MIN_CASES, _cases
