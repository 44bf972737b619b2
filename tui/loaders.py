"""Slow parts of detail screens, read on demand in a thread worker (no Textual import).

A detail screen opens at once from the snapshot; these readers then fetch what a snapshot does not
carry: the message's full headers from ``unacked`` and the task's stored result from the backend.
Reads are bounded (size checked first) and nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from collectors.core.config import Settings, mask_text, redis_client
from collectors.core.messages import decode_unacked
from collectors.keyspace.keys import KeyLayout

MAX_BYTES = 1_000_000
"""Larger values are not fetched for a detail screen."""

Section = tuple[str, "list[tuple[str, str]] | str"]


def _short(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_sections(settings: Settings, delivery_tag: str, client: Any = None) -> list[Section]:
    """Headers and properties of one unacked message, read from kombu's ``unacked`` hash."""
    r = client or redis_client(settings.broker_url, settings)
    size = r.hstrlen(KeyLayout.from_settings(settings).unacked, delivery_tag)
    if not size:
        return [("Headers", "the message is no longer in unacked (acked or requeued meanwhile)")]
    if size > MAX_BYTES:
        return [("Headers", f"the message is {size:,} bytes: not loaded")]
    msg, exchange, routing_key = decode_unacked(r.hget(KeyLayout.from_settings(settings).unacked, delivery_tag))
    props = [
        ("content type", msg.content_type or "–"), ("encoding", msg.content_encoding or "–"),
        ("compression", msg.compression or "–"), ("protocol", str(msg.protocol or "–")),
        ("retries", str(msg.retries if msg.retries is not None else "–")), ("eta", msg.eta or "–"),
        ("expires", msg.expires or "–"), ("root id", msg.root_id or "–"), ("parent id", msg.parent_id or "–"),
        ("origin", msg.origin or "–"), ("exchange", exchange if exchange is not None else "–"),
        ("routing key", routing_key or "–"), ("size", f"{msg.size:,} bytes"),
    ]
    if msg.error:
        props.append(("decode note", msg.error))
    return [("Message properties", props), ("Headers", [(k, v) for k, v in msg.headers])]


def result_sections(settings: Settings, task_id: str, client: Any = None) -> list[Section]:
    """The task's stored result in the backend (state, result or exception, traceback)."""
    r = client or redis_client(settings.effective_backend_url, settings)
    key = KeyLayout.from_settings(settings).result_key(task_id)
    size = r.strlen(key)
    if not size:
        return [("Stored result", [("state", "no result stored (not finished, or results are not kept)")])]
    if size > MAX_BYTES:
        return [("Stored result", [("state", f"{size:,} bytes: not loaded")])]
    try:
        meta = json.loads(r.get(key))
    except (TypeError, ValueError):
        return [("Stored result", [("state", "not JSON (another serializer): not decoded")])]
    if not isinstance(meta, dict):
        return [("Stored result", [("state", "unexpected format")])]
    fields = [(k, _short(meta.get(k))) for k in ("status", "result", "date_done", "worker", "queue", "retries",
                                                  "name", "args", "kwargs") if meta.get(k) is not None]
    out: list[Section] = [("Stored result", fields)]
    if meta.get("traceback"):
        out.append(("Stored traceback", str(meta["traceback"])))
    return out


def detail_sections(settings: Settings, delivery_tag: str | None, task_id: str | None) -> Sequence[Section]:
    """Everything extra for a detail screen; errors become a section (never raised)."""
    out: list[Section] = []
    secrets = (settings.broker_url, settings.backend_url)
    if delivery_tag:
        try:
            out.extend(message_sections(settings, delivery_tag))
        except Exception as exc:  # noqa: BLE001 - shown in the screen
            out.append(("Headers", mask_text(f"could not read the message: {exc}", *secrets)))
    if task_id:
        try:
            out.extend(result_sections(settings, task_id))
        except Exception as exc:  # noqa: BLE001
            out.append(("Stored result", mask_text(f"could not read the result: {exc}", *secrets)))
    return out
