"""deploy/: the Prometheus rules and the Grafana dashboard, checked with promtool against a live system.

- ``promtool check rules`` on deploy/prometheus/taskdash-rules.yml, ``promtool test rules`` on the committed
  deploy/prometheus/taskdash-rules.test.yml;
- the rules and taskdash watch's rules (collectors.analysis.alerts) agree: names, severities, ``for``, fixes;
- a live system (real workers: a poison loop, orphans after kill -9, a backlog with no consumer, failures,
  an evicting maxmemory policy) scraped from a real ``taskdash metrics`` process: every metric name the
  rules and the dashboard use is in the scrape, and promtool, fed the scrape as input series, fires exactly
  the alerts ``taskdash watch``'s evaluator finds on a snapshot of the same state.

Input series are the scraped samples held constant for 30 minutes, except three that need a time
dimension a single scrape cannot give, evolved the same way on both sides: the oldest-message ages grow
60 s per minute (a head that is not consumed), the FAILURE count grows by one per minute, and the evicted
keys counter steps up by 3 at minute 15.

``TASKDASH_WRITE_RULES_TEST=1`` rewrites the committed test file from the live capture.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors.analysis.alerts import LIVENESS_RULES, RULES, AlertEvaluator, Finding
from collectors.core.models import Snapshot, TaskStats
from collectors.reads.health import RedisHealth

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "deploy" / "prometheus" / "taskdash-rules.yml"
TEST_FILE = ROOT / "deploy" / "prometheus" / "taskdash-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "taskdash.json"
PROMTOOL = shutil.which("promtool")
INSTANCE = {"instance": "taskdash:9808", "job": "taskdash"}
MINUTES = 30
EVAL_AT = 20

needs_promtool = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                                    reason="promtool missing (apt-get install -y prometheus; .ci/run installs it)")


# ---- reading the rules file (no YAML library in the venv: the file's own regular layout) ---------------
def parse_rules(text: str) -> dict[str, dict[str, Any]]:
    """{alert name: {"for": seconds, "labels": {...}, "annotations": {...}, "expr": str}}."""
    alerts: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] | None = None
    section = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s+- alert: (\S+)", line)
        if m:
            cur = alerts.setdefault(m.group(1), {"for": 0.0, "labels": {}, "annotations": {}, "expr": ""})
            section = None
        elif cur is not None and (m := re.match(r"\s+expr: (.*)", line)):
            if m.group(1).strip() == "|":
                block = []
                key_indent = len(line) - len(line.lstrip())
                while i + 1 < len(lines) and (len(lines[i + 1]) - len(lines[i + 1].lstrip()) > key_indent
                                              or not lines[i + 1].strip()):
                    i += 1
                    block.append(lines[i].strip())
                cur["expr"] = " ".join(b for b in block if b)
            else:
                cur["expr"] = m.group(1).strip()
        elif cur is not None and (m := re.match(r"\s+for: (\d+)([smh])", line)):
            cur["for"] = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
        elif cur is not None and re.match(r"\s+(labels|annotations):\s*$", line):
            section = line.strip()[:-1]
        elif cur is not None and section and (m := re.match(r"\s{10}(\w+): (.*)", line)):
            value = m.group(2).strip()
            cur[section][m.group(1)] = json.loads(value) if value.startswith('"') else value
        i += 1
    return alerts


def metric_names(text: str) -> set[str]:
    """Metric names (``taskdash_*``) used in PromQL expressions, without comments."""
    body = "\n".join(line.split("#", 1)[0] if line.lstrip().startswith("#") else line for line in text.splitlines())
    return set(re.findall(r"\btaskdash_[a-z_]+\b", body))


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            out.extend(t["expr"] for t in p.get("targets", ()) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool missing (apt-get install -y prometheus)"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


# ---- static ---------------------------------------------------------------------------------------------
@needs_promtool
def test_promtool_check_rules() -> None:
    res = promtool("check", "rules", str(RULES_FILE), cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_committed_unit_tests() -> None:
    res = promtool("test", "rules", TEST_FILE.name, cwd=TEST_FILE.parent)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_file_and_watch_rules_agree() -> None:
    alerts = parse_rules(RULES_FILE.read_text())
    assert len(alerts) == 13
    by_rule = {a["labels"]["rule"]: (name, a) for name, a in alerts.items()}
    for name, a in alerts.items():
        assert a["labels"]["severity"] in ("warning", "critical") and a["expr"], name
        assert {"summary", "description", "fix", "taskdash_key", "runbook"} <= set(a["annotations"]), name
        assert "taskdash" in a["annotations"]["runbook"] or "redis-cli" in a["annotations"]["runbook"], name
    for rule in RULES.values():
        if rule.name in LIVENESS_RULES:
            assert rule.prometheus not in alerts  # their metrics come with issue 12
            continue
        alert_name, a = by_rule[rule.name]
        assert alert_name == rule.prometheus
        assert a["labels"]["severity"] == rule.severity, rule.name
        assert a["for"] == rule.for_s, rule.name
        assert a["annotations"]["taskdash_key"] == rule.key, rule.name
        template = rule.fix.replace("{subject}", "{{ $labels.queue }}" if "queue" in a["expr"] or "queue" in
                                    a["annotations"]["summary"] else "{{ $labels.worker }}")
        if rule.name != "poison_suspect":  # Prometheus has no task id: it names where to find them
            assert a["annotations"]["fix"] == template, rule.name
    assert set(by_rule) - set(RULES) == {"metrics_absent"}


# ---- live ----------------------------------------------------------------------------------------------
def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def _families(text: str) -> set[str]:
    names = set(re.findall(r"^# TYPE (\S+) (\w+)", text, re.M))
    return {n + ("_total" if kind == "counter" else "") for n, kind in names}


def _selector(name: str, labels: dict[str, str]) -> str:
    body = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted({**labels, **INSTANCE}.items()))
    return f"{name}{{{body}}}"


def series_for(samples: list[tuple[str, dict[str, str], float]]) -> list[dict[str, str]]:
    """Input series: each scraped sample over MINUTES minutes (see the module docstring for the three that move)."""
    out = []
    for name, labels, v in samples:
        if v != v:  # NaN: not a value promtool series notation takes
            continue
        if name == "taskdash_queue_oldest_age_seconds":
            values = [v + 60 * i for i in range(MINUTES + 1)]
        elif name == "taskdash_task_states" and labels.get("state") == "FAILURE":
            values = [v + i for i in range(MINUTES + 1)]
        elif name == "taskdash_redis_evicted_keys_total":
            values = [v + (3 if i >= 15 else 0) for i in range(MINUTES + 1)]
        else:
            values = [v] * (MINUTES + 1)
        out.append({"series": _selector(name, labels), "values": " ".join(f"{x:g}" for x in values)})
    return out


def expected_by_python(snap: Snapshot, health: RedisHealth) -> list[Finding]:
    """What taskdash watch's evaluator finds at minute EVAL_AT of the same evolution (minute 10, then 20)."""
    ev = AlertEvaluator()
    result = None
    for minute in (EVAL_AT - 10, EVAL_AT):
        shift = 60.0 * minute
        states = tuple((st, n + minute if st == "FAILURE" else n) for st, n in snap.tasks.states)
        if snap.tasks.complete and "FAILURE" not in dict(snap.tasks.states):
            states += (("FAILURE", minute),)
        s = replace(
            snap, taken_at=snap.taken_at + shift,
            queues=tuple(replace(q, oldest_age_s=None if q.oldest_age_s is None else q.oldest_age_s + shift)
                         for q in snap.queues),
            poison=tuple(replace(p, last_seen=p.last_seen + shift) for p in snap.poison),  # the loop goes on
            tasks=replace(snap.tasks, states=states) if isinstance(snap.tasks, TaskStats) else snap.tasks,
        )
        h = replace(health, taken_at=health.taken_at + shift,
                    evicted_keys=None if health.evicted_keys is None else
                    health.evicted_keys + (3 if minute >= 15 else 0))
        result = ev.evaluate(s, h)
    assert result is not None
    return list(result.findings)


