"""Connection evidence of worker liveness: which Redis connections are still the workers' (issue 12).

A worker that sends nothing may be alive; a worker whose Redis connections are gone is not. This module is
the part of :class:`collectors.reads.workers.WorkerMonitor` that looks: one probe command now and then,
``CLIENT LIST`` where permitted (each connection's age, matched against the boot windows of the workers
it could belong to), and beside it, or alone for a least-privilege user, the pidbox subscriber count a
``PUBLISH`` of a no-op pidbox message returns (one subscription per worker). docs/redis-layout.md#pidbox.

:class:`ConnectionProbe` is a mixin: it works on the monitor's per-worker ``_Node`` state under its state
lock, and the monitor's threads run :meth:`ConnectionProbe.probe_connections`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis

from collectors.core.config import OWN_NAME, Settings, own_client, redis_client

log = logging.getLogger(__name__)
_JSON = "application/json"

if TYPE_CHECKING:
    from collectors.keyspace.keys import KeyLayout
    from collectors.reads.workers import _Node

BOOT_WINDOWS = {"online": (-2.5, 0.5), "stats": (-2.0, 2.0)}
"""Fallback windows when only one anchor is known; with both, [stats start − 2, online + 0.5]."""
"""Seconds around a worker's boot estimate in which its pidbox subscriber connection is created. Measured
with kombu 5.7: ~0.8 s *before* the worker-online timestamp (the Events step starts after the Connection
step) and ~1 s after the start time stats' (rounded) uptime gives. A connection's creation time is known
to ±1 s from CLIENT LIST's ``age`` (Redis keeps ``ctime`` in whole seconds), and narrowed to the interval
between the previous probe and the one that saw it appear (probes run every second while a worker is young or
silent)."""
YOUNG_S = 20.0
"""A worker first seen less than this ago is "young": connections are probed every second to time them."""
PROBE_MIN_INTERVAL = 1.0
"""Connection probes run at most this often (only while some worker is silent; else per inspect interval)."""
PROBE_TAG = "taskdash-liveness-probe"
"""Destination of the no-op pidbox message whose PUBLISH reply counts the pidbox subscribers."""

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


def _is_noperm(exc: BaseException) -> bool:
    """A permission refusal (ACL NOPERM, a renamed/disabled command), also when kombu wrapped it."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, redis.exceptions.NoPermissionError):
            return True
        text = str(cur).lower()
        if "noperm" in text or "no permissions" in text or "unknown command" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _boot_window(node: _Node) -> tuple[float, float] | None:
    """When this worker's pidbox subscriber connection was opened: after its start (stats uptime), before
    its worker-online event; with one anchor only, a fixed window around it."""
    st, on = node.boot_stats, node.boot_online
    if st is not None and on is not None and on >= st - 1.0:
        return st - 2.0, on + 0.5
    if on is not None:
        lo, hi = BOOT_WINDOWS["online"]
        return on + lo, on + hi
    if st is not None:
        lo, hi = BOOT_WINDOWS["stats"]
        return st + lo, st + hi
    return None


def _augment(host: str, edges: Mapping[str, list[int]], match: dict[int, str], seen: set[int]) -> bool:
    """Kuhn's augmenting path: give ``host`` a connection of its own, re-seating others (mutates match)."""
    for i in edges.get(host, ()):
        if i in seen:
            continue
        seen.add(i)
        if i not in match or _augment(match[i], edges, match, seen):
            match[i] = host
            return True
    return False


