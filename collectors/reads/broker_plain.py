"""Plain-command twins of the broker reader's three Lua scripts, for users that may not run scripts.

A Redis user with read commands only (``taskdash acl``'s watching user: no ``@scripting``) cannot
``EVALSHA`` the queue probe, the unacked-window fetch or the unacked-routes step of
:mod:`collectors.keyspace.scripts`. Each twin here queues ordinary read commands into the **same
pipeline** the script call would have gone into (so a refresh keeps its constant number of round trips)
and returns a decoder that turns their replies into exactly the reply the script would have given:
the reader's absorb code, and so every figure it derives, is the same on both paths.

========================  =============================================  ==============================
script                    plain commands (per call)                      differences
========================  =============================================  ==============================
``queue`` probe           ``LLEN`` + ``LINDEX -1`` of every band key      heads are transferred whole
                          of each queue (the first non-empty band's      (truncated client-side), and
                          head is chosen client-side)                    the bands are read one command
                                                                         at a time, not atomically
``window`` fetch          one ``HMGET`` of the tags to fetch, one        big values are transferred
                          ``HEXISTS`` per tag to check                   whole (truncated client-side)
``scan`` (unacked routes) ``TYPE`` + ``HSCAN <cursor> COUNT n``          the values of the step are
                                                                         transferred; routes are
                                                                         aggregated client-side
========================  =============================================  ==============================

The tag extraction and the route match are line-for-line ports of the Lua (same byte windows, same
patterns), and ``tests/test_acl_plain.py`` checks each twin against its script on the same data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

Decoder = Callable[[Sequence[Any]], Any]
"""Turns the replies of the commands a twin queued (in order) into the script's reply."""

_TAG_MARK = b'"delivery_tag":'
_TAG_RE = re.compile(rb'"delivery_tag":[ \t\n\v\f\r]*"([^"]*)"')
_ROUTE_RE = re.compile(rb'"([^"\\]*)"[ \t\n\v\f\r]*,[ \t\n\v\f\r]*"([^"\\]*)"[ \t\n\v\f\r]*\][ \t\n\v\f\r]*\Z')


def text_of(value: Any) -> str:
    """Key names and members as str; undecodable bytes survive as surrogates (``surrogateescape``) so
    the name encodes back to the very same key (the client is made with ``encoding_errors`` to match)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def bytes_of(value: Any) -> bytes:
    """A reply value as bytes (str encoded back with ``surrogateescape``)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value).encode("utf-8", "surrogateescape")


_b = bytes_of


def delivery_tag_tail(value: bytes) -> bytes | None:
    """The last ``"delivery_tag": "..."`` in the last KiB of ``value`` (the queue probe's Lua, ported)."""
    size = len(value)
    pos = max(size - 1024, 0)  # Lua: from = max(size - 1023, 1), 1-based
    tag: bytes | None = None
    while True:
        p = value.find(_TAG_MARK, pos)
        if p < 0:
            break
        m = _TAG_RE.match(value, p)
        if m:
            tag = m.group(1)
        pos = p + 15
    return tag


def _head_item(wrong: int, lens: list[int], first: int, value: bytes, known: str | None, inline: int,
               head: int, tail: int) -> list[Any]:
    size = len(value)
    item: list[Any] = [wrong, lens, first, size]
    tag = delivery_tag_tail(value)
    if tag is not None and known and tag == _b(known):
        return item  # unchanged: the script sends nothing more
    if size <= inline:
        item.append(value)
    else:
        item.append(value[:head])
        item.append(value[-tail:] if tail else b"")
    return item


def queue_probe(pipe: Any, keys: Sequence[str], bands: int, inline: int, head: int, tail: int,
                known: Sequence[str]) -> tuple[int, Decoder]:
    """Queue the plain commands of one QUEUE_PROBE call; returns (commands queued, decoder)."""
    nq = len(keys) // bands if bands else 0
    for key in keys:
        pipe.llen(key)
    for key in keys:
        pipe.lindex(key, -1)
    n = 2 * len(keys)

    def decode(replies: Sequence[Any]) -> list[Any]:
        lens_r, heads_r = replies[:len(keys)], replies[len(keys):]
        out: list[Any] = []
        for q in range(nq):
            wrong = 0
            lens: list[int] = []
            first = 0
            for b in range(bands):
                r = lens_r[q * bands + b]
                if isinstance(r, Exception):
                    wrong, r = 1, -1
                r = int(r)
                lens.append(r)
                if first == 0 and r > 0:
                    first = b + 1
            item: list[Any] = [wrong, lens]
            if first > 0:
                v = heads_r[q * bands + first - 1]
                if v is not None and not isinstance(v, Exception):
                    item = _head_item(wrong, lens, first, _b(v), known[q] if q < len(known) else None,
                                      inline, head, tail)
            out.append(item)
        return out

    return n, decode


def window_fetch(pipe: Any, unacked: str, inline: int, head: int, tail: int, fetch: Sequence[str],
                 check: Sequence[str]) -> tuple[int, Decoder]:
    """Queue the plain commands of one WINDOW_FETCH call; returns (commands queued, decoder)."""
    n = 0
    if fetch:
        pipe.hmget(unacked, list(fetch))
        n += 1
    for tag in check:
        pipe.hexists(unacked, tag)
        n += 1

    def decode(replies: Sequence[Any]) -> list[Any]:
        for r in replies:
            if isinstance(r, Exception):
                raise r
        values = list(replies[0]) if fetch else []
        out: list[Any] = []
        for v in values:
            if v is None:
                out.append([-1])
                continue
            v = _b(v)
            size = len(v)
            out.append([size, v] if size <= inline else [size, v[:head], v[-tail:] if tail else b""])
        flags = replies[1:] if fetch else replies
        out.append("".join("1" if r else "0" for r in flags).encode())
        return out

    return n, decode


def unacked_routes(pipe: Any, unacked: str, cursor: int, count: int) -> tuple[int, Decoder]:
    """Queue the plain commands of one UNACKED_ROUTES step; returns (commands queued, decoder)."""
    pipe.type(unacked)
    pipe.hscan(unacked, cursor, count=count)

    def decode(replies: Sequence[Any]) -> list[Any]:
        t, scan = replies
        if isinstance(t, Exception):
            raise t
        if _b(t) != b"hash":
            return [b"0", b""]
        if isinstance(scan, Exception):
            raise scan
        next_cursor, fields = scan
        agg: dict[bytes, int] = {}
        for value in fields.values():
            m = _ROUTE_RE.search(_b(value)[-600:])
            key = m.group(1) + b"\t" + m.group(2) if m else b"?"
            agg[key] = agg.get(key, 0) + 1
        lines = b"\n".join(str(c).encode() + b"\t" + k for k, c in agg.items())
        return [str(int(next_cursor)).encode(), lines]

    return 2, decode
