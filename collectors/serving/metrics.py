"""Prometheus metrics from a Snapshot, and a tiny stdlib HTTP server that serves them.

:func:`render_metrics` is a pure function (Snapshot -> Prometheus text exposition format 0.0.4).
:class:`MetricsServer` serves it on ``GET /metrics`` from a ``http.server`` thread; each scrape costs
at most one ``Collector.collect()`` (the same refresh the TUI does), and a snapshot younger than
``cache_s`` is reused, so concurrent or frequent scrapes never multiply the load on Redis. It binds
to 127.0.0.1 unless told otherwise. No dependency beyond the standard library.

Metric families (all gauges unless noted; ``taskdash_`` prefix):

==============================================  =========================================================
``up{source}``                                   broker / backend reachable (1/0)
``queue_messages{queue,priority}``               LLEN of each priority band of each queue
``queue_depth{queue}``                           ready messages of a queue (all bands)
``queue_oldest_age_seconds{queue}``              age of the message BRPOP takes next (when known; a
                                                 lower bound when the next family says so)
``queue_oldest_age_is_lower_bound{queue}``       1 when that age is only a lower bound (taskdash first
                                                 saw the message then; no task-sent/eta/arrival evidence)
``queue_consumers{queue}``                       live workers consuming the queue (when inspect answered)
``queue_unacked{queue}``                         unacked messages of a queue
``unacked_messages``                             HLEN of kombu's ``unacked`` hash (whole ledger)
``unacked_window_messages{state}``               entries of the unacked window by state (active,
                                                 reserved, scheduled, orphaned, unknown)
``unacked_stale_messages``                       window entries older than the visibility timeout
``orphaned_messages``                            orphaned unacked entries (in the window)
``poison_suspects``                              tasks delivered again and again
``poison_looping_suspects``                      suspects whose loop still runs (in the unacked window or
                                                 delivered within the last 120 s; quarantine ends it)
``workers{state}``                               workers online / offline (ever seen)
``workers_online``                               workers online
``worker_up{worker}``                            1 online, 0 offline
``worker_active_tasks{worker}``                  tasks the worker is running
``worker_responding{worker}``                    1 when an online worker answers inspect, 0 otherwise
``task_states{state}``                           result-backend entries per state (incremental SCAN)
``tasks_scanned`` / ``tasks_scan_complete``      progress of that SCAN
``source_errors{source}``                        problems in the last refresh, per source
``refresh_round_trips``                          Redis round trips of the last refresh
``scrape_duration_seconds``                      wall time of the collect() behind this scrape
``scrape_errors`` (counter, ``_total``)          scrapes whose collect() raised
``snapshot_age_seconds``                         how old the served snapshot is
``redis_memory_used_bytes``                      broker Redis ``used_memory`` (INFO, when a health source is given)
``redis_maxmemory_bytes``                        broker Redis ``maxmemory`` (0 = no limit)
``redis_maxmemory_evicting{policy}``             1 when maxmemory is set with a policy that deletes keys
``redis_evicted_keys`` (counter, ``_total``)     keys the broker Redis evicted since its start
``redis_health_up``                              the last INFO read succeeded (1/0)
``task_events_total{task,outcome}`` (counter),   per-task-name analytics from task events (issue 15; see
``task_runtime_seconds`` / ``task_wait_seconds``  ``collectors.serving.task_metrics``)
(histograms), ``task_failure_ratio{task}``, ...
==============================================  =========================================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collectors.analysis.alerts import looping_suspects
from collectors.core.models import Snapshot
from collectors.reads.health import RedisHealth
from collectors.serving.task_metrics import task_stats_lines

log = logging.getLogger(__name__)

PREFIX = "taskdash_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNACKED_STATES: tuple[str, ...] = ("active", "reserved", "scheduled", "held-by-silent", "may-be-held", "orphaned",
                                   "unknown")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return "NaN"
    return repr(float(value))


class _Writer:
    """Accumulates metric families in exposition order (HELP, TYPE, samples)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, help_: str, samples: Iterable[tuple[dict[str, str], float | int | bool]],
               kind: str = "gauge") -> None:
        full = PREFIX + name
        self.lines.append(f"# HELP {full} {help_}")
        self.lines.append(f"# TYPE {full} {kind}")
        sample_name = full + "_total" if kind == "counter" else full
        for labels, value in samples:
            if labels:
                body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                self.lines.append(f"{sample_name}{{{body}}} {_num(value)}")
            else:
                self.lines.append(f"{sample_name} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(snapshot: Snapshot | None, *, scrape_duration_s: float | None = None, scrape_errors: int = 0,
                   now: float | None = None, health: RedisHealth | None = None) -> str:
    """The Prometheus text format for one Snapshot (pure: no I/O).

    Args:
        snapshot: the refresh to expose; None when no collect() succeeded yet (only scrape metrics).
        scrape_duration_s: wall time of the collect() that produced ``snapshot``.
        scrape_errors: scrapes whose collect() raised so far (a counter).
        now: reference time for ``snapshot_age_seconds`` (default: time.time()).
        health: the broker's Redis health (INFO); None leaves the ``redis_*`` families out.
    """
    w = _Writer()
    if snapshot is not None:
        s = snapshot
        w.family("up", "Whether taskdash could read the source (1) or not (0).",
                 [({"source": "broker"}, s.broker.ok), ({"source": "backend"}, s.backend.ok)])
        w.family("queue_messages", "Ready messages per queue and priority band (LLEN of the band's list).",
                 [({"queue": q.name, "priority": str(band)}, n) for q in s.queues for band, n in q.by_priority])
        w.family("queue_depth", "Ready messages per queue, all priority bands.",
                 [({"queue": q.name}, q.messages) for q in s.queues])
        w.family("queue_oldest_age_seconds", "Age of the oldest waiting message of a queue.",
                 [({"queue": q.name}, q.oldest_age_s) for q in s.queues if q.oldest_age_s is not None])
        w.family("queue_oldest_age_is_lower_bound",
                 "1 when queue_oldest_age_seconds is only a lower bound (counted from when taskdash first saw "
                 "the message; it waited longer), 0 when exact (task-sent event, eta, or seen arriving).",
                 [({"queue": q.name}, q.oldest_age_is_lower_bound) for q in s.queues if q.oldest_age_s is not None])
        w.family("queue_consumers", "Live workers consuming the queue (from inspect active_queues).",
                 [({"queue": q.name}, q.consumers) for q in s.queues if q.consumers is not None])
        w.family("queue_unacked", "Delivered but unacknowledged messages of a queue.",
                 [({"queue": q.name}, q.unacked) for q in s.queues])
        w.family("unacked_messages", "Entries in kombu's unacked hash (the whole ledger).", [({}, s.unacked_total)])
        states = Counter(e.state for e in s.unacked)
        w.family("unacked_window_messages", "Unacked entries of the bounded window by state.",
                 [({"state": st}, states.get(st, 0)) for st in UNACKED_STATES])
        w.family("unacked_stale_messages", "Unacked window entries older than the visibility timeout.",
                 [({}, sum(1 for e in s.unacked if e.stale))])
        w.family("orphaned_messages", "Unacked messages no live worker holds (requeue candidates).",
                 [({}, len(s.orphaned))])
        w.family("poison_suspects", "Tasks delivered again and again (probably killing their worker).",
                 [({}, len(s.poison))])
        w.family("poison_looping_suspects", "Poison suspects still being delivered (quarantine or revoke ends it).",
                 [({}, len(looping_suspects(s)))])
        online = sum(1 for wk in s.workers if wk.online)
        w.family("workers", "Workers seen, by state.",
                 [({"state": "online"}, online), ({"state": "offline"}, len(s.workers) - online)])
        w.family("workers_online", "Workers online (heartbeat or inspect reply).", [({}, online)])
        w.family("worker_up", "Worker online (1) or offline (0).",
                 [({"worker": wk.hostname}, wk.online) for wk in s.workers])
        w.family("worker_active_tasks", "Tasks the worker is running.",
                 [({"worker": wk.hostname}, wk.active) for wk in s.workers])
        w.family("worker_responding", "Online worker answering inspect (1) or not (0: heartbeats only, or offline).",
                 [({"worker": wk.hostname}, wk.online and wk.responding) for wk in s.workers])
        w.family("task_states", "Result-backend entries per task state (incremental SCAN plus live updates).",
                 [({"state": st}, n) for st, n in s.tasks.states])
        w.family("tasks_scanned", "Result-backend keys visited by the current SCAN pass.", [({}, s.tasks.scanned)])
        w.family("tasks_scan_complete", "A full SCAN pass of the result backend finished (1/0).",
                 [({}, s.tasks.complete)])
        per_source = Counter(e.source for e in s.errors)
        w.family("source_errors", "Problems during the last refresh, per source.",
                 [({"source": src}, n) for src, n in sorted(per_source.items())])
        w.family("refresh_round_trips", "Redis round trips of the last broker read.", [({}, s.cost.round_trips)])
        w.family("snapshot_age_seconds", "Age of the snapshot served by this scrape.",
                 [({}, max(0.0, (now if now is not None else time.time()) - s.taken_at))])
        w.lines.extend(task_stats_lines(s.task_stats, PREFIX))  # per-task-name families (task_metrics.py)
    if health is not None:
        w.family("redis_health_up", "The last INFO of the broker's Redis succeeded (1/0).",
                 [({}, health.error is None and health.used_memory is not None)])
        if health.used_memory is not None:
            w.family("redis_memory_used_bytes", "used_memory of the broker's Redis.", [({}, health.used_memory)])
        if health.maxmemory is not None:
            w.family("redis_maxmemory_bytes", "maxmemory of the broker's Redis (0: no limit).",
                     [({}, health.maxmemory)])
            w.family("redis_maxmemory_evicting", "maxmemory set with a policy that deletes keys (1/0).",
                     [({"policy": health.maxmemory_policy or "unknown"}, health.may_evict)])
        if health.evicted_keys is not None:
            w.family("redis_evicted_keys", "Keys evicted by the broker's Redis since it started.",
                     [({}, health.evicted_keys)], kind="counter")
    if scrape_duration_s is not None:
        w.family("scrape_duration_seconds", "Wall time of the collect() behind this scrape.",
                 [({}, scrape_duration_s)])
    w.family("scrape_errors", "Scrapes whose collect() failed.", [({}, scrape_errors)], kind="counter")
    return w.text()


