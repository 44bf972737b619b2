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
  channels of docs/redis-layout.md#event-channels). ``worker-heartbeat``/``-online``/``-offline`` give liveness
  between inspects (a worker is offline ~2 heartbeat periods after its last sign of life or at once
  on ``worker-offline``; it is shown with "last seen", never dropped). Task events (``task.multi``
  list bodies when workers run with ``-E``) are buffered for the poison tracker.

- **liveness evidence** (issue 12; the decision itself is ``collectors.analysis.liveness``): per worker
  *incarnation* (hostname + pid; a new pid under the same hostname = a restart, which proves the old
  process gone), its boot time (``stats`` uptime or the ``worker-online`` timestamp), ``worker-offline``
  events, and its Redis connections, probed on a third daemon thread at most once a second while some
  worker is silent (else once per inspect interval), one command per probe:

  * ``CLIENT LIST`` where permitted. kombu/Celery connections carry no name by default (kombu's
    ``client_name`` transport option is unset), and CLIENT LIST does not say which patterns a ``psub``
    connection follows, so a connection is attributed by **time**: a worker opens its consumer, pidbox
    subscriber and event connections in a burst at start-up, so the connections created inside its boot
    window (``BOOT_WINDOW``, from the boot time) are its *candidates*; connections named exactly like the
    worker (``client_name``) are attributed by name. A candidate set must have been seen non-empty at a
    probe before the worker's last sign of life (else the attribution is unusable for that worker, e.g.
    after a reconnect, and connections prove nothing about it). Foreign connections created inside the
    window (a producer that connected at the same second) only keep the worker from being proven dead:
    the error is always on the safe side. taskdash's own connections are excluded by local address.
  * where CLIENT LIST is refused (NOPERM, renamed, managed Redis): ``PUBSUB NUMSUB`` is of no use —
    kombu subscribes to the pidbox and event channels with **PSUBSCRIBE**, which NUMSUB does not count,
    and ``PUBSUB NUMPAT`` counts *unique* patterns on Redis ≥ 7 (two workers on ``/0.celery.pidbox`` count
    1). What a plain client can count is the receivers of a ``PUBLISH`` on the pidbox channel: taskdash
    publishes a no-op control message addressed to no node (``destination: ["taskdash-liveness-probe"]``,
    ignored silently by every worker; no key is written), whose reply is the number of pidbox
    subscribers. Followed over time against the workers known, a drop by as many subscribers as workers
    went silent proves those workers' connections gone. Needs only ``+publish`` on that channel.
  * neither permitted: no connection evidence; the other proofs still hold, and the view says so.

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

from collectors.core.config import Settings, load_app, mask_text
from collectors.core.models import TaskRef, WorkerInfo
from collectors.keyspace.keys import KeyLayout
from collectors.reads.worker_probe import ConnectionProbe, _float, _int, _is_noperm

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
MAX_PAST = 4
"""Past incarnations (restarted processes) remembered per hostname."""
ONLINE_LEAD_S = 2.0
"""How long before its ``worker-online`` event a worker may already have consumed: its boot time, when only
that event gives it, is the event's timestamp minus this."""
_POOL_ALIASES = {"thread": "threads"}
"""Module names of celery.concurrency that differ from the ``-P`` name users know."""


