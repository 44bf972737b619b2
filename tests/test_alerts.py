"""Alert rules on Snapshots (collectors.analysis.alerts): pure cases, config layering, and a live system."""

from __future__ import annotations

import time
from typing import Any

import pytest

from collectors.analysis.alerts import (
    RULES,
    AlertConfig,
    AlertEvaluator,
    evaluate,
    looping_suspects,
    worker_liveness,
)
from collectors.core.models import (
    PoisonSuspect,
    QueueInfo,
    Snapshot,
    SourceError,
    SourceStatus,
    TaskStats,
    UnackedEntry,
    WorkerInfo,
)
from collectors.reads.health import RedisHealth

T = 1_000_000.0


def _entry(tag: str, state: str, task_id: str | None = None, queue: str = "q") -> UnackedEntry:
    return UnackedEntry(delivery_tag=tag, task_id=task_id or tag, task="t", queue=queue, priority=0, reserved_at=T - 5,
                        age_s=5.0, redelivered=False, state=state, holder=None, stale=False,  # type: ignore[arg-type]
                        time_to_redelivery_s=None, argsrepr=None)


def snap(**kw: Any) -> Snapshot:
    base: dict[str, Any] = dict(taken_at=T, broker=SourceStatus("redis://h/0", True),
                                backend=SourceStatus("redis://h/0", True), inspect_ok=True)
    base.update(kw)
    return Snapshot(**base)


def idents(ev: Any) -> set[tuple[str, str]]:
    return {f.ident for f in ev.findings}


def test_healthy_system_finds_nothing() -> None:
    s = snap(queues=(QueueInfo("celery", 3, ((0, 3),), oldest_age_s=2.0, consumers=1),),
             workers=(WorkerInfo("w1@h", True),), unacked=(_entry("a", "active"),))
    ev = evaluate(s)
    assert ev.findings == () and ev.worst() is None
    assert "failure_rate" in ev.unknown  # one snapshot has no rate


def test_each_broker_rule_with_subject_value_and_fix() -> None:
    s = snap(
        queues=(QueueInfo("emails", 5, ((0, 5),), oldest_age_s=900.0, consumers=0),
                QueueInfo("celery", 0, ((0, 0),), consumers=1)),
        unacked=(_entry("a", "orphaned", queue="slow"), _entry("b", "orphaned", queue="slow"), _entry("c", "active")),
        workers=(WorkerInfo("dead@h", False, last_seen_s=300.0), WorkerInfo("hung@h", True, responding=False),
                 WorkerInfo("ok@h", True)),
        poison=(PoisonSuspect("tid-1", "demo.poison", "risky", 5, T - 30, T - 2, "delivered 5 times"),),
    )
    ev = evaluate(s)
    by = {f.ident: f for f in ev.findings}
    assert set(by) == {("orphaned_messages", "unacked"), ("backlog_no_consumer", "emails"),
                       ("oldest_message_age", "emails"), ("worker_offline", "dead@h"),
                       ("worker_not_responding", "hung@h"), ("poison_suspect", "tid-1")}
    assert by[("orphaned_messages", "unacked")].value == 2 and "slow" in by[("orphaned_messages", "unacked")].summary
    assert by[("poison_suspect", "tid-1")].fix == "taskdash quarantine --task-id tid-1 --yes"
    assert by[("poison_suspect", "tid-1")].severity == "critical" and by[("poison_suspect", "tid-1")].key
    assert by[("backlog_no_consumer", "emails")].fix.startswith("taskdash worker add-consumer emails --yes")
    assert by[("oldest_message_age", "emails")].value == 900.0
    assert ev.worst() == "critical"


def test_broker_down_fires_and_leaves_the_rest_unjudged() -> None:
    s = snap(broker=SourceStatus("redis://h/0", False, "cannot connect"), inspect_ok=False)
    ev = evaluate(s)
    assert idents(ev) == {("broker_down", "broker")}
    assert {"orphaned_messages", "poison_suspect", "backlog_no_consumer", "worker_offline"} <= ev.unknown


def test_no_inspect_means_orphans_and_consumers_unjudged() -> None:
    s = snap(inspect_ok=False, queues=(QueueInfo("emails", 5, consumers=None),), unacked=(_entry("a", "unknown"),))
    ev = evaluate(s)
    assert ev.findings == ()
    assert {"orphaned_messages", "backlog_no_consumer"} <= ev.unknown


