"""Task search across what taskdash can see: result backend, unacked ledger, queued messages.

Query syntax (also in :data:`SEARCH_HELP`, shown by the TUI and ``taskdash search --help``):

* ``word`` — free word, case-insensitive substring of the task name, task id, args/kwargs repr,
  state, worker hostname or exception text (any of them);
* ``field:value`` — only that field: ``name:`` (task name), ``id:`` (task id), ``state:`` (state,
  prefix: ``state:fail`` = FAILURE), ``worker:`` (hostname), ``queue:`` (queue / routing key),
  ``exc:`` (exception type and message), ``args:`` (args or kwargs repr);
* ``"two words"`` / ``name:"a b"`` — quotes keep a phrase together;
* ``-word`` / ``-field:value`` — negation: rows that match are excluded;
* every term must hold (AND). An empty query matches everything.

Where it looks (each hit says its ``source``):

* ``result`` — ``celery-task-meta-*`` values in the result backend. Name, args, kwargs, worker and
  queue are only stored with ``result_extended=True``. :func:`search_results` SCANs in bounded
  batches and GETs each batch in one pipeline, stopping at ``limit`` hits or once SCAN walked
  ``scan_budget`` keys. A query with a whole task id (``id:<uuid>``) reads that one key instead.
  Pickled values are never unpickled (they match only on id); compressed JSON is decompressed.
* ``unacked`` — the unacked entries of a Snapshot (or a BrokerView) window;
* ``queued`` — a bounded window (:data:`QUEUE_WINDOW` messages at each end of every priority list) of
  each known queue, fetched in one pipeline and decoded without deserializing the body.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collectors.core.config import Settings, redis_client
from collectors.core.messages import decode_envelope
from collectors.core.models import Snapshot, UnackedEntry
from collectors.keyspace.keys import KeyLayout
from collectors.reads.results import PICKLED, UNKNOWN, exception_text, parse_value

SEARCH_HELP = """\
Search tasks (result backend with result_extended, unacked and queued messages)

  word            any of: task name, id, args/kwargs, state, worker, exception
  field:value     only that field: name: id: state: worker: queue: exc: args:
                  (state: is a prefix, so state:fail finds FAILURE)
  "a phrase"      quotes keep words together, also name:"a b"
  -word           exclude matches (-state:success, -worker:w1)
  all terms must match; matching is case-insensitive substring

Examples:  state:failure exc:timeout     name:send_email -state:success
           args:"user-42"                 worker:w2 queue:slow
"""
"""The query syntax, for the TUI's help and the CLI."""

FIELDS: tuple[str, ...] = ("name", "id", "state", "worker", "queue", "exc", "args")
"""Names usable as ``field:value``."""
FREE_FIELDS: tuple[str, ...] = ("name", "id", "args", "state", "worker", "exc")
"""Fields a free word is matched against."""
SCAN_BATCH = 1000
"""Keys asked per SCAN call (and values fetched per pipeline)."""
QUEUE_WINDOW = 200
"""Messages read at each end of each priority list when searching queued messages."""
_TEXT_LIMIT = 2000
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class SearchError(ValueError):
    """The query cannot be parsed (unknown field, unbalanced quote); the message says why."""


