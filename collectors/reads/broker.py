"""The broker read side: task queues (depth per priority band, oldest waiting age) and the unacked ledger.

One :meth:`BrokerReader.read` costs **2 pipelined round trips in the steady state, 3 at most** (never
more, whatever the number of queues or ledger size), and it never writes a key. Scripts are read-only
and run only for what changed. Per refresh the Redis work is one plain ``LLEN`` per existing list key
plus small bounded slices (measured at 1,000 queues / 2M messages / 100k unacked: ≈ 2 ms of Redis
time, see ``bench/RESULTS.md``).

Round trip 1 (one plain pipeline)
    * ``SCAN <cursor> MATCH <prefix>_kombu.binding.* COUNT 1000`` (``COUNT 50`` once a first pass is
      complete) — one step of an endless incremental scan; the binding-table keys it found are cached (KEYS is never used). Tables that a whole SCAN
      pass no longer sees are forgotten. The tables ``_kombu.binding.<q>`` of the app's and workers'
      queues are read even before the scan reaches them (Celery binds queue ``q`` to exchange ``q``).
    * ``ZRANGE <prefix>_kombu.binding_deadlines 0 999`` — exchange names of expiring bindings.
    * ``SSCAN <table> <cursor> COUNT 1000`` of the task binding tables never read, of those in the
      middle of a pass, and of a round-robin slice of ``TABLE_SLICE`` known ones (rows change only when
      a queue is declared, so a changed binding shows within ``tables / TABLE_SLICE`` refreshes; a new
      table at once). Pidbox, reply and event tables are never read. Rows ``rk<sep>pattern<sep>queue``
      are split on the transport ``sep``; a huge table is read 1000 rows per refresh and replaced once
      its pass completes.
    * ``HLEN unacked``, ``ZCARD unacked_index`` and ``ZRANGE unacked_index 0 N-1 WITHSCORES`` (N =
      ``settings.unacked_window``, oldest first). When the ledger is bigger than the window, the next
      reads send only ``ZRANGE unacked_index N-1 N-1 WITHSCORES`` (fingerprint): any ack, requeue or
      redelivery inside the window shifts that entry, and only then is the window read again (at the
      latest every ``WINDOW_REFETCH`` reads, which bounds the one blind spot: an entry removed from the
      window while another is inserted with an older score).
    * ``LLEN`` of band 0 and of every priority-band key that existed at the last read, for every known
      queue (every band of a queue seen for the first time). A band key appearing later is found by one
      ``EXISTS <absent band keys>`` per queue for a round-robin slice of ``BAND_SLICE`` queues (all of
      them below that many queues): a new priority band of a big deployment shows within
      ``queues / BAND_SLICE`` refreshes. A key of the wrong type answers LLEN with an error: the queue is
      flagged ``wrong_type`` and the refresh goes on. These LLENs and EXISTSes (most of a big refresh) are
      packed once per key and sent after the pipeline's commands in the same write
      (:mod:`collectors.core.packed`): redis-py's per-command cost was most of the refresh's client time.

Round trip 2 (one pipeline; skipped when there is nothing to send)
    * ``SSCAN`` of binding tables found by the SCAN step (a queue created by a producer shows at once).
    * ``EVALSHA queue-probe`` (one call per 256 queues) only for the queues whose head must be looked at:
      new queues and queues with a new band (every band + head), queues whose depths changed or whose
      head was never seen, and a round-robin slice of ``HEAD_SLICE`` other non-empty ones (head only; a plain
      ``LINDEX key -1`` instead of the script when the head seen last was at most ``PLAIN_HEAD_MAX`` bytes).
      The script takes ``LINDEX key -1`` of the highest-priority non-empty band — the message BRPOP takes
      next — and extracts its delivery tag from the last KiB; when it is the tag the reader saw last time
      nothing more is returned, otherwise the message (or, above 64 KiB, its size + head + tail). So an
      unchanged 50 MB message is never transferred. A queue whose depths did not change keeps the head
      seen before (a consume + publish within one refresh is noticed when its round-robin turn comes).
    * ``EVALSHA unacked-window``: ``HGET`` only of the window tags whose (tag, score) the reader has not
      decoded yet (a redelivery changes the score); values up to 64 KiB come back whole, bigger ones as
      size, first 512 bytes and last 16 KiB (enough for the headers, see
      :func:`collectors.core.messages.decode_truncated`). Only when ``HLEN != ZCARD`` (a half-written or
      hand-edited ledger) are the already decoded tags checked with ``HEXISTS``.
    * when the ledger is larger than the window: one ``EVALSHA unacked-scan`` step, ``HSCAN unacked
      <cursor> COUNT 32``, that returns ONE bulk string of ``count<TAB>exchange<TAB>routing_key`` lines
      (the routes of the step, aggregated inside Redis).
    * the full window ``ZRANGE`` when its fingerprint moved.

Round trip 3 (rare: the SCAN step found new binding tables, or the window moved)
    * probes of the queues named by the tables read in round trip 2, and the window fetch.

The scripts (``queue``, ``window``, ``scan``) live in :mod:`collectors.keyspace.scripts` and key names
in :class:`collectors.keyspace.keys.KeyLayout`. They run as precomputed-SHA ``EVALSHA`` inside the
pipelines (loaded with ``SCRIPT LOAD`` in the first pipeline of a reader); if Redis lost them
(restart, ``SCRIPT FLUSH``), the read is redone once after reloading them (the view's ``round_trips``
then counts both attempts).

Without scripting (least privilege)
    A user that may not load or run scripts (ACL NOPERM, SCRIPT/EVALSHA renamed away) is met by stepping
    down, once per session, through ``READ_MODES``: ``lua-ro`` (``EVAL_RO`` with the source the first
    time, then ``EVALSHA_RO``: scripting allowed, writes not, Redis >= 7) and ``plain``: the twins of
    :mod:`collectors.reads.broker_plain` queue plain read commands into the same pipelines and decode
    them into the scripts' very replies, so the view is the same and the round trips stay 2-3. The
    refused command is the view's ``note`` ("scripting not permitted (NOPERM SCRIPT|LOAD): plain reads,
    N more commands per refresh"); the step-down costs one extra attempt of the first read only.

Oldest waiting age (issue 21)
    ``QueueInfo.oldest_age_s`` is how long the message BRPOP takes next has waited to run, from the best
    evidence there is (``task-sent`` event, ``eta``, ``arrival`` after an empty read, else the
    ``first-seen`` lower bound): :mod:`collectors.reads.queue_heads` (``QueueHeads``, which the reader
    owns) says how. The evidence costs no Redis command: the head is the one the probe reads anyway.

Per-queue unacked counts
    When ``HLEN unacked`` ≤ window, the counts are exact (from the window). For bigger ledgers the bounded
    ``unacked-scan`` steps count entries per queue (memory: one counter per queue, no per-tag state); a
    full HSCAN pass takes about ``total / HSCAN_COUNT`` refreshes (100,000 entries: ~3,100 refreshes,
    ~52 min at 1 s — the price of keeping each refresh at ~0.3 ms of Redis time for this feature; the
    total, HLEN, is always exact). The counts shown are those of the last complete
    pass (during the very first pass: the running partial counts scaled by ``HLEN / entries visited``,
    an estimate), never fewer than the window holds for a queue; so they lag the ledger by at most one pass. ``BrokerView.unacked_counts_exact`` is False
    whenever the ledger exceeds the window. (HSCAN may return an entry twice while Redis rehashes the
    hash: a count can then be slightly high for one pass.)

Queue of an unacked entry: the routing key when the exchange is ``''`` (what Celery uses), else the
binding table of the exchange (direct: routing key equality; topic: the stored regex).

Unacked classification (README, "Safety"; :mod:`collectors.reads.unacked_window` holds the window,
the counts and this): a task id that a responding worker reports (``claims``) takes its
state (active/reserved/scheduled) and holder; an unclaimed entry reserved before ``inspected_at - grace_s``
is ``orphaned``; a newer one is ``unknown`` (the last inspect could not have seen it), and everything is
``unknown`` when inspect failed (``claims=None``). Reserve times are the consuming worker's clock, so clock
skew between workers and taskdash shifts ages.

Not thread-safe: one reader per collector thread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from collectors.core import packed
from collectors.core.config import Settings
from collectors.core.errors import Kind, RedisProblem, classify
from collectors.core.models import QueueInfo, TaskRef, UnackedEntry
from collectors.keyspace import scripts
from collectors.keyspace.keys import KeyLayout
from collectors.reads import broker_plain
from collectors.reads.broker_plain import text_of as _text
from collectors.reads.queue_heads import (  # noqa: F401 - re-exported: the reader's public constants
    ARRIVAL_EXACT_S,
    OLDEST_MEMORY,
    SENT_MEMORY,
    SENT_SKEW_S,
    HeadMemory,
    Oldest,
    QueueHeads,
)
from collectors.reads.unacked_window import WINDOW_REFETCH, UnackedWindow, pairs_of  # noqa: F401

log = logging.getLogger(__name__)

INLINE_MAX = 65536
"""Values up to this size are transferred whole; bigger ones as size + head + tail."""
HEAD_BYTES = 512
TAIL_BYTES = 16384
SCAN_COUNT = 1000
"""Keyspace SCAN step for binding tables until the first pass completes (fast discovery)..."""
SCAN_COUNT_STEADY = 50
"""...and afterwards (the tables of app/worker queues are read at once anyway)."""
SSCAN_COUNT = 1000
HSCAN_COUNT = 32
"""Unacked entries classified per refresh for the per-queue counts of a ledger bigger than the window."""
TABLE_SLICE = 32
"""Known binding tables re-read per refresh (round robin); new ones are read at once."""
HEAD_SLICE = 16
PLAIN_HEAD_MAX = 4096
"""A head last seen at most this big is re-read in its round-robin turn with a plain LINDEX (no Lua)."""
"""Non-empty queues whose head is re-read per refresh although their depth did not change (round robin)."""
BAND_SLICE = 32
"""Queues whose absent priority-band keys are checked with one EXISTS per refresh (round robin)."""
BATCH = 256
"""Queues (or binding tables) handled by one script call: bounds how long one call blocks Redis."""
DEADLINES_LIMIT = 1000

_SHAS = {script.name: script.sha for script in scripts.BROKER_SCRIPTS}
"""name -> SHA1 of the broker scripts (bench labels EVALSHA calls with it)."""


@dataclass(frozen=True, slots=True)
class BrokerView:
    """What one broker read found: task queues and the unacked ledger window, plus what it cost."""

    queues: tuple[QueueInfo, ...]
    unacked: tuple[UnackedEntry, ...]
    """Bounded window of the ledger, oldest first."""
    unacked_total: int
    """HLEN unacked."""
    round_trips: int
    commands: int
    errors: tuple[str, ...] = ()
    """Non-fatal problems (a wrong-type unacked key, ...); the rest of the view is valid."""
    unacked_index_total: int = 0
    """ZCARD unacked_index (differs from unacked_total only transiently or after manual edits)."""
    unacked_counts_exact: bool = True
    """False while per-queue unacked counts come from an incomplete HSCAN pass of a big ledger."""
    binding_tables: int = 0
    """Binding tables (``_kombu.binding.*``) known so far."""
    discovery_passes: int = 0
    """Completed SCAN passes over the keyspace looking for binding tables."""
    read_mode: str = "lua"
    """How the read scripts ran (``lua``, ``lua-ro`` or ``plain``: see ``READ_MODES``)."""
    note: str | None = None
    """The source note while not on full Lua ("scripting not permitted (NOPERM EVALSHA): plain reads, ...")."""


@dataclass(slots=True)
class _Table:
    """Cached state of one ``_kombu.binding.<exchange>`` set."""

    exchange: str
    rows: frozenset[tuple[str, str, str]] = frozenset()
    partial: set[tuple[str, str, str]] = field(default_factory=set)
    cursor: int = 0
    read_once: bool = False
    pinned: bool = False
    """A table guessed from a known queue name (Celery binds queue X to exchange X): never pruned."""


@dataclass(slots=True)
class _Cost:
    round_trips: int = 0
    commands: int = 0


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


MAX_ROUTING_KEY = 1024
"""Longer routing keys are never matched against topic bindings (AMQP caps them at 255 bytes)."""


def _topic_pattern(binding_key: str) -> str:
    """The regex kombu's topic exchange stores for ``binding_key`` (kombu ``TopicExchange.key_to_pattern``)."""
    from kombu.utils.text import escape_regex

    wildcards = {"*": r"[^\.]+", "#": r".*?"}
    body = r"\.".join(wildcards.get(w, w) for w in escape_regex(binding_key, ".#*").split("."))
    return f"^{body}$"


