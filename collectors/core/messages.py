"""Safe decoding of kombu/Celery message envelopes as they sit in Redis. Nothing is ever unpickled.

A message in a queue list (or inside the ``unacked`` hash) is a kombu envelope, JSON-encoded::

    {"body": "<base64>", "content-encoding": "utf-8", "content-type": "application/json",
     "headers": {...Celery protocol 2 headers...}, "properties": {..., "delivery_tag": "..."}}

What is read, and what it costs:

* The envelope itself is always JSON-parsed (it is JSON whatever the task serializer is); that gives
  the headers, which for Celery protocol 2 carry everything a dashboard shows (task name, id,
  argsrepr/kwargsrepr, eta, expires, retries, root/parent id, origin).
* The body is only decoded when the headers do not already say what it is: protocol 1 messages
  (empty headers, task name in the body) and protocol 2 messages without ``argsrepr``. Decoding is
  ``base64 -> optional decompression (headers.compression: zlib/gzip, bzip2, lzma via the stdlib) ->
  deserialisation by content-type``: JSON always; msgpack / YAML only when the library is importable
  (YAML with ``safe_load`` only). Pickle bodies (``application/x-python-serialize``) are never touched,
  not even base64-decoded; any other content type is reported, not decoded.
* Bounds: a body larger than :data:`MAX_BODY_BYTES` (base64 text) is not decoded, and decompression
  stops at :data:`MAX_DECOMPRESSED_BYTES`.
* Huge messages need not be transferred whole: :func:`decode_truncated` decodes the headers from the
  head and tail of a message (kombu writes ``body`` first, and a base64 body contains no ``"``), which
  is what the broker reader's Lua scripts return for values above their inline limit.

No function here raises on bad input: garbage, non-Celery JSON, wrong base64, binary data and empty
values all come back as a :class:`~collectors.core.models.DecodedMessage` with ``error`` set.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import hashlib
import importlib
import json
import lzma
import re
import zlib
from datetime import datetime, timezone
from typing import Any

from collectors.core.models import DecodedMessage

MAX_BODY_BYTES = 1_000_000
"""Largest (base64) body that is decoded at all; larger bodies are reported, not decoded."""
MAX_DECOMPRESSED_BYTES = 1_000_000
"""Decompression stops here: a compressed body expanding beyond this is reported, not decoded."""
REPR_LIMIT = 1024
"""Length limit of reprs built from decoded bodies (matches Celery's argsrepr limit)."""
HEADER_REPR_LIMIT = 200
MAX_HEADERS = 64

PICKLE = "application/x-python-serialize"
JSON_TYPES = ("application/json", "application/x-json", "text/json")
MSGPACK_TYPES = ("application/x-msgpack", "application/msgpack")
YAML_TYPES = ("application/x-yaml", "application/yaml", "text/yaml")

_TAG_RE = re.compile(rb'"delivery_tag"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_UNACKED_TAIL_RE = re.compile(r',\s*("(?:[^"\\]|\\.)*"|null)\s*,\s*("(?:[^"\\]|\\.)*"|null)\s*\]\s*$')


# ---- small helpers ---------------------------------------------------------------------------------
def _str(value: Any) -> str | None:
    """A header value as a string (None stays None; anything else is repr'd, bounded)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return _short(value, REPR_LIMIT)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _short(value: Any, limit: int) -> str:
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ cannot exist in JSON data, but be safe
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def eta_timestamp(eta: str | None) -> float | None:
    """Epoch seconds of a Celery ``eta``/``expires`` ISO-8601 string (naive means UTC); None if unparsable."""
    if not eta or not isinstance(eta, str):
        return None
    try:
        # Python 3.10's fromisoformat refuses the "Z" suffix that 3.11 accepts
        dt = datetime.fromisoformat(eta[:-1] + "+00:00" if eta.endswith(("Z", "z")) else eta)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _optional_module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_UNPRINTABLE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(value: object) -> str:
    """Data from Redis (queue names, task names, reprs) made safe to print on a terminal.

    Undecodable bytes (kept as surrogates by the broker reader) and control characters (an ESC in a
    queue name would be a terminal escape sequence) become ``\\xNN`` escapes; newlines stay. Rich/Textual
    markup is NOT escaped here: render the result as ``rich.text.Text``, never as markup.
    """
    text = str(value)
    if not _UNPRINTABLE.search(text):
        return text

    def esc(m: re.Match[str]) -> str:
        c = ord(m.group(0))
        return f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _UNPRINTABLE.sub(esc, text)


# ---- body decoding ---------------------------------------------------------------------------------
def _decompress(data: bytes, compression: str) -> tuple[bytes | None, str | None]:
    """Bounded decompression of ``data`` by kombu compression content type."""
    kind = compression.lower()
    limit = MAX_DECOMPRESSED_BYTES
    try:
        if kind in ("application/x-gzip", "gzip", "zlib", "application/x-zlib", "application/gzip"):
            # kombu's "gzip" is really zlib.compress; wbits=47 auto-detects zlib and gzip headers.
            d = zlib.decompressobj(wbits=47)
            out = d.decompress(data, limit)
            done = d.eof
        elif kind in ("application/x-bz2", "bzip2", "bzip"):
            d2 = bz2.BZ2Decompressor()
            out = d2.decompress(data, max_length=limit)
            done = d2.eof
        elif kind in ("application/x-lzma", "lzma", "xz"):
            d3 = lzma.LZMADecompressor()
            out = d3.decompress(data, max_length=limit)
            done = d3.eof
        else:
            return None, f"compression {compression!r} not supported"
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        return None, f"cannot decompress body ({compression}): {exc}"
    if not done:
        if len(out) >= limit:
            return None, f"body larger than {limit} bytes after decompression; not decoded"
        return None, f"truncated {compression} body"
    return out, None


def _deserialize(data: bytes, content_type: str, encoding: str) -> tuple[Any, str | None]:
    """Decode a raw body by content type, only with safe decoders."""
    ctype = content_type.lower()
    if ctype in JSON_TYPES:
        try:
            return json.loads(data.decode(encoding or "utf-8")), None
        except (UnicodeDecodeError, LookupError):
            return None, "JSON body is not valid text"
        except (ValueError, RecursionError):
            return None, "JSON body is not valid JSON"
    if ctype in MSGPACK_TYPES:
        msgpack = _optional_module("msgpack")
        if msgpack is None:
            return None, "msgpack body not decoded (msgpack is not installed)"
        try:
            # Plain unpackb: ext types come back as inert ExtType objects, nothing is executed.
            return msgpack.unpackb(data, raw=False, strict_map_key=False), None
        except Exception as exc:  # noqa: BLE001 - any malformed msgpack
            return None, f"msgpack body not valid: {type(exc).__name__}"
    if ctype in YAML_TYPES:
        yaml = _optional_module("yaml")
        if yaml is None:
            return None, "YAML body not decoded (PyYAML is not installed)"
        try:
            return yaml.safe_load(data.decode(encoding or "utf-8")), None
        except Exception as exc:  # noqa: BLE001 - any malformed yaml
            return None, f"YAML body not valid: {type(exc).__name__}"
    return None, f"body content-type {content_type!r} not decoded"


def _decode_body(env: dict[str, Any], content_type: str | None, encoding: str | None,
                 compression: str | None) -> tuple[Any, str | None]:
    """The deserialised body of an envelope, or (None, why not). Never loads pickle."""
    ctype = (content_type or "").lower()
    if ctype == PICKLE:
        return None, "pickle body not decoded (never unpickled)"
    body = env.get("body")
    if body is None:
        return None, "no body"
    props = _as_dict(env.get("properties"))
    if isinstance(body, str):
        if len(body) > MAX_BODY_BYTES:
            return None, f"body of {len(body)} bytes too large to decode"
        if props.get("body_encoding") == "base64":
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                return None, "body is not valid base64"
        else:
            try:
                data = body.encode(encoding or "utf-8")
            except (UnicodeEncodeError, LookupError):
                return None, "body is not valid text"
    elif isinstance(body, dict | list):
        return body, None  # already-decoded JSON body (some non-kombu producers)
    else:
        return None, "body has an unexpected type"
    if compression:
        data_d, err = _decompress(data, compression)
        if err or data_d is None:
            return None, err
        data = data_d
    if not ctype:
        return None, "body has no content-type"
    return _deserialize(data, ctype, encoding or "utf-8")


# ---- envelopes -------------------------------------------------------------------------------------
def _parse_json(raw: bytes | str) -> tuple[Any, str | None]:
    if isinstance(raw, bytes | bytearray | memoryview):
        raw_b = bytes(raw)
        if not raw_b.strip():
            return None, "empty message"
        try:
            text = raw_b.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not JSON (binary data)"
    else:
        text = raw
        if not text.strip():
            return None, "empty message"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError):
        return None, "not JSON"


def decode_envelope(raw: bytes | str | dict[str, Any], *, size: int | None = None) -> DecodedMessage:
    """Decode one kombu envelope (a queue list element) into what the message says about itself.

    Args:
        raw: the raw list element (bytes/str), or an already-parsed envelope dict.
        size: the message size in bytes when ``raw`` is a dict (or a truncated form of the message).

    Returns:
        A DecodedMessage; ``error`` says why it is not (fully) a Celery task message. Never raises.
    """
    try:
        if isinstance(raw, dict):
            return _from_envelope(raw, size or 0)
        msg_size = size if size is not None else len(raw)
        env, err = _parse_json(raw)
        if err:
            return DecodedMessage(size=msg_size, error=err, delivery_tag=_tag_guess(raw))
        if not isinstance(env, dict):
            return DecodedMessage(size=msg_size, error=f"not a Celery message (JSON {type(env).__name__})")
        return _from_envelope(env, msg_size)
    except Exception as exc:  # noqa: BLE001 - last line of defence: decoding must never raise
        return DecodedMessage(size=size or 0, error=f"undecodable message: {type(exc).__name__}")


def _tag_guess(raw: bytes | str | dict[str, Any]) -> str | None:
    if isinstance(raw, dict):
        return None
    try:
        return delivery_tag_of(raw, fallback=False)
    except Exception:  # noqa: BLE001
        return None


def _from_envelope(env: dict[str, Any], size: int, *, body_available: bool = True) -> DecodedMessage:
    if not any(k in env for k in ("body", "headers", "properties")):
        return DecodedMessage(size=size, error="not a Celery message (JSON object without an envelope)")
    headers = _as_dict(env.get("headers"))
    props = _as_dict(env.get("properties"))
    dinfo = _as_dict(props.get("delivery_info"))
    ctype = _str(env.get("content-type"))
    cenc = _str(env.get("content-encoding"))
    compression = _str(headers.get("compression"))
    priority = _int(props.get("priority"))
    fields: dict[str, Any] = dict(
        content_type=ctype,
        content_encoding=cenc,
        compression=compression,
        priority=0 if priority is None else priority,
        delivery_tag=_str(props.get("delivery_tag")),
        redelivered=bool(headers.get("redelivered") or dinfo.get("redelivered")),
        exchange=_str(dinfo.get("exchange")),
        routing_key=_str(dinfo.get("routing_key")),
        size=size,
        headers=tuple((str(k), _short(v, HEADER_REPR_LIMIT)) for k, v in list(headers.items())[:MAX_HEADERS]),
    )
    error: str | None = None
    if headers.get("task") and headers.get("id"):
        fields.update(
            protocol=2,
            task=_str(headers.get("task")),
            task_id=_str(headers.get("id")),
            argsrepr=_str(headers.get("argsrepr")),
            kwargsrepr=_str(headers.get("kwargsrepr")),
            eta=_str(headers.get("eta")),
            expires=_str(headers.get("expires")),
            retries=_int(headers.get("retries")),
            root_id=_str(headers.get("root_id")),
            parent_id=_str(headers.get("parent_id")),
            origin=_str(headers.get("origin")),
        )
        if fields["argsrepr"] is None or fields["kwargsrepr"] is None:
            if body_available:
                body, berr = _decode_body(env, ctype, cenc, compression)
                if berr is None and isinstance(body, list | tuple) and len(body) >= 2:
                    if fields["argsrepr"] is None:
                        fields["argsrepr"] = _short(body[0], REPR_LIMIT)
                    if fields["kwargsrepr"] is None:
                        fields["kwargsrepr"] = _short(body[1], REPR_LIMIT)
            # missing reprs are not an error: the message is still a well-formed task message
        return DecodedMessage(**fields)
    # Protocol 1 (empty headers, everything in the body) or not a task message at all.
    if not body_available:
        return DecodedMessage(**fields, error="message too large to decode its body (headers only)")
    body, berr = _decode_body(env, ctype, cenc, compression)
    if berr is not None:
        if (ctype or "").lower() == PICKLE:
            error = "pickle body not decoded (never unpickled); no task headers (protocol 1?)"
        else:
            error = berr if "body" in env else "not a Celery message (no task headers, no body)"
        return DecodedMessage(**fields, error=error)
    if isinstance(body, dict) and body.get("task") and body.get("id"):
        args = body.get("args")
        kwargs = body.get("kwargs")
        fields.update(
            protocol=1,
            task=_str(body.get("task")),
            task_id=_str(body.get("id")),
            argsrepr=None if args is None else _short(args, REPR_LIMIT),
            kwargsrepr=None if kwargs is None else _short(kwargs, REPR_LIMIT),
            eta=_str(body.get("eta")),
            expires=_str(body.get("expires")),
            retries=_int(body.get("retries")),
        )
        return DecodedMessage(**fields)
    return DecodedMessage(**fields, error="not a Celery task message (no task name or id)")


def decode_unacked(raw: bytes | str | None) -> tuple[DecodedMessage, str | None, str | None]:
    """Decode a value of kombu's ``unacked`` hash: JSON ``[envelope, exchange, routing_key]``.

    Returns:
        (decoded envelope, exchange, routing_key); exchange/routing_key are None when unreadable.
        Never raises.
    """
    if raw is None:
        return DecodedMessage(error="missing (acked meanwhile)"), None, None
    size = len(raw)
    value, err = _parse_json(raw)
    if err:
        return DecodedMessage(size=size, error=err, delivery_tag=_tag_guess(raw)), None, None
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], dict)):
        return DecodedMessage(size=size, error="not a kombu unacked entry ([message, exchange, routing_key])"), \
            None, None
    msg = decode_envelope(value[0], size=size)
    exchange = value[1] if isinstance(value[1], str) else None
    rk = value[2] if isinstance(value[2], str) else None
    return msg, exchange, rk


# ---- cheap partial reads ---------------------------------------------------------------------------
def delivery_tag_of(raw: bytes | str, *, tail: int = 1024, fallback: bool = True) -> str | None:
    """The delivery tag of a raw message (or unacked value) without parsing it.

    kombu writes ``properties.delivery_tag`` last, so the tag is looked up in the last ``tail`` bytes
    first, then (for small values) in the whole value. With ``fallback`` a value without a tag gets a
    stable identity instead: ``"sha1:<hex>"`` of the value (so it can still be recognised later).
    """
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    m = None
    if tail:
        for m in _TAG_RE.finditer(data[-tail:]):  # noqa: B007 - the last match is the property
            pass
    if m is None and len(data) <= 65536:
        matches = list(_TAG_RE.finditer(data))
        m = matches[-1] if matches else None
    if m is not None:
        try:
            return str(json.loads(b'"' + m.group(1) + b'"'))
        except ValueError:
            return m.group(1).decode("utf-8", "replace")
    if fallback:
        return "sha1:" + hashlib.sha1(data).hexdigest()
    return None


def _reconstruct_from_tail(head: bytes, tail: bytes) -> tuple[Any, str | None]:
    """Rebuild the JSON of a huge kombu envelope (or unacked value) from its head and tail.

    kombu serialises ``body`` first and a base64 body has no ``"``: the first quote in the tail closes
    the body string, so ``{"body": null`` + everything after it is valid JSON with all headers.
    """
    h = head.lstrip()
    if h.startswith(b'[{"body": "') or h.startswith(b'[{"body":"'):
        opener = b'[{"body": null'
    elif h.startswith(b'{"body": "') or h.startswith(b'{"body":"'):
        opener = b'{"body": null'
    else:
        return None, "message too large to decode (not a kombu envelope with the body first)"
    q = tail.find(b'"')
    if q < 0:
        return None, "message too large to decode (headers not in the tail)"
    try:
        return json.loads((opener + tail[q + 1:]).decode("utf-8")), None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "message too large to decode (headers not in the tail)"


def decode_truncated(size: int, head: bytes, tail: bytes) -> DecodedMessage:
    """Decode a huge queue message from its first and last bytes only (headers, no body)."""
    try:
        env, err = _reconstruct_from_tail(head, tail)
        if err or not isinstance(env, dict):
            return DecodedMessage(size=size, error=err or "not a Celery message",
                                  delivery_tag=delivery_tag_of(tail, fallback=False))
        return _from_envelope(env, size, body_available=False)
    except Exception as exc:  # noqa: BLE001 - never raise
        return DecodedMessage(size=size, error=f"undecodable message: {type(exc).__name__}")


def decode_unacked_truncated(size: int, head: bytes, tail: bytes) -> tuple[DecodedMessage, str | None, str | None]:
    """Like :func:`decode_unacked` for a huge value known only by its head and tail."""
    try:
        value, err = _reconstruct_from_tail(head, tail)
        if err or not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], dict)):
            ex, rk = exchange_and_routing_key_of_tail(tail)
            return (DecodedMessage(size=size, error=err or "not a kombu unacked entry",
                                   delivery_tag=delivery_tag_of(tail, fallback=False)), ex, rk)
        msg = _from_envelope(value[0], size, body_available=False)
        ex = value[1] if isinstance(value[1], str) else None
        rk = value[2] if isinstance(value[2], str) else None
        return msg, ex, rk
    except Exception as exc:  # noqa: BLE001 - never raise
        return DecodedMessage(size=size, error=f"undecodable message: {type(exc).__name__}"), None, None


def exchange_and_routing_key_of_tail(tail: bytes | str) -> tuple[str | None, str | None]:
    """(exchange, routing_key) from the last bytes of an ``unacked`` value ``[..., "EX", "RK"]``."""
    try:
        text = tail.decode("utf-8", "replace") if isinstance(tail, bytes | bytearray) else tail
        m = _UNACKED_TAIL_RE.search(text)
        if not m:
            return None, None
        ex, rk = json.loads(m.group(1)), json.loads(m.group(2))
        return (ex if isinstance(ex, str) else None), (rk if isinstance(rk, str) else None)
    except (ValueError, RecursionError):
        return None, None