@dataclass(frozen=True, slots=True)
class Term:
    """One query term: a (possibly negated) substring test on one field or on every free field."""

    value: str
    """Lower-cased text to find."""
    field: str | None = None
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: every term must hold."""

    terms: tuple[Term, ...] = ()
    text: str = ""

    def matches(self, hit: SearchHit) -> bool:
        """Does ``hit`` satisfy every term?"""
        for term in self.terms:
            if _term_matches(term, hit) == term.negate:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.terms


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One task found by a search, with the fields the query language looks at."""

    source: str
    """``result`` | ``unacked`` | ``queued``."""
    task_id: str | None
    name: str | None = None
    state: str | None = None
    worker: str | None = None
    queue: str | None = None
    args: str | None = None
    kwargs: str | None = None
    exception: str | None = None
    date_done: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def field_text(self, name: str) -> str:
        """Lower-cased text of one query field (``args`` covers args and kwargs)."""
        if name == "id":
            value: Any = self.task_id
        elif name == "exc":
            value = self.exception
        elif name == "args":
            value = " ".join(v for v in (self.args, self.kwargs) if v)
        else:
            value = getattr(self, name)
        return (value or "").lower()

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "task_id": self.task_id, "name": self.name, "state": self.state,
                "worker": self.worker, "queue": self.queue, "args": self.args, "kwargs": self.kwargs,
                "exception": self.exception, "date_done": self.date_done, **dict(self.extra)}

    def line(self) -> str:
        """One readable line for the CLI."""
        parts = [f"{self.source:<7}", f"{self.state or '-':<9}", self.task_id or "-", self.name or "-"]
        if self.worker:
            parts.append(f"@{self.worker}")
        if self.queue:
            parts.append(f"[{self.queue}]")
        if self.args or self.kwargs:
            parts.append(f"{self.args or ''} {self.kwargs or ''}".strip())
        if self.exception:
            parts.append(f"!! {self.exception}")
        return "  ".join(parts)


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """Hits of one search plus how much was looked at."""

    query: str
    hits: tuple[SearchHit, ...]
    scanned: int = 0
    """Result-backend keys looked at."""
    truncated: bool = False
    """Stopped by the limit or the scan budget before the keyspace was exhausted."""
    complete: bool = False
    """The result-backend SCAN went through the whole keyspace."""
    elapsed_ms: float = 0.0
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [h.to_json() for h in self.hits], "scanned": self.scanned,
                "truncated": self.truncated, "complete": self.complete, "elapsed_ms": self.elapsed_ms,
                "errors": list(self.errors)}


# ---- parsing --------------------------------------------------------------------------------------
def _tokens(text: str) -> list[tuple[str, bool]]:
    """Split on whitespace, keeping ``"quoted phrases"`` (also ``field:"..."``) together.

    Returns (token, starts_with_quote) pairs; a token that starts with a quote is never a ``field:``.
    """
    out: list[tuple[str, bool]] = []
    cur: list[str] = []
    quoted = False
    had_quote = False
    lead_quote = False
    for ch in text:
        if ch == '"':
            if not cur and not had_quote:
                lead_quote = True
            quoted = not quoted
            had_quote = True
            continue
        if ch.isspace() and not quoted:
            if cur or had_quote:
                out.append(("".join(cur), lead_quote))
            cur, had_quote, lead_quote = [], False, False
            continue
        cur.append(ch)
    if quoted:
        raise SearchError('unbalanced quote (")')
    if cur or had_quote:
        out.append(("".join(cur), lead_quote))
    return out


def parse_query(text: str) -> Query:
    """Parse the query language of the module docstring.

    Raises:
        SearchError: unknown ``field:``, unbalanced quote, or a term with nothing to match.
    """
    terms: list[Term] = []
    for tok, quoted in _tokens(text or ""):
        negate = False
        if tok.startswith("-") and len(tok) > 1:
            negate, tok = True, tok[1:]
        fld: str | None = None
        head, sep, rest = tok.partition(":")
        if sep and not quoted and head.isalpha():
            if head.lower() not in FIELDS:
                raise SearchError(f"unknown field {head!r}: use one of {', '.join(f + ':' for f in FIELDS)}")
            fld, tok = head.lower(), rest
        if tok == "":
            if fld is not None:
                raise SearchError(f"{fld}: needs a value")
            continue
        terms.append(Term(tok.lower(), fld, negate))
    return Query(tuple(terms), text or "")


def _term_matches(term: Term, hit: SearchHit) -> bool:
    if term.field == "state":
        return hit.field_text("state").startswith(term.value)
    if term.field is not None:
        return term.value in hit.field_text(term.field)
    return any(term.value in hit.field_text(f) for f in FREE_FIELDS)


