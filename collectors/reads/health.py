"""Redis health for a broker: memory vs maxmemory, eviction policy, clients, ops/s, persistence.

``redis_health(client)`` costs one ``INFO`` (all default sections), one ``CONFIG GET`` (the RDB save
schedule, and the policy when INFO does not carry it) and one ``CLIENT LIST TYPE pubsub`` (the
subscribed connections: workers' event/control listeners). An evicting broker silently drops queue
lists, bindings and unacked entries, so any policy other than ``noeviction`` with ``maxmemory`` set is
a warning.

Each read degrades on its own, field by field: a managed Redis or an ACL user may refuse or rename
CONFIG, CLIENT or even INFO, or leave sections out of INFO. A field that could not be read stays None
and ``RedisHealth.unreadable`` says why (``"NOPERM CONFIG|GET"``, ``"CONFIG disabled or renamed"``,
``"not in INFO (section persistence)"``). ``error`` is set only when the server gave no usable answer
at all (unreachable, authentication failed, not ready).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from collectors.core.errors import Kind, RedisProblem, classify

_EVICTING_OK = "noeviction"

INFO_FIELDS: dict[str, tuple[str, str]] = {
    # RedisHealth field: (INFO section, INFO key)
    "version": ("server", "redis_version"),
    "mode": ("server", "redis_mode"),
    "uptime_s": ("server", "uptime_in_seconds"),
    "role": ("replication", "role"),
    "used_memory": ("memory", "used_memory"),
    "used_memory_peak": ("memory", "used_memory_peak"),
    "maxmemory": ("memory", "maxmemory"),
    "maxmemory_policy": ("memory", "maxmemory_policy"),
    "evicted_keys": ("stats", "evicted_keys"),
    "expired_keys": ("stats", "expired_keys"),
    "ops_per_sec": ("stats", "instantaneous_ops_per_sec"),
    "blocked_clients": ("clients", "blocked_clients"),
    "connected_clients": ("clients", "connected_clients"),
    "rdb_last_save": ("persistence", "rdb_last_save_time"),
    "rdb_last_status": ("persistence", "rdb_last_bgsave_status"),
    "aof_enabled": ("persistence", "aof_enabled"),
    "aof_last_status": ("persistence", "aof_last_write_status"),
}
"""Where each INFO-derived field comes from (to say which section was missing or refused)."""


@dataclass(frozen=True, slots=True)
class HealthWarning:
    """One problem found in INFO: short code and a one-line message."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class RedisHealth:
    """What one INFO says about the broker's Redis."""

    taken_at: float
    version: str | None = None
    mode: str | None = None
    role: str | None = None
    uptime_s: int | None = None
    used_memory: int | None = None
    used_memory_peak: int | None = None
    maxmemory: int | None = None
    """0 = no limit."""
    maxmemory_policy: str | None = None
    """None when neither INFO nor CONFIG GET could tell (CONFIG disabled)."""
    policy_source: str | None = None
    """"info", "config" or None."""
    evicted_keys: int | None = None
    expired_keys: int | None = None
    blocked_clients: int | None = None
    connected_clients: int | None = None
    ops_per_sec: int | None = None
    rdb_enabled: bool | None = None
    """True when a ``save`` schedule exists (None: unknown)."""
    rdb_last_save: int | None = None
    rdb_last_status: str | None = None
    aof_enabled: bool | None = None
    aof_last_status: str | None = None
    keys: int | None = None
    """Keys in the connected db (from the keyspace section, else DBSIZE)."""
    pubsub_clients: int | None = None
    """Connections in subscribed mode (``CLIENT LIST TYPE pubsub``): workers' event/control listeners."""
    warnings: tuple[HealthWarning, ...] = field(default_factory=tuple)
    error: str | None = None
    """Set only when Redis gave no usable answer (unreachable, authentication failed, not ready)."""
    unreadable: tuple[tuple[str, str], ...] = ()
    """(field, why) for every field that could not be read: refused (NOPERM), disabled/renamed, or not
    in the server's INFO. A None field without an entry here is simply not applicable."""

    def why_unreadable(self, name: str) -> str | None:
        """The reason ``name`` could not be read (None when it was read or does not apply)."""
        return dict(self.unreadable).get(name)

    @property
    def memory_ratio(self) -> float | None:
        """used_memory / maxmemory (None without a limit)."""
        if not self.maxmemory or self.used_memory is None:
            return None
        return self.used_memory / self.maxmemory

    @property
    def may_evict(self) -> bool:
        """maxmemory set and a policy that deletes keys when it is reached."""
        return bool(self.maxmemory) and self.maxmemory_policy not in (None, _EVICTING_OK)

    @property
    def persistence(self) -> str:
        """"rdb", "aof", "rdb+aof", "none" or "?"."""
        parts = [n for n, on in (("rdb", self.rdb_enabled), ("aof", self.aof_enabled)) if on]
        if parts:
            return "+".join(parts)
        return "none" if self.rdb_enabled is False and self.aof_enabled is False else "?"

    def to_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at, "version": self.version, "mode": self.mode, "role": self.role,
            "uptime_s": self.uptime_s, "used_memory": self.used_memory, "used_memory_peak": self.used_memory_peak,
            "maxmemory": self.maxmemory, "maxmemory_policy": self.maxmemory_policy,
            "policy_source": self.policy_source, "memory_ratio": self.memory_ratio, "may_evict": self.may_evict,
            "evicted_keys": self.evicted_keys, "expired_keys": self.expired_keys,
            "blocked_clients": self.blocked_clients, "connected_clients": self.connected_clients,
            "ops_per_sec": self.ops_per_sec, "persistence": self.persistence,
            "rdb_last_save": self.rdb_last_save, "rdb_last_status": self.rdb_last_status,
            "aof_last_status": self.aof_last_status, "keys": self.keys, "pubsub_clients": self.pubsub_clients,
            "warnings": [w.to_json() for w in self.warnings], "error": self.error,
            "unreadable": dict(self.unreadable),
        }


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5K' (Redis' own style)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def parse_health(info: dict[str, Any], policy: str | None = None, policy_source: str | None = None,
                 db: int = 0, now: float | None = None) -> RedisHealth:
    """A RedisHealth from an ``INFO`` dict (redis-py's parsed form) and an optional policy."""
    if policy is None and info.get("maxmemory_policy") is not None:
        policy, policy_source = _str(info.get("maxmemory_policy")), "info"
    # INFO does not show the RDB save schedule: redis_health fills rdb_enabled from CONFIG GET save.
    rdb_enabled: bool | None = None
    aof = info.get("aof_enabled")
    keyspace = info.get(f"db{db}")
    keys = _int(keyspace.get("keys")) if isinstance(keyspace, dict) else (0 if "redis_version" in info else None)
    h = RedisHealth(
        taken_at=time.time() if now is None else now,
        version=_str(info.get("redis_version") or info.get("valkey_version")),
        mode=_str(info.get("redis_mode")),
        role=_str(info.get("role")),
        uptime_s=_int(info.get("uptime_in_seconds")),
        used_memory=_int(info.get("used_memory")),
        used_memory_peak=_int(info.get("used_memory_peak")),
        maxmemory=_int(info.get("maxmemory")),
        maxmemory_policy=policy,
        policy_source=policy_source,
        evicted_keys=_int(info.get("evicted_keys")),
        expired_keys=_int(info.get("expired_keys")),
        blocked_clients=_int(info.get("blocked_clients")),
        connected_clients=_int(info.get("connected_clients")),
        ops_per_sec=_int(info.get("instantaneous_ops_per_sec")),
        rdb_enabled=rdb_enabled,
        rdb_last_save=_int(info.get("rdb_last_save_time")),
        rdb_last_status=_str(info.get("rdb_last_bgsave_status")),
        aof_enabled=None if aof is None else bool(_int(aof)),
        aof_last_status=_str(info.get("aof_last_write_status")),
        keys=keys,
    )
    return _with_warnings(h)