@dataclass(frozen=True, slots=True)
class ConnEvidence:
    """What the connection probe says about one worker incarnation."""

    source: str
    """"CLIENT LIST" or "PUBLISH count"."""
    checked_at: float
    """When the latest probe ran (taskdash's clock)."""
    present: bool | None
    """Its connections are there (True), proven gone (False), or attribution unusable (None)."""
    gone_since: float | None = None
    """First probe after its last sign of life at which its connections were gone."""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Incarnation:
    """Evidence about one worker process (hostname + pid); a restart makes a new incarnation."""

    hostname: str
    pid: int | None
    first_seen: float
    boot_at: float | None
    """Process start (stats uptime / worker-online timestamp); a lower bound after a clean restart."""
    last_heartbeat: float | None
    last_reply: float | None
    heartbeat_freq: float
    replied: bool
    """Answered the last successful inspect window."""
    offline_at: float | None
    replaced_at: float | None
    """When another pid first spoke under the same hostname (this process is gone since)."""
    replaced_by_pid: int | None
    queues: tuple[str, ...] | None
    """Every queue it reported consuming since boot (None: never reported)."""
    current_queues: tuple[str, ...] | None
    conn: ConnEvidence | None
    processed: int | None
    activity_changed_at: float
    """Last time its processed count or active count changed (or first seen)."""
    active: int
    reserved: int
    concurrency: int | None
    prefetch_count: int | None
    visibility_timeout: float | None
    current: bool
    """The newest incarnation of its hostname (the one shown as the worker row)."""
    pid_conflict: bool = False
    """Two live processes answer under this hostname (a restart is then no proof)."""

    @property
    def last_seen(self) -> float | None:
        seen = [t for t in (self.last_heartbeat, self.last_reply) if t is not None]
        return max(seen) if seen else None


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
    incarnations: tuple[Incarnation, ...] = ()
    """Liveness evidence per worker process, current and past (restarted) ones."""
    inspect_denied: str | None = None
    """Why inspect is not permitted (no write rights): workers then come from heartbeats/events only."""
    conn_note: str | None = None
    """Which connection evidence is available ("CLIENT LIST", "PUBLISH count", or why none)."""
    unknown_workers: int | None = None
    """Pidbox subscriber connections no known, not-gone worker accounts for at the last probe (each live
    worker with remote control holds one): 0 proves no unseen worker is alive; None: no evidence."""


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
    first_seen: float = 0.0
    boot_at: float | None = None
    boot_src: str = ""
    boot_stats: float | None = None
    """Start time from stats uptime (WorkController start: before its connections)."""
    boot_online: float | None = None
    """The worker-online timestamp (sent after its pidbox subscription is made)."""
    """"online" (worker-online timestamp), "stats" (uptime) or "" (a lower bound only, after a restart)."""
    queues_seen: tuple[str, ...] | None = None
    queues_known: bool = False
    activity_key: tuple[int | None, int | None] = (None, None)
    activity_changed_at: float = 0.0
    past: list[_Past] = field(default_factory=list)
    pid_conflict: bool = False
    conn_ok_at: float | None = None
    """Latest probe at which candidates were present (for the current incarnation)."""
    conn_lost_alive: bool = False
    """A probe found no candidate although the worker spoke after it: attribution unusable."""
    conn_gone_at: float | None = None
    pub_gone_at: float | None = None
    """When the PUBLISH count proved its pidbox subscription gone (beside CLIENT LIST, see probe_connections)."""
    pub_detail: str = ""
    alive_at: float | None = None
    """A time it was certainly alive (lower bound): its inspect reply's broadcast, a heartbeat's receipt - 1 s."""
    conn_checked_at: float | None = None
    conn_present: bool | None = None
    conn_detail: str = ""
    conn_source: str = ""

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
class _Past:
    """A restarted (replaced) incarnation, frozen at the moment another pid spoke."""

    inc: Incarnation


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


