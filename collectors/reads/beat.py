"""Beat reads (issue 16): the schedule and RedBeat's state, straight from Redis and the -A app's config.

Two schedulers are understood:

* **RedBeat** (celery-redbeat): every entry is a hash ``<prefix><name>`` with ``definition`` and ``meta``
  JSON, the schedule is the zset ``<prefix>:schedule`` (entry key -> next due timestamp, -1 when it never
  runs again) and the lock ``<prefix>:lock`` is a redis-py lock whose TTL beat extends on every tick
  (redbeat/schedulers.py). The prefix, lock key and lock timeout come from the app's ``redbeat_*``
  settings, else ``TASKDASH_REDBEAT_PREFIX`` / the default ``redbeat:``.
  One refresh costs one pipelined round trip of four commands (``ZCARD``, a capped ``ZRANGE … WITHSCORES``,
  ``GET`` and ``PTTL`` of the lock) plus one ``HMGET`` per entry whose due time changed since the last
  refresh (i.e. entries beat just ran). Nothing is written.
* **The default scheduler** keeps its state in a file local to beat, so only the schedule is known (the
  app's ``beat_schedule``); runs are observed elsewhere (results, task events, queued messages, see
  ``collectors/analysis/beat_rules.py``). This module peeks at the newest few messages of the queues the
  schedule routes to (``LRANGE key 0 n-1``: the left end is the newest, docs/redis-layout.md#consuming-order)
  for messages beat sent: Celery 5.7 beat adds the header ``celery_beat_task``, django-celery-beat
  ``periodic_task_name``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from collectors.core.config import Settings, load_app
from collectors.keyspace.keys import REDBEAT_PREFIX, KeyLayout

log = logging.getLogger(__name__)

MAX_ENTRIES = 500
"""Entries read per refresh (the soonest due first): a bound, not a sample — a bigger schedule says so."""


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """One schedule entry as configured: how often, which task, which queue."""

    name: str
    task: str | None
    interval_s: float | None = None
    schedule_text: str = "?"
    queue: str | None = None
    cron: Any = field(default=None, compare=False, repr=False)
    """A celery schedule object (crontab/solar) when it is not a plain interval."""
    enabled: bool = True
    relative: bool = False


def describe_interval(seconds: float) -> str:
    if seconds < 120:
        return f"every {seconds:g}s"
    if seconds < 7200:
        return f"every {seconds / 60:g}m"
    return f"every {seconds / 3600:g}h"


def spec_from_schedule(name: str, task: str | None, sched: Any, queue: str | None = None,
                       enabled: bool = True) -> ScheduleSpec:
    """A ScheduleSpec from a beat_schedule value (number, timedelta, celery schedule or crontab)."""
    if isinstance(sched, int | float):
        return ScheduleSpec(name, task, float(sched), describe_interval(float(sched)), queue, None, enabled)
    if isinstance(sched, timedelta):
        s = sched.total_seconds()
        return ScheduleSpec(name, task, s, describe_interval(s), queue, None, enabled)
    run_every = getattr(sched, "run_every", None)
    if type(sched).__name__ == "schedule" and isinstance(run_every, timedelta):
        s = run_every.total_seconds()
        return ScheduleSpec(name, task, s, describe_interval(s), queue, None, enabled,
                            bool(getattr(sched, "relative", False)))
    return ScheduleSpec(name, task, None, _cron_text(sched), queue, sched, enabled)


def _cron_text(sched: Any) -> str:
    if type(sched).__name__ == "crontab":
        parts = [str(getattr(sched, f"_orig_{f}", "*")) for f in
                 ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")]
        return "cron " + " ".join(parts)
    return type(sched).__name__


@dataclass(frozen=True, slots=True)
class BeatConfig:
    """What the -A app (and the environment) say about beat."""

    schedule: tuple[ScheduleSpec, ...] = ()
    redbeat_prefix: str = REDBEAT_PREFIX
    redbeat_lock_key: str | None = None
    """The lock key; None when locking is disabled (``redbeat_lock_key=None``)."""
    redbeat_url: str | None = None
    """``redbeat_redis_url`` when it differs from the broker (None: the broker's Redis)."""
    lock_timeout_s: float | None = None
    max_interval_s: float | None = None
    redbeat_configured: bool = False
    """The app (or the environment) names RedBeat: its settings or ``beat_scheduler``."""
    tolerance_s: float | None = None
    """Fixed tolerance (``TASKDASH_BEAT_TOLERANCE``); None: half the interval, 1–60 s."""

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None,
                      app: Any = None) -> BeatConfig:
        env = os.environ if env is None else env
        if app is None and settings.app:
            try:
                app = load_app(settings.app)
            except Exception as exc:  # noqa: BLE001 - the rest of taskdash already reported it
                log.debug("beat: cannot load app: %s", exc)
        prefix = env.get("TASKDASH_REDBEAT_PREFIX") or REDBEAT_PREFIX
        lock_key: str | None = KeyLayout.redbeat_lock(prefix)
        url = None
        lock_timeout = max_interval = None
        configured = env.get("TASKDASH_BEAT_SCHEDULER", "").lower() == "redbeat"
        specs: list[ScheduleSpec] = []
        tol = env.get("TASKDASH_BEAT_TOLERANCE")
        if app is not None:
            conf = app.conf
            keys = {k.lower() for k in conf.keys()}
            if "redbeat_key_prefix" in keys and conf.get("redbeat_key_prefix"):
                prefix = str(conf.get("redbeat_key_prefix"))
            lock_key = KeyLayout.redbeat_lock(prefix)
            if "redbeat_lock_key" in keys:
                raw = conf.get("redbeat_lock_key")
                lock_key = KeyLayout.redbeat_lock(prefix, str(raw)) if raw else None
            if conf.get("redbeat_redis_url") and conf.get("redbeat_redis_url") != conf.get("broker_url"):
                # the app's broker is the one taskdash was pointed at (flags and env win over the app)
                url = str(conf.get("redbeat_redis_url"))
            if conf.get("redbeat_lock_timeout"):
                lock_timeout = float(conf.get("redbeat_lock_timeout"))
            if conf.get("beat_max_loop_interval"):
                max_interval = float(conf.get("beat_max_loop_interval"))
            scheduler = str(conf.get("beat_scheduler") or "")
            configured = configured or "redbeat" in scheduler.lower() or any(k.startswith("redbeat_") for k in keys)
            for name, entry in (conf.get("beat_schedule") or {}).items():
                if not isinstance(entry, Mapping):
                    continue
                task = entry.get("task")
                opts = entry.get("options") or {}
                queue = opts.get("queue") if isinstance(opts, Mapping) else None
                queue = getattr(queue, "name", queue)
                if queue is None and task:
                    queue = _route(app, str(task), opts)
                specs.append(spec_from_schedule(str(name), task, entry.get("schedule"), queue))
        if lock_timeout is None and max_interval is not None:
            lock_timeout = max_interval * 5
        return cls(tuple(specs), prefix, lock_key, url, lock_timeout, max_interval, configured,
                   float(tol) if tol else None)


