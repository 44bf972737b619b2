"""``task-events-off`` decides on evidence only (issue 21: lint flagged workers started with ``-E``).

``-E`` does not show in ``inspect conf`` (worker_send_task_events stays False there), so silence proves
nothing: the rule warns only when the worker finished tasks while lint watched (two heartbeats' ``processed``)
and sent no task event; an idle worker is reported as unknown (info, exit 0). Live part: real redis-server,
real workers started with and without ``-E``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from collectors.analysis.lint import lint, run_lint
from collectors.core.config import Settings, resolve_settings
from taskdash.procs import CeleryWorker, RedisServer

pytestmark = pytest.mark.timeout(240)

HOST = "w1@h"
CONF_OFF = {HOST: {"worker_send_task_events": False, "worker_prefetch_multiplier": 1}}


def _events_findings(**kw: object) -> list[tuple[str, str]]:
    found = lint(Settings(broker_url="redis://x/0"), None, {HOST: {}}, CONF_OFF, {}, None, **kw)  # type: ignore[arg-type]
    return [(f.severity, f.message) for f in found if f.rule == "task-events-off"]


def test_silence_alone_is_not_evidence_of_events_off() -> None:
    (sev, msg), = _events_findings()
    assert sev == "info" and "unknown" in msg


def test_tasks_finished_without_a_task_event_are_evidence() -> None:
    (sev, msg), = _events_findings(processed_during={HOST: 3})
    assert sev == "warning" and "finished 3 task(s)" in msg


def test_a_task_event_seen_means_on() -> None:
    assert _events_findings(task_events_from={HOST}, processed_during={HOST: 3}) == []


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    server = RedisServer().start()
    try:
        yield server.url_db(0)
    finally:
        server.cleanup()


def test_live_workers_with_and_without_dash_e(broker: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from demo_tasks.celery_app import make_app

    tmp = tmp_path_factory.mktemp("lint-events")
    env = {"DEMO_EVENTS": "0"}  # conf False: only -E turns task events on
    with_e = CeleryWorker(broker, queues=("ev_on",), extra_args=("-E",), env=env, logfile=tmp / "on.log")
    without = CeleryWorker(broker, queues=("ev_off",), env=env, logfile=tmp / "off.log")
    workers = [with_e.start(wait=False), without.start(wait=False)]
    app = make_app(broker, broker, transport_options={})
    try:
        for w in workers:
            w.wait_ready(40)
        settings = resolve_settings(broker=broker, env={})
        # idle: neither can be told; never a warning (the flaky "task events are off" for -E workers)
        for _ in range(2):
            report = run_lint(settings)
            sev = {f.subject: f.severity for f in report.findings if f.rule == "task-events-off"}
            assert sev.get(with_e.hostname) in (None, "info") and sev.get(without.hostname) in (None, "info"), sev
        # working: the -E worker shows its events, the other finishes tasks without one
        stop = threading.Event()

        def feed() -> None:
            while not stop.is_set():
                for q in ("ev_on", "ev_off"):
                    app.send_task("demo_tasks.tasks.add", args=(1, 1), queue=q)
                stop.wait(0.2)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            report = run_lint(settings)
        finally:
            stop.set()
            feeder.join(5)
        sev = {f.subject: f.severity for f in report.findings if f.rule == "task-events-off"}
        assert with_e.hostname not in sev, report.findings
        assert sev.get(without.hostname) == "warning", report.findings
    finally:
        app.close()
        for w in workers:
            w.kill9()