def _process_tcp_addrs() -> set[str]:
    """Local ``ip:port`` of every TCP socket this process holds (Linux /proc; empty elsewhere): every
    connection taskdash's own modules opened, whichever client made it.

    Each socket descriptor of ``/proc/self/fd`` is asked for its own address (``getsockname`` on a
    duplicate): a handful of calls. Reading ``/proc/net/tcp`` instead costs what every socket of the
    machine costs (7 ms a probe on a busy host, 1 % of a core at one probe a second)."""
    out: set[str] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for fd in fds:
        with contextlib.suppress(OSError, ValueError):
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:["):
                continue
            dup = os.dup(int(fd))
            try:
                sock = socket.socket(fileno=dup)  # family and type read from the descriptor
            except OSError:
                os.close(dup)
                raise
            with sock:
                if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                ip, port = sock.getsockname()[:2]
                if ip.startswith("::ffff:"):
                    ip = ip[7:]
                out.add(f"{ip}:{port}")
    return out


def _sock_addr(conn: Any) -> str | None:
    """``ip:port`` of a redis-py connection's local end (what CLIENT LIST shows as ``addr``)."""
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return None
    try:
        host, port = sock.getsockname()[:2]
    except (OSError, ValueError, TypeError):
        return None
    return f"{host}:{port}"


def _pool_addrs(client: Any) -> set[str]:
    """Local addresses of every connection of a redis-py client (or PubSub), best effort."""
    out: set[str] = set()
    with contextlib.suppress(Exception):
        conn = getattr(client, "connection", None)
        if conn is not None and (a := _sock_addr(conn)):
            out.add(a)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            conns = list(getattr(pool, "_available_connections", []) or [])
            conns += list(getattr(pool, "_in_use_connections", []) or [])
            for c in conns:
                if a := _sock_addr(c):
                    out.add(a)
    return out


class ConnectionProbe:
    """The connection probe of a WorkerMonitor (mixin; its state lives on the monitor)."""

    settings: Settings
    _keys: KeyLayout
    _nodes: dict[str, _Node]
    _unknown_workers: int
    _inspect_denied: str | None

    def _named_client(self) -> Any:
        """A client whose connections are named ``OWN_NAME`` (see :func:`own_client`)."""
        return own_client(self.settings.broker_url, self.settings)

    def register_own_client(self, client: Any) -> None:
        """A redis-py client (or PubSub, or a callable returning one) of taskdash's: never a worker's."""
        self._own_clients.append(client)

    def _own_addrs(self) -> set[str]:
        out: set[str] = _process_tcp_addrs()
        for c in (self._probe_client, self._pubsub, *self._own_clients):
            if callable(c) and not hasattr(c, "connection_pool"):
                with contextlib.suppress(Exception):
                    c = c()
            if c is not None:
                out |= _pool_addrs(c)
        conn = self._conn
        with contextlib.suppress(Exception):
            chan = conn.default_channel if conn is not None else None
            if chan is not None:
                for pool in (getattr(chan, "_pool", None), getattr(chan, "_async_pool", None)):
                    if pool is None:
                        continue
                    for c in list(getattr(pool, "_available_connections", []) or []) + list(
                            getattr(pool, "_in_use_connections", []) or []):
                        if a := _sock_addr(c):
                            out.add(a)
        return out

    def pidbox_channel(self, db: int) -> str:
        """The PUB/SUB channel of the control (pidbox) exchange that every worker PSUBSCRIBEs."""
        fanout_prefix = self.settings.transport_options.get("fanout_prefix", True)
        return self._keys.fanout_channel(self._keys.pidbox_exchange, db, fanout_prefix)

    def _probe_message(self) -> str:
        body = {"method": "ping", "arguments": {}, "destination": [PROBE_TAG], "pattern": None,
                "matcher": None, "ticket": str(uuid.uuid4()), "reply_to": None}
        return json.dumps({
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8", "content-type": _JSON,
            "headers": {"clock": 0, "expires": time.time() + 1.0},
            "properties": {"delivery_mode": 1, "priority": 0, "body_encoding": "base64",
                           "delivery_info": {"exchange": self._keys.pidbox_exchange,
                                             "routing_key": ""},
                           "delivery_tag": str(uuid.uuid4())},
        })

    def probe_due(self, now: float) -> bool:
        """Whether a connection probe is due (the probe thread's test; also for a thread-less collector)."""
        if self._last_probe is None or now - self._last_probe >= max(self.settings.inspect_interval, 1.0):
            return True
        if now - self._last_probe < PROBE_MIN_INTERVAL:
            return False
        with self._state_lock:
            return any((n.offline_at is None and n.conn_gone_at is None and not n.is_online(now)
                        and n.last_seen is not None) or now - n.first_seen < YOUNG_S
                       for n in self._nodes.values())

    def _run_probe(self) -> None:
        while not self._stop.wait(0.25):
            now = time.time()
            if self._probe_mode == "none" or not self.probe_due(now):
                continue
            self.probe_connections(now)

    def probe_connections(self, now: float | None = None) -> None:
        """One connection probe (one Redis command): CLIENT LIST, else a PUBLISH count; never raises."""
        now = time.time() if now is None else now
        self._prev_probe, self._last_probe = self._last_probe, now
        try:
            if self._probe_client is None:
                self._probe_client = redis_client(self.settings.broker_url, self.settings)
            client = self._probe_client
            if self._probe_mode in (None, "client"):
                try:
                    clients = client.client_list()
                except redis.ResponseError as exc:
                    if not _is_noperm(exc):
                        raise
                    self._probe_note = f"CLIENT LIST refused ({self._mask(exc)})"
                    self._probe_mode = "publish"
                else:
                    self._probe_mode = "client"
                    self.probes += 1
                    self._absorb_client_list(clients, time.time(), sent_at=now)
                    self._publish_beside(client)
                    return
            if self._probe_mode == "publish":
                try:
                    n = self._pidbox_count(client)
                except redis.ResponseError as exc:
                    if not _is_noperm(exc):
                        raise
                    self._probe_note = (f"{self._probe_note or 'CLIENT LIST refused'}; PUBLISH to the pidbox "
                                        f"channel refused ({self._mask(exc)}): no connection evidence")
                    self._probe_mode = "none"
                    return
                self.probes += 1
                t = time.time()
                self._absorb_publish_count(n, t)
                self._pub_meas.append((n, t))  # decides at a later probe (see _count_proves_gone)
        except (redis.RedisError, OSError) as exc:
            log.debug("connection probe failed: %s", self._mask(exc))

    def _pidbox_count(self, client: Any) -> int:
        """The pidbox subscriber count: PUBLISH of the no-op probe message to the pidbox channel."""
        db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
        return int(client.publish(self.pidbox_channel(db), self._probe_message()))

    def _publish_beside(self, client: Any) -> None:
        """The PUBLISH count beside CLIENT LIST: a Celery worker opens one pidbox subscriber connection and,
        with gossip, a second one, so workers started in the same second can lend a killed one their second
        connection in CLIENT LIST's boot-window matching; the pidbox subscriber count has one per worker and
        proves such a worker gone (docs/redis-layout.md#pidbox). Refused: CLIENT LIST alone."""
        if self._publish_refused:
            return
        try:
            n = self._pidbox_count(client)
        except redis.ResponseError as exc:
            if not _is_noperm(exc):
                raise
            self._publish_refused = True
            return
        now = time.time()
        self._absorb_publish_count(n, now, beside_client=True)
        self._pub_meas.append((n, now))  # decides at a later probe (see _count_proves_gone)

    def _absorb_client_list(self, clients: list[dict[str, Any]], now: float, *, sent_at: float | None = None) -> None:
        """Attribute CLIENT LIST's subscriber connections to workers (docstring of collectors.reads.workers).

        ``now``: when the reply was read; ``sent_at``: when the command was sent (default ``now``). Redis ran it
        in between, so a connection's creation time from its whole-second ``age`` lies in
        ``(sent_at - age - 1, now - age + 1)``: a reply read late (GIL, a loaded machine) must not push the
        lower bound past the true creation time and out of the worker's boot window.
        """
        sent_at = now if sent_at is None else min(sent_at, now)
        own = self._own_addrs()
        foreign: list[tuple[str, bool, float, float]] = []  # (name, subscriber, created_min, created_max)
        born: dict[str, tuple[float, float]] = {}
        prev = self._prev_probe
        for c in clients:
            if (str(c.get("cmd", "")).startswith("client|") or c.get("addr") in own
                    or str(c.get("name") or "") == OWN_NAME):
                continue  # taskdash's (this process's, or another taskdash's event subscription)
            age = _float(c.get("age")) or 0.0
            cid = str(c.get("id"))
            known = self._conn_born.get(cid)
            if known is None:
                cmin, cmax = sent_at - age - 1.0, min(now, now - age + 1.0)
                if prev is not None and self._conn_born and cmin < prev < cmax:
                    cmin = prev  # not there at the previous probe
                known = (cmin, cmax)
            born[cid] = known
            # kombu follows fanout exchanges with PSUBSCRIBE; SUBSCRIBE is Celery's result consumer (clients)
            subscriber = (_int(c.get("psub")) or 0) > 0
            foreign.append((str(c.get("name") or ""), subscriber, known[0], known[1]))
        self._conn_born = born
        subs = [(name, cmin, cmax) for name, sub, cmin, cmax in foreign if sub]
        with self._state_lock:
            self._unknown_workers = max(0, len(subs) - self._accounted())
            # Which subscriber connections each worker could own (named after it, or opened in its boot
            # window); a silent worker is proven gone when, after every responding worker got one of its
            # own (a matching), none is left that could be its.
            edges: dict[str, list[int]] = {}
            for node in self._nodes.values():
                node.conn_source = "CLIENT LIST"
                node.conn_checked_at = now
                host_part = node.hostname.split("@", 1)[-1]
                named = [i for i, (name, _, _) in enumerate(subs) if name and name in (node.hostname, host_part)]
                if named:
                    edges[node.hostname] = named
                elif (win := _boot_window(node)) is not None:
                    lo, hi = win
                    edges[node.hostname] = [i for i, (_, cmin, cmax) in enumerate(subs) if cmin <= hi and cmax >= lo]
            responding = [n.hostname for n in self._nodes.values() if n.is_online(now) and n.hostname in edges]
            match: dict[int, str] = {}
            for host in responding:
                _augment(host, edges, match, set())
            for node in self._nodes.values():
                mine = edges.get(node.hostname)
                if mine is None:
                    node.conn_present = None
                    node.conn_detail = "boot time unknown: its connections cannot be told apart (CLIENT LIST)"
                    continue
                if node.hostname in responding:
                    ok = bool(mine)
                else:
                    ok = _augment(node.hostname, edges, dict(match), set())
                if ok and node.pub_gone_at is not None and not node.conn_lost_alive and node.hostname not in responding:
                    # a connection here could be its, but the pidbox subscriber count fell when it went silent
                    node.conn_present = False
                    node.conn_gone_at = node.pub_gone_at
                    node.conn_detail = node.pub_detail
                    node.conn_source = "CLIENT LIST + PUBLISH count"
                elif ok:
                    node.conn_present = True
                    node.conn_ok_at = now
                    node.conn_gone_at = None
                    node.conn_detail = f"{len(mine)} subscriber connection(s) opened at its start still open (CLIENT LIST)"
                elif node.hostname in responding and node.conn_ok_at is None:
                    # not recognised yet (never seen in its window): proves nothing, and spoils nothing
                    node.conn_present = None
                    node.conn_detail = "its subscriber connection is not recognisable (CLIENT LIST)"
                elif node.conn_gone_at is None and not node.conn_lost_alive:
                    # gone since this probe — unless it speaks again after it (then _spoke disables this)
                    node.conn_present = False
                    node.conn_gone_at = now
                    node.conn_detail = ("no Redis connection (CLIENT LIST)" if not mine else
                                        "no Redis connection of its own: the subscriber connections opened at its "
                                        "start are the responding workers' (CLIENT LIST)")

    def _accounted(self) -> int:
        """Known workers that hold a pidbox subscription unless proven gone (caller holds the lock)."""
        denied = self._inspect_denied is not None
        return sum(1 for nd in self._nodes.values()
                   if nd.offline_at is None and nd.conn_gone_at is None and (nd.last_reply is not None or denied))

    def _absorb_publish_count(self, n: int, now: float, *, beside_client: bool = False) -> None:
        """Decide connection presence from the pidbox subscriber count ``n``; ``beside_client``: CLIENT LIST
        decided already this probe, the count only adds a proof of a silent worker's subscription gone."""
        with self._state_lock:
            live = [nd for nd in self._nodes.values() if nd.offline_at is None]
            fresh = {nd.hostname for nd in live if nd.is_online(now)}
            silent = [nd for nd in live if nd.hostname not in fresh and nd.conn_gone_at is None]
            if beside_client:
                self._beside_publish_count(n, live, fresh, silent, now)
                return
            self._unknown_workers = max(0, n - self._accounted())
            for nd in live:
                nd.conn_source = "PUBLISH count"
                nd.conn_checked_at = now
            if not silent and n == len(fresh):
                self._pub_base = (n, frozenset(fresh))  # every subscriber is a known, speaking worker
                self._pub_base_at = now
                for nd in live:
                    if nd.hostname not in fresh:
                        continue  # proven gone earlier: stays so
                    nd.conn_ok_at = now
                    nd.conn_present = True
                    nd.conn_detail = f"pidbox subscribers {n} = workers speaking {len(fresh)} (PUBLISH count)"
                return
            base = self._pub_base
            if base is None:
                for nd in silent:
                    nd.conn_present = None
                    nd.conn_detail = (f"pidbox subscribers {n} for {len(fresh)} speaking worker(s), never "
                                      "counted while all spoke: cannot attribute (PUBLISH count)")
                return
            base_n, base_set = base
            gone = self._count_proves_gone(base, live, fresh, silent, now)
            if gone:
                for nd in gone:
                    nd.conn_present = False
                    nd.conn_gone_at = now
                    nd.conn_detail = (f"pidbox subscribers {base_n} → {n} while {len(gone)} worker(s) went "
                                      "silent: its subscription is gone (PUBLISH count)")
            else:
                for nd in silent:
                    nd.conn_present = True if n >= base_n else None
                    nd.conn_detail = (f"pidbox subscribers {n} (were {base_n}): its subscription may still be "
                                      "open (PUBLISH count)")

    def _count_proves_gone(self, base: tuple[int, frozenset[str]], live: list[_Node], fresh: set[str],
                           silent: list[_Node], now: float) -> list[_Node]:
        """The silent workers an earlier count proves gone (lock held), else [].

        A worker killed a moment ago still looks fresh (its last heartbeat is recent) while its subscription is
        already gone: a drop in the count must not be blamed on a worker merely silent. So a count taken at
        some earlier probe (time t) decides, once every worker not blamed has proven itself alive after t
        (``alive_at``): then the subscriptions missing at t, beyond those of workers already proven gone,
        are the blamed ones'."""
        if not silent or not self._pub_meas:
            return []
        base_n, base_set = base
        by_host = {nd.hostname: nd for nd in live}
        already = sum(1 for h in base_set if (nd := by_host.get(h)) is None or nd.conn_gone_at is not None)
        silent_ids = {id(nd) for nd in silent}
        for n, t in reversed(self._pub_meas):
            if t <= self._pub_base_at:
                break  # counts from before the base say nothing about a subscription lost since
            blamed = [nd for nd in live if nd.conn_gone_at is None and (nd.alive_at or 0.0) <= t]
            if not blamed or {id(nd) for nd in blamed} != silent_ids:
                continue  # someone not silent has not spoken since t, or a silent one spoke after it
            if any(nd.hostname in fresh or nd.hostname not in base_set or nd.conn_lost_alive for nd in blamed):
                return []
            if n <= base_n - already - len(blamed):
                return blamed
        return []

    def _beside_publish_count(self, n: int, live: list[_Node], fresh: set[str], silent: list[_Node],
                              now: float) -> None:
        """The PUBLISH count's gone proof for silent workers CLIENT LIST could not tell apart (lock held)."""
        if not silent:
            if n == len(fresh) and all(nd.hostname in fresh or nd.conn_gone_at is not None for nd in live):
                self._pub_base = (n, frozenset(fresh))
                self._pub_base_at = now
            return
        base = self._pub_base
        if base is None:
            return
        base_n, _ = base
        gone = self._count_proves_gone(base, live, fresh, silent, now)
        if gone:
            for nd in gone:
                nd.pub_gone_at = nd.pub_gone_at or now
                nd.pub_detail = (f"pidbox subscribers {base_n} → {n} while {len(gone)} worker(s) went silent: "
                                 "its subscription is gone (PUBLISH count beside CLIENT LIST)")
                if nd.conn_ok_at is not None:
                    nd.conn_present = False
                    nd.conn_gone_at = nd.pub_gone_at
                    nd.conn_detail = nd.pub_detail
                    nd.conn_source = "CLIENT LIST + PUBLISH count"