def _with_warnings(h: RedisHealth) -> RedisHealth:
    from dataclasses import replace

    out: list[HealthWarning] = []
    if h.may_evict:
        out.append(HealthWarning(
            "evicting-policy",
            f"maxmemory-policy {h.maxmemory_policy} with maxmemory {human_bytes(h.maxmemory)}: when memory is "
            "full Redis deletes keys — queued messages, bindings and unacked entries vanish silently "
            "(set maxmemory-policy noeviction on a broker)"))
    elif h.maxmemory and h.maxmemory_policy is None:
        why = h.why_unreadable("maxmemory_policy") or "CONFIG disabled"
        out.append(HealthWarning(
            "policy-unknown",
            f"maxmemory {human_bytes(h.maxmemory)} is set and the eviction policy cannot be read ({why}): "
            "make sure it is noeviction"))
    if h.evicted_keys:
        out.append(HealthWarning("evicted", f"{h.evicted_keys:,} keys were evicted since Redis started"))
    ratio = h.memory_ratio
    if ratio is not None and ratio >= 0.9:
        out.append(HealthWarning(
            "memory-high", f"memory {human_bytes(h.used_memory)} of {human_bytes(h.maxmemory)} ({ratio:.0%})"))
    if h.role and h.role not in ("master", "primary"):
        out.append(HealthWarning("replica", f"connected to a {h.role}: writes will fail"))
    if h.rdb_last_status and h.rdb_last_status != "ok":
        out.append(HealthWarning("rdb-failing", f"last RDB save failed ({h.rdb_last_status})"))
    if h.aof_enabled and h.aof_last_status and h.aof_last_status != "ok":
        out.append(HealthWarning("aof-failing", f"last AOF write failed ({h.aof_last_status})"))
    return replace(h, warnings=tuple(out))


