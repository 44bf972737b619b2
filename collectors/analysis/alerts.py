"""Alert rules evaluated on a Snapshot: the same rules as ``deploy/prometheus/taskdash-rules.yml``.

Each :class:`Rule` has a name (the ``rule`` label of the Prometheus alert of the same meaning), a
severity, a ``for`` duration (how long a finding must hold before it fires), a summary and the taskdash
command or key that fixes it. :func:`evaluate` is pure: one Snapshot (plus an optional Redis health
reading and the evaluator's short history) gives the list of :class:`Finding` per (rule, subject), and
the set of rules that *could not be judged* this round (the broker did not answer, inspect failed, the
result scan is not complete): a rule that cannot be judged must neither fire nor resolve.

:class:`AlertEvaluator` keeps the few samples the rate rules need (failures per window, evicted keys)
between refreshes; ``taskdash watch`` adds ``for``, cooldown, dedupe and notification on top.

Configuration (``[alerts]`` and ``[contexts.NAME.alerts]`` of the config file, see
collectors.core.contexts)::

    [alerts]                          # every context
    cooldown = 1800                   # seconds between two notifications of one firing alert
    disabled = ["worker_offline"]     # or: enabled = ["poison_suspect", "orphaned_messages"]
    oldest_age_s = 900                # thresholds: see DEFAULT_THRESHOLDS
    [alerts.for]                      # per-rule "for" durations (seconds)
    orphaned_messages = 60
    [alerts.severity]
    oldest_message_age = "critical"

A context's table is applied over the top-level one (lists replace, tables merge).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from collectors.core.models import PoisonSuspect, Snapshot, WorkerInfo
from collectors.reads.health import RedisHealth

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 1, "warning": 2, "critical": 3}


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule (shared meaning with the Prometheus alert carrying ``rule="<name>"``)."""

    name: str
    severity: Severity
    for_s: float
    summary: str
    fix: str
    """The taskdash command (``{subject}`` is filled in) or TUI key that fixes it."""
    key: str
    """Where to look in the dashboard."""
    prometheus: str
    """Name of the Prometheus alert of the same rule (deploy/prometheus/taskdash-rules.yml)."""


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("broker_down", "critical", 60, "taskdash cannot read the broker",
         "taskdash health  (check the broker URL, credentials and that Redis is up)", ":health",
         "TaskdashBrokerDown"),
    Rule("orphaned_messages", "warning", 120, "unacked messages no live worker holds",
         "taskdash requeue --orphaned --yes", ":unacked then R", "TaskdashOrphanedMessages"),
    Rule("poison_suspect", "critical", 0, "a task is delivered again and again (it kills its worker)",
         "taskdash quarantine --task-id {subject} --yes", ":poison then Q", "TaskdashPoisonSuspect"),
    Rule("backlog_no_consumer", "critical", 300, "messages are waiting and no worker consumes the queue",
         "taskdash worker add-consumer {subject} --yes  (or start a worker with -Q {subject})", ":queues",
         "TaskdashBacklogNoConsumer"),
    Rule("oldest_message_age", "warning", 300, "the oldest waiting message of a queue is old",
         "taskdash worker pool-grow 2 --yes  (or add workers for the queue)", ":queues",
         "TaskdashOldestMessageAge"),
    Rule("worker_offline", "warning", 120, "a worker stopped sending heartbeats and replies",
         "restart the worker; then taskdash requeue --orphaned --yes for what it held", ":workers",
         "TaskdashWorkerOffline"),
    Rule("worker_not_responding", "warning", 120, "a worker sends heartbeats but does not answer inspect",
         "taskdash worker show {subject}; taskdash worker pool-restart --destination {subject} --yes",
         ":workers", "TaskdashWorkerNotResponding"),
    Rule("worker_silent", "warning", 120, "nothing heard from a worker, nothing proves it gone",
         "taskdash worker show {subject}", ":workers", "TaskdashWorkerSilent"),
    Rule("worker_ghost", "critical", 300, "a worker answers but does not consume its backlog",
         "taskdash worker show {subject}; restart it", ":workers", "TaskdashWorkerGhost"),
    Rule("failure_rate", "warning", 300, "a large share of the tasks finishing now fail",
         "taskdash snapshot (recent failures); taskdash retry TASK_ID", ":tasks", "TaskdashFailureRate"),
    Rule("broker_memory_high", "warning", 300, "the broker's Redis is close to maxmemory",
         "taskdash health; quarantine or purge big queues (taskdash purge QUEUE) or raise maxmemory", ":health",
         "TaskdashBrokerMemoryHigh"),
    Rule("broker_evicting_policy", "warning", 600, "maxmemory is set with a policy that deletes keys",
         "redis-cli CONFIG SET maxmemory-policy noeviction", ":health", "TaskdashBrokerEvictingPolicy"),
    Rule("broker_evicted_keys", "critical", 0, "the broker's Redis evicted keys (messages may be lost)",
         "redis-cli CONFIG SET maxmemory-policy noeviction; taskdash health", ":health",
         "TaskdashBrokerEvictedKeys"),
    Rule("source_errors", "warning", 600, "part of the system could not be read",
         "taskdash snapshot (see errors)", ":health", "TaskdashSourceErrors"),
)}