def topic_match(binding_key: str, pattern: str, routing_key: str) -> bool:
    r"""Does kombu's topic exchange route ``routing_key`` through the binding ``(binding_key, pattern)``?

    Never runs the stored regex: a binding row is data anyone with write access to the broker can
    plant, and a pattern like ``(a+)+$`` would freeze every refresh (catastrophic backtracking). Only
    rows whose pattern is exactly what kombu generates from their binding key are honoured, and they
    are matched in linear time by walking the words (``*`` = one non-empty word without dots,
    ``#`` = any text, as kombu's ``[^\.]+`` and ``.*?``). Binding keys with ``*``/``#`` inside a word
    (a raw regex quantifier in kombu's pattern) are not matched.
    """
    if len(routing_key) > MAX_ROUTING_KEY or pattern != _topic_pattern(binding_key):
        return False
    tokens: list[str | None] = []  # literal text, or None for a wildcard word
    kinds: list[str] = []
    for i, word in enumerate(binding_key.split(".")):
        if i:
            tokens.append(".")
            kinds.append("lit")
        if word in ("*", "#"):
            tokens.append(None)
            kinds.append(word)
        elif "*" in word or "#" in word:
            return False
        else:
            tokens.append(word)
            kinds.append("lit")
    n = len(routing_key)
    reach = [False] * (n + 1)  # positions of routing_key reachable after the tokens so far
    reach[0] = True
    for tok, kind in zip(tokens, kinds, strict=True):
        nxt = [False] * (n + 1)
        if kind == "lit":
            assert tok is not None
            size = len(tok)
            for p in range(n + 1):
                if reach[p] and routing_key.startswith(tok, p):
                    nxt[p + size] = True
        elif kind == "#":
            seen = False
            for p in range(n + 1):
                seen = seen or reach[p]
                nxt[p] = seen
        else:  # '*': one or more characters other than '.'
            run = False  # some reachable start p' < q with no dot in routing_key[p':q]
            for q in range(1, n + 1):
                if routing_key[q - 1] == ".":
                    run = False
                else:
                    run = run or reach[q - 1]
                nxt[q] = run
        reach = nxt
        if not any(reach):
            return False
    return reach[n]