class WorkerMonitor(ConnectionProbe):
    """Workers through inspect windows and heartbeats; see the module docstring."""

    def __init__(self, settings: Settings, app: Any | None = None) -> None:
        """Create the monitor (nothing connects until ``start``/``inspect_now``).

        Args:
            settings: taskdash settings (broker URL, exchanges, timeouts, transport options).
            app: a Celery app to use; by default ``settings.app`` is loaded, or a bare app is made.
                Either way its ``broker_transport_options`` get ``ack_emulation=False``.
        """
        self.settings = settings
        self._keys = KeyLayout.from_settings(settings)
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
        self._inspect_denied: str | None = None
        self._probe_client: Any = None
        self._probe_mode: str | None = None
        """None (not tried), "client" (CLIENT LIST), "publish" (PUBLISH count) or "none"."""
        self._probe_note: str | None = None
        self._last_probe: float | None = None
        self._prev_probe: float | None = None
        self._pub_base: tuple[int, frozenset[str]] | None = None
        self._pub_base_at = 0.0
        """When ``_pub_base`` was counted: only later counts can show a subscription lost."""
        self._publish_refused = False
        self._pub_meas: deque[tuple[int, float]] = deque(maxlen=16)
        """The recent pidbox subscriber counts and when they were taken (see _count_proves_gone)."""
        self._conn_born: dict[str, tuple[float, float]] = {}
        self._unknown_workers: int | None = None
        """CLIENT LIST id -> (earliest, latest) creation time seen for it."""
        self._pubsub: Any = None
        self._own_clients: list[Any] = []
        self.probes = 0
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
            threading.Thread(target=self._run_probe, name="taskdash-liveness", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop both threads and close the kombu connection."""
        self._stop.set()
        self._wake.set()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:  # a finalizer (the monitor collected) can run in one of its own threads
                t.join(timeout=self.settings.inspect_timeout + 3)
        self._threads = []
        with self._conn_lock:
            self._drop_connection()
        client, self._probe_client = self._probe_client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

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
                if _is_noperm(exc):
                    self._inspect_denied = (f"inspect not permitted ({self._inspect_error}): workers come "
                                            "from heartbeats/events only")
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
        exchange = Exchange(self._keys.pidbox_exchange, type="fanout", durable=False,
                            delivery_mode="transient")
        reply_exchange = Exchange(self._keys.reply_exchange, type="direct", durable=False,
                                  delivery_mode="transient")
        reply_queue = Queue(self._keys.reply_queue(self._oid), exchange=reply_exchange,
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
                node = self._node(host, now)
                stats = replies["stats"].get(host)
                if isinstance(stats, Mapping) and not self._saw_pid(node, _int(stats.get("pid")), now):
                    continue  # the other process of a duplicated hostname: not this row's evidence
                node.replied = True
                node.last_reply = now
                node.alive_at = max(node.alive_at or 0.0, started)  # it answered a broadcast sent then
                self._spoke(node, now)
                if isinstance(stats, Mapping):
                    node.stats = dict(stats)
                    node.stats_fresh = True
                    uptime = _float(stats.get("uptime"))
                    if uptime is not None:
                        node.boot_stats = started - uptime
                        node.boot_at = node.boot_stats
                        node.boot_src = "stats"
                if host in replies["active_queues"] and isinstance(replies["active_queues"][host], list):
                    node.queues = tuple(q["name"] for q in replies["active_queues"][host]
                                        if isinstance(q, Mapping) and isinstance(q.get("name"), str))
                    node.queues_known = True
                    seen = node.queues_seen or ()
                    node.queues_seen = seen + tuple(q for q in node.queues if q not in seen)
                for method, attr in (("active", "active"), ("reserved", "reserved"), ("scheduled", "scheduled")):
                    if host in replies[method]:
                        setattr(node, attr, _refs(replies[method][host], method, host))
                self._activity(node, now)
            self._trim_nodes(now)
            self._inspect_denied = None
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

    # ---- liveness evidence -----------------------------------------------------------------------
    def _node(self, host: str, now: float) -> _Node:
        node = self._nodes.get(host)
        if node is None:
            node = self._nodes[host] = _Node(hostname=host, first_seen=now, activity_changed_at=now)
        return node

    def _saw_pid(self, node: _Node, pid: int | None, now: float) -> bool:
        """Note the pid a worker spoke with; a new pid is a restart. False: a past pid spoke (conflict)."""
        if pid is None or node.pid == pid:
            return True
        if node.pid is None:
            node.pid = pid
            return True
        if any(p.inc.pid == pid for p in node.past):
            node.pid_conflict = True  # two live processes share the hostname: a "restart" proves nothing
            return False
        old = self._incarnation(node, now, current=False, replaced=(now, pid))
        node.past.append(_Past(old))
        del node.past[:-MAX_PAST]
        node.pid = pid
        node.first_seen = now
        node.boot_at = old.last_seen  # a lower bound: it started after the old process last spoke
        node.boot_src = ""
        node.boot_stats = node.boot_online = None
        node.last_hb = node.last_reply = node.alive_at = None
        node.replied = node.stats_fresh = False
        node.stats = None
        node.offline_at = None
        node.queues = ()
        node.queues_known = False
        node.queues_seen = None
        node.active = node.reserved = node.scheduled = ()
        node.hb_active = node.hb_processed = None
        node.activity_key = (None, None)
        node.activity_changed_at = now
        node.conn_ok_at = node.conn_gone_at = node.conn_checked_at = node.conn_present = None
        node.pub_gone_at = None
        node.conn_lost_alive = False
        node.conn_detail = ""
        return True

    @staticmethod
    def _spoke(node: _Node, now: float) -> None:
        """A sign of life: a connection probe that found none before it proved nothing."""
        if node.conn_gone_at is not None and now > node.conn_gone_at:
            node.conn_lost_alive = True
            node.conn_gone_at = node.pub_gone_at = None
            node.conn_present = None
            node.conn_detail = "its connections are not recognisable (it spoke after a probe found none)"

    @staticmethod
    def _activity(node: _Node, now: float) -> None:
        processed = node.hb_processed
        total = (node.stats or {}).get("total") if node.stats_fresh else None
        if isinstance(total, Mapping):
            processed = max(processed or 0, sum(v for v in total.values() if isinstance(v, int)))
        active = len(node.active) if node.replied else node.hb_active
        key = (processed, active)
        if key != node.activity_key:
            if node.activity_key != (None, None):
                node.activity_changed_at = now
            node.activity_key = key

    def _incarnation(self, node: _Node, now: float, *, current: bool,
                     replaced: tuple[float, int] | None = None) -> Incarnation:
        stats = node.stats or {}
        pool = stats.get("pool") if isinstance(stats.get("pool"), Mapping) else {}
        broker = stats.get("broker") if isinstance(stats.get("broker"), Mapping) else {}
        topts = broker.get("transport_options") if isinstance(broker.get("transport_options"), Mapping) else {}
        conn = None
        if node.conn_checked_at is not None:
            present = node.conn_present
            if present is False and (node.conn_lost_alive or node.conn_ok_at is None):
                present = None
            conn = ConnEvidence(source=node.conn_source, checked_at=node.conn_checked_at, present=present,
                                gone_since=node.conn_gone_at if present is False else None,
                                detail=node.conn_detail)
        return Incarnation(
            hostname=node.hostname, pid=node.pid, first_seen=node.first_seen, boot_at=node.boot_at,
            last_heartbeat=node.last_hb, last_reply=node.last_reply, heartbeat_freq=node.freq,
            replied=node.replied, offline_at=node.offline_at,
            replaced_at=replaced[0] if replaced else None, replaced_by_pid=replaced[1] if replaced else None,
            queues=node.queues_seen, current_queues=node.queues if node.queues_known else None,
            conn=conn, processed=node.activity_key[0], activity_changed_at=node.activity_changed_at,
            active=len(node.active) if node.replied else (node.hb_active or 0),
            reserved=len(node.reserved) if node.replied else 0,
            concurrency=_int(pool.get("max-concurrency")), prefetch_count=_int(stats.get("prefetch_count")),
            visibility_timeout=_float(topts.get("visibility_timeout")), current=current,
            pid_conflict=node.pid_conflict,
        )

    # ---- heartbeats and events -------------------------------------------------------------------
    def event_pattern(self, db: int) -> str:
        """The PSUBSCRIBE pattern of the event exchange's fanout channels (docs/redis-layout.md#event-channels)."""
        opts = self.settings.transport_options
        base = self._keys.fanout_channel(self._keys.event_exchange, db, opts.get("fanout_prefix", True))
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in base)
        return escaped + ("/*" if opts.get("fanout_patterns", True) else "")

    def _run_events(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            pubsub = None
            try:
                client = self._named_client()
                db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(self.event_pattern(db))
                self._pubsub = pubsub
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
                        node = self._nodes.get(host)
                        pid = _int(ev.get("pid"))
                        if node is not None and (pid is None or node.pid is None or pid == node.pid):
                            node.offline_at = now
                        continue
                    if etype not in ("worker-heartbeat", "worker-online"):
                        continue  # gossip (worker-elect...) says nothing about liveness here
                    node = self._node(host, now)
                    if not self._saw_pid(node, _int(ev.get("pid")), now):
                        continue
                    if etype == "worker-online":
                        ts = _float(ev.get("timestamp"))
                        node.boot_online = min(now, ts) if ts is not None else now
                        if node.boot_stats is None:
                            node.boot_at = node.boot_online - ONLINE_LEAD_S  # its consumer connected before
                            node.boot_src = "online"
                        node.offline_at = None
                    node.last_hb = now
                    node.alive_at = max(node.alive_at or 0.0, now - 1.0)  # margin: delivery of a sent heartbeat
                    self._spoke(node, now)
                    if len(self._nodes) > MAX_NODES:
                        self._trim_nodes(now)
                    node.freq = _float(ev.get("freq")) or node.freq
                    node.hb_active = _int(ev.get("active"))
                    node.hb_processed = _int(ev.get("processed"))
                    node.sw_ver = ev.get("sw_ver") if isinstance(ev.get("sw_ver"), str) else node.sw_ver
                    self._activity(node, now)
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
            incarnations: list[Incarnation] = []
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
                    boot_at=node.boot_at,
                ))
                incarnations.extend(p.inc for p in node.past)
                incarnations.append(self._incarnation(node, now, current=True))
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
                incarnations=tuple(incarnations),
                inspect_denied=self._inspect_denied,
                conn_note=self._conn_note(),
                unknown_workers=self._unknown_workers if self._probe_mode in ("client", "publish") else None,
            )

    def _conn_note(self) -> str | None:
        mode = self._probe_mode
        if mode == "client":
            return "connection evidence: CLIENT LIST"
        if mode == "publish":
            return f"connection evidence: PUBLISH count on the pidbox channel ({self._probe_note})"
        if mode == "none":
            return self._probe_note
        return None

    def wait_for(self, predicate: Callable[[WorkersView], bool], timeout: float) -> WorkersView:
        """Poll ``view`` until ``predicate`` holds or ``timeout`` passes (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        view = self.view(time.time())
        while not predicate(view) and time.monotonic() < deadline:
            time.sleep(0.1)
            view = self.view(time.time())
        return view