def _route(app: Any, task: str, options: Any) -> str | None:
    """The queue the app's router sends ``task`` to (task_routes, task_default_queue)."""
    try:
        route = app.amqp.router.route(dict(options or {}), task)
        q = route.get("queue")
        return getattr(q, "name", q) if q is not None else None
    except Exception:  # noqa: BLE001 - routers are user code
        return app.conf.get("task_default_queue") or "celery"


# ---- RedBeat JSON (redbeat/decoder.py), decoded without importing redbeat --------------------------
def _dt_from(d: Mapping[str, Any]) -> float | None:
    try:
        zone = d.get("timezone", "UTC")
        if isinstance(zone, int | float):
            tz: Any = timezone(timedelta(seconds=float(zone)))
        else:
            try:
                from zoneinfo import ZoneInfo

                tz = ZoneInfo(str(zone))
            except Exception:  # noqa: BLE001
                tz = timezone.utc
        return datetime(int(d["year"]), int(d["month"]), int(d["day"]), int(d.get("hour", 0)),
                        int(d.get("minute", 0)), int(d.get("second", 0)), int(d.get("microsecond", 0)),
                        tzinfo=tz).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def _schedule_from(d: Any) -> Any:
    """A RedBeat ``schedule`` JSON object -> seconds (interval) or a celery crontab (else the raw dict)."""
    if not isinstance(d, Mapping):
        return d
    kind = d.get("__type__")
    if kind == "interval":
        try:
            return float(d["every"])
        except (KeyError, TypeError, ValueError):
            return d
    if kind == "crontab":
        try:
            from celery.schedules import crontab

            return crontab(**{k: v for k, v in d.items() if k != "__type__"})
        except Exception:  # noqa: BLE001
            return d
    return d