# ---- hits from each source ------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, default=repr, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def hit_from_meta(task_id: str, meta: Mapping[str, Any] | None, state: str) -> SearchHit:
    """A hit for one stored result (``meta`` None for pickled/unknown values: id and state only)."""
    if meta is None:
        return SearchHit("result", task_id, state=state)
    exc: str | None = None
    result = meta.get("result")
    if isinstance(result, Mapping) and "exc_type" in result:
        exc = exception_text(result)[0]
    tb = meta.get("traceback")
    if isinstance(tb, str) and tb and state == "FAILURE":
        exc = f"{exc or ''}\n{tb[-_TEXT_LIMIT:]}".strip()
    worker = meta.get("worker")
    if worker is None and state == "STARTED" and isinstance(result, Mapping):
        worker = result.get("hostname")
    return SearchHit(
        "result", str(meta.get("task_id") or task_id), name=_text(meta.get("name")), state=state,
        worker=_text(worker), queue=_text(meta.get("queue")),
        args=_text(meta.get("args")) if "args" in meta else None,
        kwargs=_text(meta.get("kwargs")) if "kwargs" in meta else None,
        exception=exc, date_done=_text(meta.get("date_done")),
    )


def hit_from_unacked(entry: UnackedEntry) -> SearchHit:
    """A hit for one unacked entry (state = its unacked state: active, reserved, orphaned, ...)."""
    return SearchHit("unacked", entry.task_id, name=entry.task, state=entry.state, worker=entry.holder,
                     queue=entry.queue, args=entry.argsrepr, kwargs=entry.kwargsrepr,
                     extra={"delivery_tag": entry.delivery_tag})


def hit_from_message(raw: bytes, queue: str) -> SearchHit | None:
    """A hit for one queued message (state ``queued``); None when it is not a decodable message."""
    msg = decode_envelope(raw)
    if msg.task_id is None and msg.task is None:
        return None
    return SearchHit("queued", msg.task_id, name=msg.task, state="queued", queue=queue,
                     args=msg.argsrepr, kwargs=msg.kwargsrepr, extra={"priority": msg.priority})


# ---- searching --------------------------------------------------------------------------------------
def search_entries(query: Query | str, entries: Iterable[UnackedEntry], limit: int = 50) -> list[SearchHit]:
    """Unacked entries (a Snapshot's window) that match."""
    q = parse_query(query) if isinstance(query, str) else query
    out: list[SearchHit] = []
    for entry in entries:
        hit = hit_from_unacked(entry)
        if q.matches(hit):
            out.append(hit)
            if len(out) >= limit:
                break
    return out


def search_snapshot(snapshot: Snapshot, query: Query | str, limit: int = 50) -> list[SearchHit]:
    """What a Snapshot holds (its unacked window) that matches — pure, no I/O."""
    return search_entries(query, snapshot.unacked, limit)


def search_results(client: Any, settings: Settings, query: Query | str, limit: int = 50,
                   scan_budget: int = 100_000, *, batch: int = SCAN_BATCH) -> SearchOutcome:
    """Search the result backend: bounded SCAN batches of ``celery-task-meta-*``, values fetched per pipeline.

    Args:
        client: redis-py client on the result backend db.
        settings: for the result key prefix.
        query: a parsed Query or query text.
        limit: stop after this many hits.
        scan_budget: stop once SCAN has walked about this many keys of the keyspace (``calls * batch``;
            matching or not), so a big db with few results is bounded too.
        batch: COUNT hint of each SCAN call and size of each GET pipeline.
    """
    q = parse_query(query) if isinstance(query, str) else query
    t0 = time.perf_counter()
    whole_id = next((t.value for t in q.terms if t.field == "id" and not t.negate and _UUID.fullmatch(t.value)),
                    None)
    layout = KeyLayout.from_settings(settings)
    if whole_id is not None:
        parsed = parse_value(client.get(layout.result_key(whole_id)))
        if parsed is not None:  # else: maybe an upper-case id, fall back to the scan
            meta = parsed.meta if parsed.state not in (PICKLED, UNKNOWN) else None
            hit = hit_from_meta(whole_id, meta, parsed.state)
            found = (hit,) if q.matches(hit) and limit > 0 else ()
            return SearchOutcome(q.text, found, 1, False, True, round((time.perf_counter() - t0) * 1000, 3))
    prefix = layout.result_prefix
    hits: list[SearchHit] = []
    scanned = 0
    cursor: int = 0
    complete = False
    full = False
    calls = 0
    while not full:
        cursor, keys = client.scan(cursor=cursor, match=layout.result_pattern, count=batch)
        calls += 1
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            values = pipe.execute()
            scanned += len(keys)
            for key, raw in zip(keys, values, strict=True):
                kname = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                task_id = kname[len(prefix):] if kname.startswith(prefix) else kname
                parsed = parse_value(raw)
                if parsed is None:
                    continue  # expired between SCAN and GET
                meta = parsed.meta if parsed.state not in (PICKLED, UNKNOWN) else None
                hit = hit_from_meta(task_id, meta, parsed.state)
                if q.matches(hit):
                    hits.append(hit)
                    if len(hits) >= limit:
                        full = True
                        break
        if full:
            break
        if int(cursor) == 0:
            complete = True
            break
        if calls * batch >= scan_budget:
            break  # bounded by keyspace work, not by how many keys happened to match
    return SearchOutcome(q.text, tuple(hits), scanned, not complete, complete,
                         round((time.perf_counter() - t0) * 1000, 3))


