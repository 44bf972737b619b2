"""Writes to the unacked ledger: requeue (unacked → its queue) and requeue of every orphaned entry.

Each message moves in one compare-and-swap script (``scripts.MOVE_UNACKED``) while taskdash holds
kombu's ``unacked_mutex``, exactly as kombu's own visibility restore would (docs/redis-layout.md#unacked-ledger and
#moving-an-unacked-message-back): the entry is removed from ``unacked``/``unacked_index`` and RPUSHed, with ``redelivered``
set, onto the priority list of its queue (the end consumed next). Messages a live worker reports are
refused unless forced.

Liveness guard (issue 12): an entry is requeued without force only when the liveness evidence
(``collectors.analysis.liveness``) calls it ``orphaned`` — every worker that could have received it is
proven dead. ``requeue_orphaned`` moves only those, whatever ``force`` says; a single ``requeue`` of an
entry that may be held (``held-by-silent``, ``may-be-held``, ``unknown``) needs ``force``: the worker may
still be running it, and a requeue can run it twice. The evidence comes from ``evidence`` (the TUI hands
its collector's, which has watched the workers for a while), else a WorkerMonitor observes the workers
here for ``observe_s`` seconds (heartbeats, one inspect window, connection probes).
"""

from __future__ import annotations

import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import redis

from collectors.analysis.liveness import LivenessView, liveness_view
from collectors.core.models import UnackedEntry
from collectors.keyspace import scripts
from collectors.reads.workers import WorkerMonitor
from collectors.writes.base import (
    BATCH,
    FRESH_MARGIN,
    ActionError,
    ActionResult,
    _Entry,
    _parse_entry,
    _priority_of,
    _restored_payload,
)
from collectors.writes.lookup import LedgerLookup

OBSERVE_S = 6.0
"""How long a write without a collector's evidence watches the workers first (3 heartbeat periods),
at most: the watch ends early once no entry it could requeue is left undecided (see ``_liveness``)."""
WATCH_STEP_S = 0.2
"""How often the watch re-decides whether it has seen enough."""
CENSUS_CAP = BATCH
"""An early end of the watch is only considered when the candidate entries fit in one page."""
SETTLED_STATES = frozenset({"active", "reserved", "scheduled", "may-be-held"})
"""States that more watching can never turn into ``orphaned`` except by a worker dying meanwhile: a
responding worker reports the entry, or every possible holder is responding (no silent, no unknown)."""

_SILENT_WHO_RE = re.compile(r"may be held by silent (.+?) \(not proven dead\)")


def not_requeued_summary(stats: Mapping[str, Any]) -> str | None:
    """"12 not requeued: 9 held by responding workers (active/reserved: w2@h), 3 may be held by silent
    w1@h (not proven dead)" for the refused and held entries of ``stats``; None when there are none."""
    tags = [*stats.get("refused", ()), *stats.get("held", ())]
    if not tags:
        return None
    why = stats.get("why") or {}
    groups: dict[str, dict[str, Any]] = {}

    def add(key: str, label: str, states: set[str], holders: list[str]) -> None:
        g = groups.setdefault(key, {"n": 0, "label": label, "states": set(), "holders": []})
        g["n"] += 1
        g["states"] |= states
        g["holders"] += [h for h in holders if h not in g["holders"]]

    for tag in tags:
        w = why.get(tag) or {"state": "live" if tag in stats.get("refused", ()) else "unknown", "holders": []}
        st, holders = w["state"], list(w.get("holders") or ())
        if st in ("active", "reserved", "scheduled", "live"):
            add("responding", "held by responding workers", {st} - {"live"}, holders)
        elif st == "held-by-silent":
            who = ", ".join(holders) or "a worker"
            add(f"silent {who}", f"may be held by silent {who} (not proven dead)", set(), [])
        elif st == "may-be-held":
            who = ", ".join(holders) or "a responding worker"
            add(f"unreported {who}", f"may be held unreported by responding {who} (prefetch, rate limit)",
                set(), [])
        elif st == "fresh":
            add("fresh", "delivered while the workers were asked", set(), [])
        elif st == "unknown":
            add("unknown", "may be held by a worker taskdash has not seen (no proof its holder is gone)",
                set(), [])
        else:
            add(st, st, set(), [])
    parts = []
    for g in groups.values():
        text = f"{g['n']} {g['label']}"
        if g["label"] == "held by responding workers":
            states = "/".join(s for s in ("active", "reserved", "scheduled") if s in g["states"])
            inner = ": ".join(x for x in (states or "reported active/reserved/scheduled",
                                          ", ".join(g["holders"][:5])) if x)
            text += f" ({inner})"
        parts.append(text)
    return f"{len(tags)} not requeued: " + ", ".join(parts)


