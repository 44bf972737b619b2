"""A light live feed of result-backend state changes for beat and canvas (issue 16).

Every result write is ``SETEX`` + ``PUBLISH <key> <value>`` (docs/redis-layout.md#result-publish-on-state-change),
so ``PSUBSCRIBE <prefix>celery-task-meta-*`` sees every state change with its value, for free between
refreshes. This stream keeps only what the beat and canvas views need — task id, state, task name
(``result_extended``), ``group_id`` and when it was seen — in a bounded buffer that ``drain()`` empties.
It never unpickles (pickled values are skipped) and never reads a key.

It runs in its own thread only while started (the Collector starts it in background mode).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis

from collectors.core.config import Settings, mask_text, own_client
from collectors.keyspace.keys import KeyLayout

log = logging.getLogger(__name__)

MAX_VALUE = 256 * 1024
"""Values above this are not JSON-decoded (their state and name are taken from the head only)."""


@dataclass(frozen=True, slots=True)
class ResultEvent:
    """One published result state change."""

    task_id: str
    state: str
    name: str | None
    group_id: str | None
    seen_at: float
    date_done: str | None = None
    group_index: int | None = None


def parse_result_event(task_id: str, raw: bytes | str | None, seen_at: float) -> ResultEvent | None:
    """The fields of one published value (None: pickled, compressed or not a Celery result)."""
    if raw is None:
        return None
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if data[:1] not in (b"{", b" ", b"\n") or len(data) > MAX_VALUE:
        return None
    try:
        meta = json.loads(data)
    except ValueError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("status"), str):
        return None
    name = meta.get("name")
    gid = meta.get("group_id")
    gidx = meta.get("group_index")
    return ResultEvent(task_id, meta["status"], name if isinstance(name, str) else None,
                       gid if isinstance(gid, str) else None, seen_at,
                       meta.get("date_done") if isinstance(meta.get("date_done"), str) else None,
                       gidx if isinstance(gidx, int) else None)


class ResultStream:
    """PSUBSCRIBE thread feeding :class:`ResultEvent` s into a bounded buffer."""

    def __init__(self, settings: Settings, *, capacity: int = 20_000) -> None:
        self.settings = settings
        self.layout = KeyLayout.from_settings(settings)
        self._buf: deque[ResultEvent] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.dropped = 0
        self.started_at: float | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name="taskdash-result-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout=3)
        self._thread = None

    def drain(self) -> list[ResultEvent]:
        with self._lock:
            out = list(self._buf)
            self._buf.clear()
        return out

    def feed(self, channel: str, data: Any, seen_at: float | None = None) -> None:
        """Take one published message (also used by tests without a subscriber)."""
        prefix = self.layout.result_prefix
        if not channel.startswith(prefix):
            return
        ev = parse_result_event(channel[len(prefix):], data, time.time() if seen_at is None else seen_at)
        if ev is None:
            return
        with self._lock:
            if len(self._buf) == self._buf.maxlen:
                self.dropped += 1
            self._buf.append(ev)

    def _run(self) -> None:
        backoff = 0.5
        s = self.settings
        while not self._stop.is_set():
            client = pubsub = None
            try:
                client = own_client(s.effective_backend_url, s)  # named: not a worker's in CLIENT LIST
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(self.layout.result_pattern)
                self.error = None
                backoff = 0.5
                last_ping = time.monotonic()
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    while msg is not None:
                        if msg.get("type") == "pmessage":
                            ch = msg.get("channel")
                            if isinstance(ch, bytes):
                                ch = ch.decode("utf-8", "replace")
                            if isinstance(ch, str):
                                self.feed(ch, msg.get("data"))
                        msg = pubsub.get_message(timeout=0.0)
                    if time.monotonic() - last_ping > 10:
                        pubsub.ping()
                        last_ping = time.monotonic()
            except (redis.RedisError, OSError) as exc:
                self.error = mask_text(str(exc), s.broker_url, s.backend_url)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                for closing in (pubsub, client):
                    if closing is not None:
                        with contextlib.suppress(Exception):
                            closing.close()