_NO_BANDS: frozenset[int] = frozenset()


def _rr_slice(items: Sequence[Any], start: int, size: int) -> list[Any]:
    """``size`` items of ``items`` from position ``start`` (modulo), wrapping around; all when fewer."""
    n = len(items)
    if n <= size:
        return list(items)
    start %= n
    out = list(items[start:start + size])
    if len(out) < size:
        out.extend(items[:size - len(out)])
    return out


def _flatten(results: Sequence[Any], n: int) -> list[Any]:
    """Per-item results of batched script calls; a failed call fails each of its items."""
    out: list[Any] = []
    for r in results:
        if isinstance(r, Exception):
            out.extend([r] * min(BATCH, n - len(out)))
        else:
            out.extend(r)
    if len(out) != n:
        raise redis.exceptions.ResponseError(f"unexpected script reply ({len(out)} items, {n} expected)")
    return out


_READ_CALLS: dict[str, tuple[Callable[..., tuple[int, broker_plain.Decoder]], Callable[..., None]]] = {
    "queue": (broker_plain.queue_probe, scripts.queue_probe),
    "window": (broker_plain.window_fetch, scripts.window_fetch),
    "scan": (broker_plain.unacked_routes, scripts.unacked_routes),
}
"""Read script name -> (plain twin, script call): the same positional arguments after ``pipe``."""


_NOT_READY = ("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


class _NoScript(Exception):
    """Redis does not know one of our scripts any more (restart or SCRIPT FLUSH)."""


class _ScriptsRefused(Exception):
    """The user may not run (or load) scripts this way: NOPERM, or the command is disabled/renamed."""

    def __init__(self, problem: RedisProblem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "SCRIPT", "SCRIPT|LOAD"})

READ_MODES = ("lua", "lua-ro", "plain")
"""How the reader runs its three read scripts, tried in this order and remembered for the session:
``lua`` (SCRIPT LOAD + EVALSHA), ``lua-ro`` (EVAL_RO once with the source, then EVALSHA_RO: scripting
allowed, writes not; Redis >= 7), ``plain`` (the plain-command twins of :mod:`.broker_plain`)."""


def _script_refusal(r: Any) -> RedisProblem | None:
    """The problem when ``r`` (one pipeline reply) says scripts may not run this way, else None."""
    if not isinstance(r, redis.exceptions.ResponseError) or isinstance(r, redis.exceptions.NoScriptError):
        return None
    p = classify(r)
    if p is None or not p.use_plain_commands:
        return None
    if p.command in SCRIPT_COMMANDS or (p.kind is Kind.UNKNOWN_COMMAND and p.command is None):
        return p
    return None


