"""Every Redis key name taskdash reads or writes, built in one place from :class:`Settings`.

``KeyLayout.from_settings(settings)`` gives a frozen object that knows kombu's broker layout (global
``global_keyprefix``, the priority-band separator and steps, ``unacked``/``unacked_index``/``unacked_mutex``,
the ``_kombu.binding.*`` routing tables), the result backend's ``celery-task-meta-*`` keys, taskdash's own
keys (the quarantine hash and index, purge temporaries, restore markers) and which queues are Celery's
internal ones (pidbox, reply and event queues, worker-direct queues). The facts come from kombu
``transport/redis.py`` (``_q_for_pri``, ``priority``, ``_queue_bind``, ``GlobalKeyPrefixMixin``) and
Celery's result backend; docs/redis-layout.md#key-map describes them.

Nothing here talks to Redis: it only names keys.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from collectors.core.config import Settings

BINDING_PREFIX = "_kombu.binding."
"""kombu's routing table of one exchange: ``_kombu.binding.<exchange>``, a set of ``rk<sep>pattern<sep>queue``."""
BINDING_DEADLINES = "_kombu.binding_deadlines"
"""kombu 5.7's zset ``exchange -> ms deadline`` of binding tables with expiring queues."""
UNACKED_MUTEX = "unacked_mutex"
"""Default name of the lock kombu's visibility restore holds (transport option ``unacked_mutex_key``)."""
RESULT_PREFIX = "celery-task-meta-"
"""Celery's result backend key of one task: ``<result_keyprefix>celery-task-meta-<task_id>``."""
QUARANTINE = "taskdash.quarantine"
"""taskdash's dead-letter hash ``id -> record JSON``; ``QUARANTINE + '.index'`` is the zset ``id -> time``."""
PURGING = "taskdash.purging"
"""Temporary lists a purge renames a queue's priority lists to (``taskdash.purging.<token>.<band>``)."""
RESTORED = "taskdash.restored"
"""``taskdash.restored.<export id>``: set once an export was restored (refuses a second restore)."""
PAUSED = "taskdash.paused"
"""Queues paused by ``taskdash pause``: hash ``queue -> {"workers": [...], "by": actor, "since": time}``."""
TASKSET_PREFIX = "celery-taskset-meta-"
"""Celery's group key ``<result_keyprefix>celery-taskset-meta-<gid>``; the Redis backend's chord state adds
``.s`` (size), ``.t`` (size adjustment), ``.j`` (joined part results, zset by group index or list), ``.d``
(parts already counted) and ``.c`` (callback claim, ``done`` after the body was sent): celery/backends/redis.py
``on_chord_part_return``, docs/redis-layout.md#result-keys."""
CHORD_SUFFIXES = (".s", ".t", ".j", ".d", ".c")
REDBEAT_PREFIX = "redbeat:"
"""celery-redbeat's default ``redbeat_key_prefix``: entries are hashes ``<prefix><name>`` (``definition``,
``meta``), the schedule the zset ``<prefix>:schedule`` (entry key -> due timestamp), the lock
``<prefix>:lock`` (redis-py lock: token, TTL extended every tick): redbeat/schedulers.py ``RedBeatConfig``."""
PIDBOX_SUFFIX = ".pidbox"
"""Celery's control queues (``<node>.<ctl>.pidbox``) and reply queues (``<oid>.reply.<ctl>.pidbox``)."""
WORKER_DIRECT_EXCHANGE = "C.dq2"
"""The exchange of Celery's ``worker_direct`` queues ``<node>.dq2``."""
WORKER_DIRECT_SUFFIX = ".dq2"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The key names of one broker (and its result backend), as kombu and Celery build them.

    Keys returned are full Redis keys (``global_keyprefix`` applied) unless a name says otherwise;
    exchange and queue names inside binding rows and message values stay unprefixed, as in kombu.
    """

    global_keyprefix: str = ""
    sep: str = "\x06\x16"
    priority_steps: tuple[int, ...] = (0, 3, 6, 9)
    unacked_name: str = "unacked"
    unacked_index_name: str = "unacked_index"
    unacked_mutex_name: str = UNACKED_MUTEX
    result_keyprefix: str = ""
    """Already normalised the way Celery does (ends with ``_ : - .``), see config.normalise_result_prefix."""
    control_exchange: str = "celery"
    event_exchange: str = "celeryev"

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyLayout:
        """The layout the settings describe (transport options resolved by ``resolve_settings``)."""
        return cls(
            global_keyprefix=settings.global_keyprefix,
            sep=settings.sep,
            priority_steps=tuple(settings.priority_steps),
            unacked_name=settings.unacked_key,
            unacked_index_name=settings.unacked_index_key,
            unacked_mutex_name=str(settings.transport_options.get("unacked_mutex_key", UNACKED_MUTEX)),
            result_keyprefix=settings.result_keyprefix,
            control_exchange=settings.control_exchange,
            event_exchange=settings.event_exchange,
        )

    # ---- prefix ---------------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """A broker key with ``global_keyprefix`` applied (kombu ``PrefixedStrictRedis``)."""
        return f"{self.global_keyprefix}{name}"

    def unprefixed(self, key: str) -> str:
        """``key`` without ``global_keyprefix`` (unchanged when it does not carry it)."""
        prefix = self.global_keyprefix
        return key[len(prefix):] if prefix and key.startswith(prefix) else key

    # ---- queues and priority bands (kombu Channel._q_for_pri / priority) ------------------------
    def band(self, priority: int | None) -> int:
        """The priority band (a value of ``priority_steps``) a message priority falls into."""
        steps = list(self.priority_steps)
        pri = 0 if priority is None else max(0, min(9, int(priority)))
        return steps[max(bisect.bisect(steps, pri) - 1, 0)]

    def band_name(self, queue: str, band: int) -> str:
        """The unprefixed list name of ``queue``'s band ``band`` (``q`` for band 0, else ``q<sep><band>``)."""
        return queue if band == 0 else f"{queue}{self.sep}{band}"

    def queue_keys(self, queue: str) -> list[tuple[int, str]]:
        """(band, prefixed list key) for every priority band of ``queue``, band 0 first."""
        return [(step, self.key(self.band_name(queue, step))) for step in self.priority_steps]

    def queue_key(self, queue: str, priority: int | None) -> str:
        """The prefixed list key a message of ``priority`` on ``queue`` is pushed to."""
        return self.key(self.band_name(queue, self.band(priority)))

    @property
    def band_suffixes(self) -> tuple[str, ...]:
        """``<sep><step>`` of every band but 0: what a band key adds to its queue's name."""
        return tuple(f"{self.sep}{s}" for s in self.priority_steps if s)

    def display_key(self, key: str) -> str:
        """A list key for humans: ``app:q\\x06\\x163`` -> ``q (priority 3)``."""
        name = self.unprefixed(key)
        if self.sep in name:
            queue, band = name.rsplit(self.sep, 1)
            return f"{queue} (priority {band})"
        return name

    # ---- the unacked ledger (kombu QoS) ---------------------------------------------------------
    @property
    def unacked(self) -> str:
        """The hash ``delivery_tag -> [payload, exchange, routing_key]``."""
        return self.key(self.unacked_name)

    @property
    def unacked_index(self) -> str:
        """The zset ``delivery_tag -> delivery time``."""
        return self.key(self.unacked_index_name)

    @property
    def unacked_mutex(self) -> str:
        """The lock kombu's visibility restore takes (``SET NX PX``)."""
        return self.key(self.unacked_mutex_name)

    # ---- bindings (kombu Channel._queue_bind) ---------------------------------------------------
    @property
    def binding_prefix(self) -> str:
        """Prefixed ``_kombu.binding.``: a binding table key is this plus the exchange name."""
        return self.key(BINDING_PREFIX)

    def binding(self, exchange: str) -> str:
        """The binding table (set) of ``exchange``."""
        return self.key(f"{BINDING_PREFIX}{exchange}")

    @property
    def binding_pattern(self) -> str:
        """SCAN MATCH pattern of every binding table (prefix not glob-escaped)."""
        return self.key(f"{BINDING_PREFIX}*")

    @property
    def binding_deadlines(self) -> str:
        """kombu 5.7's zset of binding tables that expire."""
        return self.key(BINDING_DEADLINES)

    def binding_row(self, row: str) -> list[str]:
        """A binding row split into its parts (``[routing_key, pattern, queue]`` when well formed)."""
        return row.split(self.sep)

    # ---- Celery control and events (kombu.pidbox, celery/app/defaults.py) -----------------------
    @property
    def pidbox_exchange(self) -> str:
        """The fanout exchange workers' control queues bind to (``<ctl>.pidbox``)."""
        return f"{self.control_exchange}{PIDBOX_SUFFIX}"

    @property
    def reply_exchange(self) -> str:
        """The direct exchange control replies go to (``reply.<ctl>.pidbox``)."""
        return f"reply.{self.control_exchange}{PIDBOX_SUFFIX}"

    def reply_queue(self, oid: str) -> str:
        """The reply queue of one control client ``oid`` (``<oid>.reply.<ctl>.pidbox``, kombu ``Mailbox``)."""
        return f"{oid}.{self.reply_exchange}"

    @property
    def pidbox_queue_suffix(self) -> str:
        """What a worker node's control queue adds to the node name (``.<ctl>.pidbox``)."""
        return f".{self.pidbox_exchange}"

    @property
    def control_event_exchanges(self) -> frozenset[str]:
        """Exchanges whose queues never hold task messages: control, reply and events."""
        return frozenset({self.pidbox_exchange, self.reply_exchange, self.event_exchange})

    @property
    def internal_exchanges(self) -> frozenset[str]:
        """:attr:`control_event_exchanges` plus worker-direct: exchanges the dashboard does not list."""
        return self.control_event_exchanges | {WORKER_DIRECT_EXCHANGE}

    @staticmethod
    def is_pidbox_queue(name: str) -> bool:
        """A control or reply queue (``*.pidbox``)."""
        return name.endswith(PIDBOX_SUFFIX)

    def is_control_or_event_queue(self, name: str) -> bool:
        """A pidbox/reply queue or an event receiver (``celeryev.<uuid>``): never a task's message."""
        return self.is_pidbox_queue(name) or name.startswith(f"{self.event_exchange}.")

    def is_internal_queue(self, name: str) -> bool:
        """Celery's own queues, not shown as task queues: pidbox, reply, event receivers, worker-direct."""
        return (
            self.is_control_or_event_queue(name)
            or name == self.event_exchange
            or name.endswith(WORKER_DIRECT_SUFFIX)
        )

    @staticmethod
    def fanout_prefix(db: int, fanout_prefix: bool | str = True) -> str:
        """kombu's ``keyprefix_fanout`` for transport option ``fanout_prefix`` (``/<db>.`` by default)."""
        if fanout_prefix is True:
            return f"/{db}."
        if isinstance(fanout_prefix, str):
            return fanout_prefix
        return ""

    def fanout_channel(self, exchange: str, db: int, fanout_prefix: bool | str = True) -> str:
        """The PUB/SUB channel of a fanout exchange (``<prefix>/<db>.<exchange>``, kombu ``_get_publish_topic``)."""
        return f"{self.global_keyprefix}{self.fanout_prefix(db, fanout_prefix)}{exchange}"

    # ---- result backend (celery/backends/base.py KeyValueStoreBackend) --------------------------
    @property
    def result_prefix(self) -> str:
        """``<result_keyprefix>celery-task-meta-``: a task's result key is this plus its id."""
        return f"{self.result_keyprefix}{RESULT_PREFIX}"

    def result_key(self, task_id: str) -> str:
        """The result backend key of ``task_id``."""
        return f"{self.result_prefix}{task_id}"

    @property
    def result_pattern(self) -> str:
        """(P)SUBSCRIBE / SCAN MATCH pattern of every result key."""
        return f"{self.result_prefix}*"

    # ---- taskdash's own keys --------------------------------------------------------------------
    @property
    def quarantine(self) -> str:
        """The quarantine hash ``id -> record JSON``."""
        return self.key(QUARANTINE)

    @property
    def quarantine_index(self) -> str:
        """The quarantine zset ``id -> quarantined_at``."""
        return self.key(f"{QUARANTINE}.index")

    def purge_temp(self, token: str, band: int) -> str:
        """The temporary list a purge moves band ``band`` of a queue to before exporting it."""
        return self.key(f"{PURGING}.{token}.{band}")

    def restored_marker(self, export_id: str) -> str:
        """The string key that records that the export ``export_id`` was restored."""
        return self.key(f"{RESTORED}.{export_id}")

    @property
    def paused(self) -> str:
        """The hash of paused queues ``queue -> JSON {workers, by, since}`` (issue 18)."""
        return self.key(PAUSED)

    # ---- groups and chords in the result backend (issue 16) -------------------------------------
    @property
    def taskset_prefix(self) -> str:
        """``<result_keyprefix>celery-taskset-meta-``: a group's keys are this plus its id (and a suffix)."""
        return f"{self.result_keyprefix}{TASKSET_PREFIX}"

    def taskset_key(self, group_id: str, suffix: str = "") -> str:
        """A group's result key (``suffix`` ``''``) or one of its chord keys (``.s .t .j .d .c``)."""
        return f"{self.taskset_prefix}{group_id}{suffix}"

    @property
    def taskset_pattern(self) -> str:
        """SCAN MATCH pattern of every group and chord key."""
        return f"{self.taskset_prefix}*"

    # ---- celery-redbeat (its own Redis and prefix, never kombu's global_keyprefix) --------------
    @staticmethod
    def redbeat_schedule(prefix: str = REDBEAT_PREFIX) -> str:
        """RedBeat's schedule zset (``<prefix>:schedule``; the default prefix gives ``redbeat::schedule``)."""
        return f"{prefix}:schedule"

    @staticmethod
    def redbeat_lock(prefix: str = REDBEAT_PREFIX, lock_key: str | None = None) -> str:
        """RedBeat's lock key: ``redbeat_lock_key`` (prefixed unless it already is), else ``<prefix>:lock``."""
        if lock_key:
            return lock_key if lock_key.startswith(prefix) else f"{prefix}{lock_key}"
        return f"{prefix}:lock"

    @staticmethod
    def redbeat_entry(name: str, prefix: str = REDBEAT_PREFIX) -> str:
        """The hash of one RedBeat entry (fields ``definition`` and ``meta``)."""
        return f"{prefix}{name}"
