"""The broker reader's unacked side: the ledger window (fingerprint, decode cache), the per-queue counts
of a ledger bigger than the window (HSCAN route steps) and the classification of each window entry.

:class:`UnackedWindow` holds the state between reads and turns replies into entries; it never talks to
Redis: :class:`~collectors.reads.broker.BrokerReader` queues the commands it plans into its pipelines
(the module docstring of :mod:`collectors.reads.broker` lists them, with "Per-queue unacked counts" and
"Unacked classification").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from collectors.core.config import Settings
from collectors.core.messages import decode_unacked, decode_unacked_truncated
from collectors.core.models import DecodedMessage, TaskRef, UnackedEntry, UnackedState
from collectors.reads.broker_plain import bytes_of, text_of

WINDOW_REFETCH = 30
"""A window whose fingerprint did not move is still re-read in full after this many refreshes."""

Pairs = list[tuple[str, float | None]]
"""(delivery tag, reserve score) of window entries, oldest first."""
Window = list[tuple[str, float | None, DecodedMessage, str | None, str | None]]
"""(tag, score, decoded message, exchange, routing key) of the decoded window, oldest first."""
Route = Callable[[str | None, str | None], "str | None"]
"""(exchange, routing key) -> queue, from the binding tables (``BrokerReader.queue_for``)."""


def pairs_of(zr: Any) -> Pairs:
    """(tag, score) pairs of a ``ZRANGE ... WITHSCORES`` reply."""
    return [(text_of(t), float(sc)) for t, sc in zr]


class UnackedWindow:
    """What the broker reader keeps between reads about the unacked ledger (not thread-safe)."""

    def __init__(self, settings: Settings, route: Route) -> None:
        self.settings = settings
        self._route = route
        self._scan_counts_done: dict[str, int] | None = None
        """Unacked entries per queue counted by the last complete HSCAN pass (None: no pass yet)."""
        self._scan_counts_partial: dict[str, int] = {}
        self._scan_entries = 0
        """Ledger entries the current HSCAN pass has visited (to extrapolate the first pass's counts)."""
        self.hscan_cursor = 0
        self._hscan_passes = 0
        self._window_cache: dict[str, tuple[float | None, DecodedMessage, str | None, str | None]] = {}
        """tag -> (score, decoded) of the last window: unchanged entries are not transferred again."""
        self._win: Pairs | None = None
        """(tag, score) of the last window when the ledger is bigger than it (fingerprint mode)."""
        self._win_last: tuple[str, float | None] | None = None
        self._win_reads = 0
        self._route_memo: dict[tuple[str, str], str | None] = {}

    # ---- the window ----
    def fingerprint_mode(self, win_n: int) -> bool:
        """Read only the window's last entry this refresh (the window is re-read when it moved)?"""
        return self._win is not None and win_n > 0 and self._win_reads < WINDOW_REFETCH

    def absorb_sizes(self, hlen_r: Any, zcard_r: Any, zr: Any, fp_mode: bool, win_n: int, errors: list[str]
                     ) -> tuple[int, int, Pairs | None, bool]:
        """(HLEN, ZCARD, window pairs, ledger readable) from round trip 1; pairs None: the window moved
        (fingerprint mode) and must be read again."""
        unacked_total = index_total = 0
        pairs: Pairs | None = []
        ledger_ok = True
        for r in (hlen_r, zcard_r):
            if isinstance(r, Exception):
                errors.append(f"unacked: {r}")
                ledger_ok = False
        if ledger_ok:
            unacked_total, index_total = int(hlen_r), int(zcard_r)
            if isinstance(zr, Exception):
                errors.append(f"unacked: {zr}")
                ledger_ok = False
        if not ledger_ok:
            self._win = None
            unacked_total = index_total = 0
        elif fp_mode:
            last = pairs_of(zr)
            if index_total > win_n and last and last[0] == self._win_last:
                pairs = self._win
                self._win_reads += 1
            else:
                pairs = None  # the window moved: re-read it in round trip 2
        else:
            pairs = pairs_of(zr)
        return unacked_total, index_total, pairs, ledger_ok

    def fetch_plan(self, pairs: Sequence[tuple[str, float | None]], verify: bool
                   ) -> tuple[list[str], list[str]] | None:
        """The window tags not decoded yet (and, when the hash and the index disagree, the ones that are, to
        check). Returns (fetch, check), None when nothing is to be sent."""
        fetch = [t for t, sc in pairs if t not in self._window_cache or self._window_cache[t][0] != sc]
        fetch_set = set(fetch)
        check = [t for t, _sc in pairs if t not in fetch_set] if verify else []
        if not fetch and not check:
            return None
        return fetch, check

    def absorb_window(self, pairs: Sequence[tuple[str, float | None]],
                      plan: tuple[list[str], list[str]] | None, res: Any, errors: list[str]) -> Window:
        """The decoded window, oldest first; refreshes the tag -> decoded cache."""
        fetched: dict[str, Any] = {}
        gone: set[str] = set()
        if plan is not None:
            if isinstance(res, Exception):
                errors.append(f"unacked: {res}")
                self._window_cache = {}
                return []
            fetch, check = plan
            fetched = dict(zip(fetch, res[:len(fetch)], strict=True))
            flags = bytes_of(res[len(fetch)]) if len(res) > len(fetch) else b""
            gone = {t for t, f in zip(check, flags.decode(), strict=False) if f != "1"}
        window: Window = []
        cache: dict[str, tuple[float | None, DecodedMessage, str | None, str | None]] = {}
        for tag, score in pairs:
            item = fetched.get(tag)
            if item is None:
                if tag in gone or tag not in self._window_cache:
                    continue
                _sc, msg, ex, rk = self._window_cache[tag]
            else:
                size = int(item[0])
                if size < 0:
                    continue  # in the index but acked meanwhile (or half-written): not in the ledger
                if len(item) == 2:
                    msg, ex, rk = decode_unacked(bytes_of(item[1]))
                else:
                    msg, ex, rk = decode_unacked_truncated(size, bytes_of(item[1]), bytes_of(item[2]))
            cache[tag] = (score, msg, ex, rk)
            window.append((tag, score, msg, ex, rk))
        self._window_cache = cache
        return window

    def remember_window(self, pairs: Pairs | None, ledger_ok: bool, index_total: int, win_n: int) -> None:
        """Keep this read's window for the fingerprint check of the next ones (only when the ledger is
        bigger than the window)."""
        if ledger_ok and index_total > win_n > 0 and pairs:
            if pairs is not self._win:
                self._win_reads = 0  # read afresh
            self._win, self._win_last = pairs, pairs[-1]
        else:
            self._win, self._win_last, self._win_reads = None, None, 0

    # ---- per-queue counts ----
    def absorb_scan_step(self, res: Any, errors: list[str]) -> None:
        """One ``unacked-scan`` step: its per-route counts, added to the running pass."""
        if isinstance(res, Exception):
            errors.append(f"unacked scan: {res}")
            return
        cursor = int(res[0])
        counts = self._scan_counts_partial
        for line in bytes_of(res[1] or b"").split(b"\n"):
            n, _, route = line.partition(b"\t")
            if n.isdigit():
                self._scan_entries += int(n)
            if not route or route == b"?":
                continue
            ex, _, rk = route.partition(b"\t")
            key = (text_of(ex), text_of(rk))
            if key not in self._route_memo:
                if len(self._route_memo) > 10_000:
                    self._route_memo.clear()
                self._route_memo[key] = self._route(*key)
            q = self._route_memo[key]
            if q:
                counts[q] = counts.get(q, 0) + int(n)
        self.hscan_cursor = cursor
        if cursor == 0:
            self._hscan_passes += 1
            self._scan_counts_done = counts
            self._scan_counts_partial = {}
            self._scan_entries = 0
            self._route_memo.clear()  # bindings may have changed: resolve routes afresh each pass

    def no_scan(self) -> None:
        """The window holds the whole ledger: the counts come from it, any scan pass starts over."""
        self._scan_counts_done = None
        self._scan_counts_partial = {}
        self._scan_entries = 0
        self.hscan_cursor = 0

    def counts(self, entries: Sequence[UnackedEntry], total: int, scanning: bool) -> tuple[dict[str, int], bool]:
        """Unacked entries per queue, and whether those counts are exact."""
        if not scanning:
            counts: dict[str, int] = {}
            for e in entries:
                if e.queue:
                    counts[e.queue] = counts.get(e.queue, 0) + 1
            return counts, True
        if self._scan_counts_done is not None:
            counts = dict(self._scan_counts_done)
        else:  # first pass still running: its partial counts scaled to the ledger size (an estimate)
            scale = total / self._scan_entries if self._scan_entries else 0.0
            counts = {q: round(n * scale) for q, n in self._scan_counts_partial.items()}
        in_window: dict[str, int] = {}
        for e in entries:
            if e.queue:
                in_window[e.queue] = in_window.get(e.queue, 0) + 1
        for q, n in in_window.items():  # window entries are certain: never show fewer
            counts[q] = max(counts.get(q, 0), n)
        return counts, False

    # ---- classification ----
    def classify(self, window: Iterable[tuple[str, float | None, DecodedMessage, str | None, str | None]],
                 now: float, claims: Mapping[str, TaskRef] | None, inspected_at: float | None,
                 grace_s: float) -> list[UnackedEntry]:
        """The window's entries with their state (claimed, orphaned or unknown) and ages."""
        vt = self.settings.visibility_timeout
        ref = inspected_at if inspected_at is not None else now
        out: list[UnackedEntry] = []
        for tag, score, msg, ex, rk in window:
            age = None if score is None else max(0.0, now - score)
            holder: str | None = None
            state: UnackedState
            claim = claims.get(msg.task_id) if (claims is not None and msg.task_id) else None
            if claims is None:
                state = "unknown"
            elif claim is not None:
                state, holder = claim.state, claim.hostname
            elif score is not None and score < ref - grace_s:
                state = "orphaned"
            else:
                state = "unknown"
            out.append(UnackedEntry(
                delivery_tag=tag,
                task_id=msg.task_id,
                task=msg.task,
                queue=self._route(ex, rk),
                priority=msg.priority,
                reserved_at=score,
                age_s=age,
                redelivered=msg.redelivered,
                state=state,
                holder=holder,
                stale=age is not None and age > vt,
                time_to_redelivery_s=None if age is None else vt - age,
                argsrepr=msg.argsrepr,
                kwargsrepr=msg.kwargsrepr,
                exchange=ex,
                routing_key=rk,
                eta=msg.eta,
                size=msg.size,
                decode_error=msg.error,
            ))
        return out