def search_queued(client: Any, settings: Settings, queues: Sequence[str], query: Query | str, limit: int = 50,
                  window: int = QUEUE_WINDOW) -> list[SearchHit]:
    """Queued messages (``window`` at each end of every priority list of ``queues``) that match; one pipeline."""
    q = parse_query(query) if isinstance(query, str) else query
    keys: list[tuple[str, str]] = [(queue, key) for queue in queues for _band, key in KeyLayout.from_settings(settings).queue_keys(queue)]
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for _queue, key in keys:
        pipe.llen(key)
        pipe.lrange(key, -window, -1)
        pipe.lrange(key, 0, window - 1)
    res = pipe.execute(raise_on_error=False)
    out: list[SearchHit] = []
    for i, (queue, _key) in enumerate(keys):
        llen, tail, head = res[3 * i: 3 * i + 3]
        if not isinstance(llen, int) or not isinstance(tail, list) or not isinstance(head, list):
            continue  # wrong type or error: nothing to search
        msgs = tail if llen <= window else (head[: llen - window] if llen < 2 * window else head) + tail
        for raw in reversed(msgs):  # the next to be consumed first
            hit = hit_from_message(raw, queue)
            if hit is not None and q.matches(hit):
                out.append(hit)
                if len(out) >= limit:
                    return out
    return out


def search_all(settings: Settings, query: Query | str, *, limit: int = 50, scan_budget: int = 100_000,
               snapshot: Snapshot | None = None, broker_client: Any = None, backend_client: Any = None) -> SearchOutcome:
    """Search unacked, queued and stored results; hits in that order (live work first), at most ``limit``.

    Without a ``snapshot`` the broker is read once (a BrokerReader pass: queues + unacked window).
    """
    from collectors.reads.broker import BrokerReader

    q = parse_query(query) if isinstance(query, str) else query
    t0 = time.perf_counter()
    broker = broker_client if broker_client is not None else redis_client(settings.broker_url, settings)
    if backend_client is not None:
        backend = backend_client
    elif settings.backend_url and settings.backend_url != settings.broker_url:
        backend = redis_client(settings.backend_url, settings)
    else:
        backend = broker
    if snapshot is not None:
        unacked: Sequence[UnackedEntry] = snapshot.unacked
        queues = [qi.name for qi in snapshot.queues]
    else:
        view = BrokerReader(settings, broker).read(now=time.time())
        unacked = view.unacked
        queues = [qi.name for qi in view.queues]
    for name in settings.app_queues:
        if name not in queues:
            queues.append(name)
    hits = search_entries(q, unacked, limit)
    if len(hits) < limit:
        hits += search_queued(broker, settings, queues, q, limit - len(hits))
    res = search_results(backend, settings, q, limit - len(hits), scan_budget) if len(hits) < limit else None
    if res is not None:
        hits += list(res.hits)
    return SearchOutcome(
        q.text, tuple(hits[:limit]), res.scanned if res else 0,
        (res.truncated if res else True), bool(res and res.complete),
        round((time.perf_counter() - t0) * 1000, 3),
    )
