"""Config linter against live workers: one set configured to trigger every rule, one configured not to.

db 0 holds a "bad" worker (visibility_timeout 4 s, prefetch multiplier 4, results never expire,
result_extended off, task events off, poison task unbounded, clock 120 s ahead via libfaketime) and a
"good" one; db 1 holds only a "good" worker (prefetch 1, events on, retry_on_worker_lost bounded,
default visibility_timeout, true clock). Both run a 30-s task and hold a countdown task.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from collectors.analysis.lint import RULES, LintReport, lint, parse_registered, run_lint, seconds
from collectors.core.config import resolve_settings
from collectors.reads.workers import WorkerMonitor
from taskdash.procs import CeleryWorker, RedisServer

FAKETIME_LIB = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
                                 Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
                                 Path("/usr/lib/faketime/libfaketime.so.1")) if p.exists()), None)

GOOD_ENV = {"DEMO_PREFETCH": "1", "DEMO_EVENTS": "1", "DEMO_RETRY_ON_WORKER_LOST": "1"}
BAD_ENV = {"DEMO_PREFETCH": "4", "DEMO_RESULT_EXPIRES": "none", "DEMO_RESULT_EXTENDED": "0",
           "DEMO_VISIBILITY_TIMEOUT": "4"}
PER_WORKER = {"prefetch-long-tasks", "task-events-off", "result-extended-off", "results-never-expire",
              "clock-skew", "eta-beyond-visibility"}


class Reports:
    """Lint reports of the two brokers, computed once for the module."""

    bad_host: str
    good0_host: str
    good1_host: str
    bad: LintReport
    good: LintReport
    url0: str
    url1: str


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    if FAKETIME_LIB is None:
        pytest.skip("libfaketime missing (apt-get install -y faketime; .ci/run installs it)")
    from demo_tasks.celery_app import make_app

    tmp = tmp_path_factory.mktemp("lint")
    server = RedisServer().start()
    workers: list[CeleryWorker] = []
    try:
        out = Reports()
        out.url0, out.url1 = server.url_db(0), server.url_db(1)
        bad_env = dict(BAD_ENV, LD_PRELOAD=str(FAKETIME_LIB), FAKETIME="+120")
        specs = [(out.url0, "lq_bad", bad_env), (out.url0, "lq_good0", GOOD_ENV), (out.url1, "lq_good1", GOOD_ENV)]
        for i, (url, queue, env) in enumerate(specs):
            # the bad worker gets a free slot beside its 30-s task: task events are called off only when it
            # finishes tasks while lint watches and sends no task event (silence alone proves nothing)
            workers.append(CeleryWorker(url, queues=(queue,), env=env, logfile=tmp / f"w{i}.log",
                                        concurrency=2 if i == 0 else 1).start(wait=False))
        for w in workers:
            w.wait_ready(40)
        out.bad_host, out.good0_host, out.good1_host = (w.hostname for w in workers)
        for url, queue, _env in specs:
            app = make_app(url, url, transport_options={})
            app.send_task("demo_tasks.tasks.slow", args=(30,), queue=queue)
            app.send_task("demo_tasks.tasks.add", args=(1, 2), queue=queue, countdown=900)
            app.close()
        time.sleep(5.0)  # the 30-s tasks have now run longer than the bad worker's 4-s visibility_timeout
        s0 = resolve_settings(broker=out.url0, env={})
        mon = WorkerMonitor(s0)
        feeding = threading.Event()
        feed_app = make_app(out.url0, out.url0, transport_options={})

        def feed() -> None:  # quick tasks for the bad worker while lint watches
            while not feeding.is_set():
                feed_app.send_task("demo_tasks.tasks.add", args=(1, 1), queue="lq_bad")
                feeding.wait(0.2)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            out.bad = run_lint(s0, monitor=mon, long_task_s=3.0)  # reuses the monitor's kombu connection
        finally:
            feeding.set()
            feeder.join(5)
            feed_app.close()
            mon.stop()
        out.good = run_lint(resolve_settings(broker=out.url1, env={}), long_task_s=3.0)
        yield out
    finally:
        for w in workers:
            w.kill9()
        server.cleanup()


def _rules(report: LintReport, subject: str | None = None) -> set[str]:
    return {f.rule for f in report.findings if f.severity == "warning" and (subject is None or f.subject == subject)}


OBSERVED = {"ghost-worker"}
"""Rules on liveness watched over time (``--observe``), not on configuration: tests/test_lint_ghost.py."""


@pytest.mark.parametrize("rule", sorted(set(RULES) - OBSERVED))
def test_rule_fires_on_misconfigured_worker(reports: Reports, rule: str) -> None:
    found = [f for f in reports.bad.findings if f.rule == rule]
    assert found, f"{rule} not reported; got {[f.rule for f in reports.bad.findings]}"
    f = found[0]
    assert f.severity == "warning" and f.message and f.fix
    if rule in PER_WORKER:
        assert any(x.subject == reports.bad_host for x in found), found
    if rule == "reject-on-worker-lost-unbounded":
        assert f.subject == "demo_tasks.tasks.poison"
    if rule == "runtime-beyond-visibility":
        assert f.subject == "demo_tasks.tasks.slow"
    if rule == "clock-skew":
        assert "2.0min ahead" in f.message


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_silent_on_well_configured_worker(reports: Reports, rule: str) -> None:
    assert reports.good.workers == (reports.good1_host,)
    assert rule not in _rules(reports.good), [f.message for f in reports.good.findings if f.rule == rule]
    # the well-configured worker next to the bad one gets no per-worker finding either
    if rule in PER_WORKER and rule != "eta-beyond-visibility":
        assert rule not in _rules(reports.bad, reports.good0_host)


def test_good_broker_has_no_warning_at_all(reports: Reports) -> None:
    assert not reports.good.warnings, [f.message for f in reports.good.warnings]
    assert set(reports.bad.workers) == {reports.bad_host, reports.good0_host}
    assert not reports.bad.errors and not reports.good.errors


def test_cli_exit_codes_and_json(reports: Reports) -> None:
    from taskdash.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["lint", "--broker", reports.url0, "--json", "--long-task", "3"], env={})
    assert res.exit_code == 3, res.output
    doc = json.loads(res.output)
    assert doc["warnings"] > 0 and {"rule", "severity", "message", "fix"} <= doc["findings"][0].keys()
    res = runner.invoke(cli, ["lint", "--broker", reports.url1, "--long-task", "3"], env={})
    assert res.exit_code == 0, res.output
    assert "0 warnings" in res.output and reports.good1_host in res.output


def test_cli_unreachable_broker_exits_2() -> None:
    from taskdash.cli import cli
    from taskdash.procs import free_port

    res = CliRunner().invoke(cli, ["lint", "--broker", f"redis://:s3cret@127.0.0.1:{free_port()}/0"], env={})
    assert res.exit_code == 2
    assert "s3cret" not in res.output


def test_app_settings_checked_without_workers() -> None:
    """-A app only (no worker answered): the app's own result settings are linted."""
    from demo_tasks.celery_app import make_app

    settings = resolve_settings(broker="redis://127.0.0.1:1/0", env={})
    bad: Any = make_app("redis://127.0.0.1:1/0", transport_options={}, result_expires=None, result_extended=False)
    good: Any = make_app("redis://127.0.0.1:1/0", transport_options={}, task_retry_on_worker_lost=True)
    bad_rules = {f.rule for f in lint(settings, bad) if f.severity == "warning"}
    good_rules = {f.rule for f in lint(settings, good) if f.severity == "warning"}
    assert {"results-never-expire", "result-extended-off", "reject-on-worker-lost-unbounded"} <= bad_rules
    assert not good_rules & {"results-never-expire", "result-extended-off", "reject-on-worker-lost-unbounded"}