class RequeueWrites(LedgerLookup):
    """Moves unacked messages back onto their queues (one by tag, or every orphaned one)."""

    evidence: Callable[[], LivenessView] | None = None
    """The liveness evidence to classify with (e.g. ``Collector.liveness``); None: observe here."""
    observe_s: float = OBSERVE_S

    def _liveness(self, settled: Callable[[LivenessView], str | None] | None = None) -> LivenessView:
        """The liveness evidence: the collector's (``evidence``), else this object's own WorkerMonitor,
        which watches the workers for up to ``observe_s`` seconds the first time.

        The watch ends early only when ``settled(view)`` says (with a reason) that nothing it could
        requeue is left to decide: every candidate entry is reported by a responding worker or may be held by responding
        workers only. More watching could then only make an entry orphaned by a worker dying during
        the watch; it never makes a silent worker dead sooner (silent is not dead), so an entry whose
        possible holder is silent, unknown or already looks dead is always watched the full time.
        ``last_watch`` says how long it watched and why it stopped.
        """
        if self.evidence is not None:
            return self.evidence()
        mon = self.own_monitor
        if mon is None:  # watch the workers from now on (daemon threads), and once for observe_s first
            mon = self.__dict__["_own_monitor"] = WorkerMonitor(self.settings)
            weakref.finalize(self, mon.stop)  # its threads and connections end with this object
            t0 = time.monotonic()
            mon.start()
            deadline = t0 + self.observe_s
            why = f"watched the full {self.observe_s:g} s"
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if settled is not None:
                    now = time.time()
                    reason = settled(liveness_view(mon.view(now), now, self.settings))
                    if reason:
                        why = f"stopped early: {reason}"
                        break
                time.sleep(min(WATCH_STEP_S, left))
            self.__dict__["last_watch"] = (time.monotonic() - t0, why)
        now = time.time()
        return liveness_view(mon.view(now), now, self.settings)

    @property
    def own_monitor(self) -> WorkerMonitor | None:
        """The WorkerMonitor this object watches the workers with (started by the first liveness read
        without ``evidence``); None before it, or with evidence."""
        return self.__dict__.get("_own_monitor")

    @property
    def last_watch(self) -> tuple[float, str] | None:
        """(seconds, why it stopped) of this object's liveness watch; None before one (or with evidence)."""
        return self.__dict__.get("last_watch")

    def _candidates(self, cutoff: float, live: set[str]) -> list[_Entry] | None:
        """The ledger entries ``requeue --orphaned`` would consider (older than ``cutoff``, not reported
        live), when they fit in ``CENSUS_CAP``; None when there are more (then the watch runs in full)."""
        out: list[_Entry] = []
        seen = 0
        for page in self._iter_unacked_batches(cutoff, limit=CENSUS_CAP + 1):
            seen += len(page)
            if seen > CENSUS_CAP:
                return None
            raws = self.client.hmget(self.keys.unacked, [t for t, _ in page])
            for (tag, score), raw in zip(page, raws, strict=True):
                entry = _parse_entry(tag, raw, score)
                if entry is not None and not (entry.task_id and entry.task_id in live):
                    out.append(entry)
        return out

    def _settled_for(self, cutoff: float, live: set[str]) -> Callable[[LivenessView], str | None] | None:
        """The early end of the watch for ``requeue --orphaned``: a reason once every candidate entry is
        reported by, or may be held by, responding workers only; None (watch in full) for a big ledger."""
        if self.evidence is not None or self.own_monitor is not None:
            return None  # no watch to end: the evidence is there already
        try:
            entries = self._candidates(cutoff, live)
        except redis.RedisError:
            return None
        if entries is None:
            return None
        if not entries:
            return lambda view: "no entry to decide: every one is reported by a responding worker (or none is old enough)"

        def settled(view: LivenessView) -> str | None:
            if view.claims is None:
                return None  # no inspect window yet: the workers' queues and claims are not known
            known = {inc.hostname: inc.queues is not None for inc, d in view.decided if d.liveness != "dead"}
            states = self._classified(entries, view)
            # a holder whose queues are not known yet "could hold anything": not a reason to stop
            if all(u.state in SETTLED_STATES
                   and (u.state != "may-be-held" or all(known.get(h.split(" (pid ")[0]) for h in u.possible_holders))
                   for u in states.values()):
                return f"every worker that could hold the {len(entries)} unreported entr{'y' if len(entries) == 1 else 'ies'} is responding"
            return None

        return settled



    @contextmanager
    def _sweep_mutex(self, force: bool, wait: float = 5.0) -> Iterator[bool]:
        """Hold kombu's ``unacked_mutex`` (as its visibility restore does) while moving unacked entries.

        Holding it stops a concurrent sweep from restoring, from a stale ZRANGE, a tag that we just
        requeued and a worker already received again (docs/redis-layout.md#unacked-mutex). Without
        ``force`` a mutex still held after ``wait`` seconds is an error. With ``force`` the mutex is
        ignored only when its holder shows no sign of life for ``wait`` seconds — the same token held and
        the ledger's size unchanged (e.g. left by a crashed sweeper; kombu's expiry frees it at the latest):
        a live sweep of a big ledger holds it longer than any fixed wait, and moving beside it is exactly
        the double delivery the mutex exists to prevent (seen in CI: a 1,200-entry sweep under load).
        """
        key = self.keys.unacked_mutex
        expire_ms = int(float(self.settings.transport_options.get("unacked_mutex_expire", 300)) * 1000)
        token = uuid.uuid1().hex
        deadline = time.monotonic() + wait
        acquired = False
        seen: tuple[Any, Any] | None = None
        still_since = time.monotonic()
        while True:
            if self.client.set(key, token, nx=True, px=expire_ms):
                acquired = True
                break
            now = time.monotonic()
            if not force:
                if now >= deadline:
                    break
            else:
                sign = (self.client.get(key), self.client.zcard(self.keys.unacked_index))
                if sign != seen:  # a new holder, or the holder is moving entries: it is alive
                    seen, still_since = sign, now
                elif now - still_since >= wait:
                    break
            time.sleep(0.02 if not force else 0.05)
        if not acquired and not force:
            raise ActionError("kombu's visibility restore holds the unacked mutex "
                              f"({key!r}); try again in a moment (or use force)")
        try:
            yield acquired
        finally:
            if acquired:
                with suppress(redis.RedisError):
                    scripts.release_mutex(self.client, key, token)

    def _target_keys(self, entry: _Entry) -> list[str]:
        queues = self._queues_for(entry.exchange, entry.routing_key)
        pri = _priority_of(entry.payload)
        return [self.keys.queue_key(q, pri) for q in queues]

    def _requeue_entries(self, entries: Sequence[_Entry], stats: dict[str, list[Any]]) -> int:
        moved = 0
        for entry in entries:
            keys = self._target_keys(entry)
            if not keys:
                stats["unroutable"].append(entry.tag)
                continue
            score = "" if entry.score is None else repr(float(entry.score))
            rc = scripts.move_unacked(self.client, unacked=self.keys.unacked, index=self.keys.unacked_index,
                                      targets=keys, tag=entry.tag, expected=entry.raw, score=score,
                                      message=_restored_payload(entry), end="R")
            if rc == 1:
                moved += 1
                stats["tags"].append(entry.tag)
                stats["task_ids"].append(entry.task_id)
                for k in keys:
                    stats["targets"].setdefault(k, 0)
                    stats["targets"][k] += 1
            elif rc == 0:
                stats["gone"].append(entry.tag)
            else:
                stats["changed"].append(entry.tag)
        return moved

    @staticmethod
    def _new_stats() -> dict[str, Any]:
        return {"tags": [], "task_ids": [], "gone": [], "changed": [], "refused": [], "unroutable": [],
                "held": [], "targets": {}, "why": {}}

    @staticmethod
    def _note_why(stats: dict[str, Any], tag: str, u: UnackedEntry | None, *, live: bool = False,
                  fresh: bool = False) -> None:
        """Why ``tag`` was not requeued, in ``stats["why"]``: its state, the workers behind it, the reason."""
        if fresh:
            stats["why"][tag] = {"state": "fresh", "holders": [], "reason": "delivered while the workers were asked"}
            return
        state = u.state if u is not None else "unknown"
        if live and state not in ("active", "reserved", "scheduled"):
            state = "live"  # reported by a responding worker to live_task_ids, not in the monitor's window
        holders: list[str] = []
        if u is not None:
            if state in ("active", "reserved", "scheduled"):
                holders = [u.holder] if u.holder else []
            elif state == "held-by-silent":
                m = _SILENT_WHO_RE.search(u.state_reason or "")
                holders = m.group(1).split(", ") if m else list(u.possible_holders)
            else:
                holders = list(u.possible_holders)
        stats["why"][tag] = {"state": state, "holders": holders,
                             "reason": (u.state_reason if u is not None and not live else None)
                             or ("reported active/reserved/scheduled by a responding worker" if live else None)}

    def _requeue_message(self, n: int, stats: Mapping[str, Any], what: str) -> str:
        parts = [f"requeued {n} {what}"]
        if stats["targets"]:
            parts[0] += " to " + ", ".join(sorted({self.display_key(k) for k in stats["targets"]}))
        held = not_requeued_summary(stats)
        if held:
            parts.append(held)
        for key, label in (("gone", "already acked/restored"),
                           ("changed", "redelivered meanwhile"), ("unroutable", "without a matching queue")):
            if stats[key]:
                parts.append(f"{len(stats[key])} {label}")
        return "; ".join(parts)

    def requeue(self, tags: Sequence[str], *, force: bool = False, live: set[str] | None = None,
                expected: Mapping[str, float] | None = None) -> ActionResult:
        """Move unacked messages back onto their queue (right priority list, the end consumed next).

        Each message moves in one atomic script that checks the entry is still exactly what was read
        (same bytes, same delivery time) and then removes it from ``unacked``/``unacked_index`` and
        RPUSHes it with ``redelivered`` set, like kombu's ``restore_by_tag``. Messages a live worker
        reports (active/reserved/scheduled) are refused unless ``force``.

        Args:
            tags: Delivery tags (keys of the ``unacked`` hash).
            force: Requeue even when a worker claims the task (it may then run twice).
            live: Task ids known to be live (skips asking the workers); None asks them now.
            expected: Delivery time (``unacked_index`` score) of each tag as a plan saw it: an entry
                delivered again since (another score; kombu keeps the tag) is a different delivery, a
                worker may hold it, and it is left alone (``changed``), forced or not.

        Raises:
            ReadOnlyError: in read-only mode.
            ActionError: every requested message was refused, or workers could not be asked.
        """
        self._guard("requeue")
        tags = list(dict.fromkeys(str(t) for t in tags))
        if not tags:
            return ActionResult("requeue", 0, "nothing to requeue", {})
        self._check_reachable("requeue")
        asked_at: float | None = None
        if live is None and not force:
            asked_at = time.time()
            live = self.live_task_ids()  # asked BEFORE reading the entries: see requeue_orphaned
            if live is None:
                raise ActionError("requeue refused: cannot ask the workers what they are running "
                                  "(no reply to inspect); use force to requeue anyway")
        live = live or set()
        view = None if force else self._liveness()
        stats = self._new_stats()
        refused_ids: list[str] = []
        held_why: list[str] = []
        moved = 0
        with self._errors("requeue"):
            for i in range(0, len(tags), BATCH):
                chunk = tags[i:i + BATCH]
                with self._sweep_mutex(force):
                    entries = self._read_entries(chunk)
                    todo: list[_Entry] = []
                    for tag in chunk:
                        entry = entries[tag]
                        if (entry is not None and expected is not None and tag in expected
                                and entry.score != expected[tag]):
                            stats["changed"].append(tag)  # redelivered since the plan was made
                        elif entry is None:
                            if self.client.hexists(self.keys.unacked, tag):
                                stats["unroutable"].append(tag)  # unparsable: leave it alone
                            else:
                                self.client.zrem(self.keys.unacked_index, tag)
                                stats["gone"].append(tag)
                        elif not force and entry.task_id and entry.task_id in live:
                            stats["refused"].append(tag)
                            refused_ids.append(entry.task_id)
                            self._note_why(stats, tag, None, live=True)
                        elif (asked_at is not None and entry.score is not None
                              and entry.score > asked_at - FRESH_MARGIN):
                            # delivered while (or after) the workers were asked: their answer cannot
                            # tell whether a live worker holds it
                            stats["refused"].append(tag)
                            refused_ids.append(entry.task_id or tag)
                            self._note_why(stats, tag, None, fresh=True)
                        else:
                            todo.append(entry)
                    if view is not None and todo:
                        states = self._classified(todo, view)
                        keep = [e for e in todo if states[e.tag].state == "orphaned"]
                        for e in todo:
                            if states[e.tag].state != "orphaned":
                                stats["held"].append(e.tag)
                                u = states[e.tag]
                                self._note_why(stats, e.tag, u)
                                held_why.append(f"{e.task_id or e.tag} is {u.state}: {u.state_reason}")
                        todo = keep
                    moved += self._requeue_entries(todo, stats)
        if moved == 0 and stats["held"] and not stats["refused"]:
            raise ActionError("requeue refused: " + "; ".join(held_why)[:600] + ". The worker may still be "
                              "running it, and a requeue can run it twice; use force to requeue anyway")
        if moved == 0 and stats["refused"]:
            raise ActionError(f"requeue refused: a live worker is (or may be) running task(s) "
                              f"{', '.join(sorted(set(refused_ids)))[:300]} "
                              "(requeueing would run it twice); use force to override")
        msg = self._requeue_message(moved, stats, "message(s)")
        if moved:
            self._record("requeue", tags, moved, force=force, **stats)
        return ActionResult("requeue", moved, msg, stats)

    def orphaned(self, *, older_than: float | None = None, live: set[str] | None = None,
                 limit: int | None = None) -> list[tuple[str, float, str | None, str | None]]:
        """Orphaned unacked entries (every possible holder proven dead), older than the grace:
        (tag, score, task_id, queue)."""
        return self.orphan_census(older_than=older_than, live=live, limit=limit)[0]

    def orphan_census(self, *, older_than: float | None = None, live: set[str] | None = None,
                      limit: int | None = None
                      ) -> tuple[list[tuple[str, float, str | None, str | None]], dict[str, Any]]:
        """``orphaned`` plus why the other entries older than the grace are not orphaned: a stats dict
        with ``refused`` (reported by a responding worker), ``held`` and ``why`` (see
        ``not_requeued_summary``)."""
        self._check_reachable("orphaned")
        t0 = time.time()
        if live is None:
            live = self.live_task_ids()
            if live is None:
                raise ActionError("cannot ask the workers what they are running (no reply to inspect)")
        cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(older_than))
        out: list[tuple[str, float, str | None, str | None]] = []
        stats = self._new_stats()
        view = self._liveness(self._settled_for(cutoff, live))
        with self._errors("orphaned"):
            for page in self._iter_unacked_batches(cutoff, limit=limit):
                tags = [t for t, _ in page]
                raws = self.client.hmget(self.keys.unacked, tags)
                parsed = [e for e in (_parse_entry(tag, raw, score)
                                      for (tag, score), raw in zip(page, raws, strict=True)) if e is not None]
                states = self._classified(parsed, view)
                for entry in parsed:
                    u = states[entry.tag]
                    if entry.task_id and entry.task_id in live:
                        stats["refused"].append(entry.tag)
                        self._note_why(stats, entry.tag, u, live=True)
                        continue
                    if u.state != "orphaned":
                        stats["held"].append(entry.tag)
                        self._note_why(stats, entry.tag, u)
                        continue
                    queues = self._queues_for(entry.exchange, entry.routing_key)
                    out.append((entry.tag, entry.score or 0.0, entry.task_id, queues[0] if queues else None))
        return out, stats

    def requeue_orphaned(self, *, older_than: float | None = None, force: bool = False) -> ActionResult:
        """Requeue every orphaned unacked message (every possible holder proven dead, older than a grace).

        The workers are asked first and the cutoff is taken from before that question, so a message
        delivered after the answer is never considered; each move then re-checks the entry's bytes
        and delivery time atomically. Pages of ``BATCH`` entries are read with ZRANGE ... LIMIT while
        holding kombu's ``unacked_mutex``; the ledger is never read whole.

        Args:
            older_than: Only entries delivered more than this many seconds ago (default: a grace of
                ``max(2*interval, 2*inspect_timeout, 2)`` seconds).
            force: Proceed when the workers cannot be asked (then every old entry counts as orphaned).
        """
        self._guard("requeue")
        self._check_reachable("requeue")
        t0 = time.time()
        live = self.live_task_ids()
        if live is None:
            if not force:
                raise ActionError("requeue refused: cannot ask the workers what they are running "
                                  "(no reply to inspect); use force to requeue anyway")
            live = set()
        cutoff = min(t0 - FRESH_MARGIN, time.time() - self._grace(older_than))
        # force never makes a message that may be held orphaned
        view = self._liveness(self._settled_for(cutoff, live))
        stats = self._new_stats()
        moved = 0
        with self._errors("requeue"):
            for page in self._iter_unacked_batches(cutoff):
                with self._sweep_mutex(force):
                    raws = self.client.hmget(self.keys.unacked, [t for t, _ in page])
                    todo: list[_Entry] = []
                    live_entries: list[_Entry] = []
                    for (tag, score), raw in zip(page, raws, strict=True):
                        entry = _parse_entry(tag, raw, score)
                        if entry is None:
                            if raw is None:
                                self.client.zrem(self.keys.unacked_index, tag)
                            else:
                                stats["unroutable"].append(tag)
                        elif entry.task_id and entry.task_id in live:
                            stats["refused"].append(tag)
                            live_entries.append(entry)
                        else:
                            todo.append(entry)
                    states = self._classified([*todo, *live_entries], view)
                    for e in live_entries:
                        self._note_why(stats, e.tag, states[e.tag], live=True)
                    for e in todo:
                        if states[e.tag].state != "orphaned":
                            stats["held"].append(e.tag)
                            self._note_why(stats, e.tag, states[e.tag])
                    todo = [e for e in todo if states[e.tag].state == "orphaned"]
                    moved += self._requeue_entries(todo, stats)
        msg = self._requeue_message(moved, stats, "orphaned message(s)")
        if moved:
            self._record("requeue_orphaned", {"older_than": older_than, "cutoff": cutoff}, moved,
                         force=force, **stats)
        return ActionResult("requeue_orphaned", moved, msg, stats)
