"""Groups and chords read from the Redis result backend (issue 16), with bounded work per refresh.

Keys (celery/backends/redis.py, docs/redis-layout.md#result-keys), all ``<prefix>celery-taskset-meta-<gid>``:

* ``<gid>.s`` — the chord size, set when the chord is applied (so a chord is visible before any part ran);
  ``<gid>.t`` — an adjustment to it (``add_to_chord``); the body runs when ``done == .s + .t``;
* ``<gid>.j`` — the joined part results: a zset scored by the part's group index (``result_chord_ordered``,
  the default) or a list, of JSON ``[1, task_id, state, result]``;
* ``<gid>.d`` — the parts already counted; ``<gid>.c`` — the callback claim, ``done`` once the body was sent
  and the rest deleted (kept ≥ 300 s);
* ``<gid>`` — a saved GroupResult (``GroupResult.save()``, or a chord with nested groups).

After a ChordError (a part failed or the join failed) the backend deletes ``.s`` and keeps ``.j``.

Per refresh: one ``SCAN`` step over ``celery-taskset-meta-*`` (COUNT bounded, paced between full passes),
one pipeline of five O(1) commands per known chord (``GET .s .t .c``, ``ZCARD``/``LLEN .j``, ``EXISTS``
of the group key) and part windows within a fixed member budget shared by every chord
(``ZRANGE .j lo hi BYSCORE`` over group indices not yet seen, or ``LRANGE`` from the last position):
``done`` is exact every refresh, ``failed`` is a lower bound until ``parts_scanned`` reaches ``done``.
Part states published by the workers (``group_id`` in every part's result) also arrive through the
live :class:`~collectors.reads.result_stream.ResultStream` when it runs. Nothing is written.

``parts(gid)`` is the on-demand detail behind enter: every part with its state, and for a missing one
where its message is (queued, unacked, quarantined) or ``lost`` — that read is O(parts) and capped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collectors.core.beat_canvas import CanvasView, ChordInfo, ChordPart, ChordState
from collectors.core.config import Settings, mask_text
from collectors.keyspace.keys import CHORD_SUFFIXES, KeyLayout
from collectors.reads.beat import chord_body_of, message_headers
from collectors.reads.result_stream import ResultEvent

log = logging.getLogger(__name__)

FAILED_STATES = frozenset({"FAILURE", "REVOKED"})
"""Celery's PROPAGATE_STATES: a part in one of these gives the body a ChordError."""
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
DETAIL_CAP = 20_000
"""Messages per key / members / ledger entries the detail read looks at."""


def _s(v: Any) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _iso_ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            from datetime import timezone

            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    except ValueError:
        return None


def parse_member(raw: Any) -> tuple[str | None, str | None]:
    """(task_id, state) of one ``.j`` member ``[1, tid, state, result]`` (JSON; (None, None) otherwise)."""
    try:
        v = json.loads(raw)
    except (TypeError, ValueError):
        return None, None
    if isinstance(v, list) and len(v) >= 3 and isinstance(v[1], str) and isinstance(v[2], str):
        return v[1], v[2]
    return None, None


@dataclass
class _Chord:
    gid: str
    first_seen: float
    size: int | None = None
    adjust: int = 0
    done: int = 0
    claim: str | None = None
    group_saved: bool = False
    j_exists: bool = False
    last_done: int | None = None
    last_change_at: float | None = None
    last_result_at: float | None = None
    seen_index: set[float] = field(default_factory=set)
    seen_tids: dict[str, str] = field(default_factory=dict)
    """task id -> state, for every part seen (``.j`` windows and published results)."""
    failed: set[str] = field(default_factory=set)
    cursor: float = 0.0
    list_pos: int = 0
    body: str | None = None
    ever_chord: bool = False
    done_at: float | None = None
    gone_reads: int = 0


