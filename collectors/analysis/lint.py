"""Config linter: the Celery/kombu settings behind duplicate executions and endless redelivery loops.

``gather()`` reads everything in ONE inspect window over taskdash's own kombu connection (ack
emulation off, so the read can never trigger kombu's restore sweep): ``stats`` (pool size, prefetch
count, each worker's broker transport options), ``conf`` (the worker's Celery settings),
``registered`` (per-task ``acks_late``/``reject_on_worker_lost``/``retry_on_worker_lost``/
``max_retries``), ``active`` (observed runtimes), ``scheduled`` (ETA/countdown messages held in
memory) and ``active_queues``; meanwhile it PSUBSCRIBEs the event channels to read each worker's
heartbeat ``timestamp`` (the worker's wall clock) and compares it with Redis ``TIME``. ``lint()`` is
pure: it turns those inputs (plus the ``-A`` app's settings when given) into ``Finding`` rows, each
with a one-line reason and the fix. Rules (docs/redis-layout.md#restore-sweep-and-visibility-timeout, #late-acks-and-redelivery-loops):

- ``eta-beyond-visibility``: an ETA/countdown message is held unacked longer than visibility_timeout
  -> any consumer's restore sweep hands it out again (duplicate run).
- ``runtime-beyond-visibility``: a task ran longer than visibility_timeout -> same.
- ``reject-on-worker-lost-unbounded``: acks_late + reject_on_worker_lost without a bound -> a task
  that kills its process is redelivered forever (celery issue #9082).
- ``prefetch-long-tasks``: prefetch multiplier > 1 with long tasks -> prefetched messages wait
  (unacked) behind them and count against visibility_timeout.
- ``task-events-off``: no task events -> monitors miss task-received/failed; poison detection is slower.
- ``result-extended-off``: no stored args/name -> a failed task cannot be retried from its result.
- ``results-never-expire``: ``result_expires`` None/0 -> the result backend grows without bound.
- ``clock-skew``: a worker's clock is far from Redis' -> unacked scores (worker wall-clock) are off,
  so restores come early (duplicates) or late.
- ``visibility-timeout-mismatch``: workers (or the app) use different visibility timeouts -> the
  smallest one wins for every queue.
- ``ghost-worker`` (issue 12): a worker whose liveness is ``ghost`` — heartbeating and answering inspect,
  but not consuming a queue it consumes (a backlog there while its processed count stays flat with free
  slots; the known "stops consuming after a Redis reconnect" failure) -> its queue backs up while every
  monitor calls it healthy. Liveness needs watching over time, not one window: the rule reads the
  workers' decided liveness (``workers_liveness``: the dashboard's last refresh for ``:lint``), or
  ``run_lint(observe=SECONDS)`` (``taskdash lint --observe``) watches heartbeats, inspect and queue depths
  that long first and decides it the way the collector does (collectors/analysis/liveness.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from collectors.core.config import DEFAULT_VISIBILITY_TIMEOUT, Settings, mask_text, redis_client
from collectors.core.messages import eta_timestamp
from collectors.core.models import WorkerInfo
from collectors.keyspace.keys import KeyLayout
from collectors.reads.workers import WorkerMonitor, decode_event_message

log = logging.getLogger(__name__)

Severity = Literal["warning", "info"]

RULES: dict[str, str] = {
    "eta-beyond-visibility": "ETA/countdown longer than visibility_timeout",
    "runtime-beyond-visibility": "task runtime longer than visibility_timeout",
    "reject-on-worker-lost-unbounded": "acks_late + reject_on_worker_lost without a bound",
    "prefetch-long-tasks": "prefetch multiplier > 1 with long tasks",
    "task-events-off": "task events disabled",
    "result-extended-off": "result_extended off",
    "results-never-expire": "results never expire",
    "clock-skew": "worker clock far from Redis' clock",
    "visibility-timeout-mismatch": "visibility_timeout differs between workers/app",
    "ghost-worker": "worker heartbeating and answering but not consuming (ghost)",
}
"""Rule id -> short title (for ``taskdash lint --help`` and the ``:lint`` view)."""

TASK_INFO_ITEMS = ("acks_late", "reject_on_worker_lost", "retry_on_worker_lost", "max_retries")
"""Task attributes asked from ``inspect registered``."""

LINT_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ping", {}),
    ("stats", {}),
    ("conf", {"with_defaults": True}),
    ("registered", {"taskinfoitems": list(TASK_INFO_ITEMS)}),
    ("active", {"safe": True}),
    ("scheduled", {}),
    ("active_queues", {}),
)
"""Remote-control commands of the lint window."""

HEARTBEAT_WAIT_S = 2.6
"""Longest wait for one heartbeat of every worker (they come every 2 s by default)."""
EVENTS_WAIT_S = 4.6
"""Longest wait for the evidence on task events of a worker whose conf says they are off (``-E`` is invisible
to inspect): a task event from it (on), or two heartbeats whose ``processed`` counts frame tasks it ran
without sending one (off)."""
OBSERVE_SAMPLE_S = 1.0
"""Queue depths are sampled this often while ``observe`` watches (the ghost rule's backlog clock)."""


def observe_ghost_after(observe: float) -> float:
    """The ghost threshold of an ``observe``-second watch: 3/4 of it (a backlog and a flat processed count
    must both have lasted that long), at most the dashboard's ``GHOST_AFTER_S`` (reached with 40 s)."""
    from collectors.analysis.liveness import GHOST_AFTER_S

    return min(GHOST_AFTER_S, max(3.0, 0.75 * observe))


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: which rule, how bad, why (one line) and how to fix it (one line)."""

    rule: str
    severity: Severity
    message: str
    fix: str
    subject: str | None = None
    """What it is about: a worker hostname, a task name, "app" or None for the whole system."""

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "subject": self.subject,
                "message": self.message, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class Scheduled:
    """An ETA/countdown message a worker holds in memory (``inspect scheduled``)."""

    hostname: str
    task: str | None
    task_id: str | None
    eta: float
    """Epoch seconds."""


@dataclass(slots=True)
class LintInputs:
    """Everything ``gather`` read in its window (raw, JSON-decoded replies keyed by hostname)."""

    workers_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers_conf: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers_tasks: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """hostname -> task name -> attribute -> str(value) (from ``inspect registered``)."""
    observed_runtimes: dict[str, float] = field(default_factory=dict)
    """task name -> longest runtime seen so far (seconds)."""
    worker_runtimes: dict[str, float] = field(default_factory=dict)
    """hostname -> longest runtime of a task it is running."""
    queue_runtimes: dict[str, float] = field(default_factory=dict)
    """queue -> longest runtime of a task delivered from it."""
    workers_queues: dict[str, list[str]] = field(default_factory=dict)
    """hostname -> queues it consumes (``inspect active_queues``)."""
    scheduled: list[Scheduled] = field(default_factory=list)
    worker_clocks: dict[str, float] = field(default_factory=dict)
    """hostname -> worker clock minus Redis clock (seconds), from heartbeat timestamps."""
    task_events_from: set[str] = field(default_factory=set)
    processed_during: dict[str, int] = field(default_factory=dict)
    """hostname -> tasks it finished between two of its heartbeats seen in the window (their ``processed``)."""
    """Workers that sent task events during the window."""
    redis_time: float | None = None
    window_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    workers_liveness: list[WorkerInfo] = field(default_factory=list)
    """Worker rows with their liveness decided (``observe`` > 0, or given): the ghost rule's input."""

    @property
    def hostnames(self) -> list[str]:
        return sorted(set(self.workers_stats) | set(self.workers_conf) | set(self.workers_tasks))


@dataclass(frozen=True, slots=True)
class LintReport:
    """Findings plus what was looked at (for the CLI and the ``:lint`` view)."""

    findings: tuple[Finding, ...]
    workers: tuple[str, ...]
    app: str | None
    visibility_timeout: float
    redis_time: float | None
    errors: tuple[str, ...] = ()

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    def to_json(self) -> dict[str, Any]:
        return {"findings": [f.to_json() for f in self.findings], "workers": list(self.workers),
                "app": self.app, "visibility_timeout": self.visibility_timeout,
                "redis_time": self.redis_time, "errors": list(self.errors),
                "warnings": len(self.warnings)}


# ---- value parsing ---------------------------------------------------------------------------------
_TD_RE = re.compile(r"^(?:(?P<days>-?\d+) days?, )?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)$")


def seconds(value: Any) -> float | None:
    """A duration from a Celery setting as seen in the app or in ``inspect conf`` (None = unset).

    ``inspect conf`` turns timedeltas into ``str(timedelta)`` ("1 day, 0:00:00").
    """
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        m = _TD_RE.match(text)
        if m:
            return (int(m.group("days") or 0) * 86400 + int(m.group("h")) * 3600 + int(m.group("m")) * 60
                    + float(m.group("s")))
        with contextlib.suppress(ValueError):
            return float(text)
    return None


def _truthy(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off", ""):
            return False
        if low == "none":
            return None
    return None


def _eta_epoch(eta: Any) -> float | None:
    """Epoch seconds of an ETA given as a number or Celery's ISO-8601 string."""
    if isinstance(eta, int | float):
        return float(eta)
    return eta_timestamp(eta)


def parse_registered(items: Any) -> dict[str, dict[str, str]]:
    """``["name [acks_late=True max_retries=3]", "other"]`` -> {name: {attr: value}}."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(items, list):
        return out
    for item in items:
        if not isinstance(item, str):
            continue
        name, _, rest = item.partition(" [")
        attrs: dict[str, str] = {}
        for pair in rest.rstrip("]").split():
            key, eq, value = pair.partition("=")
            if eq:
                attrs[key] = value
        out[name.strip()] = attrs
    return out


def _span(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    if s >= 60:
        return f"{s / 60:.1f}min"
    return f"{s:.1f}s"


def _names(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# ---- gathering -------------------------------------------------------------------------------------
def observe_liveness(settings: Settings, monitor: WorkerMonitor, seconds: float
                     ) -> tuple[list[WorkerInfo], list[str]]:
    """Watch the workers ``seconds`` (the monitor's heartbeats, inspect windows and connection probes, and
    the queue depths every OBSERVE_SAMPLE_S) and decide their liveness as the collector does, with the
    ghost threshold ``observe_ghost_after(seconds)``. Returns (worker rows, problems); never raises."""
    from collectors.analysis.liveness import BacklogClock, annotate_workers, decide_all
    from collectors.reads.broker import BrokerReader

    errors: list[str] = []
    client = None
    try:
        client = redis_client(settings.broker_url, settings)
        reader = BrokerReader(settings, client)
        clock = BacklogClock()
        backlog: Mapping[str, float] = {}
        monitor.start()
        deadline = time.monotonic() + seconds
        while True:
            now = time.time()
            wv = monitor.view(now)
            try:
                bv = reader.read(now=now, worker_queues=wv.worker_queues, claims=None,
                                 inspected_at=wv.inspected_at)
                backlog = clock.observe(bv.queues, now)
            except Exception as exc:  # noqa: BLE001 - the backlog clock restarts; reported once
                msg = f"queue depths: {mask_text(f'{type(exc).__name__}: {exc}', settings.broker_url)}"
                if msg not in errors:
                    errors.append(msg)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(OBSERVE_SAMPLE_S, left))
        now = time.time()
        wv = monitor.view(now)
        s = settings
        decided = decide_all(wv.incarnations, now, visibility_timeout=s.visibility_timeout,
                             reply_fresh_s=2 * s.inspect_interval + s.inspect_timeout + 1.0,
                             backlog_since=backlog, ghost_after=observe_ghost_after(seconds))
        return list(annotate_workers(wv.workers, decided)), errors
    except Exception as exc:  # noqa: BLE001 - the config rules still run
        errors.append(f"liveness: {mask_text(f'{type(exc).__name__}: {exc}', settings.broker_url)}")
        return [], errors
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def gather(settings: Settings, monitor: WorkerMonitor | None = None, *, timeout: float | None = None,
           heartbeat_wait: float = HEARTBEAT_WAIT_S, observe: float = 0.0) -> LintInputs:
    """Read workers' stats/conf/registered/active/scheduled and clocks in one window; never raises.

    Args:
        settings: broker URL, exchanges, transport options.
        monitor: a WorkerMonitor whose kombu connection (ack emulation off) is reused; one is made
            (and stopped) when None.
        timeout: inspect window (default ``settings.inspect_timeout``); the window also waits up to
            ``heartbeat_wait`` seconds for one heartbeat of every worker that answered.
        heartbeat_wait: longest wait for heartbeats (0 skips the clock check).
        observe: seconds to watch the workers first for their liveness (``observe_liveness``; the ghost
            rule), 0 to skip.
    """
    inputs = LintInputs()
    own = monitor is None
    mon = monitor or WorkerMonitor(settings)
    if observe > 0:
        try:
            inputs.workers_liveness, problems = observe_liveness(settings, mon, observe)
            inputs.errors.extend(problems)
        except BaseException:
            if own:
                with contextlib.suppress(Exception):
                    mon.stop()
            raise
    hb: dict[str, tuple[float, float]] = {}
    """hostname -> (worker timestamp, local receive time)."""
    hb_processed: dict[str, tuple[int, int, int]] = {}
    """hostname -> (first processed count, latest, heartbeats seen) in the window."""
    events_from: set[str] = set()
    stop = threading.Event()
    sub_ready = threading.Event()
    sub_error: list[str] = []
    lock = threading.Lock()
    offset = 0.0  # redis clock - local clock
    t0 = time.monotonic()
    try:
        client = redis_client(settings.broker_url, settings)
        try:
            local0 = time.time()
            secs, micros = client.time()
            local1 = time.time()
            inputs.redis_time = secs + micros / 1e6
            offset = inputs.redis_time - (local0 + local1) / 2
        except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
            inputs.errors.append(f"redis TIME: {mask_text(str(exc), settings.broker_url)}")
            client = None

        def listen() -> None:
            pubsub = None
            try:
                assert client is not None
                db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(mon.event_pattern(db))
                sub_ready.set()
                while not stop.is_set():
                    msg = pubsub.get_message(timeout=0.1)
                    if msg is None or msg.get("type") != "pmessage":
                        continue
                    received = time.time()
                    for ev in decode_event_message(msg.get("data") or b""):
                        host = ev.get("hostname")
                        if not isinstance(host, str):
                            continue
                        with lock:
                            if ev["type"] in ("worker-heartbeat", "worker-online"):
                                ts = ev.get("timestamp")
                                if isinstance(ts, int | float):
                                    hb[host] = (float(ts), received)
                                done = ev.get("processed")
                                if ev["type"] == "worker-heartbeat" and isinstance(done, int):
                                    first, _, seen = hb_processed.get(host, (done, done, 0))
                                    hb_processed[host] = (first, done, seen + 1)
                            elif ev["type"].startswith("task-"):
                                events_from.add(host)
            except Exception as exc:  # noqa: BLE001
                sub_error.append(mask_text(f"{type(exc).__name__}: {exc}", settings.broker_url))
            finally:
                sub_ready.set()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

        listener = None
        if client is not None and heartbeat_wait > 0:
            listener = threading.Thread(target=listen, name="taskdash-lint-events", daemon=True)
            listener.start()
            sub_ready.wait(2.0)
        replies: dict[str, dict[str, Any]] = {}
        try:
            replies = inspect_window(mon, LINT_METHODS, timeout or settings.inspect_timeout)
        except Exception as exc:  # noqa: BLE001
            inputs.errors.append(f"inspect: {mask_text(f'{type(exc).__name__}: {exc}', settings.broker_url)}")
        responders: set[str] = set()
        for per_node in replies.values():
            responders.update(per_node)
        if listener is not None:
            window = timeout or settings.inspect_timeout
            deadline = t0 + heartbeat_wait + window
            # workers whose conf says task events are off: wait for evidence either way (see EVENTS_WAIT_S)
            unsure = {h for h, c in (replies.get("conf") or {}).items()
                      if isinstance(c, Mapping) and not _truthy(c.get("worker_send_task_events"))}
            events_deadline = t0 + max(heartbeat_wait, EVENTS_WAIT_S) + window
            while time.monotonic() < max(deadline, events_deadline if unsure else deadline):
                with lock:
                    beats = responders and responders <= hb.keys()
                    settled = all(h in events_from or hb_processed.get(h, (0, 0, 0))[2] >= 2 for h in unsure)
                if beats and (settled or time.monotonic() >= events_deadline):
                    break
                if beats and not unsure:
                    break
                time.sleep(0.05)
            stop.set()
            listener.join(2.0)
        inputs.errors.extend(sub_error)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
    finally:
        if own:
            with contextlib.suppress(Exception):
                mon.stop()
    inputs.window_s = time.monotonic() - t0
    _fill(inputs, replies, hb, events_from, offset)
    inputs.processed_during = {h: last - first for h, (first, last, seen) in hb_processed.items() if seen >= 2}
    return inputs


def _fill(inputs: LintInputs, replies: Mapping[str, Mapping[str, Any]], hb: Mapping[str, tuple[float, float]],
          events_from: set[str], offset: float) -> None:
    for host, stats in (replies.get("stats") or {}).items():
        if isinstance(stats, Mapping):
            inputs.workers_stats[host] = dict(stats)
    for host, conf in (replies.get("conf") or {}).items():
        if isinstance(conf, Mapping):
            inputs.workers_conf[host] = dict(conf)
    for host, items in (replies.get("registered") or {}).items():
        inputs.workers_tasks[host] = parse_registered(items)
    for host, items in (replies.get("active_queues") or {}).items():
        if isinstance(items, list):
            inputs.workers_queues[host] = [q["name"] for q in items
                                           if isinstance(q, Mapping) and isinstance(q.get("name"), str)]
    for host, (ts, received) in hb.items():
        inputs.worker_clocks[host] = ts - (received + offset)
    inputs.task_events_from = set(events_from)
    redis_now = inputs.redis_time if inputs.redis_time is not None else time.time()
    for host, items in (replies.get("active") or {}).items():
        if not isinstance(items, list):
            continue
        worker_now = redis_now + inputs.worker_clocks.get(host, 0.0)
        for info in items:
            if not isinstance(info, Mapping):
                continue
            start = info.get("time_start")
            if not isinstance(start, int | float):
                continue
            runtime = max(0.0, worker_now - float(start))
            name = info.get("name") if isinstance(info.get("name"), str) else "?"
            inputs.observed_runtimes[name] = max(inputs.observed_runtimes.get(name, 0.0), runtime)
            inputs.worker_runtimes[host] = max(inputs.worker_runtimes.get(host, 0.0), runtime)
            di = info.get("delivery_info") if isinstance(info.get("delivery_info"), Mapping) else {}
            queue = di.get("routing_key")
            if isinstance(queue, str):
                inputs.queue_runtimes[queue] = max(inputs.queue_runtimes.get(queue, 0.0), runtime)
    for host, items in (replies.get("scheduled") or {}).items():
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, Mapping):
                continue
            eta = _eta_epoch(item.get("eta"))
            req = item.get("request") if isinstance(item.get("request"), Mapping) else {}
            if eta is not None:
                inputs.scheduled.append(Scheduled(
                    hostname=host, task=req.get("name") if isinstance(req.get("name"), str) else None,
                    task_id=req.get("id") if isinstance(req.get("id"), str) else None, eta=eta))


def inspect_window(monitor: WorkerMonitor, methods: Iterable[tuple[str, Mapping[str, Any]]],
                   timeout: float) -> dict[str, dict[str, Any]]:
    """Publish several remote-control commands to ONE reply queue and collect every reply.

    Same protocol as ``WorkerMonitor``'s window (docs/redis-layout.md#remote-control-and-reply-queues), over the monitor's kombu
    connection (ack emulation off). Lasts ``timeout`` seconds (replies of unknown workers can come
    at any time). Returns method -> {hostname: reply}. Replies are JSON only (never unpickled).
    """
    from kombu import Consumer, Exchange, Producer, Queue

    s = monitor.settings
    methods = list(methods)
    oid = str(uuid.uuid4())
    tickets = {str(uuid.uuid4()): m for m, _ in methods}
    by_method = {m: t for t, m in tickets.items()}
    replies: dict[str, dict[str, Any]] = {m: {} for m, _ in methods}
    with monitor._conn_lock:  # noqa: SLF001 - the one kombu connection taskdash keeps
        conn = monitor._connection()  # noqa: SLF001
        try:
            chan = conn.default_channel
            layout = KeyLayout.from_settings(s)
            exchange = Exchange(layout.pidbox_exchange, type="fanout", durable=False, delivery_mode="transient")
            reply_exchange = Exchange(layout.reply_exchange, type="direct", durable=False,
                                      delivery_mode="transient")
            queue = Queue(f"{oid}.{reply_exchange.name}", exchange=reply_exchange, routing_key=oid,
                          durable=False, auto_delete=True, expires=10.0, message_ttl=300.0)

            def on_message(message: Any) -> None:
                method = tickets.get(message.headers.get("ticket"))
                if method is None:
                    return
                try:
                    body = message.decode()
                except Exception:  # noqa: BLE001 - pickle (ContentDisallowed) or garbage
                    return
                if isinstance(body, Mapping):
                    for node, value in body.items():
                        replies[method][str(node)] = value

            bound = queue(chan)
            bound.declare()
            consumer = Consumer(chan, [bound], accept=["application/json"], no_ack=True,
                                on_message=on_message)
            try:
                consumer.consume()
                producer = Producer(chan, auto_declare=False)
                deadline = time.monotonic() + max(0.05, timeout)
                for method, args in methods:
                    producer.publish(
                        {"method": method, "arguments": dict(args), "destination": None, "pattern": None,
                         "matcher": None, "ticket": by_method[method],
                         "reply_to": {"exchange": reply_exchange.name, "routing_key": oid}},
                        exchange=exchange.name, declare=[exchange], serializer="json", retry=False,
                        headers={"clock": 0, "expires": time.time() + timeout},
                    )
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        conn.drain_events(timeout=remaining)
                    except TimeoutError:
                        break
            finally:
                with contextlib.suppress(Exception):
                    consumer.cancel()
                with contextlib.suppress(Exception):
                    chan.after_reply_message_received(bound.name)
        except Exception:
            monitor._drop_connection()  # noqa: SLF001
            raise
    return replies


# ---- the rules ---------------------------------------------------------------------------------------
def _app_conf(app: Any) -> Mapping[str, Any]:
    return app.conf if app is not None else {}


def _app_tasks(app: Any) -> dict[str, dict[str, str]]:
    """Per-task options of the ``-A`` app, in the same shape as ``inspect registered`` replies."""
    if app is None:
        return {}
    with contextlib.suppress(Exception):
        app.loader.import_default_modules()
    out: dict[str, dict[str, str]] = {}
    try:
        tasks = dict(app.tasks)
    except Exception:  # noqa: BLE001 - a broken app must not break the linter
        return out
    for name, task in tasks.items():
        if name.startswith("celery."):
            continue
        out[name] = {k: str(getattr(task, k)) for k in TASK_INFO_ITEMS if getattr(task, k, None) is not None}
    return out


def _worker_vt(stats: Mapping[str, Any]) -> float:
    broker = stats.get("broker") if isinstance(stats.get("broker"), Mapping) else {}
    topts = broker.get("transport_options") if isinstance(broker.get("transport_options"), Mapping) else {}
    return seconds(topts.get("visibility_timeout")) or DEFAULT_VISIBILITY_TIMEOUT


def lint(
    settings: Settings,
    app: Any | None = None,
    workers_stats: Mapping[str, Mapping[str, Any]] | None = None,
    workers_conf: Mapping[str, Mapping[str, Any]] | None = None,
    observed_runtimes: Mapping[str, float] | None = None,
    redis_time: float | None = None,
    *,
    workers_tasks: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
    worker_runtimes: Mapping[str, float] | None = None,
    queue_runtimes: Mapping[str, float] | None = None,
    workers_queues: Mapping[str, Iterable[str]] | None = None,
    scheduled: Iterable[Scheduled] = (),
    worker_clocks: Mapping[str, float] | None = None,
    task_events_from: Iterable[str] = (),
    processed_during: Mapping[str, int] | None = None,
    long_task_s: float = 60.0,
    max_clock_skew_s: float = 2.0,
    workers_liveness: Iterable[WorkerInfo] = (),
) -> list[Finding]:
    """Findings for the given configuration and observations (pure; no I/O).

    Args:
        settings: taskdash settings (``visibility_timeout`` is the app's or the default).
        app: the ``-A`` Celery app, if any (its settings and task options are checked too).
        workers_stats: hostname -> ``inspect stats`` reply.
        workers_conf: hostname -> ``inspect conf`` reply (with defaults).
        observed_runtimes: task name -> longest runtime seen (seconds).
        redis_time: Redis ``TIME`` in epoch seconds ("now" for ETAs; local time when None).
        workers_tasks: hostname -> task name -> options (``inspect registered`` with TASK_INFO_ITEMS).
        worker_runtimes: hostname -> longest runtime of a task it runs.
        queue_runtimes: queue -> longest runtime of a task delivered from it.
        workers_queues: hostname -> queues it consumes (a worker is exposed to the long tasks of
            its queues; without it, to every long task it has registered).
        scheduled: ETA/countdown messages workers hold.
        worker_clocks: hostname -> worker clock minus Redis clock (seconds).
        task_events_from: workers seen sending task events.
        processed_during: hostname -> tasks it finished while task events were watched (two heartbeats'
            ``processed``); task events are called off only on this evidence, never on silence alone.
        long_task_s: a task running this long counts as "long" for the prefetch rule.
        max_clock_skew_s: tolerated clock difference between a worker and Redis.
        workers_liveness: worker rows with their liveness decided by evidence (the ghost rule).
    """
    stats = {h: dict(v) for h, v in (workers_stats or {}).items()}
    confs = {h: dict(v) for h, v in (workers_conf or {}).items()}
    tasks_by_host = {h: {t: dict(a) for t, a in v.items()} for h, v in (workers_tasks or {}).items()}
    runtimes = dict(observed_runtimes or {})
    per_worker_rt = dict(worker_runtimes or {})
    clocks = dict(worker_clocks or {})
    events_from = set(task_events_from)
    now = redis_time if redis_time is not None else time.time()
    app_conf = _app_conf(app)
    hosts = sorted(set(stats) | set(confs) | set(tasks_by_host))
    findings: list[Finding] = []

    # Visibility timeout of each worker (what its restore sweep uses) and the smallest one.
    vts: dict[str, float] = {h: _worker_vt(stats[h]) for h in hosts if h in stats}
    app_vt = settings.visibility_timeout
    app_vt_known = app is not None or "visibility_timeout" in settings.transport_options
    effective_vt = min([*vts.values(), *([app_vt] if app_vt_known or not vts else [])])

    # -- visibility-timeout-mismatch
    distinct = sorted(set(vts.values()))
    if len(distinct) > 1 or (vts and app is not None and any(v != app_vt for v in vts.values())):
        groups = {v: [h for h, x in vts.items() if x == v] for v in distinct}
        desc = "; ".join(f"{_span(v)}: {_names(hs)}" for v, hs in groups.items())
        if app is not None:
            desc += f"; app: {_span(app_vt)}"
        findings.append(Finding(
            "visibility-timeout-mismatch", "warning",
            f"visibility_timeout differs ({desc}): every worker's restore sweep uses its own, so the "
            f"smallest ({_span(effective_vt)}) wins for all queues",
            "use the same broker_transport_options={'visibility_timeout': ...} on every worker and client",
        ))

    # -- eta-beyond-visibility
    late: dict[tuple[str, str], float] = {}
    for s in scheduled:
        vt = vts.get(s.hostname, effective_vt)
        wait = s.eta - now
        if wait > min(vt, effective_vt):
            key = (s.hostname, s.task or "?")
            late[key] = max(late.get(key, 0.0), wait)
    for (host, task), wait in sorted(late.items()):
        vt = min(vts.get(host, effective_vt), effective_vt)
        findings.append(Finding(
            "eta-beyond-visibility", "warning",
            f"{task} on {host} waits {_span(wait)} for its ETA/countdown, longer than visibility_timeout "
            f"{_span(vt)}: it sits unacked and will be redelivered (run twice) before it is due",
            "raise visibility_timeout above the longest countdown/ETA, or schedule far-future work with "
            "celery beat instead of countdown/eta",
            subject=host,
        ))

    # -- runtime-beyond-visibility
    long_rt = {t: r for t, r in runtimes.items() if r > effective_vt}
    for task, rt in sorted(long_rt.items()):
        findings.append(Finding(
            "runtime-beyond-visibility", "warning",
            f"{task} has run for {_span(rt)}, longer than visibility_timeout {_span(effective_vt)}: with "
            "acks_late (or while prefetched) its message is handed to another worker while it still runs",
            "raise visibility_timeout above the longest task runtime (or split the task / set time_limit "
            "below visibility_timeout)",
            subject=task,
        ))

    # -- reject-on-worker-lost-unbounded (per task, from workers and from the app)
    unbounded: dict[str, list[str]] = {}
    sources: dict[str, dict[str, str]] = {}
    """task -> options of the first place that has it unbounded."""
    for host in hosts:
        for task, attrs in tasks_by_host.get(host, {}).items():
            if _unbounded(attrs):
                sources.setdefault(task, attrs)
                unbounded.setdefault(task, []).append(host)
    for task, attrs in _app_tasks(app).items():
        if _unbounded(attrs):
            sources.setdefault(task, attrs)
            unbounded.setdefault(task, []).append("app")
    for task, where in sorted(unbounded.items()):
        attrs = sources.get(task, {})
        how = ("retry_on_worker_lost without max_retries" if _truthy(attrs.get("retry_on_worker_lost"))
               else "no retry_on_worker_lost")
        findings.append(Finding(
            "reject-on-worker-lost-unbounded", "warning",
            f"{task}: acks_late + reject_on_worker_lost, {how} (on {_names(where)}): a message that kills "
            "its worker process is requeued forever (poison loop)",
            "set retry_on_worker_lost=True with max_retries=N on the task (task_retry_on_worker_lost), or "
            "drop reject_on_worker_lost",
            subject=task,
        ))

    # -- per-worker settings
    for host in hosts:
        st = stats.get(host, {})
        conf = confs.get(host, {})
        pool = st.get("pool") if isinstance(st.get("pool"), Mapping) else {}
        concurrency = pool.get("max-concurrency")
        prefetch = st.get("prefetch_count")
        multiplier = conf.get("worker_prefetch_multiplier")
        if not isinstance(multiplier, int) and isinstance(prefetch, int) and isinstance(concurrency, int) \
                and concurrency > 0:
            multiplier = prefetch // concurrency
        host_tasks = tasks_by_host.get(host, {})
        longest = per_worker_rt.get(host, 0.0)
        host_queues = list((workers_queues or {}).get(host, ()))
        if host_queues:
            longest = max([longest, *((queue_runtimes or {}).get(q, 0.0) for q in host_queues)])
        else:
            for task, rt in runtimes.items():
                if not host_tasks or task in host_tasks:
                    longest = max(longest, rt)
        if isinstance(multiplier, int) and multiplier > 1 and longest >= long_task_s:
            n = prefetch if isinstance(prefetch, int) else multiplier
            c = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1
            findings.append(Finding(
                "prefetch-long-tasks", "warning",
                f"{host}: prefetch {n} (multiplier {multiplier} x concurrency {c}) with {_span(longest)} tasks: "
                f"prefetched messages wait up to ~{_span(longest * max(1, n // c))} unacked behind them "
                "(idle workers cannot take them; past visibility_timeout they run twice)",
                "set worker_prefetch_multiplier=1 (with acks_late) for long tasks, or route them to a "
                "dedicated worker",
                subject=host,
            ))
        events_on = _truthy(conf.get("worker_send_task_events"))
        done = (processed_during or {}).get(host)
        if conf and not events_on and host not in events_from and done:
            findings.append(Finding(
                "task-events-off", "warning",
                f"{host}: task events are off (it finished {done} task(s) while taskdash watched and sent no "
                "task event; worker_send_task_events False): monitors miss task-received/failed and poison "
                "loops are detected later",
                "set worker_send_task_events=True or start it with -E",
                subject=host,
            ))
        elif conf and not events_on and host not in events_from:
            # -E does not show in inspect conf: with no task run in the window there is no evidence either way
            findings.append(Finding(
                "task-events-off", "info",
                f"{host}: task events unknown: worker_send_task_events is False in its conf, but it finished "
                "no task while taskdash watched (a worker started with -E shows it only by sending task events)",
                "run lint while it works, or check the Tasks view for its events",
                subject=host,
            ))
        if conf and _truthy(conf.get("result_extended")) is False:
            findings.append(Finding(
                "result-extended-off", "warning",
                f"{host}: result_extended is off: stored results lack task name, args and queue, so a "
                "failed task cannot be retried from the result backend",
                "set result_extended=True",
                subject=host,
            ))
        if conf and "result_expires" in conf and not seconds(conf.get("result_expires")):
            findings.append(Finding(
                "results-never-expire", "warning",
                f"{host}: result_expires is {conf.get('result_expires')!r}: results are never deleted and "
                "the result backend grows until Redis runs out of memory (or evicts the broker)",
                "set result_expires (default 1 day), e.g. result_expires=86400",
                subject=host,
            ))
        skew = clocks.get(host)
        if skew is not None and abs(skew) > max_clock_skew_s:
            direction = "ahead of" if skew > 0 else "behind"
            findings.append(Finding(
                "clock-skew", "warning",
                f"{host}: clock is {_span(abs(skew))} {direction} Redis: unacked scores are worker "
                f"wall-clock, so its messages are restored {_span(abs(skew))} "
                f"{'late' if skew > 0 else 'early'} (early = duplicates) and ETAs fire at the wrong time",
                "sync worker clocks (NTP/chrony) with the Redis host",
                subject=host,
            ))

    # -- the app's own settings when no worker told us theirs
    if app is not None and not confs:
        if _truthy(app_conf.get("result_extended")) is False:
            findings.append(Finding(
                "result-extended-off", "warning",
                "app: result_extended is off: failed tasks cannot be retried from stored args",
                "set result_extended=True", subject="app"))
        if "result_expires" in app_conf and not seconds(app_conf.get("result_expires")):
            findings.append(Finding(
                "results-never-expire", "warning",
                f"app: result_expires is {app_conf.get('result_expires')!r}: results are never deleted",
                "set result_expires (default 1 day)", subject="app"))
        if not _truthy(app_conf.get("worker_send_task_events")):
            findings.append(Finding(
                "task-events-off", "info",
                "app: worker_send_task_events is off (workers started with -E still send events)",
                "start workers with -E (or set worker_send_task_events=True)", subject="app"))
    # -- ghost-worker (issue 12): liveness decided by evidence over time, never a reason to requeue
    for w in workers_liveness:
        if w.liveness != "ghost":
            continue
        from collectors.analysis.liveness import ghost_queue

        queue = ghost_queue(w.liveness_evidence)
        since = (f" (since {time.strftime('%H:%M:%S', time.localtime(w.liveness_since))})"
                 if w.liveness_since is not None else "")
        findings.append(Finding(
            "ghost-worker", "warning",
            f"{w.hostname} is a ghost: it heartbeats and answers inspect but does not consume — "
            f"{w.liveness_evidence or 'no evidence recorded'}{since}. Its queue backs up while it looks "
            "healthy (the known 'stops consuming after a Redis reconnect' failure); its unacked messages are "
            "not orphaned (it is alive)",
            f"restart the worker (a warm shutdown, then start it again); or make it consume again: "
            f"taskdash worker add-consumer {queue or 'QUEUE'} -d {w.hostname} --yes",
            subject=w.hostname,
        ))
    if not hosts:
        findings.append(Finding(
            "no-workers", "info", "no worker answered inspect: only the app/transport settings were checked",
            "start a worker, or raise --timeout", subject=None))
    return findings


def _unbounded(attrs: Mapping[str, str]) -> bool:
    """acks_late + reject_on_worker_lost and no bounded retry_on_worker_lost."""
    if not (_truthy(attrs.get("acks_late")) and _truthy(attrs.get("reject_on_worker_lost"))):
        return False
    if _truthy(attrs.get("retry_on_worker_lost")):
        max_retries = attrs.get("max_retries")
        return max_retries is None or max_retries.strip().lower() == "none"
    return True


def run_lint(settings: Settings, app: Any | None = None, monitor: WorkerMonitor | None = None, *,
             timeout: float | None = None, long_task_s: float = 60.0,
             max_clock_skew_s: float = 2.0, observe: float = 0.0,
             workers: Iterable[WorkerInfo] | None = None) -> LintReport:
    """``gather`` + ``lint``: what ``taskdash lint`` and the ``:lint`` view run (blocking, ~1-3 s, plus
    ``observe`` seconds of watching for the ghost rule).

    ``workers``: rows whose liveness is already decided (the dashboard's last refresh); used for the ghost
    rule instead of watching (``observe`` is then ignored).
    """
    if app is None and settings.app:
        from collectors.core.config import load_app

        app = load_app(settings.app)
    inputs = gather(settings, monitor, timeout=timeout, observe=0.0 if workers is not None else observe)
    if workers is not None:
        inputs.workers_liveness = list(workers)
    findings = lint(
        settings, app, inputs.workers_stats, inputs.workers_conf, inputs.observed_runtimes,
        inputs.redis_time, workers_tasks=inputs.workers_tasks, worker_runtimes=inputs.worker_runtimes,
        queue_runtimes=inputs.queue_runtimes, workers_queues=inputs.workers_queues,
        scheduled=inputs.scheduled, worker_clocks=inputs.worker_clocks,
        task_events_from=inputs.task_events_from, processed_during=inputs.processed_during,
        long_task_s=long_task_s,
        max_clock_skew_s=max_clock_skew_s, workers_liveness=inputs.workers_liveness,
    )
    order = {"warning": 0, "info": 1}
    findings.sort(key=lambda f: (order.get(f.severity, 2), f.rule, f.subject or ""))
    return LintReport(tuple(findings), tuple(inputs.hostnames), settings.app, settings.visibility_timeout,
                      inputs.redis_time, tuple(inputs.errors))


def dumps(report: LintReport) -> str:
    """The report as one JSON document (for ``taskdash lint --json``)."""
    return json.dumps(report.to_json(), indent=2, sort_keys=False)
