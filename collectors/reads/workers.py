"""Worker state: one inspect window for every method and worker, plus heartbeats over PSUBSCRIBE.

Two feeds, each on its own daemon thread:

- **inspect** (every ``settings.inspect_interval`` s and on demand): the six remote-control
  commands ``ping``, ``stats``, ``active`` (``safe=True``), ``reserved``, ``scheduled`` and
  ``active_queues`` are published back to back, each with its own ticket, to ONE reply queue, and
  the replies of all workers are collected in a single drain loop. The window ends after
  ``settings.inspect_timeout`` or as soon as every worker known to be alive (fresh heartbeat)
  answered every command, so one refresh costs about one timeout whatever the number of methods
  and workers. The kombu connection is opened once and reused.
- **heartbeats/events**: a plain redis-py ``PSUBSCRIBE <prefix>/<db>.celeryev/*`` (the fanout
  channels of REDIS_LAYOUT section 6). ``worker-heartbeat``/``-online``/``-offline`` give liveness
  between inspects (a worker is offline ~2 heartbeat periods after its last sign of life or at once
  on ``worker-offline``; it is shown with "last seen", never dropped). Task events (``task.multi``
  list bodies when workers run with ``-E``) are buffered for the poison tracker.

**Never a side effect from reading**: the kombu connection is opened with
``ack_emulation=False`` (plain virtual QoS), so kombu's unacked restore sweep can never run from
taskdash, whatever visibility timeout the app uses. Replies are decoded as JSON only (never
unpickled).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import redis

from collectors.core.config import Settings, load_app, mask_text, redis_client
from collectors.core.models import TaskRef, WorkerInfo

log = logging.getLogger(__name__)

INSPECT_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ping", {}),
    ("stats", {}),
    ("active", {"safe": True}),
    ("reserved", {}),
    ("scheduled", {}),
    ("active_queues", {}),
)
"""Remote-control commands of one inspect window, with their arguments."""

MAX_NODES = 1000
"""Workers remembered at most; beyond that the offline ones seen longest ago are forgotten."""
EVENT_BUFFER = 10_000
"""Task events kept between two ``drain_events`` calls (older ones are dropped)."""
OFFLINE_SLACK_S = 1.0
"""Extra seconds on top of 2 heartbeat periods before a silent worker is shown offline."""
_JSON = "application/json"
_POOL_ALIASES = {"thread": "threads"}
"""Module names of celery.concurrency that differ from the ``-P`` name users know."""


@dataclass(frozen=True, slots=True)
class WorkersView:
    """What taskdash knows about workers at one moment (immutable)."""

    workers: tuple[WorkerInfo, ...]
    claims: Mapping[str, TaskRef]
    """task_id -> TaskRef for every task an online, responding worker reports."""
    worker_queues: Mapping[str, int] | None
    """queue name -> number of ONLINE workers consuming it; None if inspect never answered."""
    inspect_ok: bool | None
    """Did the last inspect window succeed (None: none ran yet)."""
    inspected_at: float | None
    """Epoch time when the last successful inspect window started."""
    error: str | None
    active: tuple[TaskRef, ...]
    """Every active task of an online, responding worker (for poison tracking)."""


@dataclass(slots=True)
class _Node:
    """Mutable per-worker record (only touched under the monitor's state lock)."""

    hostname: str
    last_hb: float | None = None
    """Local receive time of the last worker-* event."""
    freq: float = 2.0
    hb_active: int | None = None
    hb_processed: int | None = None
    pid: int | None = None
    sw_ver: str | None = None
    offline_at: float | None = None
    last_reply: float | None = None
    replied: bool = False
    """Replied in the last successful inspect window."""
    stats: dict[str, Any] | None = None
    stats_fresh: bool = False
    queues: tuple[str, ...] = ()
    active: tuple[TaskRef, ...] = ()
    reserved: tuple[TaskRef, ...] = ()
    scheduled: tuple[TaskRef, ...] = ()

    @property
    def last_seen(self) -> float | None:
        seen = [t for t in (self.last_hb, self.last_reply) if t is not None]
        return max(seen) if seen else None

    def is_online(self, now: float) -> bool:
        last = self.last_seen
        if last is None:
            return False
        if self.offline_at is not None and self.offline_at >= last:
            return False
        if self.last_hb is not None:
            return now - last <= 2 * self.freq + OFFLINE_SLACK_S
        return self.replied


@dataclass(slots=True)
class _WindowResult:
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """method -> {hostname: result}."""
    errors: list[str] = field(default_factory=list)


def _short(value: Any, limit: int = 1024) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def task_ref(info: Mapping[str, Any], state: str, hostname: str, eta: str | None = None) -> TaskRef | None:
    """A TaskRef from one ``Request.info()`` dict of an inspect reply (None if it has no id)."""
    task_id = info.get("id")
    if not isinstance(task_id, str):
        return None
    di = info.get("delivery_info") if isinstance(info.get("delivery_info"), Mapping) else {}
    return TaskRef(
        task_id=task_id,
        name=info.get("name") if isinstance(info.get("name"), str) else None,
        state=state,  # type: ignore[arg-type]
        hostname=info.get("hostname") if isinstance(info.get("hostname"), str) else hostname,
        queue=di.get("routing_key") if isinstance(di.get("routing_key"), str) else None,
        priority=_int(di.get("priority")),
        redelivered=bool(di.get("redelivered")),
        time_start=_float(info.get("time_start")),
        worker_pid=_int(info.get("worker_pid")),
        eta=eta,
        argsrepr=_short(info.get("args")),
        kwargsrepr=_short(info.get("kwargs")),
    )


def _refs(items: Any, state: str, hostname: str) -> tuple[TaskRef, ...]:
    out: list[TaskRef] = []
    if not isinstance(items, list):
        return ()
    for item in items:
        if not isinstance(item, Mapping):
            continue
        if state == "scheduled":
            req = item.get("request")
            eta = item.get("eta") if isinstance(item.get("eta"), str) else None
            ref = task_ref(req, state, hostname, eta) if isinstance(req, Mapping) else None
        else:
            ref = task_ref(item, state, hostname)
        if ref is not None:
            out.append(ref)
    return tuple(out)


def pool_name(stats: Mapping[str, Any] | None) -> str | None:
    """``celery.concurrency.prefork:TaskPool`` -> ``prefork``."""
    pool = (stats or {}).get("pool")
    impl = pool.get("implementation") if isinstance(pool, Mapping) else None
    if not isinstance(impl, str) or not impl:
        return None
    name = impl.split(":", 1)[0].rsplit(".", 1)[-1]
    return _POOL_ALIASES.get(name, name)


def decode_event_message(data: bytes | str) -> list[dict[str, Any]]:
    """Events in one pub/sub message (a kombu envelope; ``task.multi`` bodies are lists). Never raises."""
    try:
        env = json.loads(data)
        if not isinstance(env, dict):
            return []
        if (env.get("content-type") or _JSON) != _JSON:
            return []  # never deserialize anything but JSON
        body: Any = env.get("body")
        props = env.get("properties") if isinstance(env.get("properties"), dict) else {}
        if props.get("body_encoding") == "base64" and isinstance(body, str):
            body = base64.b64decode(body)
        if isinstance(body, bytes | str):
            body = json.loads(body)
    except (ValueError, TypeError):
        return []
    items = body if isinstance(body, list) else [body]
    return [e for e in items if isinstance(e, dict) and isinstance(e.get("type"), str)]


class WorkerMonitor:
    """Workers through inspect windows and heartbeats; see the module docstring."""

    def __init__(self, settings: Settings, app: Any | None = None) -> None:
        """Create the monitor (nothing connects until ``start``/``inspect_now``).

        Args:
            settings: taskdash settings (broker URL, exchanges, timeouts, transport options).
            app: a Celery app to use; by default ``settings.app`` is loaded, or a bare app is made.
                Either way its ``broker_transport_options`` get ``ack_emulation=False``.
        """
        self.settings = settings
        self._app = app
        self._app_lock = threading.Lock()
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENT_BUFFER)
        self._inspect_ok: bool | None = None
        self._inspected_at: float | None = None
        self._inspect_error: str | None = None
        self._ever_answered = False
        self._events_error: str | None = None
        self._events_since: float | None = None
        self._oid = str(uuid.uuid4())
        self._clock: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.windows = 0
        self.last_missing: list[tuple[str, str]] = []
        self.last_window_s: float | None = None

    # ---- Celery app / kombu connection -----------------------------------------------------------
    def transport_options(self) -> dict[str, Any]:
        """Broker transport options of taskdash's kombu connection (ack emulation always off)."""
        opts: dict[str, Any] = {}
        if self._app is not None:
            opts.update(self._app.conf.broker_transport_options or {})
        opts.update(self.settings.transport_options)
        if self.settings.global_keyprefix:
            opts["global_keyprefix"] = self.settings.global_keyprefix
        opts.setdefault("socket_timeout", self.settings.socket_timeout)
        opts.setdefault("socket_connect_timeout", min(self.settings.socket_timeout, 3.0))
        opts["ack_emulation"] = False  # never run kombu's unacked restore sweep from taskdash
        return opts

    @property
    def app(self) -> Any:
        """The Celery app whose connection taskdash uses (ack emulation forced off)."""
        with self._app_lock:
            if self._app is None:
                if self.settings.app:
                    self._app = load_app(self.settings.app)
                else:
                    from celery import Celery

                    self._app = Celery("taskdash", set_as_current=False)
                    self._app.conf.update(
                        broker_url=self.settings.broker_url,
                        control_exchange=self.settings.control_exchange,
                        event_exchange=self.settings.event_exchange,
                    )
            opts = self.transport_options()
            # Any connection made from this app (pools, control) must not sweep either.
            self._app.conf.broker_transport_options = opts
            return self._app

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self.app.connection_for_write(
                self.settings.broker_url, transport_options=self.transport_options(),
                connect_timeout=min(self.settings.socket_timeout, 3.0),
            )
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, interval_max=0.5)
            except Exception:
                with contextlib.suppress(Exception):
                    conn.release()
                raise
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.release()

    def _mask(self, exc: BaseException | str) -> str:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return mask_text(text, self.settings.broker_url)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the heartbeat/event thread and the periodic inspect thread (idempotent)."""
        if any(t.is_alive() for t in self._threads):
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run_events, name="taskdash-events", daemon=True),
            threading.Thread(target=self._run_inspect, name="taskdash-inspect", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop both threads and close the kombu connection."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=self.settings.inspect_timeout + 3)
        self._threads = []
        with self._conn_lock:
            self._drop_connection()

    def request_inspect(self) -> None:
        """Ask the background thread for an inspect window now (returns at once)."""
        self._wake.set()

    def _run_inspect(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self.inspect_now()
            failures = 0 if self._inspect_ok else failures + 1
            wait = self.settings.inspect_interval
            if failures:
                wait = min(max(wait, 1.0) * (2 ** min(failures - 1, 4)), 30.0)
            self._wake.wait(wait)
            self._wake.clear()

    # ---- inspect ---------------------------------------------------------------------------------
    def inspect_now(self) -> None:
        """Run one synchronous inspect window (≈ one ``inspect_timeout``); never raises."""
        started = time.time()
        t0 = time.monotonic()
        try:
            with self._conn_lock:
                try:
                    result = self._window(self._expected_nodes(started))
                except Exception:
                    self._drop_connection()
                    raise
        except Exception as exc:  # noqa: BLE001 - any failure is reported in the view
            with self._state_lock:
                self._inspect_ok = False
                self._inspect_error = self._mask(exc)
            log.debug("inspect window failed: %s", self._inspect_error)
            return
        finally:
            self.last_window_s = time.monotonic() - t0
            self.windows += 1
        self._apply_window(result, started)

    def _expected_nodes(self, now: float) -> set[str] | None:
        """Workers that should answer (fresh heartbeats); None when we cannot know yet."""
        with self._state_lock:
            since = self._events_since
            if since is None or now - since < 2.5 or self._events_error:
                return None
            nodes = {n.hostname for n in self._nodes.values() if n.is_online(now)}
        return nodes or None

    def _window(self, expected: set[str] | None) -> _WindowResult:
        from kombu import Consumer, Exchange, Producer, Queue
        from kombu.clocks import LamportClock

        s = self.settings
        timeout = max(0.05, float(s.inspect_timeout))
        conn = self._connection()
        chan = conn.default_channel
        exchange = Exchange(f"{s.control_exchange}.pidbox", type="fanout", durable=False,
                            delivery_mode="transient")
        reply_exchange = Exchange(f"reply.{s.control_exchange}.pidbox", type="direct", durable=False,
                                  delivery_mode="transient")
        reply_queue = Queue(f"{self._oid}.{reply_exchange.name}", exchange=reply_exchange,
                            routing_key=self._oid, durable=False, auto_delete=True,
                            expires=10.0, message_ttl=300.0)
        tickets = {str(uuid.uuid4()): method for method, _ in INSPECT_METHODS}
        by_method = {m: t for t, m in tickets.items()}
        result = _WindowResult(replies={m: {} for m, _ in INSPECT_METHODS})
        if self._clock is None:
            self._clock = LamportClock()
        clock = self._clock

        def on_message(message: Any) -> None:
            ticket = message.headers.get("ticket")
            method = tickets.get(ticket)
            if method is None:
                return  # a late reply of an earlier window
            try:
                body = message.decode()
            except Exception as exc:  # noqa: BLE001 - ContentDisallowed for pickle, garbage
                result.errors.append(f"undecodable {method} reply: {type(exc).__name__}")
                return
            if isinstance(body, Mapping):
                for node, value in body.items():
                    result.replies[method][str(node)] = value

        def done() -> bool:
            if not expected:
                return False
            return all(expected <= result.replies[m].keys() for m in by_method)

        bound_queue = reply_queue(chan)
        bound_queue.declare()
        consumer = Consumer(chan, [bound_queue], accept=[_JSON], no_ack=True, on_message=on_message)
        try:
            consumer.consume()
            producer = Producer(chan, auto_declare=False)
            deadline = time.monotonic() + timeout
            for method, args in INSPECT_METHODS:
                producer.publish(
                    {"method": method, "arguments": args, "destination": None, "pattern": None,
                     "matcher": None, "ticket": by_method[method],
                     "reply_to": {"exchange": reply_exchange.name, "routing_key": self._oid}},
                    exchange=exchange.name, declare=[exchange], serializer="json", retry=False,
                    headers={"clock": clock.forward(), "expires": time.time() + timeout},
                )
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    conn.drain_events(timeout=remaining)
                except TimeoutError:
                    break
            if expected:
                self.last_missing = sorted((m, n) for m in by_method for n in expected
                                           if n not in result.replies[m])
        finally:
            with contextlib.suppress(Exception):
                consumer.cancel()
            with contextlib.suppress(Exception):
                chan.after_reply_message_received(bound_queue.name)
        return result

    def _apply_window(self, result: _WindowResult, started: float) -> None:
        replies = result.replies
        responded: set[str] = set()
        for per_node in replies.values():
            responded.update(per_node)
        now = time.time()
        with self._state_lock:
            for node in self._nodes.values():
                node.replied = False
                node.stats_fresh = False
            for host in responded:
                node = self._nodes.get(host) or self._nodes.setdefault(host, _Node(hostname=host))
                node.replied = True
                node.last_reply = now
                if host in replies["stats"] and isinstance(replies["stats"][host], Mapping):
                    node.stats = dict(replies["stats"][host])
                    node.stats_fresh = True
                    node.pid = _int(node.stats.get("pid")) or node.pid
                if host in replies["active_queues"] and isinstance(replies["active_queues"][host], list):
                    node.queues = tuple(q["name"] for q in replies["active_queues"][host]
                                        if isinstance(q, Mapping) and isinstance(q.get("name"), str))
                for method, attr in (("active", "active"), ("reserved", "reserved"), ("scheduled", "scheduled")):
                    if host in replies[method]:
                        setattr(node, attr, _refs(replies[method][host], method, host))
            self._trim_nodes(now)
            self._inspect_ok = True
            self._inspected_at = started
            self._ever_answered = True
            self._inspect_error = "; ".join(result.errors[:3]) or None

    def _trim_nodes(self, now: float) -> None:
        """Keep memory bounded when hostnames churn (autoscaled pods): forget the oldest offline."""
        excess = len(self._nodes) - MAX_NODES
        if excess <= 0:
            return
        offline = sorted((n for n in self._nodes.values() if not n.is_online(now)),
                         key=lambda n: n.last_seen or 0.0)
        for node in offline[:excess]:
            del self._nodes[node.hostname]

    # ---- heartbeats and events -------------------------------------------------------------------
    def event_pattern(self, db: int) -> str:
        """The PSUBSCRIBE pattern of the event exchange's fanout channels (REDIS_LAYOUT section 6)."""
        opts = self.settings.transport_options
        fanout_prefix = opts.get("fanout_prefix", True)
        if fanout_prefix is True:
            keyprefix_fanout = f"/{db}."
        elif isinstance(fanout_prefix, str):
            keyprefix_fanout = fanout_prefix
        else:
            keyprefix_fanout = ""
        base = f"{self.settings.global_keyprefix}{keyprefix_fanout}{self.settings.event_exchange}"
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in base)
        return escaped + ("/*" if opts.get("fanout_patterns", True) else "")

    def _run_events(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            pubsub = None
            try:
                client = redis_client(self.settings.broker_url, self.settings)
                db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(self.event_pattern(db))
                with self._state_lock:
                    self._events_error = None
                    if self._events_since is None:
                        self._events_since = time.time()
                backoff = 0.5
                last_ping = time.monotonic()
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg.get("type") == "pmessage":
                        self._on_events(decode_event_message(msg.get("data") or b""))
                    if time.monotonic() - last_ping > 5.0:
                        pubsub.ping()
                        last_ping = time.monotonic()
            except (redis.RedisError, OSError) as exc:
                with self._state_lock:
                    self._events_error = self._mask(exc)
                    self._events_since = None
                log.debug("event feed: %s", self._events_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def _on_events(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        now = time.time()
        with self._state_lock:
            for ev in events:
                etype = ev["type"]
                host = ev.get("hostname")
                if etype.startswith("worker-") and isinstance(host, str):
                    if etype == "worker-offline":
                        if host in self._nodes:
                            self._nodes[host].offline_at = now
                        continue
                    if etype not in ("worker-heartbeat", "worker-online"):
                        continue  # gossip (worker-elect...) says nothing about liveness here
                    node = self._nodes.get(host) or self._nodes.setdefault(host, _Node(hostname=host))
                    node.last_hb = now
                    if len(self._nodes) > MAX_NODES:
                        self._trim_nodes(now)
                    node.freq = _float(ev.get("freq")) or node.freq
                    node.hb_active = _int(ev.get("active"))
                    node.hb_processed = _int(ev.get("processed"))
                    node.pid = _int(ev.get("pid")) or node.pid
                    node.sw_ver = ev.get("sw_ver") if isinstance(ev.get("sw_ver"), str) else node.sw_ver
                elif etype.startswith("task-"):
                    self._events.append(ev)

    def drain_events(self) -> list[dict[str, Any]]:
        """Task events (task-received, task-failed, ...) seen since the last call."""
        with self._state_lock:
            out = list(self._events)
            self._events.clear()
        return out

    # ---- reading ---------------------------------------------------------------------------------
    def view(self, now: float) -> WorkersView:
        """An immutable view of every worker ever seen; never raises, never does I/O."""
        try:
            return self._view(now)
        except Exception as exc:  # noqa: BLE001 - a view must always come back
            log.exception("workers view failed")
            return WorkersView((), MappingProxyType({}), None, self._inspect_ok, self._inspected_at,
                               self._mask(exc), ())

    def _view(self, now: float) -> WorkersView:
        with self._state_lock:
            workers: list[WorkerInfo] = []
            claims: dict[str, TaskRef] = {}
            queues: dict[str, int] = {}
            active: list[TaskRef] = []
            inspected = self._inspect_ok is not None and self._ever_answered
            for node in sorted(self._nodes.values(), key=lambda n: n.hostname):
                online = node.is_online(now)
                responding = node.replied if inspected else True
                live = online and node.replied
                if live:
                    for ref in (*node.scheduled, *node.reserved, *node.active):
                        claims[ref.task_id] = ref
                    active.extend(node.active)
                if online:
                    for q in node.queues:
                        queues[q] = queues.get(q, 0) + 1
                stats = node.stats or {}
                pool = stats.get("pool") if isinstance(stats.get("pool"), Mapping) else {}
                total = stats.get("total")
                processed = (sum(v for v in total.values() if isinstance(v, int))
                             if isinstance(total, Mapping) else None)
                if node.hb_processed is not None and (processed is None or not node.stats_fresh):
                    processed = max(processed or 0, node.hb_processed)
                broker = stats.get("broker") if isinstance(stats.get("broker"), Mapping) else {}
                topts = broker.get("transport_options") if isinstance(broker.get("transport_options"),
                                                                      Mapping) else {}
                if live:
                    n_active, n_reserved, n_sched = len(node.active), len(node.reserved), len(node.scheduled)
                elif online:
                    n_active = node.hb_active if node.hb_active is not None else len(node.active)
                    n_reserved, n_sched = len(node.reserved), len(node.scheduled)
                else:
                    n_active = n_reserved = n_sched = 0
                last = node.last_seen
                pids = pool.get("processes") if isinstance(pool.get("processes"), list) else []
                workers.append(WorkerInfo(
                    hostname=node.hostname, online=online, pool=pool_name(stats),
                    concurrency=_int(pool.get("max-concurrency")), active=n_active, reserved=n_reserved,
                    scheduled=n_sched, processed=processed, queues=node.queues,
                    last_seen_s=max(0.0, now - last) if last is not None else None,
                    pid=node.pid, sw_ver=node.sw_ver, prefetch_count=_int(stats.get("prefetch_count")),
                    visibility_timeout=_float(topts.get("visibility_timeout")),
                    responding=responding and online,
                    pool_pids=tuple(p for p in pids if isinstance(p, int)),
                ))
            error = self._inspect_error
            if self._events_error:
                error = f"{error}; events: {self._events_error}" if error else f"events: {self._events_error}"
            return WorkersView(
                workers=tuple(workers),
                claims=MappingProxyType(claims),
                worker_queues=MappingProxyType(queues) if self._ever_answered else None,
                inspect_ok=self._inspect_ok,
                inspected_at=self._inspected_at,
                error=error,
                active=tuple(active),
            )

    def wait_for(self, predicate: Callable[[WorkersView], bool], timeout: float) -> WorkersView:
        """Poll ``view`` until ``predicate`` holds or ``timeout`` passes (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        view = self.view(time.time())
        while not predicate(view) and time.monotonic() < deadline:
            time.sleep(0.1)
            view = self.view(time.time())
        return view