def test_poison_suspect_stops_when_the_loop_stops() -> None:
    p = PoisonSuspect("tid", "t", "risky", 4, T - 600, T - 300, "r")
    assert looping_suspects(snap(poison=(p,))) == ()  # quarantined: not delivered for 5 min
    assert looping_suspects(snap(poison=(p,), unacked=(_entry("x", "reserved", task_id="tid"),))) == (p,)
    cfg = AlertConfig.from_layers({"poison_quiet_s": 400})
    assert idents(evaluate(snap(poison=(p,)), cfg)) == {("poison_suspect", "tid")}


def test_failure_rate_needs_history_and_volume() -> None:
    ev = AlertEvaluator(AlertConfig.from_layers({"failure_window_s": 600}))

    def at(t: float, ok: int, bad: int) -> Any:
        return ev.evaluate(snap(taken_at=t, tasks=TaskStats(states=(("SUCCESS", ok), ("FAILURE", bad)), complete=True)))

    assert "failure_rate" in at(T, 100, 10).unknown
    assert at(T + 60, 101, 13).findings == ()  # 3 failures: below failure_min
    found = at(T + 120, 102, 20).findings  # 10 of 12 new results failed
    assert [(f.rule, f.subject) for f in found] == [("failure_rate", "results")]
    assert found[0].value == pytest.approx(10 / 12)
    assert "failure_rate" in ev.evaluate(snap(taken_at=T + 180, tasks=TaskStats(complete=False))).unknown


def test_memory_rules() -> None:
    ev = AlertEvaluator()
    h = RedisHealth(taken_at=T, used_memory=90, maxmemory=100, maxmemory_policy="allkeys-lru", evicted_keys=0)
    first = ev.evaluate(snap(), h)
    assert idents(first) == {("broker_memory_high", "broker"), ("broker_evicting_policy", "broker")}
    assert "broker_evicted_keys" in first.unknown
    h2 = RedisHealth(taken_at=T + 30, used_memory=50, maxmemory=100, maxmemory_policy="noeviction", evicted_keys=7)
    second = ev.evaluate(snap(taken_at=T + 30), h2)
    assert idents(second) == {("broker_evicted_keys", "broker")}
    assert second.findings[0].value == 7
    assert {"broker_memory_high", "broker_evicting_policy"} <= evaluate(snap()).unknown  # no health: unjudged


def test_source_errors_and_liveness_hook() -> None:
    ev = evaluate(snap(errors=(SourceError("results", "boom"),)))
    assert idents(ev) == {("source_errors", "taskdash")}
    assert worker_liveness(WorkerInfo("w", False)) == "offline"
    assert worker_liveness(WorkerInfo("w", True, responding=False)) == "unresponsive"
    assert worker_liveness(WorkerInfo("w", True)) == "responding"
    assert worker_liveness(WorkerInfo("w", False, liveness="dead")) == "offline"
    assert worker_liveness(WorkerInfo("w", True, liveness="silent")) == "silent"
    assert worker_liveness(WorkerInfo("w", True, liveness="ghost")) == "ghost"
    assert worker_liveness(WorkerInfo("w", True, liveness="responding", responding=False)) == "unresponsive"
    ev = evaluate(snap(workers=(WorkerInfo("s@h", True, liveness="silent"), WorkerInfo("g@h", True, liveness="ghost"))))
    assert idents(ev) == {("worker_silent", "s@h"), ("worker_ghost", "g@h")}
    assert {f.severity for f in ev.findings} == {"warning", "critical"}


def test_config_layers_thresholds_enabled_severity_for() -> None:
    cfg = AlertConfig.from_layers(
        {"disabled": ["worker_offline"], "oldest_age_s": 60, "for": {"orphaned_messages": 10}, "cooldown": 5},
        {"severity": {"oldest_message_age": "critical"}, "disabled": ["source_errors"]},
    )
    assert "worker_offline" not in cfg.enabled and "source_errors" not in cfg.enabled
    assert cfg.rule_for("orphaned_messages") == 10 and cfg.rule_for("poison_suspect") == 0
    assert cfg.cooldown_s == 5 and cfg.t("oldest_age_s") == 60
    s = snap(queues=(QueueInfo("q", 1, oldest_age_s=61.0, consumers=1),), workers=(WorkerInfo("w", False),))
    (f,) = evaluate(s, cfg).findings
    assert (f.rule, f.severity) == ("oldest_message_age", "critical")
    only = AlertConfig.from_layers({"enabled": ["poison_suspect"]})
    assert only.enabled == {"poison_suspect"}
    for bad in ({"nope": 1}, {"disabled": ["nope"]}, {"oldest_age_s": "x"}, {"severity": {"poison_suspect": "loud"}},
                {"enabled": "poison_suspect"}):
        with pytest.raises(ValueError):
            AlertConfig.from_layers(bad)


