"""Per-task-name analytics from the task event stream (issue 15): rate, failures, runtimes, queue wait.

``TaskStatsAggregator.observe(event)`` takes the task events the worker monitor receives over
PSUBSCRIBE (``task-sent`` when producers send it, ``task-received/started/succeeded/failed/retried/
rejected/revoked``); ``view(now)`` returns a frozen :class:`TaskStatsView` over a rolling window
(default 5 min). Works without a result backend: nothing here reads results.

Quantiles: a **fixed log-bucket histogram** (bucket ``i`` holds values in ``(γ^(i-1), γ^i]`` with
γ = 1.02/0.98, so any quantile is within 2 % of the true value — the DDSketch mapping, without the
library). Chosen over the ``ddsketch`` package because the rolling window needs *subtraction*: the
window keeps one sparse histogram per 10-s slice and a running sum of them; a slice that leaves the
window is subtracted, so a view is one sort of the window's occupied buckets instead of a merge of 30
sketches per name per refresh, and the same integer buckets are stored as the per-minute history rows
(``History.record_task_minutes``) and re-merged for 1 h / 24 h. Prometheus histograms use their own
fixed ``le`` buckets (:data:`PROM_BUCKETS`) counted cumulatively since start.

Bounded memory: at most ``max_names`` task names (then ``(other)``), at most ``MAX_EXCEPTIONS``
exception groups per name and slice, a bounded live-event deque, and per task id only the
``max_pending`` most recent ``uuid → (name, sent, received, eta)`` entries needed to name the events
that carry no name (started/succeeded/failed) and to compute the queue wait; an entry leaves at the
task's terminal event.

Queue wait: ``started − sent`` when the producer sends ``task-sent`` (``task_send_sent_event``),
otherwise ``started − received`` (labelled ``received→started``: time spent prefetched in the worker
only). A countdown/ETA is not waiting: the wait starts at the ETA when the task has one.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from collectors.core.taskstats import (
    OUTCOMES,
    TaskBaseline,
    TaskEvent,
    TaskException,
    TaskNameStats,
    TaskStatsView,
)

ALPHA = 0.02
"""Relative accuracy of every quantile."""
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_G = math.log(GAMMA)
MIN_VALUE = 1e-4
"""Values at or below this (0.1 ms) share the lowest bucket."""
_MIN_IDX = math.ceil(math.log(MIN_VALUE) / _LOG_G)

SLICE_S = 10.0
"""Granularity of the rolling window (and 1/6 of a history minute)."""
DEFAULT_WINDOW_S = 300.0
OTHER = "(other)"
"""Bucket of every task name beyond ``max_names``."""
UNKNOWN = "(unknown)"
"""Events whose task name is unknown (their task-received came before taskdash started)."""
MAX_EXCEPTIONS = 32
"""Exception groups per name and slice; more go to ``(other exceptions)``."""
SAMPLE_CHARS = 2000
RECENT = 1000
"""Live events kept for the stream."""
PROM_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                   120.0, 300.0, 600.0, 1800.0, 3600.0, math.inf)
"""``le`` bounds of the exported runtime and wait histograms (seconds)."""

EVENTS_OFF_NOTE = ("workers ran tasks but sent no task events: start them with -E "
                   "(celery worker -E, or worker_send_task_events=True), or run taskdash with --enable-events "
                   "(Celery's enable_events broadcast); task-sent needs task_send_sent_event=True on producers")
EVENTS_IDLE_NOTE = ("no task events received yet: if tasks are running, the workers send no events — start them "
                    "with -E (worker_send_task_events=True) or run taskdash with --enable-events")

_IDX = {o: i for i, o in enumerate(OUTCOMES)}
_SENT, _RECEIVED, _STARTED, _SUCCEEDED, _FAILED, _RETRIED, _REJECTED, _REVOKED = range(len(OUTCOMES))
_TERMINAL = (_SUCCEEDED, _FAILED, _REJECTED, _REVOKED)
_EXC_RE = re.compile(r"^([A-Za-z_][\w.]*)\((.*)\)$", re.S)


def bucket_of(v: float) -> int:
    """The log bucket of a non-negative value."""
    if v <= MIN_VALUE:
        return _MIN_IDX
    return math.ceil(math.log(v) / _LOG_G)


def bucket_value(i: int) -> float:
    """The representative value of bucket ``i`` (within ALPHA of every value in it)."""
    if i <= _MIN_IDX:
        return 0.0
    return 2.0 * GAMMA ** i / (GAMMA + 1.0)


def quantiles(hist: Mapping[int, int], qs: Iterable[float]) -> list[float | None]:
    """Quantiles ``qs`` (ascending, 0..1) of a sparse log-bucket histogram (None when empty)."""
    qs = list(qs)
    total = sum(hist.values())
    if total <= 0:
        return [None] * len(qs)
    out: list[float | None] = []
    keys = sorted(hist)
    it = iter(keys)
    cum, key = 0, None
    for q in qs:
        rank = q * (total - 1)
        while cum <= rank or key is None:
            key = next(it, None)
            if key is None:
                break
            cum += hist[key]
        out.append(bucket_value(key if key is not None else keys[-1]))
    return out


def exception_group(exc: Any) -> str:
    """``ValueError: boom`` from the event's ``exception`` repr (``ValueError('boom')``), message cut at 80."""
    text = str(exc or "").strip() or "(no exception)"
    m = _EXC_RE.match(text)
    if m:
        kind, msg = m.group(1), m.group(2).strip()
        if len(msg) >= 2 and msg[0] == msg[-1] and msg[0] in "'\"":
            msg = msg[1:-1]
        return f"{kind}: {msg[:80]}" if msg else kind
    return text[:120]


