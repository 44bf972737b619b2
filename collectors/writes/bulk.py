"""Bulk actions by query (issue 18): requeue / quarantine / revoke / retry / delete / move everything a
search query matches, always planned (a dry run) before anything changes.

Query syntax: the search language of :mod:`collectors.reads.search` plus

* ``since:1h`` / ``older:10m`` — the item's time is at most / at least that long ago (``s m h d``; a bare
  number is seconds). The time is the delivery time for unacked entries, ``date_done`` for results and
  ``quarantined_at`` for quarantined messages; a waiting message carries no send time in Celery's
  protocol, so a time term excludes waiting messages (the plan says so);
* ``in:queue:NAME`` (repeatable), ``in:unacked``, ``in:results``, ``in:quarantine`` — where to look;
  without ``in:`` every source the action applies to is searched (queues: the app's and every bound one).

:meth:`BulkActions.plan` reads and returns a :class:`BulkPlan` (count, sample, the exact keys that would
change); :meth:`BulkActions.run` executes a plan in batches. Between batches ``stop()`` is asked (ctrl+c in
the CLI, escape in the TUI) and ``progress(done, total)`` told; inside a batch every message moves in one
atomic compare-and-swap script (waiting messages: one ``LIST_BATCH`` call per batch; unacked entries: the
requeue/quarantine/move scripts, one per message, with kombu's mutex held), so a stop never leaves a
message half-moved. Every batch that changed messages appends one audit line and, before it changes
anything, its messages (exact bytes) to one JSONL export per run, fsynced (``taskdash restore FILE`` puts
back the pre-change copy: the exact undo of a delete; a move is undone by moving back, a quarantine by
replay). Unacked entries follow the requeue liveness guard: without ``force`` only entries whose every
possible holder is proven dead move.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from collectors.core.config import redis_client
from collectors.core.messages import decode_envelope
from collectors.reads.search import FIELDS, Query, SearchError, SearchHit, Term, _tokens, search_results
from collectors.writes.actions import Actions
from collectors.writes.base import BATCH, ActionError, ActionResult, _b, _enc, _Entry, _parse_entry, _s
from collectors.writes.move import MoveWrites, rewrite_for_queue

ACTIONS: tuple[str, ...] = ("requeue", "quarantine", "revoke", "retry", "delete", "move")
"""Bulk actions, as named on the command line (``delete`` = delete from the queue, exported first)."""
SOURCES: tuple[str, ...] = ("queue", "unacked", "results", "quarantine")
APPLIES: Mapping[str, tuple[str, ...]] = {
    "requeue": ("unacked", "quarantine"),   # unacked -> its queue; quarantine -> replay
    "quarantine": ("queue", "unacked"),
    "revoke": ("queue", "unacked", "results"),
    "retry": ("results",),
    "delete": ("queue", "quarantine"),
    "move": ("queue", "unacked"),
}
"""Which sources each action works on (an ``in:`` outside these is refused at planning)."""
CONFIRM_THRESHOLD = 100
"""Above this many items the CLI and TUI ask for the count to be typed."""
MAX_ITEMS = 1_000_000
"""Upper bound on one plan (and the default ``limit``)."""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90`` / ``90s`` / ``10m`` / ``1h`` / ``2d`` -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise SearchError(f"bad duration {text!r}: use e.g. 30s, 10m, 1h, 2d")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class BulkQuery:
    """A parsed bulk query: the search terms plus time bounds and sources."""

    text: str
    query: Query
    since_s: float | None = None
    older_s: float | None = None
    sources: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()

    def time_ok(self, at: float | None, now: float) -> bool:
        if self.since_s is None and self.older_s is None:
            return True
        if at is None:
            return False
        if self.since_s is not None and at < now - self.since_s:
            return False
        return not (self.older_s is not None and at > now - self.older_s)


def parse_bulk_query(text: str) -> BulkQuery:
    """The search syntax plus ``since:``, ``older:`` and ``in:`` (see the module docstring)."""
    terms: list[Term] = []
    since = older = None
    sources: list[str] = []
    queues: list[str] = []
    for tok, quoted in _tokens(text or ""):
        negate = False
        if tok.startswith("-") and len(tok) > 1:
            negate, tok = True, tok[1:]
        head, sep, rest = tok.partition(":")
        low = head.lower()
        if sep and not quoted and low in ("since", "older", "in"):
            if negate:
                raise SearchError(f"-{low}: cannot be negated")
            if low == "since":
                since = parse_duration(rest)
            elif low == "older":
                older = parse_duration(rest)
            else:
                src, _, name = rest.partition(":")
                src = src.lower()
                if src == "queue":
                    if not name:
                        raise SearchError("in:queue: needs a queue name (in:queue:NAME)")
                    queues.append(name)
                elif src == "results" or src == "result":
                    src = "results"
                elif src not in ("unacked", "quarantine"):
                    raise SearchError(f"unknown source in:{rest}: use in:queue:NAME, in:unacked, in:results, "
                                      "in:quarantine")
                if src not in sources:
                    sources.append(src)
            continue
        fld: str | None = None
        if sep and not quoted and head.isalpha():
            if low not in FIELDS:
                raise SearchError(f"unknown field {head!r}: use one of "
                                  f"{', '.join(f + ':' for f in (*FIELDS, 'since', 'older', 'in'))}")
            fld, tok = low, rest
        if tok == "":
            if fld is not None:
                raise SearchError(f"{fld}: needs a value")
            continue
        terms.append(Term(tok.lower(), fld, negate))
    return BulkQuery(text or "", Query(tuple(terms), text or ""), since, older, tuple(sources), tuple(queues))


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One thing a bulk action would change."""

    source: str
    """``queue`` | ``unacked`` | ``results`` | ``quarantine``."""
    ref: str
    """The list key (queue), delivery tag (unacked), result key (results) or quarantine id."""
    task_id: str | None
    name: str | None
    queue: str | None
    raw: bytes | None = None
    at: float | None = None
    state: str | None = None

    def line(self) -> str:
        return f"{self.source:<10} {self.task_id or '-'}  {self.name or '-'}  [{self.queue or '-'}]"


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """A dry run: what ``run`` would change, before anything was changed."""

    action: str
    query: str
    target: str | None
    items: tuple[BulkItem, ...]
    keys: tuple[str, ...]
    """Every Redis key the run would change (display form), or ``control: revoke`` / ``send_task``."""
    notes: tuple[str, ...] = ()
    truncated: bool = False
    by_source: Mapping[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def needs_typed_confirmation(self) -> bool:
        return self.count > CONFIRM_THRESHOLD

    def sample(self, n: int = 10) -> list[BulkItem]:
        return list(self.items[:n])

    def describe(self, sample: int = 10) -> list[str]:
        """The dry-run text: count, per source, the keys that would change, a sample."""
        to = f" to {self.target}" if self.target else ""
        per = ", ".join(f"{n} {s}" for s, n in self.by_source.items() if n)
        lines = [f"{self.action}{to}: {self.count} match(es) for {self.query!r}"
                 + (f" ({per})" if per else "") + (" [limit reached]" if self.truncated else "")]
        if self.keys:
            lines.append("keys that would change: " + ", ".join(self.keys))
        lines += [f"note: {n}" for n in self.notes]
        for it in self.sample(sample):
            lines.append("  " + it.line())
        if self.count > sample:
            lines.append(f"  … and {self.count - sample} more")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "query": self.query, "target": self.target, "count": self.count,
                "by_source": dict(self.by_source), "keys": list(self.keys), "notes": list(self.notes),
                "truncated": self.truncated,
                "sample": [{"source": i.source, "ref": i.ref, "task_id": i.task_id, "name": i.name,
                            "queue": i.queue} for i in self.sample(20)]}