PROMETHEUS_ONLY = ("TaskdashMetricsAbsent",)
"""Prometheus alerts with no Snapshot rule: the exporter itself is gone (nothing to evaluate locally)."""

LIVENESS_RULES = ("worker_silent", "worker_ghost")
"""Rules fed by ``WorkerInfo.liveness`` (issue 12) through :func:`worker_liveness`; not in the Prometheus
file until ``taskdash metrics`` exports worker liveness."""

DEFAULT_THRESHOLDS: dict[str, float] = {
    "oldest_age_s": 600.0,
    "orphaned_min": 1.0,
    "poison_quiet_s": 120.0,
    "failure_ratio": 0.5,
    "failure_min": 5.0,
    "failure_window_s": 600.0,
    "memory_ratio": 0.85,
}
"""Thresholds of the rules (same values as the Prometheus file's expressions)."""

_ALERT_KEYS = {"enabled", "disabled", "for", "severity", "cooldown", "resolve_after", *DEFAULT_THRESHOLDS}


def worker_liveness(w: WorkerInfo) -> str:
    """LIVENESS HOOK: the state of a worker as the alert rules see it.

    From ``WorkerInfo.liveness`` (issue 12: responding / silent / dead / ghost, decided by evidence):
    ``dead`` is ``"offline"``; a responding worker whose inspect got no reply (heartbeats only) is
    ``"unresponsive"``. Before liveness is decided (None) it falls back to ``online``/``responding``.
    Returns ``"offline"``, ``"silent"``, ``"ghost"``, ``"unresponsive"`` or ``"responding"``.
    """
    if w.liveness == "dead":
        return "offline"
    if w.liveness in ("silent", "ghost"):
        return w.liveness
    if w.liveness is None and not w.online:
        return "offline"
    if not w.responding:
        return "unresponsive"
    return "responding"


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Which rules run, with which thresholds, ``for`` durations and severities."""

    enabled: frozenset[str] = frozenset(RULES)
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    for_s: Mapping[str, float] = field(default_factory=dict)
    severity: Mapping[str, str] = field(default_factory=dict)
    cooldown_s: float = 3600.0
    resolve_after: int = 2
    """Consecutive clear evaluations before a firing alert is resolved (one glitch never resolves)."""

    def rule_for(self, name: str) -> float:
        return float(self.for_s.get(name, RULES[name].for_s))

    def rule_severity(self, name: str) -> str:
        return self.severity.get(name, RULES[name].severity)

    def t(self, name: str) -> float:
        return float(self.thresholds.get(name, DEFAULT_THRESHOLDS[name]))

    @classmethod
    def from_layers(cls, *layers: Mapping[str, Any] | None, **overrides: Any) -> AlertConfig:
        """Merge alert tables (later layers win); ValueError naming the bad key or value."""
        enabled = set(RULES)
        thresholds = dict(DEFAULT_THRESHOLDS)
        for_s: dict[str, float] = {}
        severity: dict[str, str] = {}
        cooldown, resolve_after = 3600.0, 2
        for layer in layers:
            if not layer:
                continue
            if not isinstance(layer, Mapping):
                raise ValueError(f"alerts must be a table, got {layer!r}")
            unknown = set(layer) - _ALERT_KEYS
            if unknown:
                raise ValueError(f"unknown alert setting(s) {', '.join(sorted(unknown))} "
                                 f"(allowed: {', '.join(sorted(_ALERT_KEYS))})")
            if "enabled" in layer:
                enabled = set(_rule_names(layer["enabled"], "enabled"))
            if "disabled" in layer:
                enabled -= set(_rule_names(layer["disabled"], "disabled"))
            for name, value in _table(layer.get("for"), "for").items():
                _rule_names([name], "for")
                for_s[name] = _number(value, f"for.{name}")
            for name, value in _table(layer.get("severity"), "severity").items():
                _rule_names([name], "severity")
                if value not in SEVERITY_RANK:
                    raise ValueError(f"severity.{name} = {value!r}: one of {', '.join(SEVERITY_RANK)}")
                severity[name] = value
            for key in DEFAULT_THRESHOLDS:
                if key in layer:
                    thresholds[key] = _number(layer[key], key)
            if "cooldown" in layer:
                cooldown = _number(layer["cooldown"], "cooldown")
            if "resolve_after" in layer:
                resolve_after = max(1, int(_number(layer["resolve_after"], "resolve_after")))
        cfg = cls(frozenset(enabled), thresholds, for_s, severity, cooldown, resolve_after)
        return cfg if not overrides else cls(**{**{f: getattr(cfg, f) for f in cls.__dataclass_fields__},
                                               **overrides})


def _rule_names(value: Any, what: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{what} must be a list of rule names")
    names = list(value)
    bad = [n for n in names if n not in RULES]
    if bad:
        raise ValueError(f"{what}: unknown rule(s) {', '.join(map(str, bad))} (rules: {', '.join(RULES)})")
    return names


def _table(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a table of rule = value")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{what} must be a non-negative number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule holding for one subject in one evaluation."""

    rule: str
    subject: str
    severity: str
    value: float
    summary: str
    fix: str
    key: str

    @property
    def ident(self) -> tuple[str, str]:
        """Dedupe key: (rule, subject)."""
        return (self.rule, self.subject)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "subject": self.subject, "severity": self.severity, "value": self.value,
                "summary": self.summary, "fix": self.fix, "key": self.key}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one evaluation found, and which enabled rules could not be judged this time."""

    findings: tuple[Finding, ...]
    unknown: frozenset[str]
    taken_at: float

    def worst(self) -> str | None:
        """Highest severity among the findings (None: nothing found)."""
        return max((f.severity for f in self.findings), key=SEVERITY_RANK.__getitem__, default=None)


def looping_suspects(snapshot: Snapshot, quiet_s: float = DEFAULT_THRESHOLDS["poison_quiet_s"],
                     now: float | None = None) -> tuple[PoisonSuspect, ...]:
    """Poison suspects whose loop still runs: the message is in the unacked window, or it was delivered
    within ``quiet_s``. A quarantined, revoked or purged task stops being delivered and drops out (the
    tracker itself keeps suspects for an hour, for the record)."""
    now = snapshot.taken_at if now is None else now
    in_window = {e.task_id for e in snapshot.unacked if e.task_id}
    return tuple(p for p in snapshot.poison if p.task_id in in_window or now - p.last_seen <= quiet_s)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class AlertEvaluator:
    """Evaluates the rules on successive snapshots (keeps the short history the rate rules need)."""

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config or AlertConfig()
        self._results: deque[tuple[float, int, int]] = deque()
        """(taken_at, FAILURE count, SUCCESS + FAILURE count) of complete result scans."""
        self._evicted: deque[tuple[float, int]] = deque()
        """(taken_at, evicted_keys) of successive health readings."""

    def evaluate(self, snapshot: Snapshot, health: RedisHealth | None = None) -> Evaluation:
        """Findings of every enabled rule on ``snapshot`` (and ``health``, when memory rules run)."""
        cfg = self.config
        s = snapshot
        found: list[Finding] = []
        unknown: set[str] = set()

        def add(rule: str, subject: str, value: float, detail: str, **fmt: str) -> None:
            r = RULES[rule]
            if rule not in cfg.enabled:
                return
            found.append(Finding(rule, subject, cfg.rule_severity(rule), float(value),
                                 f"{r.summary}: {detail}" if detail else r.summary,
                                 r.fix.format(subject=subject, **fmt), r.key))

        if not s.broker.ok:
            add("broker_down", "broker", 1, f"{s.broker.url}: {s.broker.error or 'no answer'}")
        broker_rules = {"orphaned_messages", "poison_suspect", "backlog_no_consumer", "oldest_message_age",
                        "worker_offline", "worker_not_responding", *LIVENESS_RULES}
        if not s.broker.ok:
            unknown |= broker_rules
        else:
            self._broker_rules(s, add, unknown)
        self._failure_rule(s, add, unknown)
        self._memory_rules(s, health, add, unknown)
        partial = [e for e in s.errors if e.source != "broker"] if s.broker.ok else []
        if partial:
            add("source_errors", "taskdash", len(partial),
                "; ".join(f"{e.source}: {e.message}" for e in partial[:3]))
        return Evaluation(tuple(found), frozenset(unknown & cfg.enabled), s.taken_at)

    def _broker_rules(self, s: Snapshot, add: Any, unknown: set[str]) -> None:
        cfg = self.config
        if s.inspect_ok:
            orphans = s.orphaned
            if len(orphans) >= max(1.0, cfg.t("orphaned_min")):
                queues = sorted({e.queue or "?" for e in orphans})
                add("orphaned_messages", "unacked", len(orphans),
                    f"{len(orphans)} orphaned (queues: {', '.join(queues)})")
        else:
            unknown.add("orphaned_messages")  # without inspect nothing is classified: neither fire nor resolve
        for p in looping_suspects(s, cfg.t("poison_quiet_s")):
            add("poison_suspect", p.task_id, p.deliveries,
                f"{p.task or '?'} [{p.task_id}] on {p.queue or '?'}: {p.reason}")
        for q in s.queues:
            if q.consumers is None:
                unknown.add("backlog_no_consumer")
            elif q.no_consumer:
                add("backlog_no_consumer", q.name, q.messages, f"{q.name}: {q.messages} waiting, 0 consumers")
            if q.oldest_age_s is not None and q.oldest_age_s > cfg.t("oldest_age_s"):
                add("oldest_message_age", q.name, q.oldest_age_s,
                    f"{q.name}: oldest waiting {_age(q.oldest_age_s)} (threshold {_age(cfg.t('oldest_age_s'))})")
        if any(e.source == "workers" for e in s.errors):
            unknown |= {"worker_offline", "worker_not_responding", *LIVENESS_RULES}
            return
        for w in s.workers:
            state = worker_liveness(w)
            seen = f"last seen {_age(w.last_seen_s)} ago" if w.last_seen_s is not None else "never seen"
            if state == "offline":
                add("worker_offline", w.hostname, 1, f"{w.hostname}: {seen}")
            elif state == "unresponsive" and s.inspect_ok:
                add("worker_not_responding", w.hostname, 1, f"{w.hostname}: heartbeats but no inspect reply")
            elif state == "silent":
                add("worker_silent", w.hostname, 1, f"{w.hostname}: {seen}")
            elif state == "ghost":
                add("worker_ghost", w.hostname, 1, f"{w.hostname}: answers but does not consume")

    def _failure_rule(self, s: Snapshot, add: Any, unknown: set[str]) -> None:
        cfg = self.config
        if not s.backend.ok or not s.tasks.complete:
            unknown.add("failure_rate")
            return
        states = dict(s.tasks.states)
        failures = int(states.get("FAILURE", 0))
        finished = failures + int(states.get("SUCCESS", 0))
        window = cfg.t("failure_window_s")
        self._results.append((s.taken_at, failures, finished))
        while len(self._results) > 2 and self._results[1][0] <= s.taken_at - window:
            self._results.popleft()
        t0, f0, n0 = self._results[0]
        if len(self._results) < 2 or s.taken_at - t0 <= 0:
            unknown.add("failure_rate")
            return
        new_failures = max(0, failures - f0)
        new_finished = max(0, finished - n0)
        ratio = new_failures / new_finished if new_finished else 0.0
        if new_failures >= cfg.t("failure_min") and ratio > cfg.t("failure_ratio"):
            add("failure_rate", "results", ratio,
                f"{new_failures} of {new_finished} tasks failed in the last {_age(s.taken_at - t0)}")

    def _memory_rules(self, s: Snapshot, health: RedisHealth | None, add: Any, unknown: set[str]) -> None:
        cfg = self.config
        rules = {"broker_memory_high", "broker_evicting_policy", "broker_evicted_keys"}
        if health is None or health.error or health.used_memory is None:
            unknown |= rules
            return
        ratio = health.memory_ratio
        if ratio is not None and ratio > cfg.t("memory_ratio"):
            extra = f", policy {health.maxmemory_policy}" if health.maxmemory_policy else ""
            add("broker_memory_high", "broker", ratio,
                f"{ratio:.0%} of maxmemory used (threshold {cfg.t('memory_ratio'):.0%}{extra})")
        if health.maxmemory_policy is None and health.maxmemory:
            unknown.add("broker_evicting_policy")
        elif health.may_evict:
            add("broker_evicting_policy", "broker", 1,
                f"maxmemory-policy {health.maxmemory_policy}: queues and unacked entries can be deleted")
        if health.evicted_keys is None:
            unknown.add("broker_evicted_keys")
            return
        if self._evicted and health.evicted_keys < self._evicted[-1][1]:
            self._evicted.clear()  # Redis restarted: counters start again
        self._evicted.append((health.taken_at, health.evicted_keys))
        window = cfg.t("failure_window_s")
        while len(self._evicted) > 2 and self._evicted[1][0] <= health.taken_at - window:
            self._evicted.popleft()
        if len(self._evicted) < 2:
            unknown.add("broker_evicted_keys")
            return
        evicted = health.evicted_keys - self._evicted[0][1]
        if evicted > 0:
            add("broker_evicted_keys", "broker", evicted,
                f"{evicted} keys evicted in the last {_age(health.taken_at - self._evicted[0][0])} "
                f"(policy {health.maxmemory_policy or '?'})")


def evaluate(snapshot: Snapshot, config: AlertConfig | None = None, health: RedisHealth | None = None,
             ) -> Evaluation:
    """One-shot evaluation (no history: rate rules cannot be judged)."""
    return AlertEvaluator(config).evaluate(snapshot, health)