@dataclass(frozen=True, slots=True)
class RedBeatEntryRaw:
    """One RedBeat entry as read: the zset score plus its decoded definition and meta."""

    key: str
    name: str
    due_at: float | None
    """The zset score (next due, epoch seconds); None for -1 (never again)."""
    spec: ScheduleSpec
    last_run_at: float | None
    total_run_count: int | None


@dataclass(frozen=True, slots=True)
class RedBeatRead:
    entries: tuple[RedBeatEntryRaw, ...]
    total: int
    lock_key: str | None
    lock_token: str | None
    lock_pttl_ms: int | None
    commands: int
    round_trips: int
    redis_time: float


class RedBeatReader:
    """Bounded, read-only reads of RedBeat's keys (definitions cached until an entry's score changes)."""

    def __init__(self, client: Any, config: BeatConfig, *, max_entries: int = MAX_ENTRIES) -> None:
        self.client = client
        self.config = config
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, RedBeatEntryRaw]] = {}

    @property
    def schedule_key(self) -> str:
        return KeyLayout.redbeat_schedule(self.config.redbeat_prefix)

    def exists(self) -> bool:
        """The one cheap check: does RedBeat's schedule zset exist?"""
        return bool(self.client.exists(self.schedule_key))

    def read(self) -> RedBeatRead:
        lock = self.config.redbeat_lock_key
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.zcard(self.schedule_key)
        pipe.zrange(self.schedule_key, 0, self.max_entries - 1, withscores=True)
        if lock:
            pipe.get(lock)
            pipe.pttl(lock)
        res = pipe.execute()
        commands, trips = len(res), 1
        secs, micros = res[0]
        redis_time = int(secs) + int(micros) / 1e6
        total = int(res[1])
        rows = [(_s(k), float(score)) for k, score in res[2]]
        token = _s(res[3]) if lock and res[3] is not None else None
        pttl = int(res[4]) if lock and res[4] is not None and int(res[4]) >= 0 else None
        stale = [k for k, score in rows if k not in self._cache or self._cache[k][0] != score]
        if stale:
            pipe = self.client.pipeline(transaction=False)
            for k in stale:
                pipe.hmget(k, "definition", "meta")
            fetched = pipe.execute()
            commands += len(stale)
            trips += 1
            scores = dict(rows)
            for k, (definition, meta) in zip(stale, fetched, strict=True):
                self._cache[k] = (scores[k], self._decode(k, scores[k], definition, meta))
        keep = {k for k, _ in rows}
        for k in [k for k in self._cache if k not in keep]:
            del self._cache[k]
        entries = tuple(self._cache[k][1] for k, _ in rows)
        return RedBeatRead(entries, total, lock, token, pttl, commands, trips, redis_time)

    def _decode(self, key: str, score: float, definition: Any, meta: Any) -> RedBeatEntryRaw:
        prefix = self.config.redbeat_prefix
        name = key[len(prefix):] if key.startswith(prefix) else key
        d = _loads(definition)
        m = _loads(meta)
        task = d.get("task") if isinstance(d.get("task"), str) else None
        opts = d.get("options") if isinstance(d.get("options"), Mapping) else {}
        queue = opts.get("queue") if isinstance(opts.get("queue"), str) else None
        if queue is None:
            queue = next((s.queue for s in self.config.schedule if s.task == task and s.queue), None)
        spec = spec_from_schedule(str(d.get("name") or name), task, _schedule_from(d.get("schedule")), queue,
                                  enabled=d.get("enabled", True) is not False)
        last = m.get("last_run_at")
        last_ts = _dt_from(last) if isinstance(last, Mapping) else None
        count = m.get("total_run_count")
        return RedBeatEntryRaw(key, spec.name, score if score >= 0 else None, spec, last_ts,
                               int(count) if isinstance(count, int) else None)