_SUBJECT_LABEL = {"backlog_no_consumer": "queue", "oldest_message_age": "queue", "worker_offline": "worker",
                  "worker_not_responding": "worker"}


def expected_alerts(findings: list[Finding], health: RedisHealth,
                    alerts: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Python findings as the Prometheus alerts they must be: {alertname: [exp_alert, ...]}."""
    out: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in alerts}
    for f in findings:
        if f.rule in LIVENESS_RULES:
            continue  # no Prometheus rule until taskdash metrics exports worker liveness
        alert_name = RULES[f.rule].prometheus
        a = alerts[alert_name]
        labels = dict(INSTANCE)
        if f.rule in _SUBJECT_LABEL:
            labels[_SUBJECT_LABEL[f.rule]] = f.subject
        elif f.rule == "broker_evicting_policy":
            labels["policy"] = health.maxmemory_policy or "unknown"
        elif f.rule == "broker_down":
            labels["source"] = "broker"
        annotations = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m, lab=labels: lab[m.group(1)], v)
                       for k, v in a["annotations"].items()}
        exp = {"exp_labels": {**labels, **a["labels"]}, "exp_annotations": annotations}
        out[alert_name][json.dumps(exp["exp_labels"], sort_keys=True)] = exp
    return {name: [exps[k] for k in sorted(exps)] for name, exps in out.items()}


def _yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter (strings double-quoted as JSON, which YAML reads the same)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "\n".join(f"{pad}{k}:" + (f"\n{_yaml(v, indent + 2)}" if isinstance(v, dict | list) and v
                                          else f" {_yaml(v)}") for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return "[]"
        parts = []
        for v in value:
            body = _yaml(v, indent + 2)
            parts.append(f"{pad}- " + body.lstrip() if isinstance(v, dict | list) else f"{pad}- {_yaml(v)}")
        return "\n".join(parts)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value)


def build_test_file(scrape: str, expected: dict[str, list[dict[str, Any]]], alerts: dict[str, dict[str, Any]]) -> str:
    absent = alerts["TaskdashMetricsAbsent"]
    synthetic_memory = [
        {"series": _selector("taskdash_redis_memory_used_bytes", {}), "values": "950x20"},
        {"series": _selector("taskdash_redis_maxmemory_bytes", {}), "values": "1000x20"},
        {"series": _selector("taskdash_up", {"source": "broker"}), "values": "1x20"},
    ]
    mem = alerts["TaskdashBrokerMemoryHigh"]
    doc = {
        "rule_files": ["taskdash-rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"name": "live taskdash metrics scrape (poison loop, orphans after kill -9, backlog, failures, evicting)",
             "interval": "1m",
             "input_series": series_for(_samples(scrape)),
             "alert_rule_test": [{"eval_time": f"{EVAL_AT}m", "alertname": name, "exp_alerts": exps}
                                 for name, exps in expected.items() if name != "TaskdashMetricsAbsent"]
             + [{"eval_time": f"{EVAL_AT}m", "alertname": "TaskdashMetricsAbsent", "exp_alerts": []}]},
            {"name": "nothing scraped: the exporter is gone",
             "interval": "1m",
             "input_series": [{"series": 'taskdash_scrape_errors_total{instance="other:9808",job="taskdash"}',
                               "values": "0x20"}],
             "alert_rule_test": [{"eval_time": "10m", "alertname": "TaskdashMetricsAbsent", "exp_alerts": [
                 {"exp_labels": {"source": "broker", **absent["labels"]}, "exp_annotations": absent["annotations"]}]}]},
            {"name": "broker Redis at 95% of maxmemory",
             "interval": "1m",
             "input_series": synthetic_memory,
             "alert_rule_test": [
                 {"eval_time": "4m", "alertname": "TaskdashBrokerMemoryHigh", "exp_alerts": []},
                 {"eval_time": "10m", "alertname": "TaskdashBrokerMemoryHigh", "exp_alerts": [
                     {"exp_labels": {**INSTANCE, **mem["labels"]},
                      "exp_annotations": {k: v.replace("{{ $labels.instance }}", INSTANCE["instance"])
                                          for k, v in mem["annotations"].items()}}]}]},
        ],
    }
    header = ("# promtool unit tests for taskdash-rules.yml: `promtool test rules taskdash-rules.test.yml`.\n"
              "# Generated by tests/test_deploy_rules.py from a live `taskdash metrics` scrape (TASKDASH_WRITE_RULES_TEST=1);\n"
              "# the expected alerts are what `taskdash watch` found on the same system. Do not edit by hand.\n")
    return header + _yaml(doc) + "\n"


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode("utf-8")


class _Stderr:
    """Drains a child's stderr in a thread (a full pipe would block the child) and keeps its lines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def metrics_url(self, timeout: float) -> str:
        """The URL ``taskdash metrics`` prints once it listens (it binds before printing it). Waits for
        that line, not for a first connection: a scrape sent before the child got that far is refused."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.match(r"taskdash metrics on (http://\S+/metrics) ", line)
                if m:
                    return m.group(1)
            if self.proc.poll() is not None:
                self._thread.join(5)
                raise AssertionError(f"taskdash metrics exited {self.proc.returncode}: {self.lines}")
            time.sleep(0.1)
        raise AssertionError(f"taskdash metrics not listening after {timeout}s: {self.lines}")


def wait_for(pred: Callable[[], Any], timeout: float, msg: str | Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s: {msg() if callable(msg) else msg}")


def _facts_scrape(text: str) -> dict[str, Any]:
    s = _samples(text)

    def get(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(lab.items())): v for n, lab, v in s if n == name}

    return {
        "workers": {dict(k)["worker"]: bool(v) for k, v in get("taskdash_worker_up").items()},
        "responding": {dict(k)["worker"]: bool(v) for k, v in get("taskdash_worker_responding").items()},
        "orphaned": int(sum(get("taskdash_orphaned_messages").values())),
        "depth": {dict(k)["queue"]: int(v) for k, v in get("taskdash_queue_depth").items()},
        "consumers": {dict(k)["queue"]: int(v) for k, v in get("taskdash_queue_consumers").items()},
        "aged": set(dict(k)["queue"] for k in get("taskdash_queue_oldest_age_seconds")),
        "looping": int(sum(get("taskdash_poison_looping_suspects").values())),
        "complete": bool(sum(get("taskdash_tasks_scan_complete").values())),
        "errors": {dict(k)["source"] for k, v in get("taskdash_source_errors").items() if v},
    }


def _facts_snapshot(snap: Snapshot) -> dict[str, Any]:
    from collectors.analysis.alerts import looping_suspects

    return {
        "workers": {w.hostname: w.online for w in snap.workers},
        "responding": {w.hostname: w.online and w.responding for w in snap.workers},
        "orphaned": len(snap.orphaned),
        "depth": {q.name: q.messages for q in snap.queues},
        "consumers": {q.name: q.consumers for q in snap.queues if q.consumers is not None},
        "aged": {q.name for q in snap.queues if q.oldest_age_s is not None},
        "looping": len(looping_suspects(snap)),
        "complete": snap.tasks.complete,
        "errors": {e.source for e in snap.errors},
    }


@needs_promtool
def test_live_scrape_has_every_metric_and_promtool_agrees_with_watch(
        start_worker: Any, demo_app: Any, redis_url: str, r: Any, tmp_path: Path) -> None:
    from collectors.collector import Collector
    from collectors.core.config import resolve_settings
    from collectors.reads.health import redis_health

    r.config_set("maxmemory", str(1 << 30))
    r.config_set("maxmemory-policy", "allkeys-lru")
    env = {**os.environ, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}
    env.pop("TASKDASH_CONFIG", None)
    # --port 0: the child binds a free port itself and prints it (no window for another process to take it)
    metrics = subprocess.Popen([sys.executable, "-m", "taskdash", "metrics", "--port", "0", "-A", "demo_tasks",
                                "--cache", "0.5"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics_err = _Stderr(metrics)
    settings = resolve_settings(broker=redis_url, backend=redis_url, app="demo_tasks", env={}, interval=0.5)
    col = Collector(settings)
    try:
        start_worker(("celery",), hostname="alive@deploy")
        victim = start_worker(("slow",), hostname="victim@deploy", concurrency=2)
        looper = start_worker(("risky",), hostname="loop@deploy", concurrency=1)
        # Started before the workers, but under load its start-up (imports, app, PING, bind) can take longer
        # than theirs: wait until it says it listens. (A first _scrape() refused used to fail the test at
        # once: wait_for does not retry a predicate that raises.)
        url = metrics_err.metrics_url(60)
        _scrape(url)
        for i in range(4):
            demo_app.send_task("demo_tasks.tasks.add", args=(i, i))
            demo_app.send_task("demo_tasks.tasks.fail", args=(f"boom {i}",))
        for i in range(3):
            demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@x",))
        for _ in range(2):
            demo_app.send_task("demo_tasks.tasks.slow", args=(120,))
        poison = demo_app.send_task("demo_tasks.tasks.poison")

        def both_see_the_loop() -> bool:
            snap = col.collect()
            return (any(p.task_id == poison.id for p in snap.poison)
                    and _facts_scrape(_scrape(url))["looping"] >= 1 and r.hlen("unacked") >= 2)

        wait_for(both_see_the_loop, 90, "the poison loop seen by the collector and by taskdash metrics")
        victim.kill9()
        looper.kill9()

        last: list[Any] = [None]

        def settled() -> tuple[str, Snapshot, RedisHealth] | None:
            col.inspect_soon()
            snap = col.collect()
            text = _scrape(url)
            a, b = _facts_scrape(text), _facts_snapshot(snap)
            last[0] = ({k: (a[k], b[k]) for k in a if a[k] != b[k]} or a,
                       [(e.task, e.state, e.possible_holders, e.state_reason) for e in snap.unacked],
                       [(w.hostname, w.liveness, w.liveness_evidence) for w in snap.workers],
                       [(c.get("name"), c.get("age"), c.get("cmd"), c.get("laddr"), c.get("addr")) for c in r.client_list()])
            if a != b or a["orphaned"] < 2 or a["workers"].get("victim@deploy", True) or not a["complete"]:
                return None
            return text, snap, redis_health(r)

        text, snap, health = wait_for(settled, 120, lambda: "metrics process and collector agree on a settled "
                                      f"state (last: {last[0]})")
    finally:
        col.close()
        metrics.send_signal(signal.SIGTERM)
        metrics.wait(20)
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", "noeviction")

    # every metric name the rules and the dashboard use exists in the live scrape
    rules_text = RULES_FILE.read_text()
    exprs = [a["expr"] for a in parse_rules(rules_text).values()] + dashboard_exprs()
    used = {n for e in exprs for n in metric_names(e)}
    assert len(used) > 20
    scraped = _families(text)
    assert used - scraped == set(), f"not in a live scrape: {sorted(used - scraped)}"
    sampled = {n for n, _, _ in _samples(text)}
    assert {"taskdash_orphaned_messages", "taskdash_poison_looping_suspects", "taskdash_worker_up",
            "taskdash_queue_consumers", "taskdash_redis_maxmemory_evicting", "taskdash_redis_evicted_keys_total",
            "taskdash_queue_oldest_age_seconds", "taskdash_task_states"} <= sampled

    alerts = parse_rules(rules_text)
    findings = expected_by_python(snap, health)
    fired = {f.rule for f in findings}
    # the live system really exercises the rules (not a vacuous agreement)
    assert {"orphaned_messages", "poison_suspect", "backlog_no_consumer", "oldest_message_age", "worker_offline",
            "failure_rate", "broker_evicting_policy", "broker_evicted_keys"} <= fired, fired
    expected = expected_alerts(findings, health, alerts)
    doc = build_test_file(text, expected, alerts)
    shutil.copy(RULES_FILE, tmp_path / RULES_FILE.name)
    (tmp_path / TEST_FILE.name).write_text(doc)
    res = promtool("test", "rules", TEST_FILE.name, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    if os.environ.get("TASKDASH_WRITE_RULES_TEST"):
        TEST_FILE.write_text(doc)