def test_config_file_per_context(tmp_path: Any, monkeypatch: Any) -> None:
    from collectors.core.config import ConfigError, resolve_settings
    from taskdash.cmd_watch import alert_config_for

    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text('[alerts]\ncooldown = 60\noldest_age_s = 100\n'
                        '[contexts.a]\nbroker = "redis://localhost:1/0"\n'
                        '[contexts.a.alerts]\noldest_age_s = 5\ndisabled = ["worker_offline"]\n'
                        '[contexts.a.alerts.for]\norphaned_messages = 0\n'
                        '[contexts.b]\nbroker = "redis://localhost:2/0"\n')
    monkeypatch.setenv("TASKDASH_CONFIG", str(cfg_path))
    env = {"TASKDASH_CONFIG": str(cfg_path)}
    a = alert_config_for(resolve_settings(context="a", env=env))
    b = alert_config_for(resolve_settings(context="b", env=env), cooldown=1)
    assert (a.t("oldest_age_s"), a.cooldown_s, a.rule_for("orphaned_messages")) == (5, 60, 0)
    assert "worker_offline" not in a.enabled
    assert (b.t("oldest_age_s"), b.cooldown_s) == (100, 1) and "worker_offline" in b.enabled
    cfg_path.write_text('[contexts.a]\nbroker = "redis://localhost:1/0"\n[contexts.a.alerts]\nbogus = 1\n')
    with pytest.raises(ConfigError, match="bogus"):
        alert_config_for(resolve_settings(context="a", env=env))


def test_rule_table_is_complete() -> None:
    for r in RULES.values():
        assert r.severity in ("warning", "critical") and r.fix and r.key and r.prometheus.startswith("Taskdash")


def test_live_backlog_offline_worker_and_orphans(start_worker: Any, demo_app: Any, redis_url: str, r: Any) -> None:
    """Real workers: a backlog nobody consumes, then kill -9 of a worker that holds two tasks."""
    from collectors.collector import Collector
    from collectors.core.config import resolve_settings

    victim = start_worker(("slow",), hostname="victim@alerts", concurrency=2)
    start_worker(("celery",), hostname="bystander@alerts")
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@x",))
    running = {demo_app.send_task("demo_tasks.tasks.slow", args=(60,)).id for _ in range(2)}
    settings = resolve_settings(broker=redis_url, env={}, interval=0.5, inspect_interval=0.5, inspect_timeout=0.5,
                                app_queues=("celery", "emails", "slow"))
    evaluator = AlertEvaluator()
    deadline = time.monotonic() + 30
    with Collector(settings) as col:
        while time.monotonic() < deadline:
            col.inspect_soon()
            s = col.collect()
            if {e.task_id for e in s.unacked if e.state == "active"} >= running:
                break
            time.sleep(0.3)
        found = idents(evaluator.evaluate(s))
        assert ("backlog_no_consumer", "emails") in found
        assert not {f for f in found if f[0] in ("orphaned_messages", "worker_offline")}
        victim.kill9()
        while time.monotonic() < deadline + 30:
            col.inspect_soon()
            ev = evaluator.evaluate(col.collect())
            found = idents(ev)
            if {("orphaned_messages", "unacked"), ("worker_offline", "victim@alerts")} <= found:
                break
            time.sleep(0.3)
    assert {("orphaned_messages", "unacked"), ("worker_offline", "victim@alerts"),
            ("backlog_no_consumer", "emails")} <= found, found
    assert ("backlog_no_consumer", "slow") not in found  # its messages are unacked, none is waiting
    orphans = {f.ident: f for f in ev.findings}[("orphaned_messages", "unacked")]
    assert orphans.value == 2 and orphans.fix == "taskdash requeue --orphaned --yes"