def _problem(exc: BaseException) -> RedisProblem:
    return classify(exc) or RedisProblem(Kind.OTHER, str(exc))


def _fatal(problem: RedisProblem) -> bool:
    """The connection itself is unusable: no other command will answer either."""
    return problem.kind in (Kind.UNREACHABLE, Kind.AUTH, Kind.NOT_READY)


def redis_health(client: redis.Redis) -> RedisHealth:
    """Read ``INFO``, ``CONFIG GET`` and ``CLIENT LIST TYPE pubsub``, each on its own; never raises.

    Args:
        client: a redis-py client on the broker (its db is used for the key count).
    """
    from dataclasses import replace

    now = time.time()
    unreadable: dict[str, str] = {}
    db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
    info: dict[str, Any] = {}
    try:
        info = client.info()
    except redis.RedisError as exc:
        p = _problem(exc)
        if _fatal(p) or p.kind is Kind.OTHER:
            return RedisHealth(taken_at=now, error=f"{type(exc).__name__}: {exc}")
        for name in INFO_FIELDS:
            unreadable[name] = f"{p.reason()} (INFO)" if p.command is None else p.reason()
        unreadable["keys"] = unreadable["version"]
    policy = _str(info.get("maxmemory_policy"))
    source = "info" if policy else None
    rdb_enabled: bool | None = None
    try:
        conf = client.config_get("maxmemory-policy")
        if not policy and conf.get("maxmemory-policy"):
            policy, source = _str(conf["maxmemory-policy"]), "config"
        save = client.config_get("save").get("save")
        if save is not None:
            rdb_enabled = bool(_str(save).strip())
    except redis.RedisError as exc:  # CONFIG renamed/disabled (managed Redis) or refused (ACL)
        p = _problem(exc)
        if _fatal(p):
            return RedisHealth(taken_at=now, error=f"{type(exc).__name__}: {exc}")
        why = p.reason() if p.kind is not Kind.OTHER else f"CONFIG GET failed: {p.detail}"
        unreadable["rdb_enabled"] = why
        if not policy:
            unreadable["maxmemory_policy"] = why
    pubsub_clients: int | None = None
    try:
        pubsub_clients = len(client.client_list(_type="pubsub"))
    except redis.RedisError as exc:
        p = _problem(exc)
        unreadable["pubsub_clients"] = p.reason() if p.kind is not Kind.OTHER else f"CLIENT LIST failed: {p.detail}"
    if info:
        h = parse_health(info, policy, source, db=db, now=now)
        for name, (section, key) in INFO_FIELDS.items():
            if key not in info and getattr(h, name) is None and name not in unreadable:
                unreadable[name] = f"not in INFO (section {section})"
    else:
        h = RedisHealth(taken_at=now, maxmemory_policy=policy, policy_source=source)
        try:
            h = replace(h, keys=int(client.dbsize()))
            unreadable.pop("keys", None)
        except redis.RedisError as exc:
            unreadable["keys"] = _problem(exc).reason()
    h = replace(h, rdb_enabled=rdb_enabled, pubsub_clients=pubsub_clients,
                unreadable=tuple(sorted(unreadable.items())))
    return _with_warnings(h)