def _s(v: Any) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


def _loads(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        v = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


# ---- the default scheduler: beat's sends still waiting in a queue ----------------------------------
@dataclass(frozen=True, slots=True)
class QueuedSend:
    """A message beat sent that is still in a queue (not consumed yet)."""

    task_id: str
    task: str | None
    queue: str
    periodic_task_name: str | None
    chord_body: str | None = None


BEAT_HEADERS = ("periodic_task_name", "celery_beat_task")


def message_headers(raw: Any) -> dict[str, Any]:
    """The headers of a kombu envelope (JSON text), {} when it is not one."""
    try:
        env = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    if not isinstance(env, dict):
        return {}
    h = env.get("headers")
    return h if isinstance(h, dict) else {}


def chord_body_of(raw: Any, limit: int = 256 * 1024) -> str | None:
    """The body task name of a chord header part's message (the ``chord`` option in the protocol 2 body).

    Only JSON bodies are decoded (base64 + JSON, no decompression, size-capped), never pickle.
    """
    try:
        env = json.loads(raw)
        if env.get("content-type") != "application/json" or env.get("headers", {}).get("compression"):
            return None
        body = env.get("body")
        if not isinstance(body, str) or len(body) > limit:
            return None
        decoded = json.loads(base64.b64decode(body)) if (env.get("properties") or {}).get(
            "body_encoding") == "base64" else json.loads(body)
        embed = decoded[2] if isinstance(decoded, list) and len(decoded) > 2 else {}
        chord = embed.get("chord") if isinstance(embed, dict) else None
        task = chord.get("task") if isinstance(chord, dict) else None
        return task if isinstance(task, str) else None
    except Exception:  # noqa: BLE001 - hostile or odd data is simply not a chord part
        return None


def peek_beat_sends(client: Any, layout: KeyLayout, queues: Sequence[str], *, per_key: int = 10
                    ) -> tuple[list[QueuedSend], int]:
    """Beat's sends among the newest ``per_key`` messages of every band of ``queues`` (one round trip)."""
    keys = [(q, key) for q in queues for _band, key in layout.queue_keys(q)]
    if not keys:
        return [], 0
    pipe = client.pipeline(transaction=False)
    for _q, key in keys:
        pipe.lrange(key, 0, per_key - 1)
    out: list[QueuedSend] = []
    for (q, _key), msgs in zip(keys, pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(msgs, list):
            continue  # a wrong-type key: the broker reader reports it
        for raw in msgs:
            h = message_headers(raw)
            if not any(h.get(k) for k in BEAT_HEADERS) or not isinstance(h.get("id"), str):
                continue
            ptn = h.get("periodic_task_name")
            out.append(QueuedSend(h["id"], h.get("task") if isinstance(h.get("task"), str) else None, q,
                                  ptn if isinstance(ptn, str) else None))
    return out, len(keys)