@dataclass(slots=True)
class BulkProgress:
    """How far a run got (also the final tally)."""

    total: int
    done: int = 0
    changed: int = 0
    gone: int = 0
    refused: int = 0
    batches: int = 0
    stopped: bool = False
    errors: list[str] = field(default_factory=list)


def _date_ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _headers_hit(source: str, payload: Mapping[str, Any], queue: str | None, state: str) -> SearchHit:
    headers = payload.get("headers") if isinstance(payload.get("headers"), Mapping) else {}
    props = payload.get("properties") if isinstance(payload.get("properties"), Mapping) else {}
    tid = (headers or {}).get("id") or (props or {}).get("correlation_id")
    return SearchHit(source, str(tid) if tid else None, name=(headers or {}).get("task"), state=state, queue=queue,
                     args=(headers or {}).get("argsrepr"), kwargs=(headers or {}).get("kwargsrepr"))


class BulkActions(MoveWrites, Actions):
    """:class:`Actions` plus bulk actions by query, queue moves, with plans (dry runs) first."""

    # ---- planning -----------------------------------------------------------------------------------
    def plan(self, action: str, query: str, *, target: str | None = None, limit: int | None = None) -> BulkPlan:
        """Find everything ``action`` would change for ``query`` (nothing is changed)."""
        if action not in ACTIONS:
            raise ActionError(f"unknown bulk action {action!r}: use one of {', '.join(ACTIONS)}")
        try:
            bq = parse_bulk_query(query)
        except SearchError as exc:
            raise ActionError(f"bulk {action}: {exc}") from exc
        if action == "move" and not target:
            raise ActionError("bulk move: needs a target queue (--to QUEUE)")
        applies = APPLIES[action]
        wanted = list(bq.sources) or list(applies)
        bad = [s for s in wanted if s not in applies]
        if bad:
            raise ActionError(f"bulk {action} does not apply to in:{bad[0]} (it works on "
                              f"{', '.join('in:' + s for s in applies)})")
        limit = MAX_ITEMS if limit is None else max(0, int(limit))
        now = time.time()
        items: list[BulkItem] = []
        notes: list[str] = []
        by_source: dict[str, int] = {}
        with self._errors(f"bulk {action} (dry run)"):
            for src in wanted:
                if len(items) >= limit:
                    break
                before = len(items)
                if src == "queue":
                    if bq.since_s is not None or bq.older_s is not None:
                        notes.append("waiting messages carry no send time: since:/older: leave queues out")
                    else:
                        queues = list(bq.queues) or [q for q in dict.fromkeys(self._known_queues() + self._scanned_queues())
                                                  if not q.startswith("taskdash.")]
                        if action == "move":
                            queues = [q for q in queues if q != target]
                        items += self._plan_queues(bq, queues, limit - len(items))
                elif src == "unacked":
                    items += self._plan_unacked(bq, now, limit - len(items))
                elif src == "results":
                    items += self._plan_results(bq, now, limit - len(items), failed_only=action == "retry")
                elif src == "quarantine":
                    items += self._plan_quarantine(bq, now, limit - len(items))
                by_source[src] = len(items) - before
        truncated = len(items) >= limit
        if action == "move" and by_source.get("unacked"):
            notes.append("unacked entries move only when every worker that may hold them is proven dead "
                         "(force overrides)")
        if action == "requeue" and by_source.get("unacked"):
            notes.append("unacked entries follow the requeue liveness guard (force overrides)")
        return BulkPlan(action, query, target, tuple(items), tuple(self._plan_keys(action, target, items)),
                        tuple(notes), truncated, by_source)

    def _plan_keys(self, action: str, target: str | None, items: Sequence[BulkItem]) -> list[str]:
        k = self.keys
        out: dict[str, None] = {}
        for it in items:
            if action in ("revoke",):
                out["control broadcast: revoke"] = None
                continue
            if action == "retry":
                out["send_task: new messages on the tasks' queues"] = None
                continue
            if it.source == "queue":
                out[it.ref] = None
            elif it.source == "unacked":
                out[k.unacked] = None
                out[k.unacked_index] = None
            elif it.source == "quarantine":
                out[k.quarantine] = None
                out[k.quarantine_index] = None
            if action == "quarantine":
                out[k.quarantine] = None
                out[k.quarantine_index] = None
            elif action == "move" and target:
                out[self._target_key(target, self._payload(it))] = None
            elif action == "requeue" and it.queue:
                out[f"{it.queue} (its priority list)"] = None
        return [self.display_key(x) if x.startswith(k.global_keyprefix) else x for x in out]

    @staticmethod
    def _payload(it: BulkItem) -> dict[str, Any]:
        try:
            value = json.loads(it.raw or b"{}")
        except ValueError:
            return {}
        if it.source == "unacked" and isinstance(value, list) and value:
            value = value[0]
        return value if isinstance(value, dict) else {}

    def _plan_queues(self, bq: BulkQuery, queues: Sequence[str], limit: int) -> list[BulkItem]:
        out: list[BulkItem] = []
        for queue in queues:
            for _band, key in self.keys.queue_keys(queue):
                found: list[BulkItem] = []
                start = 0
                while True:  # head-based pages: a pop at the tail never makes us skip a message
                    page = self.client.lrange(key, start, start + 999)
                    for raw in page:
                        msg = decode_envelope(raw)
                        if msg.task_id is None and msg.task is None:
                            continue
                        hit = SearchHit("queued", msg.task_id, name=msg.task, state="queued", queue=queue,
                                        args=msg.argsrepr, kwargs=msg.kwargsrepr)
                        if bq.query.matches(hit):
                            found.append(BulkItem("queue", key, msg.task_id, msg.task, queue, _b(raw), None, "queued"))
                    if len(page) < 1000:
                        break
                    start += 1000
                found.reverse()  # the end consumed next first: a run keeps the queue's order
                out += found
                if len(out) >= limit:
                    return out[:limit]
        return out

    def _plan_unacked(self, bq: BulkQuery, now: float, limit: int) -> list[BulkItem]:
        out: list[BulkItem] = []
        for page in self._iter_unacked_batches(None, batch=1000):
            raws = self.client.hmget(self.keys.unacked, [t for t, _ in page])
            for (tag, score), raw in zip(page, raws, strict=True):
                entry = _parse_entry(tag, raw, score)
                if entry is None or not bq.time_ok(score, now):
                    continue
                queues = self._queues_for(entry.exchange, entry.routing_key)
                queue = queues[0] if queues else (entry.routing_key or None)
                if bq.queues and queue not in bq.queues:
                    continue
                hit = _headers_hit("unacked", entry.payload, queue, "unacked")
                if bq.query.matches(hit):
                    out.append(BulkItem("unacked", tag, entry.task_id, entry.task, queue, entry.raw, score, "unacked"))
                    if len(out) >= limit:
                        return out
        out.sort(key=lambda i: i.at or 0.0)  # oldest delivery first
        return out

    def _plan_results(self, bq: BulkQuery, now: float, limit: int, *, failed_only: bool) -> list[BulkItem]:
        backend = (self.client if self.settings.effective_backend_url == self.settings.broker_url
                   else redis_client(self.settings.effective_backend_url, self.settings))
        res = search_results(backend, self.settings, bq.query, limit=limit if not failed_only else MAX_ITEMS,
                             scan_budget=10 * MAX_ITEMS)
        out: list[BulkItem] = []
        for hit in res.hits:
            if failed_only and hit.state != "FAILURE":
                continue
            at = _date_ts(hit.date_done)
            if not bq.time_ok(at, now) or (bq.queues and hit.queue not in bq.queues):
                continue
            out.append(BulkItem("results", self.keys.result_key(hit.task_id or ""), hit.task_id, hit.name,
                                hit.queue, None, at, hit.state))
            if len(out) >= limit:
                break
        return out

    def _plan_quarantine(self, bq: BulkQuery, now: float, limit: int) -> list[BulkItem]:
        out: list[BulkItem] = []
        for qid, raw, rec in self._quarantine_records():
            at = rec.get("quarantined_at")
            at = float(at) if isinstance(at, int | float) else None
            if not bq.time_ok(at, now) or (bq.queues and rec.get("queue") not in bq.queues):
                continue
            msg = decode_envelope(rec.get("raw") or "{}") if isinstance(rec.get("raw"), str) else None
            hit = SearchHit("quarantine", rec.get("task_id"), name=rec.get("task"), state="quarantined",
                            queue=rec.get("queue"), args=msg.argsrepr if msg else None,
                            kwargs=msg.kwargsrepr if msg else None, exception=rec.get("reason"))
            if bq.query.matches(hit):
                out.append(BulkItem("quarantine", qid, rec.get("task_id"), rec.get("task"), rec.get("queue"),
                                    raw, at, "quarantined"))
                if len(out) >= limit:
                    break
        return out

    # ---- running ------------------------------------------------------------------------------------
    def run(self, plan: BulkPlan, *, batch: int = BATCH, force: bool = False,
            stop: Callable[[], bool] | None = None, progress: Callable[[BulkProgress], None] | None = None,
            export_path: str | None = None) -> ActionResult:
        """Execute a plan in batches; ``stop()`` is asked before each batch (nothing is half-moved).

        Raises:
            ReadOnlyError: in read-only mode (nothing touched, no audit line).
        """
        action = plan.action
        self._guard(f"bulk {action}")
        if not plan.items:
            return ActionResult(f"bulk-{action}", 0, f"bulk {action}: nothing matched {plan.query!r}", {})
        # the permission pre-check of the commands a batch runs (LIST_BATCH: LREM, LPUSH, HSET, ZADD; the
        # unacked moves: HDEL, ZREM, LPUSH/RPUSH): the quarantine's set covers both
        self._check_reachable("requeue" if action == "requeue" else
                              "quarantine" if action in ("quarantine", "delete", "move") else action)
        batch = max(1, int(batch))
        prog = BulkProgress(total=plan.count)
        export: Path | None = None
        needs_export = action in ("quarantine", "delete", "move", "requeue")
        if needs_export:
            export = Path(export_path).expanduser() if export_path else self._default_export_path(f"bulk-{action}")
            if export.exists():
                raise ActionError(f"bulk {action} refused: export file {export} already exists")
        live: set[str] | None = None
        movable: set[str] | None = None
        if any(i.source == "unacked" for i in plan.items):
            if action == "move":
                movable = self.movable_unacked(force=force)
            elif action == "requeue" and not force:
                live = self.live_task_ids()
                if live is None:
                    raise ActionError("bulk requeue refused: cannot ask the workers what they are running "
                                      "(no reply to inspect); use force to requeue anyway")
        fh_cm = self._open_export(export, f"bulk-{action}", plan.target) if export is not None else None
        fh = fh_cm.__enter__() if fh_cm is not None else None
        line_no = [1]  # the header is line 1
        try:
            with self._errors(f"bulk {action}"):
                for chunk in self._batches(plan.items, batch):
                    if stop is not None and stop():
                        prog.stopped = True
                        break
                    self._run_batch(action, plan.target, chunk, prog, fh, line_no, force=force, live=live,
                                    movable=movable)
                    prog.batches += 1
                    prog.done += len(chunk)
                    if progress is not None:
                        progress(prog)
        finally:
            if fh_cm is not None:
                fh_cm.__exit__(None, None, None)
        if export is not None and prog.changed == 0:
            export.unlink(missing_ok=True)
            export = None
        verb = {"delete": "deleted", "move": "moved", "requeue": "requeued", "quarantine": "quarantined",
                "revoke": "revoked", "retry": "retried"}[action]
        msg = f"bulk {action}: {verb} {prog.changed} of {plan.count}"
        if plan.target:
            msg += f" to {plan.target}"
        extra = [f"{prog.gone} gone meanwhile" if prog.gone else "",
                 f"{prog.refused} refused (may be held by a worker; force overrides)" if prog.refused else "",
                 f"stopped after {prog.batches} batch(es)" if prog.stopped else "",
                 f"export: {export}" if export else ""]
        msg += "".join(f"; {e}" for e in extra if e)
        details = {"changed": prog.changed, "gone": prog.gone, "refused": prog.refused, "batches": prog.batches,
                   "stopped": prog.stopped, "total": plan.count, "export": str(export) if export else None,
                   "errors": prog.errors}
        return ActionResult(f"bulk-{action}", prog.changed, msg, details)

    @staticmethod
    def _batches(items: Sequence[BulkItem], size: int) -> Iterator[list[BulkItem]]:
        """Batches of one source (and, for waiting messages, one list key), in plan order."""
        cur: list[BulkItem] = []
        for it in items:
            if cur and (len(cur) >= size or (it.source, it.ref if it.source == "queue" else "")
                        != (cur[0].source, cur[0].ref if cur[0].source == "queue" else "")):
                yield cur
                cur = []
            cur.append(it)
        if cur:
            yield cur

    def _export(self, fh: TextIO | None, line_no: list[int], items: Sequence[BulkItem], action: str,
                target: str | None) -> None:
        """Append a batch to the export before it changes anything (fsynced).

        A delete writes restorable ``message`` lines (``taskdash restore`` is its exact undo); a move,
        requeue or quarantine writes the exact bytes as ``bulk-<action>`` lines, which restore leaves
        alone (the message still exists elsewhere: restoring it would duplicate it)."""
        if fh is None:
            return
        import os

        for it in items:
            if it.raw is None:
                continue
            kind = ("message" if it.source == "queue" else "unacked") if action == "delete" else f"bulk-{action}"
            obj: dict[str, Any] = {"type": kind, "source": it.source, "queue": it.queue}
            if it.source == "queue":
                obj["key"] = it.ref
            else:
                obj.update(tag=it.ref, score=it.at)
            obj.update(_enc(it.raw))
            if target:
                obj["moved_to"] = target
            fh.write(json.dumps(obj) + "\n")
            line_no[0] += 1
        fh.flush()
        os.fsync(fh.fileno())

    def _skip(self, fh: TextIO | None, obj: Mapping[str, Any], line_no: list[int]) -> None:
        if fh is not None:
            fh.write(json.dumps(dict(obj)) + "\n")
            line_no[0] += 1

    def _run_batch(self, action: str, target: str | None, chunk: Sequence[BulkItem], prog: BulkProgress,
                   fh: TextIO | None, line_no: list[int], *, force: bool, live: set[str] | None,
                   movable: set[str] | None) -> None:
        src = chunk[0].source
        if action == "revoke":
            ids = sorted({i.task_id for i in chunk if i.task_id})
            try:
                app = self._control_app()
                with self._connection() as conn:
                    app.control.revoke(ids, connection=conn)
            except Exception as exc:  # noqa: BLE001
                raise ActionError(self._mask(f"bulk revoke: {type(exc).__name__}: {exc}")) from exc
            prog.changed += len(ids)
            self._record("bulk-revoke", ids, len(ids), source=src)
            return
        if action == "retry":
            done: list[str] = []
            for it in chunk:
                try:
                    self.retry(it.task_id or "")
                    done.append(it.task_id or "")
                except ActionError as exc:
                    prog.refused += 1
                    prog.errors.append(str(exc))
            prog.changed += len(done)
            return
        if src == "quarantine":
            ids = [i.ref for i in chunk]
            if action == "delete" and fh is not None:  # export the records first: restore puts them back
                for it in chunk:
                    fh.write(json.dumps({"type": "quarantine", **_enc(it.raw or b"", "record")}) + "\n")
                    line_no[0] += 1
                fh.flush()
            try:
                res = self.replay(ids) if action == "requeue" else self.delete_quarantined(ids)
            except ActionError as exc:
                prog.gone += len(ids)
                prog.errors.append(str(exc))
                return
            prog.changed += res.count
            prog.gone += len(ids) - res.count
            return
        if src == "queue":
            key = chunk[0].ref
            self._export(fh, line_no, chunk, action, target if action == "move" else None)
            first_line = line_no[0] - len(chunk) + 1
            now = self._now()
            ops: list[tuple[bytes, bytes | str, str | None, str, str]] = []
            qids: list[str] = []
            for it in chunk:
                payload = self._payload(it)
                if action == "move" and target:
                    ops.append((it.raw or b"", rewrite_for_queue(payload, target), self._target_key(target, payload),
                                "", ""))
                    qids.append("")
                elif action == "quarantine":
                    qid = self._new_qid()
                    band = self.keys.band(None if not payload else (payload.get("properties") or {}).get("priority"))
                    rec = self._record_json(qid=qid, raw=it.raw or b"", message=it.raw or b"", key=key,
                                            queue=it.queue, band=band, payload=payload, source="queue",
                                            reason="bulk quarantine", deliveries=None, tag=None,
                                            exchange="", routing_key=it.queue or "", now=float(now))
                    ops.append((it.raw or b"", rec, "", qid, now))
                    qids.append(qid)
                else:  # delete
                    ops.append((it.raw or b"", b"", None, "", ""))
                    qids.append("")
            res = self._list_batch(key, ops)
            n = res.count("1")
            gone_lines = [first_line + i for i, c in enumerate(res) if c != "1"]
            for ln in gone_lines:  # taken by a worker meanwhile: restore must not re-add it
                self._skip(fh, {"type": "skipped", "line": ln}, line_no)
            if fh is not None and gone_lines:
                fh.flush()
            prog.changed += n
            prog.gone += len(chunk) - n
            if n:
                self._record(f"bulk-{action}", self.display_key(key), n, to=target,
                             task_ids=[it.task_id for it, c in zip(chunk, res, strict=False) if c == "1"],
                             quarantine_ids=[q for q, c in zip(qids, res, strict=False) if q and c == "1"])
            return
        # unacked entries
        tags = [i.ref for i in chunk]
        if action == "requeue":
            self._export(fh, line_no, chunk, action, None)
            try:
                res = self.requeue(tags, force=force, live=live if not force else set(),
                                   expected={i.ref: i.at for i in chunk if i.at is not None})
            except ActionError as exc:  # every entry of the batch held or refused
                prog.refused += len(tags)
                prog.errors.append(str(exc))
                self._skip_unacked(fh, tags, line_no)
                return
            moved = set(res.details.get("tags") or [])
            self._skip_unacked(fh, [t for t in tags if t not in moved], line_no)
            prog.changed += res.count
            prog.refused += len(res.details.get("refused") or []) + len(res.details.get("held") or [])
            prog.gone += len(tags) - res.count - len(res.details.get("refused") or []) - len(res.details.get("held") or [])
            return
        if action == "quarantine":
            try:
                res = self.quarantine(tags=tags, reason="bulk quarantine")
            except ActionError as exc:
                prog.gone += len(tags)
                prog.errors.append(str(exc))
                return
            prog.changed += res.count
            prog.gone += len(tags) - res.count
            return
        # move unacked
        ok = [i for i in chunk if movable is None or i.ref in movable]
        prog.refused += len(chunk) - len(ok)
        if not ok:
            return
        entries = [e for e in (_parse_entry(i.ref, i.raw, i.at) for i in ok) if e is not None]
        self._export(fh, line_no, ok, action, target)
        out = self._move_unacked(entries, target or "", force=force)
        self._skip_unacked(fh, out["gone"] + out["changed"], line_no)
        prog.changed += len(out["moved"])
        prog.gone += len(out["gone"]) + len(out["changed"])
        if out["moved"]:
            self._record("bulk-move", out["moved"], len(out["moved"]), source="unacked", to=target,
                         force=force)

    def _skip_unacked(self, fh: TextIO | None, tags: Sequence[str], line_no: list[int]) -> None:
        for tag in tags:
            self._skip(fh, {"type": "skipped", "tag": tag}, line_no)
        if fh is not None and tags:
            fh.flush()

    # ---- move between queues ------------------------------------------------------------------------
    def move_plan(self, source: str | None, target: str, *, task_ids: Sequence[str] = (), query: str = "",
                  unacked: bool = False, limit: int | None = None) -> BulkPlan:
        """A plan to move waiting messages of ``source`` (all, by ``query``, or ``task_ids``), or unacked
        entries (``unacked=True``; of ``source`` when given), onto ``target``."""
        parts = [query] if query else []
        if unacked:
            parts.append("in:unacked")
            if source:
                parts.append(f"in:queue:{source}")  # narrows the unacked entries to that queue
        elif source:
            parts.append(f"in:queue:{source}")
        else:
            raise ActionError("move: give a source queue or --unacked")
        if source == target:
            raise ActionError(f"move: source and target are the same queue ({target})")
        text = " ".join(parts)
        if unacked and source:
            bq = parse_bulk_query(text)
            bq = BulkQuery(bq.text, bq.query, bq.since_s, bq.older_s, ("unacked",), bq.queues)
            plan = self._plan_from(bq, "move", target, limit)
        else:
            plan = self.plan("move", text, target=target, limit=limit)
        if task_ids:
            wanted = set(task_ids)
            items = tuple(i for i in plan.items if i.task_id in wanted)
            plan = BulkPlan(plan.action, plan.query + f" (task ids: {len(wanted)})", target, items,
                            tuple(self._plan_keys("move", target, items)), plan.notes, plan.truncated,
                            {s: sum(1 for i in items if i.source == s) for s in plan.by_source})
        return plan

    def _plan_from(self, bq: BulkQuery, action: str, target: str | None, limit: int | None) -> BulkPlan:
        now = time.time()
        with self._errors(f"bulk {action} (dry run)"):
            items = self._plan_unacked(bq, now, MAX_ITEMS if limit is None else limit)
        return BulkPlan(action, bq.text, target, tuple(items), tuple(self._plan_keys(action, target, items)),
                        ("unacked entries move only when every worker that may hold them is proven dead "
                         "(force overrides)",), bool(limit is not None and len(items) >= limit),
                        {"unacked": len(items)})


def entry_of(item: BulkItem) -> _Entry | None:
    """The parsed ledger entry of an unacked item (for callers that need the payload)."""
    return _parse_entry(item.ref, item.raw, item.at) if item.source == "unacked" else None


__all__ = ["ACTIONS", "APPLIES", "CONFIRM_THRESHOLD", "BulkActions", "BulkItem", "BulkPlan", "BulkProgress",
           "BulkQuery", "entry_of", "parse_bulk_query", "parse_duration", "_s"]