class BrokerReader:
    """Reads task queues and the unacked ledger in a constant number of pipelined round trips.

    Keeps small caches between reads (binding tables, first-seen times of queue heads in ``heads``, the
    decoded window and per-queue counts in ``unacked``), so reuse one reader for the life of a collector.
    """

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self._scripts_loaded = False
        self.mode = "lua"
        """How the read scripts run (READ_MODES); moves down the list once, on refusal, for the session."""
        self.mode_reason: str | None = None
        """Why the reader left ``lua`` ("NOPERM EVALSHA", "SCRIPT disabled or renamed"), None while on it."""
        self._ro_sent: set[str] = set()
        """Scripts whose source this reader sent with EVAL_RO (lua-ro: EVALSHA_RO finds them afterwards)."""
        self._groups: dict[int, list[tuple[int, int, broker_plain.Decoder]]] = {}
        """id(pipe) -> (first command, commands, decoder) of each plain twin queued in that pipeline."""
        self._extra_commands = 0
        """Commands the plain twins added in the last read, beyond the one call each replaces."""
        self._scan_cursor = 0
        self._scan_seen: set[str] = set()
        self._discovery_passes = 0
        self._tables: dict[str, _Table] = {}
        self.heads = QueueHeads()
        """Head sightings and task-sent times: the oldest waiting age of each queue."""
        self.unacked = UnackedWindow(settings, self.queue_for)
        """The ledger window, the per-queue unacked counts and the classification of the entries."""
        self._lens: dict[str, tuple[int, ...]] = {}
        """Depth per priority band of every queue at the last read (-1: a key of the wrong type)."""
        self._bands: dict[str, set[int]] = {}
        """Band indices (> 0) whose key existed at the last read: only those (and band 0) get an LLEN."""
        self._missing_bands: dict[str, tuple[Any, list[str]]] = {}
        """name -> (the ``_bands`` set it was computed from, band keys not known to exist)."""
        self._band_rr = self._head_rr = self._table_rr = 0
        self._keys_cache: dict[str, list[tuple[int, str]]] = {}
        self._llen_cache: dict[str, list[bytes]] = {}
        """name -> ``LLEN <band key>`` per band, packed once (:meth:`_llens`)."""
        self._head_size: dict[str, int] = {}
        """Size of the head message seen last per queue (small ones are re-read with a plain LINDEX)."""
        self._srcs_cache: dict[tuple[str, frozenset[str]], tuple[str, ...]] = {}
        self._depths: dict[str, tuple[tuple[int, ...], tuple[tuple[int, int], ...], int]] = {}
        """name -> (band depths, by_priority, messages) of the last read (recomputed only on change)."""
        self._tables_version = 0
        """Bumped whenever binding rows change: invalidates the cached queue names."""
        self._names_cache: tuple[Any, list[str], dict[str, set[str]]] | None = None
        self.keys = KeyLayout.from_settings(settings)
        self._binding_prefix = self.keys.binding_prefix
        self._deadlines_key = self.keys.binding_deadlines
        self._internal_exchanges = self.keys.internal_exchanges

    # ---- public ----------------------------------------------------------------------------------
    def read(self, *, now: float, worker_queues: Mapping[str, int] | None = None,
             claims: Mapping[str, TaskRef] | None = None, inspected_at: float | None = None,
             grace_s: float = 2.0) -> BrokerView:
        """One refresh of queues and the unacked window.

        Args:
            now: the reference time for ages (epoch seconds, taskdash's clock).
            worker_queues: queue name → number of online workers consuming it (inspect active_queues);
                None when inspect is unavailable (then ``consumers`` is None).
            claims: task id → TaskRef for every task a responding worker reports; None when inspect failed.
            inspected_at: when the inspect that produced ``claims`` ran (defaults to ``now``).
            grace_s: unclaimed entries younger than ``inspected_at - grace_s`` are "unknown", not orphaned.

        Raises:
            redis.RedisError: the broker is unreachable (connection errors are not swallowed).
        """
        cost = _Cost()
        for _attempt in range(len(READ_MODES) + 1):
            self._extra_commands = 0
            try:
                return self._read(cost, now, worker_queues, claims, inspected_at, grace_s)
            except _NoScript:
                self._scripts_loaded = False  # the retry's cost adds to the failed attempt's
                self._ro_sent.clear()
            except _ScriptsRefused as refused:
                self._step_down(refused.problem)
            finally:
                self._groups.clear()
        return self._read(cost, now, worker_queues, claims, inspected_at, grace_s)

    def note_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Take the task events drained since the last read (:meth:`QueueHeads.note_events`): ``task-sent``
        times are the exact start of a waiting message's age; a task received has left its queue."""
        self.heads.note_events(events)

    @property
    def remembered(self) -> HeadMemory | None:
        """First-seen times remembered across restarts (the collector sets the history store's lookup)."""
        return self.heads.remembered

    @remembered.setter
    def remembered(self, lookup: HeadMemory | None) -> None:
        self.heads.remembered = lookup

    def _step_down(self, problem: RedisProblem) -> None:
        """Scripts are refused in the current mode: use the next one for the rest of the session."""
        if self.mode == "plain":
            raise redis.exceptions.NoPermissionError(problem.detail)  # plain reads refused: not a script matter
        before = self.mode
        self.mode = READ_MODES[READ_MODES.index(self.mode) + 1]
        if self.mode_reason is None:
            self.mode_reason = problem.reason()
        log.warning("broker reads: %s refused (%s); using %s reads for this session", before,
                    problem.reason(), self.mode)

    @property
    def mode_note(self) -> str | None:
        """The one-line source note while the reader is not on full Lua (None on it)."""
        if self.mode == "lua":
            return None
        if self.mode == "lua-ro":
            return f"scripting limited ({self.mode_reason}): read-only scripts (EVAL_RO/EVALSHA_RO)"
        return (f"scripting not permitted ({self.mode_reason}): plain reads, "
                f"{self._extra_commands} more commands per refresh")

    def is_internal_queue(self, name: str) -> bool:
        """True for Celery's own queues (pidbox, reply, event receivers, worker-direct)."""
        return self.keys.is_internal_queue(name)

    def queue_for(self, exchange: str | None, routing_key: str | None) -> str | None:
        """The queue a message published with (exchange, routing_key) lands in, from the binding tables."""
        if not exchange:
            return routing_key
        table = self._tables.get(self._binding_prefix + exchange)
        if table is not None and routing_key is not None:
            rows = table.rows | table.partial
            matches = sorted(q for rk, pattern, q in rows if (rk == routing_key and not pattern))
            if not matches:
                for rk, pattern, q in sorted(rows):
                    if pattern and topic_match(rk, pattern, routing_key):
                        matches.append(q)
            if matches:
                return matches[0]
        return None

    # ---- implementation --------------------------------------------------------------------------
    def _execute(self, pipe: Any, cost: _Cost, tail: Sequence[bytes] = ()) -> list[Any]:
        """Run ``pipe`` (and ``tail``, pre-packed plain commands sent after it in the same round trip:
        :mod:`collectors.core.packed`); errors in place, the read-failing ones raised."""
        n = len(pipe.command_stack) + len(tail)
        if n == 0:
            return []
        cost.round_trips += 1
        cost.commands += n
        try:
            results = packed.execute(pipe, tail) if tail else pipe.execute(raise_on_error=False)
        finally:
            pipe.reset()
        failed = [r for r in results if isinstance(r, Exception)]  # nearly always none: the checks see only these
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in failed):
            raise _NoScript()
        for r in failed:
            # A Redis that is up but cannot answer (a busy script, loading, a master down) fails the whole
            # read: its per-command errors must not look like wrong-type keys or empty queues.
            if isinstance(r, redis.exceptions.ResponseError) and str(r).startswith(_NOT_READY):
                raise r
            refused = _script_refusal(r)
            if refused is not None:
                raise _ScriptsRefused(refused)
        for r in failed:
            # A plain read the user may not run (NOPERM on a command or key, a disabled command) is no
            # wrong-type key or empty queue either: the broker could not be read.
            if isinstance(r, redis.exceptions.ResponseError) and not isinstance(r, redis.exceptions.NoScriptError):
                p = classify(r)
                if p is not None and p.use_plain_commands:
                    raise r
        groups = self._groups.pop(id(pipe), None)
        if not groups:
            return list(results)
        # Collapse the commands of each plain twin into the one reply its script would have given.
        out: list[Any] = []
        pos = 0
        for start, count, decode in groups:
            out.extend(results[pos:start])
            try:
                out.append(decode(results[start:start + count]))
            except Exception as exc:  # noqa: BLE001 - a failed twin fails like its script call would
                out.append(exc if isinstance(exc, redis.exceptions.RedisError)
                           else redis.exceptions.ResponseError(f"{type(exc).__name__}: {exc}"))
            pos = start + count
            self._extra_commands += count - 1
        out.extend(results[pos:])
        return out

    def _twin(self, pipe: Any, queued: tuple[int, broker_plain.Decoder]) -> None:
        """Record a plain twin's commands (just queued at the end of ``pipe``) for ``_execute``."""
        count, decode = queued
        start = len(pipe.command_stack) - count
        self._groups.setdefault(id(pipe), []).append((start, count, decode))

    def _call(self, pipe: Any, name: str, *args: Any) -> None:
        """Queue read script ``name`` (``queue``, ``window``, ``scan``): its plain twin in ``plain`` mode."""
        plain, script = _READ_CALLS[name]
        if self.mode == "plain":
            self._twin(pipe, plain(pipe, *args))
        else:
            script(pipe, *args, mode=self._script_mode(name))

    def _script_mode(self, name: str) -> str:
        """The way to queue script ``name`` now: evalsha, or (lua-ro) eval_ro the first time, evalsha_ro after."""
        if self.mode == "lua":
            return "evalsha"
        if name in self._ro_sent:
            return "evalsha_ro"
        self._ro_sent.add(name)
        return "eval_ro"

    def _read(self, cost: _Cost, now: float, worker_queues: Mapping[str, int] | None,
              claims: Mapping[str, TaskRef] | None, inspected_at: float | None, grace_s: float) -> BrokerView:
        s = self.settings
        errors: list[str] = []
        nb = len(s.priority_steps)
        win_n = max(0, s.unacked_window)

        # Celery binds queue X to exchange X by default: read those tables even before the incremental
        # SCAN reaches them (large keyspaces, e.g. results in the broker db).
        for name in (*s.app_queues, *(worker_queues or {})):
            if name and not self.is_internal_queue(name):
                key = self._binding_prefix + name
                self._tables.setdefault(key, _Table(exchange=name)).pinned = True

        # ---- round trip 1: discovery step, binding tables, ledger size + window, queue depths ----
        pipe = self.client.pipeline(transaction=False)
        if not self._scripts_loaded and self.mode == "lua":
            for script in scripts.BROKER_SCRIPTS:
                script.load(pipe)
        n_load = len(pipe.command_stack)
        pipe.scan(self._scan_cursor, match=_glob_escape(self._binding_prefix) + "*",
                  count=SCAN_COUNT if not self._discovery_passes else SCAN_COUNT_STEADY)
        pipe.zrange(self._deadlines_key, 0, DEADLINES_LIMIT - 1)
        to_read = self._tables_to_read()
        for key in to_read:
            self._queue_sscan(pipe, key)
        pipe.hlen(self.keys.unacked)
        pipe.zcard(self.keys.unacked_index)
        # Fingerprint mode: only the window's last entry; the window is re-read when it moved.
        fp_mode = self.unacked.fingerprint_mode(win_n)
        if win_n:
            pipe.zrange(self.keys.unacked_index, win_n - 1 if fp_mode else 0, win_n - 1, withscores=True)
        names0, _src0 = self._queue_names(worker_queues)
        # The per-queue LLENs (most of a big refresh) go as pre-packed bytes after the pipeline.
        llen_plan: list[tuple[str, int]] = []
        tail: list[bytes] = []
        for name in names0:
            llens = self._llens(name)
            idxs = [0, *sorted(self._bands.get(name, ()))] if name in self._lens else range(nb)
            for i in idxs:
                tail.append(llens[i])
                llen_plan.append((name, i))
        exists_plan = self._band_slice(names0)
        for _name, keys in exists_plan:
            tail.append(packed.pack("EXISTS", *keys))
        res = self._execute(pipe, cost, tail)
        if not self._scripts_loaded and self.mode == "lua":
            bad = [r for r in res[:n_load] if isinstance(r, Exception)]
            if bad:
                raise bad[0]
            self._scripts_loaded = True
        it = iter(res[n_load:])
        self._absorb_scan(next(it), next(it), errors)
        for key in to_read:
            self._absorb_sscan(key, next(it))
        hlen_r, zcard_r = next(it), next(it)
        zr = next(it) if win_n else []
        lens: dict[str, list[int]] = {}
        wrong: dict[str, bool] = {}
        for name, i in llen_plan:
            r = next(it)
            row = lens.setdefault(name, [0] * nb)
            if isinstance(r, Exception):
                row[i] = -1
                if not wrong.get(name):
                    wrong[name] = True
                    if "WRONGTYPE" not in str(r):
                        errors.append(f"queue {name}: {r}")
            else:
                row[i] = int(r)
        full: set[str] = set()  # queues whose every band (and head) is probed this refresh
        for name, _keys in exists_plan:
            r = next(it)
            if isinstance(r, Exception) or int(r) > 0:
                full.add(name)

        # ---- unacked: ledger size and whether the window moved ----
        unacked_total, index_total, pairs, ledger_ok = self.unacked.absorb_sizes(hlen_r, zcard_r, zr, fp_mode,
                                                                                 win_n, errors)
        need_scan = ledger_ok and unacked_total > min(win_n, index_total)

        # ---- round trip 2: new tables, head probes, window values, one ledger scan step ----
        new_tables = self._unread_tables()
        pipe = self.client.pipeline(transaction=False)
        for key in new_tables:
            self._queue_sscan(pipe, key)
        names1, _src1 = self._queue_names(worker_queues)
        full |= {n for n in names1 if n not in lens}
        full_names = sorted(full)
        heads, plain_heads = self._heads_to_probe(names0, lens, full)
        n_full = self._queue_probes(pipe, full_names, full=True)
        n_heads = self._queue_probes(pipe, [(n, lens[n]) for n in heads], full=False)
        plain_bands: list[int] = []
        for name in plain_heads:  # small heads in their round-robin turn: a plain LINDEX is cheaper than Lua
            band = next(j for j, x in enumerate(lens[name]) if x > 0)
            plain_bands.append(band)
            pipe.lindex(self._qkeys(name)[band][1], -1)
        fetch_plan: tuple[list[str], list[str]] | None = None
        window_late = pairs is None
        if pairs is None:
            pipe.zrange(self.keys.unacked_index, 0, win_n - 1, withscores=True)
        else:
            fetch_plan = self._queue_window_fetch(pipe, pairs, unacked_total != index_total)
        if need_scan:
            self._call(pipe, "scan", self.keys.unacked, self.unacked.hscan_cursor, HSCAN_COUNT)
        res = self._execute(pipe, cost)
        it = iter(res)
        for key in new_tables:
            self._absorb_sscan(key, next(it))
        probes: dict[str, Any] = {}
        self._absorb_probes(probes, full_names, [next(it) for _ in range(n_full)])
        head_res: dict[str, Any] = {}
        self._absorb_probes(head_res, heads, [next(it) for _ in range(n_heads)])
        for name, band in zip(plain_heads, plain_bands, strict=True):
            r = next(it)
            if isinstance(r, Exception) or r is None:  # changed type / emptied meanwhile: probe next time
                head_res[name] = [0, [0]]
                self._head_size.pop(name, None)
            else:  # shaped like a probe item that carries the whole message
                head_res[name] = [0, [lens[name][band]], band + 1, len(r), r]
        fetch_res: Any = None
        if pairs is None:
            zr = next(it)
            if isinstance(zr, Exception):
                errors.append(f"unacked: {zr}")
                pairs = []
            else:
                pairs = pairs_of(zr)
        elif fetch_plan is not None:
            fetch_res = next(it)
        if need_scan:
            self.unacked.absorb_scan_step(next(it), errors)
        else:
            self.unacked.no_scan()

        # ---- round trip 3 (rare): queues of the tables read in round trip 2, a window that moved ----
        names, sources = self._queue_names(worker_queues)
        late = sorted(n for n in names if n not in lens and n not in probes)
        pipe = self.client.pipeline(transaction=False)
        n_late = self._queue_probes(pipe, late, full=True)
        if window_late and pairs:
            fetch_plan = self._queue_window_fetch(pipe, pairs, unacked_total != index_total)
        res = self._execute(pipe, cost)
        self._absorb_probes(probes, late, res[:n_late])
        if window_late and fetch_plan is not None:
            fetch_res = res[n_late]
        window = self.unacked.absorb_window(pairs or [], fetch_plan, fetch_res, errors)
        self.unacked.remember_window(pairs, ledger_ok, index_total, win_n)

        # ---- build the view ----
        entries = self.unacked.classify(window, now, claims, inspected_at, grace_s)
        counts, exact = self.unacked.counts(entries, unacked_total, need_scan)
        queues: list[QueueInfo] = []
        for name in names:
            queues.append(self._queue_info(name, lens.get(name), wrong.get(name, False), probes.get(name),
                                           head_res.get(name), now, sources[name], worker_queues,
                                           counts.get(name, 0), errors))
        for gone in set(self._lens) - set(names):
            del self._lens[gone]
            self._bands.pop(gone, None)
            self._missing_bands.pop(gone, None)
            self._depths.pop(gone, None)
            self._head_size.pop(gone, None)
        self.heads.end_read(names, now)
        return BrokerView(
            queues=tuple(queues),
            unacked=tuple(entries),
            unacked_total=unacked_total,
            round_trips=cost.round_trips,
            commands=cost.commands,
            errors=tuple(errors),
            unacked_index_total=index_total,
            unacked_counts_exact=exact,
            binding_tables=len(self._tables),
            discovery_passes=self._discovery_passes,
            read_mode=self.mode,
            note=self.mode_note,
        )

    # ---- planning helpers ----
    def _sorted_sources(self, name: str, sources: set[str]) -> tuple[str, ...]:
        key = (name, frozenset(sources))
        out = self._srcs_cache.get(key)
        if out is None:
            if len(self._srcs_cache) > 100_000:
                self._srcs_cache.clear()
            out = self._srcs_cache[key] = tuple(sorted(sources))
        return out

    def _qkeys(self, name: str) -> list[tuple[int, str]]:
        """``KeyLayout.queue_keys(name)``, cached (called several times per queue and refresh)."""
        keys = self._keys_cache.get(name)
        if keys is None:
            if len(self._keys_cache) > 100_000:
                self._keys_cache.clear()
            keys = self._keys_cache[name] = self.keys.queue_keys(name)
        return keys

    def _llens(self, name: str) -> list[bytes]:
        """``LLEN <band key>`` of each priority band of queue ``name``, packed once (their bytes never change)."""
        cmds = self._llen_cache.get(name)
        if cmds is None:
            if len(self._llen_cache) > 100_000:
                self._llen_cache.clear()
            cmds = self._llen_cache[name] = [packed.pack("LLEN", key) for _band, key in self._qkeys(name)]
        return cmds

    def _queue_names(self, worker_queues: Mapping[str, int] | None) -> tuple[list[str], dict[str, set[str]]]:
        """Task queue names known now (app, workers, binding tables) and where each name came from
        (cached until a binding table or the worker queues change)."""
        ckey = (self._tables_version, tuple(sorted(worker_queues)) if worker_queues is not None else None)
        if self._names_cache is not None and self._names_cache[0] == ckey:
            return self._names_cache[1], self._names_cache[2]
        names, sources = self._compute_queue_names(worker_queues)
        self._names_cache = (ckey, names, sources)
        return names, sources

    def _compute_queue_names(self, worker_queues: Mapping[str, int] | None
                             ) -> tuple[list[str], dict[str, set[str]]]:
        sources: dict[str, set[str]] = {}
        for name in self.settings.app_queues:
            sources.setdefault(name, set()).add("app")
        for name in worker_queues or {}:
            sources.setdefault(name, set()).add("worker")
        for table in self._tables.values():
            if table.exchange in self._internal_exchanges:
                continue
            for _rk, _pattern, q in table.rows | table.partial:
                if q:
                    sources.setdefault(q, set()).add("binding")
        return sorted(n for n in sources if n and not self.is_internal_queue(n)), sources

    def _tables_to_read(self) -> list[str]:
        """Binding tables to SSCAN in round trip 1: never read, mid-pass, and a round-robin slice."""
        task_tables = sorted(k for k, t in self._tables.items() if t.exchange not in self._internal_exchanges)
        out = [k for k in task_tables if not self._tables[k].read_once or self._tables[k].cursor != 0]
        rest = [k for k in task_tables if self._tables[k].read_once and self._tables[k].cursor == 0]
        out.extend(_rr_slice(rest, self._table_rr, TABLE_SLICE))
        self._table_rr += TABLE_SLICE
        return out

    def _unread_tables(self) -> list[str]:
        return [k for k, t in self._tables.items()
                if not t.read_once and t.exchange not in self._internal_exchanges]

    def _queue_sscan(self, pipe: Any, key: str) -> None:
        table = self._tables[key]
        pipe.sscan(key, cursor=table.cursor if table.read_once else 0, count=SSCAN_COUNT)

    def _band_slice(self, names: Sequence[str]) -> list[tuple[str, list[str]]]:
        """(queue, band keys not known to exist) for a round-robin slice of known queues: one EXISTS each."""
        cands: list[tuple[str, list[str]]] = []
        for name in names:
            if name not in self._lens:
                continue
            known = self._bands.get(name, _NO_BANDS)
            cached = self._missing_bands.get(name)
            if cached is not None and cached[0] is known:  # _bands entries are replaced, never mutated
                missing = cached[1]
            else:
                missing = [k for i, (_b, k) in enumerate(self._qkeys(name)) if i and i not in known]
                self._missing_bands[name] = (known, missing)
            if missing:
                cands.append((name, missing))
        out = _rr_slice(cands, self._band_rr, BAND_SLICE)
        self._band_rr += BAND_SLICE
        return out

    def _heads_to_probe(self, names: Sequence[str], lens: Mapping[str, list[int]], full: set[str]
                        ) -> tuple[list[str], list[str]]:
        """Non-empty queues whose head is read: (by the probe script: depths changed or head never seen;
        by a plain LINDEX: the round-robin slice, when the head seen last was at most ``PLAIN_HEAD_MAX``)."""
        nonempty = [n for n in names if n in lens and n not in full and any(x > 0 for x in lens[n])]
        must = {n for n in nonempty if self._lens.get(n) != tuple(lens[n]) or not self.heads.known(n)}
        turn = [n for n in _rr_slice(nonempty, self._head_rr, HEAD_SLICE) if n not in must]
        self._head_rr += HEAD_SLICE
        plain = [n for n in turn if self._head_size.get(n, INLINE_MAX + 1) <= PLAIN_HEAD_MAX]
        return sorted(must | (set(turn) - set(plain))), sorted(plain)

    def _queue_probes(self, pipe: Any, items: Sequence[Any], *, full: bool) -> int:
        """Queue probe script calls: every band of ``items`` (names) when ``full``, else only the
        highest-priority non-empty band of ``items`` ((name, lens) pairs). Returns the number of calls."""
        s = self.settings
        calls = 0
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            if full:
                keys = [k for name in chunk for _band, k in self._qkeys(name)]
                known = [self.heads.last_identity(name) for name in chunk]
                nb = len(s.priority_steps)
            else:
                keys = []
                for name, row in chunk:
                    first = next(j for j, x in enumerate(row) if x > 0)
                    keys.append(self._qkeys(name)[first][1])
                known = [self.heads.last_identity(name) for name, _row in chunk]
                nb = 1
            self._call(pipe, "queue", keys, nb, INLINE_MAX, HEAD_BYTES, TAIL_BYTES, known)
            calls += 1
        return calls

    def _absorb_probes(self, out: dict[str, Any], names: Sequence[str], results: Sequence[Any]) -> None:
        if not names:
            return
        for name, r in zip(names, _flatten(results, len(names)), strict=True):
            out[name] = r

    def _queue_window_fetch(self, pipe: Any, pairs: Sequence[tuple[str, float | None]], verify: bool
                            ) -> tuple[list[str], list[str]] | None:
        """Queue one fetch of the window tags not decoded yet (and, when the hash and the index disagree,
        an existence check of the ones that are). Returns (fetched, checked), None when nothing is sent."""
        plan = self.unacked.fetch_plan(pairs, verify)
        if plan is None:
            return None
        fetch, check = plan
        self._call(pipe, "window", self.keys.unacked, INLINE_MAX, HEAD_BYTES, TAIL_BYTES, fetch, check)
        return fetch, check

    # ---- discovery ----
    def _absorb_scan(self, scan_res: Any, deadlines_res: Any, errors: list[str]) -> None:
        if isinstance(scan_res, Exception):
            errors.append(f"binding discovery: {scan_res}")
        else:
            cursor, keys = scan_res
            for k in keys:
                key = _text(k)
                if key.startswith(self._binding_prefix):
                    self._scan_seen.add(key)
                    self._tables.setdefault(key, _Table(exchange=key[len(self._binding_prefix):]))
            self._scan_cursor = int(cursor)
            if self._scan_cursor == 0:
                self._discovery_passes += 1
                # A whole pass is done: forget tables that no longer exist.
                for key in [k for k, t in self._tables.items() if k not in self._scan_seen and not t.pinned]:
                    del self._tables[key]
                    self._tables_version += 1
                self._scan_seen = set()
        if not isinstance(deadlines_res, Exception):
            for ex in deadlines_res or ():
                exchange = _text(ex)
                key = self._binding_prefix + exchange
                self._scan_seen.add(key)
                self._tables.setdefault(key, _Table(exchange=exchange))

    def _absorb_sscan(self, key: str, r: Any) -> None:
        table = self._tables.get(key)
        if table is None:
            return
        table.read_once = True
        before = (table.rows, len(table.partial))
        if isinstance(r, Exception):  # wrong type: not a binding table
            table.rows, table.partial, table.cursor = frozenset(), set(), 0
        else:
            cursor, members = r
            sep = self.keys.sep
            for m in members:
                parts = _text(m).split(sep)
                if len(parts) == 3:
                    table.partial.add((parts[0], parts[1], parts[2]))
            table.cursor = int(cursor)
            if table.cursor == 0:
                table.rows = frozenset(table.partial)
                table.partial = set()
        if (table.rows, len(table.partial)) != before:
            self._tables_version += 1  # queue names and routes may have changed

    # ---- queues ----
    def _queue_info(self, name: str, lens: list[int] | None, wrong: bool, probe: Any, head: Any, now: float,
                    sources: set[str], worker_queues: Mapping[str, int] | None, unacked: int,
                    errors: list[str]) -> QueueInfo:
        """QueueInfo from this refresh's depths (``lens``, round trip 1) and head probe (``probe``: every
        band + head; ``head``: head only; neither: the head identity seen before still stands)."""
        consumers = None if worker_queues is None else int(worker_queues.get(name, 0))
        srcs = self._sorted_sources(name, sources)
        item: Any = None
        if probe is not None or head is not None:
            bands = [band for band, _k in self._qkeys(name)]
            for r in (probe, head):
                if isinstance(r, Exception):
                    errors.append(f"queue {name}: {r}")
                    self._lens.pop(name, None)
                    self._depths.pop(name, None)
                    return QueueInfo(name=name, messages=0, by_priority=tuple((b, 0) for b in bands),
                                     unacked=unacked, consumers=consumers, sources=srcs, wrong_type=True)
            if probe is not None:
                wrong = bool(int(probe[0]))
                lens = [int(x) for x in probe[1]]
                item = probe
            else:
                wrong = wrong or bool(int(head[0]))
                item = head
        lens_t = tuple(lens) if lens else (0,) * len(self._qkeys(name))
        depth = self._depths.get(name)
        if depth is None or depth[0] != lens_t:  # depths changed: recompute the derived figures
            bands = [band for band, _k in self._qkeys(name)]
            by_priority = tuple((b, max(n, 0)) for b, n in zip(bands, lens_t, strict=False))
            depth = (lens_t, by_priority, sum(n for _b, n in by_priority))
            self._depths[name] = depth
            self._bands[name] = {i for i, n in enumerate(lens_t) if i and n != 0}
        arrived = self.heads.arrived(self._lens.get(name), now)  # empty at the previous read
        self._lens[name] = lens_t
        _lt, by_priority, messages = depth
        oldest: Oldest | None = None
        if item is not None and len(item) > 2:
            size = int(item[3])
            self._head_size[name] = size
            oldest = self.heads.observe(name, item, size, now, arrived)
        elif item is None and messages > 0 and self.heads.known(name):
            # not probed this refresh: the head seen last time is still the one at the consuming end
            oldest = self.heads.carry(name, now)
        else:
            self.heads.forget(name)
        if oldest is None:
            return QueueInfo(name=name, messages=messages, by_priority=by_priority, unacked=unacked,
                             consumers=consumers, sources=srcs, wrong_type=wrong)
        return QueueInfo(name=name, messages=messages, by_priority=by_priority, oldest_age_s=oldest.age,
                         unacked=unacked, consumers=consumers, sources=srcs, wrong_type=wrong,
                         oldest_age_is_lower_bound=oldest.lower_bound, oldest_age_source=oldest.source,
                         oldest_since=oldest.since, oldest_task_id=oldest.task_id,
                         oldest_identity=oldest.identity)
