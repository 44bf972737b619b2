"""Persistent history in a small local SQLite file: queue depth, throughput, poison delivery counts,
and when each queue's head message was first seen.

Sparklines and delivery counts survive a restart of taskdash. ``History(path).record(snapshot)``
samples at most once per ``sample_s`` seconds (default 5 s), so a 1-s refresh does not write every
second. Size is bounded: rows older than ``max_age_s`` (default 7 days) are deleted and each table
keeps at most its row cap (oldest first), checked every ``prune_every`` samples and on open.
Each row carries a ``scope`` (by default the masked broker URL), so several brokers/contexts share
one file without mixing their queues. Stdlib ``sqlite3`` only; WAL mode; one connection guarded by
a lock (safe to call from the UI thread and from workers).

Queue heads (issue 21): messages carry no enqueue time, so the broker reader's oldest-message age of a
backlog found at start is only a lower bound, counted from when taskdash first saw that exact message
(by delivery tag) at the consuming end. ``record`` stores ``queue -> (head identity, first seen, since,
source)`` for every queue of the sampled snapshot (one row per queue: a new head replaces the old one;
written when it changed and every ``HEAD_TOUCH_S``), and :meth:`History.head_seen`
(the reader's ``remembered`` lookup) gives it back after a restart, or to another taskdash process on the
same file: the rows of the scope are loaded once, then the process's own writes keep the dict current.
At most ``caps["queue_heads"]`` rows (least recently seen go first) and ``max_age_s``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collectors.core.models import Snapshot

SCHEMA = """
CREATE TABLE IF NOT EXISTS depth (
    scope TEXT NOT NULL, ts REAL NOT NULL, queue TEXT NOT NULL, messages INTEGER NOT NULL,
    unacked INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS depth_scope_queue_ts ON depth(scope, queue, ts);
CREATE TABLE IF NOT EXISTS throughput (
    scope TEXT NOT NULL, ts REAL NOT NULL, done INTEGER NOT NULL, span REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS throughput_scope_ts ON throughput(scope, ts);
CREATE TABLE IF NOT EXISTS deliveries (
    scope TEXT NOT NULL, task_id TEXT NOT NULL, task TEXT, queue TEXT, deliveries INTEGER NOT NULL,
    first_seen REAL, last_seen REAL NOT NULL, workers TEXT, PRIMARY KEY (scope, task_id)
);
CREATE INDEX IF NOT EXISTS deliveries_last_seen ON deliveries(last_seen);
CREATE TABLE IF NOT EXISTS task_minutes (
    scope TEXT NOT NULL, minute REAL NOT NULL, task TEXT NOT NULL, counts TEXT NOT NULL, runtime TEXT NOT NULL,
    wait TEXT NOT NULL, wait_source TEXT, runtime_max REAL, PRIMARY KEY (scope, task, minute)
);
CREATE INDEX IF NOT EXISTS task_minutes_scope_minute ON task_minutes(scope, minute);
CREATE TABLE IF NOT EXISTS queue_heads (
    scope TEXT NOT NULL, queue TEXT NOT NULL, identity TEXT NOT NULL, task_id TEXT, first_seen REAL NOT NULL,
    since REAL NOT NULL, source TEXT NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (scope, queue)
);
CREATE INDEX IF NOT EXISTS queue_heads_last_seen ON queue_heads(last_seen);
"""

HEAD_TOUCH_S = 600.0
"""An unchanged queue head's row is rewritten (``last_seen``) this often, so ``max_age_s`` never drops it."""
_LOWER_BOUND = "first-seen"
"""The one head source that is a lower bound; the others (task-sent, eta, arrival) are exact."""

DEFAULT_CAPS = {"depth": 200_000, "throughput": 50_000, "deliveries": 10_000, "task_minutes": 300_000,
                "queue_heads": 20_000}
"""Row caps per table (~20 MB at most for depth; task_minutes: 7 days of 30 busy task names; queue_heads:
~2 MB)."""


def default_path() -> Path:
    """``<user state dir>/taskdash/history.sqlite3``."""
    from collectors.core.audit import state_dir

    return state_dir() / "history.sqlite3"


class History:
    """Queue depth / throughput / delivery-count history in SQLite (bounded)."""

    def __init__(self, path: str | Path | None = None, *, scope: str = "default", sample_s: float = 5.0,
                 max_age_s: float = 7 * 86400.0, caps: dict[str, int] | None = None,
                 prune_every: int = 50) -> None:
        """Open (or create) the history file.

        Args:
            path: SQLite file (default ``default_path()``); ``":memory:"`` for a throw-away history.
            scope: key separating brokers/contexts in one file (use the masked broker URL).
            sample_s: minimum seconds between two recorded samples.
            max_age_s: rows older than this are deleted.
            caps: per-table row caps (defaults: DEFAULT_CAPS).
            prune_every: prune after this many recorded samples.
        """
        self.path = Path(path) if path and str(path) != ":memory:" else None
        if self.path is None and path is None:
            self.path = default_path()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = scope
        self.sample_s = sample_s
        self.max_age_s = max_age_s
        self.caps = dict(DEFAULT_CAPS, **(caps or {}))
        self.prune_every = max(1, prune_every)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", check_same_thread=False,
                                   timeout=2.0)
        with self._lock:
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.commit()
        self._last_ts: float | None = None
        self._last_processed: dict[str, int] = {}
        self._samples = 0
        self._last_task_minute: float | None = None
        self._heads: dict[str, tuple[str, float, float, str]] | None = None
        """queue -> (head identity, first seen, since, source) of this scope, loaded on first use."""
        self._heads_written: dict[str, tuple[tuple[str, float, str], float]] = {}
        """queue -> ((identity, since, source), when) last written: rewritten on change or after HEAD_TOUCH_S."""
        self.prune()

    # ---- writing -------------------------------------------------------------------------------
    def record(self, snapshot: Snapshot, *, force: bool = False) -> bool:
        """Store one sample of ``snapshot`` (skipped within ``sample_s`` of the last); True if stored."""
        if not snapshot.broker.ok:
            return False
        ts = snapshot.taken_at
        if not force and self._last_ts is not None and ts - self._last_ts < self.sample_s:
            return False
        done = 0
        for w in snapshot.workers:
            if w.processed is None:
                continue
            prev = self._last_processed.get(w.hostname)
            if prev is not None and w.processed >= prev:
                done += w.processed - prev
            self._last_processed[w.hostname] = w.processed
        span = ts - self._last_ts if self._last_ts is not None else 0.0
        with self._lock:
            cur = self._db.cursor()
            cur.executemany(
                "INSERT INTO depth(scope, ts, queue, messages, unacked) VALUES (?, ?, ?, ?, ?)",
                [(self.scope, ts, q.name, q.messages, q.unacked) for q in snapshot.queues])
            if span > 0:
                cur.execute("INSERT INTO throughput(scope, ts, done, span) VALUES (?, ?, ?, ?)",
                            (self.scope, ts, done, span))
            for p in snapshot.poison:
                cur.execute(
                    "INSERT INTO deliveries(scope, task_id, task, queue, deliveries, first_seen, last_seen, workers)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(scope, task_id) DO UPDATE SET"
                    " deliveries = MAX(deliveries, excluded.deliveries), last_seen = excluded.last_seen,"
                    " first_seen = MIN(COALESCE(first_seen, excluded.first_seen), excluded.first_seen),"
                    " workers = excluded.workers, task = COALESCE(excluded.task, task),"
                    " queue = COALESCE(excluded.queue, queue)",
                    (self.scope, p.task_id, p.task, p.queue, p.deliveries, p.first_seen, p.last_seen,
                     json.dumps(list(p.workers))))
            self._record_heads(cur, snapshot)
            self._db.commit()
        self._last_ts = ts
        self._samples += 1
        if self._samples % self.prune_every == 0:
            self.prune(now=ts)
        return True

    def _record_heads(self, cur: sqlite3.Cursor, snapshot: Snapshot) -> None:
        """Upsert each queue's head when it (or its evidence) changed, or every ``HEAD_TOUCH_S`` (so a
        head stuck for days is not aged out). One row per queue: a new head replaces the old one; the
        same head keeps its earliest first sighting and exact evidence wins over a lower bound."""
        ts = snapshot.taken_at
        rows = []
        for q in snapshot.queues:
            if q.oldest_identity is None or q.oldest_since is None or q.oldest_age_source is None:
                continue
            first = q.oldest_since if q.oldest_age_source == _LOWER_BOUND else ts
            key = (q.oldest_identity, q.oldest_since, q.oldest_age_source)
            done = self._heads_written.get(q.name)
            if done is not None and done[0] == key and ts - done[1] < HEAD_TOUCH_S:
                continue
            self._heads_written[q.name] = (key, ts)
            rows.append((self.scope, q.name, q.oldest_identity, q.oldest_task_id, first, q.oldest_since,
                         q.oldest_age_source, ts))
            if self._heads is not None:
                self._heads[q.name] = _merge_head(self._heads.get(q.name),
                                                  (q.oldest_identity, first, q.oldest_since, q.oldest_age_source))
        if not rows:
            return
        lb = _LOWER_BOUND
        cur.executemany(
            "INSERT INTO queue_heads(scope, queue, identity, task_id, first_seen, since, source, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(scope, queue) DO UPDATE SET"
            " identity = excluded.identity, task_id = excluded.task_id, last_seen = excluded.last_seen,"
            " first_seen = CASE WHEN identity = excluded.identity THEN MIN(first_seen, excluded.first_seen)"
            "  ELSE excluded.first_seen END,"
            f" since = CASE WHEN identity != excluded.identity OR excluded.source != '{lb}' THEN excluded.since"
            f"  WHEN source != '{lb}' THEN since ELSE MIN(since, excluded.since) END,"
            f" source = CASE WHEN identity != excluded.identity OR excluded.source != '{lb}' THEN excluded.source"
            "  ELSE source END",
            rows)

    def head_seen(self, queue: str, identity: str) -> tuple[float, float, str] | None:
        """(first seen, since, source) remembered for the message ``identity`` at the head of ``queue``
        (the broker reader's ``remembered`` lookup); None when another message (or none) was recorded."""
        with self._lock:
            if self._heads is None:
                cutoff = time.time() - self.max_age_s
                self._heads = {
                    str(q): (str(i), float(f), float(s), str(src))
                    for q, i, f, s, src in self._db.execute(
                        "SELECT queue, identity, first_seen, since, source FROM queue_heads"
                        " WHERE scope = ? AND last_seen >= ?", (self.scope, cutoff))}
            mem = self._heads.get(queue)
        if mem is None or mem[0] != identity:
            return None
        return mem[1], mem[2], mem[3]

    def head_rows(self) -> int:
        """Rows of the queue_heads table (all scopes), for the bounded-size check."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM queue_heads").fetchone()[0])

    def prune(self, now: float | None = None) -> None:
        """Delete rows older than ``max_age_s`` and beyond each table's cap (oldest first)."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._lock:
            cur = self._db.cursor()
            cur.execute("DELETE FROM depth WHERE ts < ?", (cutoff,))
            cur.execute("DELETE FROM throughput WHERE ts < ?", (cutoff,))
            cur.execute("DELETE FROM deliveries WHERE last_seen < ?", (cutoff,))
            cur.execute("DELETE FROM task_minutes WHERE minute < ?", (cutoff,))
            cur.execute("DELETE FROM queue_heads WHERE last_seen < ?", (cutoff,))
            for table, order in (("depth", "ts"), ("throughput", "ts"), ("deliveries", "last_seen"),
                                 ("task_minutes", "minute"), ("queue_heads", "last_seen")):
                cap = self.caps[table]
                (n,) = cur.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
                if n > cap:
                    cur.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "  # noqa: S608
                                f"ORDER BY {order} LIMIT ?)", (n - cap,))
            self._db.commit()

    def forget(self, task_id: str) -> None:
        """Drop a task's delivery count (after it was quarantined/revoked)."""
        with self._lock:
            self._db.execute("DELETE FROM deliveries WHERE scope = ? AND task_id = ?", (self.scope, task_id))
            self._db.commit()

    # ---- reading -------------------------------------------------------------------------------
    def series(self, queue: str, since: float | None = None, limit: int = 500) -> list[tuple[float, int]]:
        """(ts, ready messages) of ``queue`` since ``since`` (epoch s), oldest first, at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, messages FROM (SELECT ts, messages FROM depth WHERE scope = ? AND queue = ?"
                " AND ts >= ? ORDER BY ts DESC LIMIT ?) ORDER BY ts",
                (self.scope, queue, since or 0.0, limit)).fetchall()
        return [(float(t), int(m)) for t, m in rows]

    def throughput(self, since: float | None = None, limit: int = 500) -> list[tuple[float, float]]:
        """(ts, tasks/s completed by all workers in the interval ending at ts), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, done, span FROM (SELECT ts, done, span FROM throughput WHERE scope = ? AND ts >= ?"
                " ORDER BY ts DESC LIMIT ?) ORDER BY ts", (self.scope, since or 0.0, limit)).fetchall()
        return [(float(t), d / s if s > 0 else 0.0) for t, d, s in rows]

    def deliveries(self, task_id: str) -> int:
        """Highest delivery count recorded for ``task_id`` (0 when never a suspect)."""
        with self._lock:
            row = self._db.execute("SELECT deliveries FROM deliveries WHERE scope = ? AND task_id = ?",
                                   (self.scope, task_id)).fetchone()
        return int(row[0]) if row else 0

    def suspects(self, since: float | None = None) -> list[dict[str, object]]:
        """Recorded poison suspects (newest first), e.g. to show loops seen before a restart."""
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, task, queue, deliveries, first_seen, last_seen, workers FROM deliveries"
                " WHERE scope = ? AND last_seen >= ? ORDER BY last_seen DESC LIMIT 1000",
                (self.scope, since or 0.0)).fetchall()
        return [{"task_id": r[0], "task": r[1], "queue": r[2], "deliveries": r[3], "first_seen": r[4],
                 "last_seen": r[5], "workers": json.loads(r[6] or "[]")} for r in rows]

    def queues(self) -> list[str]:
        """Queue names with recorded depth in this scope."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT queue FROM depth WHERE scope = ?", (self.scope,)).fetchall()
        return sorted(r[0] for r in rows)

    def rows(self) -> dict[str, int]:
        """Row count per table (all scopes), for the bounded-size check."""
        with self._lock:
            return {t: int(self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608
                    for t in ("depth", "throughput", "deliveries", "task_minutes")}

    # ---- per-task-name minutes (issue 15) -----------------------------------------------------------
    def record_tasks(self, aggregator: Any, now: float) -> int:
        """Store the closed minutes of a ``TaskStatsAggregator`` not stored yet; returns the rows written.

        One row per (task name, minute): outcome counts and the log-bucket histograms of runtime and
        wait (JSON ``{bucket: n}``), so 1 h / 24 h quantiles are re-merged exactly from the rows. A minute
        already stored (before a restart) is never written again.
        """
        if self._last_task_minute is None:
            with self._lock:
                row = self._db.execute("SELECT MAX(minute) FROM task_minutes WHERE scope = ?",
                                       (self.scope,)).fetchone()
            self._last_task_minute = float(row[0]) if row and row[0] is not None else -1.0
        rows = aggregator.minutes(self._last_task_minute, now)
        if not rows:
            return 0
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO task_minutes(scope, minute, task, counts, runtime, wait, wait_source,"
                " runtime_max) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.scope, m, name, json.dumps(counts), json.dumps(rt), json.dumps(wait), src, mx)
                 for m, name, counts, rt, wait, src, mx in rows])
            self._db.commit()
        self._last_task_minute = max(r[0] for r in rows)
        return len(rows)

    def task_minutes(self, since: float, until: float | None = None, task: str | None = None,
                     limit: int = 100_000) -> list[tuple[float, str, list[int], dict[int, int], dict[int, int],
                                                         str | None, float | None]]:
        """Stored minute rows in ``[since, until)`` (oldest first), of one task or all."""
        q = ("SELECT minute, task, counts, runtime, wait, wait_source, runtime_max FROM task_minutes"
             " WHERE scope = ? AND minute >= ? AND minute < ?")
        args: list[Any] = [self.scope, since, until if until is not None else float("inf")]
        if task is not None:
            q += " AND task = ?"
            args.append(task)
        q += " ORDER BY minute, task LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        return [(float(m), t, json.loads(c), {int(k): v for k, v in json.loads(rt).items()},
                 {int(k): v for k, v in json.loads(w).items()}, src, mx) for m, t, c, rt, w, src, mx in rows]

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _merge_head(old: tuple[str, float, float, str] | None, new: tuple[str, float, float, str]
                ) -> tuple[str, float, float, str]:
    """The SQL upsert's merge of two (identity, first seen, since, source) records, for the in-memory copy."""
    if old is None or old[0] != new[0]:
        return new
    first = min(old[1], new[1])
    if new[3] != _LOWER_BOUND:
        return new[0], first, new[2], new[3]
    if old[3] != _LOWER_BOUND:
        return new[0], first, old[2], old[3]
    return new[0], first, min(old[2], new[2]), new[3]


def sparkline(values: Iterable[float], width: int = 20) -> str:
    """A unicode sparkline of the last ``width`` values (for the CLI and the README)."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    bars = "▁▂▃▄▅▆▇█"
    if hi == lo:
        return bars[0] * len(vals)
    return "".join(bars[int((v - lo) / (hi - lo) * (len(bars) - 1))] for v in vals)