class CanvasReader:
    """Chords and groups of one result backend; keeps just enough memory to tell progress from none."""

    def __init__(self, settings: Settings, client: Any, *, scan_count: int = 1000, part_budget: int = 200,
                 stuck_after_s: float | None = None, max_chords: int = 500, rescan_s: float = 5.0,
                 done_keep_s: float = 600.0, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.client = client
        self.layout = KeyLayout.from_settings(settings)
        self.scan_count = scan_count
        self.part_budget = part_budget
        self.stuck_after_s = float(stuck_after_s if stuck_after_s is not None
                                   else env.get("TASKDASH_CHORD_STUCK_S") or 300.0)
        self.max_chords = max_chords
        self.rescan_s = rescan_s
        self.done_keep_s = done_keep_s
        self.ordered = bool(settings.backend_transport_options.get("result_chord_ordered", True))
        self._chords: dict[str, _Chord] = {}
        self._cursor = 0
        self._passes = 0
        self._next_pass_at = 0.0
        self.last_commands = 0

    # ---- feeding ------------------------------------------------------------------------------------
    def feed_results(self, events: Iterable[ResultEvent]) -> None:
        """Part results published by workers: discover groups and see progress and failures at once."""
        for ev in events:
            if not ev.group_id:
                continue
            ch = self._chords.get(ev.group_id)
            if ch is None:
                if len(self._chords) >= self.max_chords:
                    continue
                ch = self._chords[ev.group_id] = _Chord(ev.group_id, ev.seen_at)
            ch.seen_tids[ev.task_id] = ev.state
            if ev.state in READY_STATES:
                ch.last_result_at = max(ch.last_result_at or 0.0, _iso_ts(ev.date_done) or ev.seen_at)
            if ev.state in FAILED_STATES:
                ch.failed.add(ev.task_id)

    # ---- one refresh --------------------------------------------------------------------------------
    def read(self, now: float | None = None) -> CanvasView:
        """One bounded refresh (never raises: a failure becomes ``error``)."""
        now = time.time() if now is None else now
        commands = 0
        try:
            commands += self._discover(now)
            commands += self._status(now)
            commands += self._windows()
        except Exception as exc:  # noqa: BLE001
            self.last_commands = commands
            return CanvasView(self._infos(now), self._passes > 0, self.stuck_after_s,
                              mask_text(str(exc), self.settings.broker_url, self.settings.backend_url), commands)
        self.last_commands = commands
        return CanvasView(self._infos(now), self._passes > 0, self.stuck_after_s, None, commands)

    def _discover(self, now: float) -> int:
        if self._cursor == 0 and now < self._next_pass_at:
            return 0
        prefix = self.layout.taskset_prefix
        cursor, keys = self.client.scan(self._cursor, match=_glob_escape(prefix) + "*", count=self.scan_count)
        self._cursor = int(cursor)
        for k in keys:
            rest = _s(k)[len(prefix):]
            gid = rest
            for suffix in CHORD_SUFFIXES:
                if rest.endswith(suffix):
                    gid = rest[: -len(suffix)]
                    break
            if gid and gid not in self._chords and len(self._chords) < self.max_chords:
                self._chords[gid] = _Chord(gid, now)
        if self._cursor == 0:
            self._passes += 1
            self._next_pass_at = now + self.rescan_s
        return 1

    def _status(self, now: float) -> int:
        chords = list(self._chords.values())
        if not chords:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for ch in chords:
            key = self.layout.taskset_key
            pipe.get(key(ch.gid, ".s"))
            pipe.get(key(ch.gid, ".t"))
            pipe.get(key(ch.gid, ".c"))
            (pipe.zcard if self.ordered else pipe.llen)(key(ch.gid, ".j"))
            pipe.exists(key(ch.gid))
        res = pipe.execute(raise_on_error=False)
        for i, ch in enumerate(chords):
            s, t, c, j, g = res[5 * i: 5 * i + 5]
            ch.size = _int(s) if not isinstance(s, Exception) else ch.size
            ch.adjust = _int(t) or 0 if not isinstance(t, Exception) else ch.adjust
            ch.claim = None if c is None or isinstance(c, Exception) else _s(c)
            done = _int(j) if not isinstance(j, Exception) else None
            ch.j_exists = bool(done)
            ch.group_saved = bool(g) and not isinstance(g, Exception)
            if ch.size is not None or ch.j_exists or ch.claim is not None:
                ch.ever_chord = True
            if ch.claim == "done" and ch.done_at is None:
                ch.done_at = now
            if done is not None and (done > 0 or ch.size is not None):
                if ch.last_done is not None and done != ch.last_done:
                    ch.last_change_at = now
                ch.last_done = ch.done = done
            gone = ch.size is None and not ch.j_exists and ch.claim is None and not ch.group_saved
            ch.gone_reads = ch.gone_reads + 1 if gone else 0
        for ch in chords:
            if ch.gone_reads >= 2 and (ch.done_at is None or now - ch.done_at > self.done_keep_s):
                del self._chords[ch.gid]
        return len(res)

    def _windows(self) -> int:
        budget, commands = self.part_budget, 0
        pending = [ch for ch in self._chords.values() if ch.j_exists and len(ch.seen_index) < ch.done]
        pending.sort(key=lambda c: c.done - len(c.seen_index), reverse=True)
        for ch in pending:
            if budget <= 0:
                break
            jkey = self.layout.taskset_key(ch.gid, ".j")
            take = min(budget, max(ch.done - len(ch.seen_index), 1))
            if self.ordered:
                top = max((ch.size or 0) + ch.adjust, ch.done)
                lo = ch.cursor if ch.cursor < top else 0.0
                # skip indices already seen (no command for a window we know whole)
                while lo < top and lo in ch.seen_index:
                    lo += 1
                hi = min(lo + take - 1, max(top - 1, lo))
                rows = self.client.zrange(jkey, lo, hi, byscore=True, withscores=True)
                commands += 1
                ch.cursor = hi + 1 if hi + 1 < top else 0.0
                for raw, score in rows:
                    self._part(ch, raw, float(score))
                if not rows and lo == 0.0 and hi >= top - 1:
                    # indices beyond the size (+inf when a part had no group index): read them by rank
                    rows = self.client.zrange(jkey, -take, -1, withscores=True)
                    commands += 1
                    for raw, score in rows:
                        self._part(ch, raw, float(score))
            else:
                rows = self.client.lrange(jkey, ch.list_pos, ch.list_pos + take - 1)
                commands += 1
                for raw in rows:
                    self._part(ch, raw, float(ch.list_pos))
                    ch.list_pos += 1
            budget -= take
        return commands

    def _part(self, ch: _Chord, raw: Any, index: float) -> None:
        tid, state = parse_member(raw)
        if math.isinf(index) and tid is not None:
            index = float(hash(tid) % (1 << 40)) + 1e12  # no group index: one slot per task id
        ch.seen_index.add(index)
        if tid is not None and state is not None:
            ch.seen_tids[tid] = state
            if state in FAILED_STATES:
                ch.failed.add(tid)

    # ---- decisions ----------------------------------------------------------------------------------
    def _decide(self, ch: _Chord, now: float) -> tuple[ChordState, str]:
        total = None if ch.size is None else ch.size + ch.adjust
        if ch.claim == "done" or ch.done_at is not None:
            return "done", "body sent (claim marker 'done')"
        if ch.failed:
            return "failed", f"{len(ch.failed)} part(s) failed: the body gets a ChordError"
        if ch.ever_chord and ch.size is None and ch.j_exists:
            return "failed", "chord size key dropped after a ChordError (join or callback error)"
        if total is not None and ch.done >= total:
            return "running", "all parts returned; body being sent"
        progress = self._last_progress(ch)
        if total is not None and now - progress > self.stuck_after_s:
            return "stuck", f"no part finished for {now - progress:.0f}s with {total - ch.done} missing"
        if total is None and not ch.ever_chord:
            return "running", "group result saved"
        return "running", f"{ch.done}/{total if total is not None else '?'} parts done"

    @staticmethod
    def _last_progress(ch: _Chord) -> float:
        return max(x for x in (ch.last_change_at, ch.last_result_at, ch.first_seen) if x is not None)

    def _infos(self, now: float) -> tuple[ChordInfo, ...]:
        out = []
        for ch in self._chords.values():
            if not (ch.ever_chord or ch.group_saved or ch.seen_tids):
                continue
            state, reason = self._decide(ch, now)
            progress = self._last_progress(ch)
            real = ch.last_change_at or ch.last_result_at
            out.append(ChordInfo(
                group_id=ch.gid, kind="chord" if ch.ever_chord else "group", state=state,
                size=None if ch.size is None else ch.size + ch.adjust, done=ch.done, failed=len(ch.failed),
                parts_scanned=min(len(ch.seen_index), ch.done) if ch.done else len(ch.seen_index),
                body=ch.body, last_progress_at=real, last_progress_age_s=round(now - progress, 3),
                first_seen=ch.first_seen, reason=reason,
            ))
        order = {"stuck": 0, "failed": 1, "running": 2, "done": 3}
        out.sort(key=lambda c: (order[c.state], -(c.first_seen or 0)))
        return tuple(out)

    # ---- the detail behind enter (O(parts), on demand, capped) --------------------------------------
    def parts(self, group_id: str, *, queues: Sequence[str] = (),
              unacked_states: Mapping[str, str] | None = None) -> tuple[ChordPart, ...]:
        """Every part of ``group_id``: state, and where a missing part's message is.

        ``queues`` are the task queues to look in (the snapshot's); ``unacked_states`` maps delivery tag ->
        the snapshot's unacked state (``active``, ``orphaned``, ...) so the liveness verdict shows.
        """
        lay, c = self.layout, self.client
        ch = self._chords.get(group_id)
        size = ch.size + ch.adjust if ch is not None and ch.size is not None else _int(
            c.get(lay.taskset_key(group_id, ".s")))
        parts: dict[Any, ChordPart] = {}
        jkey = lay.taskset_key(group_id, ".j")
        if self.ordered:
            rows = c.zrange(jkey, 0, DETAIL_CAP - 1, withscores=True)
        else:
            rows = [(raw, float(i)) for i, raw in enumerate(c.lrange(jkey, 0, DETAIL_CAP - 1))]
        for raw, score in rows:
            tid, state = parse_member(raw)
            idx = None if math.isinf(float(score)) else int(score)
            parts[idx if idx is not None else tid] = ChordPart(idx, tid, state or "?")
        found: dict[Any, ChordPart] = {}
        body = ch.body if ch is not None else None

        def consider(raw: Any, state: str, where: str, tag: str | None) -> None:
            nonlocal body
            h = message_headers(raw)
            if h.get("group") != group_id:
                return
            idx = h.get("group_index") if isinstance(h.get("group_index"), int) else None
            key = idx if idx is not None else h.get("id")
            if key in parts:
                return
            found[key] = ChordPart(idx, h.get("id"), state, where, h.get("task"), tag)
            body = body or chord_body_of(raw)

        for q in queues:
            for _band, key in lay.queue_keys(q):
                for raw in c.lrange(key, 0, DETAIL_CAP - 1):
                    consider(raw, "queued", q, None)
        cursor, seen = 0, 0
        while seen < DETAIL_CAP:
            cursor, chunk = c.hscan(lay.unacked, cursor, count=1000)
            for tag, value in chunk.items():
                seen += 1
                try:
                    envelope = json.loads(value)[0]
                except (TypeError, ValueError, IndexError, KeyError):
                    continue
                raw = json.dumps(envelope) if isinstance(envelope, dict) else envelope
                st = (unacked_states or {}).get(_s(tag))
                consider(raw, f"unacked ({st})" if st else "unacked", f"unacked {_s(tag)}", _s(tag))
            if int(cursor) == 0:
                break
        cursor, seen = 0, 0
        while seen < DETAIL_CAP:
            cursor, chunk = c.hscan(lay.quarantine, cursor, count=500)
            for qid, value in chunk.items():
                seen += 1
                try:
                    rec = json.loads(value)
                except (TypeError, ValueError):
                    continue
                msg = rec.get("message") if isinstance(rec, dict) else None
                if isinstance(msg, str):
                    consider(msg, "quarantined", f"quarantine {_s(qid)}", rec.get("tag"))
            if int(cursor) == 0:
                break
        if ch is not None and body:
            ch.body = body
        parts.update({k: v for k, v in found.items() if k not in parts})
        # parts whose task id is known (published results) but that are in no key
        if ch is not None:
            known = {p.task_id for p in parts.values()}
            for tid, state in ch.seen_tids.items():
                if tid not in known:
                    parts[tid] = ChordPart(None, tid, state, "result backend")
        out = sorted(parts.values(), key=lambda p: (p.index is None, p.index if p.index is not None else 0))
        if size is not None:
            have = {p.index for p in out if p.index is not None}
            unindexed = sum(1 for p in out if p.index is None)
            lost = [i for i in range(size) if i not in have][: max(size - len(have) - unindexed, 0)]
            out.extend(ChordPart(i, None, "lost", "no result, and in no queue, unacked ledger or quarantine")
                       for i in lost)
            out.sort(key=lambda p: (p.index is None, p.index if p.index is not None else 0))
        return tuple(out)


def _glob_escape(text: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[]\\" else ch for ch in text)