class MetricsServer:
    """Serves ``render_metrics(collect())`` on ``GET /metrics`` (stdlib ThreadingHTTPServer in a thread).

    Args:
        collect: returns a fresh Snapshot (``Collector.collect``); called at most once per ``cache_s``.
        host: bind address (default 127.0.0.1: not exposed to the network).
        port: TCP port (0 picks a free one; see ``port`` after ``start``).
        cache_s: a snapshot younger than this is served again instead of collecting.
        health: returns the broker's Redis health (one INFO); called at most once per ``health_interval``.
        health_interval: seconds an INFO reading is reused between scrapes.
    """

    def __init__(self, collect: Callable[[], Snapshot], host: str = "127.0.0.1", port: int = 9808,
                 cache_s: float = 1.0, health: Callable[[], RedisHealth] | None = None,
                 health_interval: float = 15.0) -> None:
        self._collect = collect
        self._health_fn = health
        self.health_interval = health_interval
        self._health: RedisHealth | None = None
        self._health_at = 0.0
        self.host = host
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._at = 0.0
        self._duration: float | None = None
        self.scrape_errors = 0
        self.collects = 0
        self.scrapes = 0
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def render(self) -> str:
        """One scrape: collect (unless the cached snapshot is fresh enough) and render."""
        with self._lock:
            self.scrapes += 1
            if self._snapshot is None or time.monotonic() - self._at >= self.cache_s:
                t0 = time.perf_counter()
                try:
                    snap = self._collect()
                except Exception:  # noqa: BLE001 - served as scrape_errors, the last snapshot stays
                    log.warning("collect failed during a scrape", exc_info=True)
                    self.scrape_errors += 1
                else:
                    self._snapshot, self._at = snap, time.monotonic()
                    self._duration = time.perf_counter() - t0
                    self.collects += 1
            if self._health_fn is not None and (
                    self._health is None or time.monotonic() - self._health_at >= self.health_interval):
                try:
                    self._health = self._health_fn()
                except Exception:  # noqa: BLE001 - the queue metrics must still be served
                    log.warning("health read failed during a scrape", exc_info=True)
                self._health_at = time.monotonic()
            return render_metrics(self._snapshot, scrape_duration_s=self._duration,
                                  scrape_errors=self.scrape_errors, health=self._health)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path in ("/metrics", "/metrics/"):
                    body = server.render().encode("utf-8")
                    ctype = CONTENT_TYPE
                    status = 200
                elif path == "/":
                    body = b"taskdash metrics: see /metrics\n"
                    ctype, status = "text/plain; charset=utf-8", 200
                else:
                    body, ctype, status = b"not found\n", "text/plain; charset=utf-8", 404
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server API
                log.debug("metrics %s " + format, self.address_string(), *args)

        return Handler

    def start(self) -> MetricsServer:
        """Serve in a daemon thread (returns at once)."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="taskdash-metrics", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``shutdown`` (or KeyboardInterrupt)."""
        self._httpd.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