def test_value_parsers() -> None:
    assert seconds("1 day, 0:00:00") == 86400
    assert seconds("0:00:30.5") == 30.5
    assert seconds(None) is None and seconds(0) == 0
    parsed = parse_registered(["t.a [acks_late=True max_retries=None]", "t.b"])
    assert parsed == {"t.a": {"acks_late": "True", "max_retries": "None"}, "t.b": {}}


async def test_lint_screen_shows_findings(reports: Reports) -> None:
    from textual.app import App
    from textual.widgets import Static

    from tui.screens.lint import LintScreen

    calls: list[int] = []

    def loader() -> LintReport:
        calls.append(1)
        return reports.bad

    app: App[None] = App()
    async with app.run_test(size=(120, 40)) as pilot:
        await app.push_screen(LintScreen(loader))
        body = app.screen.query_one("#lint-body", Static)
        for _ in range(40):
            await pilot.pause(0.05)
            if isinstance(app.screen, LintScreen) and app.screen.report is not None:
                break
        text = str(body.render())
        assert "visibility_timeout differs" in text and "fix:" in text and reports.bad_host in text
        await pilot.press("r")
        for _ in range(40):
            await pilot.pause(0.05)
            if len(calls) == 2 and app.screen.report is not None:  # type: ignore[attr-defined]
                break
        assert len(calls) == 2
        await pilot.press("escape")
        assert not isinstance(app.screen, LintScreen)


def test_prefetch_rule_only_for_workers_consuming_the_long_tasks_queue() -> None:
    settings = resolve_settings(broker="redis://127.0.0.1:1/0", env={})
    stats = {h: {"prefetch_count": 4, "pool": {"max-concurrency": 1}} for h in ("w1@a", "w2@b")}
    conf = {h: {"worker_prefetch_multiplier": 4, "worker_send_task_events": True} for h in stats}
    found = lint(settings, None, stats, conf, {"app.report": 300.0}, workers_queues={"w1@a": ["slow"], "w2@b": ["fast"]},
                 queue_runtimes={"slow": 300.0})
    assert [f.subject for f in found if f.rule == "prefetch-long-tasks"] == ["w1@a"]