def _parse_eta(v: Any) -> float | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) and f >= 0 else None


def _add(into: dict[Any, int], frm: Mapping[Any, int], sign: int) -> None:
    for k, n in frm.items():
        left = into.get(k, 0) + sign * n
        if left:
            into[k] = left
        else:
            into.pop(k, None)


class _Slice:
    __slots__ = ("start", "counts", "runtime", "wait_sent", "wait_recv", "rt_max", "exc")

    def __init__(self, start: float) -> None:
        self.start = start
        self.counts = [0] * len(OUTCOMES)
        self.runtime: dict[int, int] = {}
        self.wait_sent: dict[int, int] = {}
        self.wait_recv: dict[int, int] = {}
        self.rt_max: float | None = None
        self.exc: dict[str, int] = {}


class _Name:
    __slots__ = ("slices", "counts", "runtime", "wait_sent", "wait_recv", "exc", "samples", "totals",
                 "rt_prom", "rt_sum", "wait_prom", "wait_sum", "last_seen")

    def __init__(self) -> None:
        self.slices: deque[_Slice] = deque()
        self.counts = [0] * len(OUTCOMES)
        self.runtime: dict[int, int] = {}
        self.wait_sent: dict[int, int] = {}
        self.wait_recv: dict[int, int] = {}
        self.exc: dict[str, int] = {}
        self.samples: dict[str, str] = {}
        self.totals = [0] * len(OUTCOMES)
        self.rt_prom = [0] * len(PROM_BUCKETS)
        self.rt_sum = 0.0
        self.wait_prom = [0] * len(PROM_BUCKETS)
        self.wait_sum = 0.0
        self.last_seen = 0.0

    def slice_at(self, t: float) -> _Slice:
        start = t - (t % SLICE_S)
        if self.slices and self.slices[-1].start >= start:
            return self.slices[-1]  # late/out-of-order events join the newest slice
        s = _Slice(start)
        self.slices.append(s)
        return s

    def expire(self, cutoff: float) -> None:
        while self.slices and self.slices[0].start + SLICE_S <= cutoff:
            s = self.slices.popleft()
            for i, n in enumerate(s.counts):
                self.counts[i] -= n
            _add(self.runtime, s.runtime, -1)
            _add(self.wait_sent, s.wait_sent, -1)
            _add(self.wait_recv, s.wait_recv, -1)
            _add(self.exc, s.exc, -1)
            for k in [k for k in self.samples if k not in self.exc]:
                del self.samples[k]


class TaskStatsAggregator:
    """Rolling per-name aggregates of task events. Fed and read from one thread (the poll thread)."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, *, max_names: int = 200, max_pending: int = 20_000,
                 now: float | None = None) -> None:
        self.window_s = float(window_s)
        self.max_names = max(1, int(max_names))
        self.max_pending = max(16, int(max_pending))
        self._names: dict[str, _Name] = {}
        self._pending: OrderedDict[str, list[Any]] = OrderedDict()
        """uuid -> [name, sent ts, received ts, eta ts]."""
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=RECENT)
        self.events_seen = 0
        self.started_at: float | None = now
        self._processed_base: int | None = None
        self._processed_grew = False
        self.enable_events = False
        """Set by whoever sends the enable_events broadcast (shown in the view)."""
        self._baselines: tuple[TaskBaseline, ...] = ()
        self._baselines_at = -math.inf

    # ---- feeding -------------------------------------------------------------------------------
    def set_window(self, window_s: float) -> None:
        """Widen (or narrow) the rolling window; slices already expired stay gone."""
        self.window_s = max(SLICE_S, float(window_s))

    def _name(self, name: str) -> _Name:
        st = self._names.get(name)
        if st is None:
            if len(self._names) >= self.max_names:
                name = OTHER
                st = self._names.get(OTHER)
            if st is None:
                st = _Name()
                self._names[name] = st
        return st

    def observe_many(self, events: Iterable[Mapping[str, Any]], now: float) -> None:
        for ev in events:
            self.observe(ev, now)

    def observe(self, ev: Mapping[str, Any], now: float) -> None:
        """Count one event (anything that is not a known task event is ignored)."""
        etype = ev.get("type")
        if not isinstance(etype, str) or not etype.startswith("task-"):
            return
        idx = _IDX.get(etype[5:])
        if idx is None:
            return
        if self.started_at is None:
            self.started_at = now
        self.events_seen += 1
        ts = _num(ev.get("timestamp"))
        if ts is None:
            ts = now
        local = ts if abs(ts - now) < 120.0 else now  # a skewed worker clock must not leave the window
        uuid = ev.get("uuid")
        uuid = uuid if isinstance(uuid, str) else None
        raw_name = ev.get("name")
        pend = self._pending.get(uuid) if uuid else None
        name = raw_name if isinstance(raw_name, str) and raw_name else (pend[0] if pend else None)
        if uuid and idx in (_SENT, _RECEIVED):
            if pend is None:
                pend = [name, None, None, None]
                self._pending[uuid] = pend
                if len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
            else:
                self._pending.move_to_end(uuid)
                pend[0] = name or pend[0]
            pend[1 if idx == _SENT else 2] = ts
            eta = _parse_eta(ev.get("eta"))
            if eta is not None:
                pend[3] = eta
        label = name or UNKNOWN
        st = self._name(label)
        sl = st.slice_at(local)
        sl.counts[idx] += 1
        st.counts[idx] += 1
        st.totals[idx] += 1
        st.last_seen = local
        runtime: float | None = None
        exc_text: str | None = None
        if idx == _STARTED and pend is not None:
            base, into = (pend[1], 0) if pend[1] is not None else (pend[2], 1)
            if base is not None:
                if pend[3] is not None and pend[3] > base:
                    base = pend[3]
                wait = max(0.0, ts - base)
                b = bucket_of(wait)
                h = sl.wait_sent if into == 0 else sl.wait_recv
                h[b] = h.get(b, 0) + 1
                w = st.wait_sent if into == 0 else st.wait_recv
                w[b] = w.get(b, 0) + 1
                st.wait_prom[bisect.bisect_left(PROM_BUCKETS, wait)] += 1
                st.wait_sum += wait
        elif idx == _SUCCEEDED:
            runtime = _num(ev.get("runtime"))
            if runtime is not None:
                b = bucket_of(runtime)
                sl.runtime[b] = sl.runtime.get(b, 0) + 1
                st.runtime[b] = st.runtime.get(b, 0) + 1
                if sl.rt_max is None or runtime > sl.rt_max:
                    sl.rt_max = runtime
                st.rt_prom[bisect.bisect_left(PROM_BUCKETS, runtime)] += 1
                st.rt_sum += runtime
        elif idx == _FAILED:
            exc_text = str(ev.get("exception") or "")
            group = exception_group(exc_text)
            if group not in sl.exc and len(sl.exc) >= MAX_EXCEPTIONS:
                group = "(other exceptions)"
            sl.exc[group] = sl.exc.get(group, 0) + 1
            st.exc[group] = st.exc.get(group, 0) + 1
            tb = ev.get("traceback")
            if isinstance(tb, str) and tb:
                st.samples[group] = tb[-SAMPLE_CHARS:]
            elif group not in st.samples:
                st.samples[group] = exc_text[:SAMPLE_CHARS]
        if uuid and idx in _TERMINAL and pend is not None:
            self._pending.pop(uuid, None)
        host = ev.get("hostname")
        self._recent.append((ts, etype[5:], label, uuid, host if isinstance(host, str) else None,
                             runtime, exc_text[:200] if exc_text else None))

    def observe_processed(self, processed_total: int | None) -> None:
        """Tasks the workers say they processed (heartbeats): growth with no task event proves events off."""
        if processed_total is None:
            return
        if self._processed_base is None or processed_total < self._processed_base:
            self._processed_base = processed_total
        elif processed_total > self._processed_base:
            self._processed_grew = True

    # ---- reading -------------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        cutoff = now - self.window_s
        for st in self._names.values():
            st.expire(cutoff)

    def covered_s(self, now: float) -> float:
        since = self.started_at if self.started_at is not None else now
        return max(1.0, min(self.window_s, now - since))

    def state(self) -> tuple[str, str | None]:
        if self.events_seen:
            return "ok", None
        if self._processed_grew:
            return "off", EVENTS_OFF_NOTE
        return "idle", EVENTS_IDLE_NOTE

    def name_stats(self, name: str, st: _Name, covered: float) -> TaskNameStats:
        c = st.counts
        done = c[_SUCCEEDED] + c[_FAILED]
        rt = quantiles(st.runtime, (0.5, 0.95, 0.99))
        rt_max = max((s.rt_max for s in st.slices if s.rt_max is not None), default=None)
        if rt_max is not None:
            rt = [min(v, rt_max) if v is not None else None for v in rt]
        if st.wait_sent:
            wait, wsrc = quantiles(st.wait_sent, (0.5, 0.95)), "sent→started"
        elif st.wait_recv:
            wait, wsrc = quantiles(st.wait_recv, (0.5, 0.95)), "received→started"
        else:
            wait, wsrc = [None, None], None
        top = sorted(st.exc.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        cum, rt_hist = 0, []
        for le, n in zip(PROM_BUCKETS, st.rt_prom, strict=True):
            cum += n
            rt_hist.append((le, cum))
        cum, w_hist = 0, []
        for le, n in zip(PROM_BUCKETS, st.wait_prom, strict=True):
            cum += n
            w_hist.append((le, cum))
        return TaskNameStats(
            name=name, counts=tuple(c), per_min=done * 60.0 / covered,
            failure_rate=(c[_FAILED] / done) if done else None,
            runtime_p50=rt[0], runtime_p95=rt[1], runtime_p99=rt[2], runtime_max=rt_max,
            wait_p50=wait[0], wait_p95=wait[1], wait_source=wsrc,  # type: ignore[arg-type]
            top_exceptions=tuple(TaskException(k, n, st.samples.get(k)) for k, n in top),
            last_seen=st.last_seen or None, totals=tuple(st.totals),
            runtime_hist=tuple(rt_hist), runtime_sum=st.rt_sum, wait_hist=tuple(w_hist), wait_sum=st.wait_sum)

    def view(self, now: float, *, recent: int = 200, history: Any | None = None) -> TaskStatsView:
        """The frozen per-name view now (names active in the window first, by rate).

        With a ``History`` the view carries the same window 1 h and 24 h ago (re-read once a minute).
        """
        self.expire(now)
        if history is not None and hasattr(history, "task_minutes") and now - self._baselines_at >= 60.0:
            self._baselines_at = now
            self._baselines = baselines(history, now, self.window_s)
        covered = self.covered_s(now)
        tasks = [self.name_stats(n, st, covered) for n, st in self._names.items()]
        tasks.sort(key=lambda t: (-t.per_min, -sum(t.counts), t.name))
        state, note = self.state()
        rec = tuple(TaskEvent(*r) for r in list(self._recent)[-recent:]) if recent > 0 else ()
        return TaskStatsView(window_s=covered, tasks=tuple(tasks), state=state, note=note,  # type: ignore[arg-type]
                             events_seen=self.events_seen, recent=rec, enable_events=self.enable_events,
                             baselines=self._baselines if history is not None else ())

    def pending(self) -> int:
        """uuid entries held for naming and wait computation (bounded by ``max_pending``)."""
        return len(self._pending)

    # ---- history -------------------------------------------------------------------------------
    def minutes(self, after: float, now: float) -> list[tuple[float, str, list[int], dict[int, int],
                                                               dict[int, int], str | None, float | None]]:
        """Closed minutes after ``after`` (epoch s of a minute start) from the slices still held:
        ``(minute start, name, counts, runtime buckets, wait buckets, wait source, runtime max)``."""
        current = now - (now % 60.0)
        out: dict[tuple[float, str], list[Any]] = {}
        for name, st in self._names.items():
            for s in st.slices:
                m = s.start - (s.start % 60.0)
                if m <= after or m >= current:
                    continue
                row = out.get((m, name))
                if row is None:
                    row = out[(m, name)] = [m, name, [0] * len(OUTCOMES), {}, {}, {}, None]
                for i, n in enumerate(s.counts):
                    row[2][i] += n
                _add(row[3], s.runtime, 1)
                _add(row[4], s.wait_sent, 1)
                _add(row[5], s.wait_recv, 1)
                if s.rt_max is not None and (row[6] is None or s.rt_max > row[6]):
                    row[6] = s.rt_max
        rows = []
        for m, name, counts, rt, ws, wr, mx in sorted(out.values(), key=lambda r: (r[0], r[1])):
            wait, src = (ws, "sent→started") if ws else ((wr, "received→started") if wr else ({}, None))
            rows.append((m, name, counts, rt, wait, src, mx))
        return rows


def summarize(rows: Iterable[tuple[Any, ...]], span_s: float) -> dict[str, TaskBaseline]:
    """Per-name rate, failure rate and p95s of history minute rows covering ``span_s`` seconds."""
    merged: dict[str, list[Any]] = {}
    for _m, name, counts, rt, wait, _src, _mx in rows:
        acc = merged.get(name)
        if acc is None:
            acc = merged[name] = [[0] * len(OUTCOMES), {}, {}]
        for i, n in enumerate(counts[: len(OUTCOMES)]):
            acc[0][i] += n
        _add(acc[1], rt, 1)
        _add(acc[2], wait, 1)
    out = {}
    for name, (counts, rt, wait) in merged.items():
        done = counts[_SUCCEEDED] + counts[_FAILED]
        out[name] = TaskBaseline(name, "", done * 60.0 / max(span_s, 1.0), counts[_FAILED] / done if done else None,
                                 quantiles(rt, (0.95,))[0], quantiles(wait, (0.95,))[0])
    return out


def baselines(history: Any, now: float, window_s: float) -> tuple[TaskBaseline, ...]:
    """The window ending 1 h ago and 24 h ago per name, from ``History.task_minutes``."""
    out: list[TaskBaseline] = []
    for label, offset in (("1h ago", 3600.0), ("yesterday", 86400.0)):
        end = now - offset
        rows = history.task_minutes(end - window_s, end)
        for name, b in summarize(rows, window_s).items():
            out.append(TaskBaseline(name, label, b.per_min, b.failure_rate, b.runtime_p95, b.wait_p95))
    return tuple(out)


def movers(view: TaskStatsView, *, factor: float = 2.0, min_per_min: float = 1.0) -> list[tuple[float, str]]:
    """Top movers vs 1 h ago, biggest first: ``(score, "billing.charge p95 ×3.1 vs 1 h ago")``."""
    out: list[tuple[float, str]] = []
    for t in view.tasks:
        b = view.baseline(t.name, "1h ago")
        if b is None or t.per_min < min_per_min:
            continue
        if t.runtime_p95 and b.runtime_p95 and t.runtime_p95 >= factor * b.runtime_p95:
            r = t.runtime_p95 / b.runtime_p95
            out.append((r, f"{t.name} p95 ×{r:.1f} vs 1 h ago ({b.runtime_p95:.3g}s → {t.runtime_p95:.3g}s)"))
        fr, br = t.failure_rate or 0.0, b.failure_rate or 0.0
        if fr >= 0.05 and fr >= factor * max(br, 0.01):
            r = fr / max(br, 0.01)
            out.append((r, f"{t.name} failing {fr:.0%} vs {br:.0%} 1 h ago"))
        if b.per_min >= min_per_min and t.per_min >= factor * b.per_min:
            r = t.per_min / b.per_min
            out.append((r, f"{t.name} rate ×{r:.1f} vs 1 h ago ({b.per_min:.3g} → {t.per_min:.3g}/min)"))
    out.sort(key=lambda x: -x[0])
    return out
