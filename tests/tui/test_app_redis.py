"""Pilot tests of the dashboard on a real Redis with real Celery workers (ground truth read with redis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from textual.widgets import Checkbox
from tui_helpers import notifications, screen_text, settle, wait_until, widget_text

from collectors.collector import Collector
from collectors.core.config import resolve_settings
from collectors.writes.actions import Actions
from taskdash.procs import CeleryWorker, RedisServer
from tui.app import TaskDashApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.detail import DetailScreen
from tui.screens.health import HealthScreen
from tui.screens.worker_detail import WorkerDetailScreen


def make_real_app(url: str, **kw: Any) -> TaskDashApp:
    settings = resolve_settings(broker=url, backend=url, app=kw.pop("app", None), env={},
                                interval=kw.pop("interval", 0.4), inspect_interval=1.0, inspect_timeout=0.5)
    return TaskDashApp(Collector(settings), actions_factory=lambda: Actions(settings), **kw)


async def test_panels_show_the_truth_and_orphans_are_requeued(
        redis_url: str, r: redis.Redis, demo_app: Any, start_worker: Callable[..., CeleryWorker]) -> None:
    for i in range(5):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@example.com",))
    worker = start_worker(("celery", "slow"), concurrency=2)
    for i in range(3):
        demo_app.send_task("demo_tasks.tasks.slow", args=(30,), kwargs={"tag": f"s{i}"})
    app = make_real_app(redis_url)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            # The first screen is the overview: the backlog nobody consumes is there without a key press.
            await wait_until(pilot, lambda: "NO CONSUMER" in screen_text(app) and "emails: 5 waiting"
                             in screen_text(app), 20, explain=lambda: screen_text(app))
            app.show_view("queues")
            queues = app.panel("queues").table
            await wait_until(pilot, lambda: "emails" in queues.rows and "slow" in queues.rows, 20)
            emails = queues.items["emails"]
            assert emails.messages == r.llen("emails") == 5
            assert emails.no_consumer
            await wait_until(pilot, lambda: "emails ⚠ no consumer" in screen_text(app), 10)

            # Unacked: every entry of the real hash, held by the real worker (2 active + 1 prefetched).
            app.show_view("unacked")
            table = app.panel().table

            def held() -> bool:
                items = list(table.items.values())
                return (len(items) == 3 and all(e.holder == worker.hostname for e in items)
                        and sorted(e.state for e in items) == ["active", "active", "reserved"])

            await wait_until(pilot, held, 20)
            assert set(table.shown_keys) == {k.decode() for k in r.hkeys("unacked")}

            # Detail screen with headers read from Redis.
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen)
                             and "Message properties" in widget_text(app.screen), 10)
            text = widget_text(app.screen)
            assert "demo_tasks.tasks.slow" in text and "(30,)" in text and "application/json" in text
            await pilot.press("escape")
            await pilot.pause()

            # Filter on a tag value of the ledger.
            await pilot.press("slash", *"reserved", "enter")
            await pilot.pause()
            assert [table.items[k].state for k in table.shown_keys] == ["reserved"]
            await pilot.press("escape")
            await pilot.pause()

            app.show_view("workers")
            await wait_until(pilot, lambda: worker.hostname in app.panel().table.rows, 10)
            w = app.panel().table.items[worker.hostname]
            assert w.online and w.concurrency == 2 and w.active == 2
            await pilot.press("enter")  # the worker describes itself (inspect stats/conf/...) in a thread
            await wait_until(pilot, lambda: isinstance(app.screen, WorkerDetailScreen) and app.screen.loads == 1, 20)
            assert "replied" in screen_text(app)
            assert "demo_tasks.tasks.slow" in widget_text(app.screen, ".wd-section")
            await pilot.press("escape")
            await pilot.pause()

            # SIGKILL the worker: its three messages stay in unacked and become orphans.
            worker.kill9()
            app.show_view("unacked")
            await wait_until(pilot, lambda: len(table.items) == 3
                             and all(e.state == "orphaned" for e in table.items.values()), 30)
            assert screen_text(app).count("ORPHANED") == 3
            # Crash forensics was fed from the real collector's workers_view: online, then offline.
            await wait_until(pilot, lambda: [e.kind for e in app.forensics.timeline(worker.hostname)
                                             if e.kind in ("online", "offline")] == ["online", "offline"], 20)

            # R: requeue all orphaned, cancel first, then confirm.
            await pilot.press("R")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
            await pilot.press("n")
            await pilot.pause()
            assert r.hlen("unacked") == 3
            await pilot.press("R")
            await wait_until(pilot, lambda: "Requeue the 3 message(s) orphaned" in widget_text(app.screen), 10)
            await pilot.press("y")
            await wait_until(pilot, lambda: any(t == "Requeue orphaned" for t, _, _ in notifications(app)), 20)
            assert r.hlen("unacked") == 0 and r.llen("slow") == 3
            await wait_until(pilot, lambda: table.row_count == 0, 10)
            assert [s for t, _, s in notifications(app) if t == "Requeue orphaned"] == ["information"]
    finally:
        app.collector.close()


async def test_purge_through_the_dialog_and_redis_restart_mid_run(
        redis_server: RedisServer, redis_url: str, r: redis.Redis, demo_app: Any) -> None:
    for i in range(4):
        demo_app.send_task("demo_tasks.tasks.send_email", args=(f"u{i}@example.com",))
    # -A demo_tasks: the queue names survive the restart (Redis loses the kombu binding sets).
    app = make_real_app(redis_url, interval=0.3, max_backoff=1.0, app="demo_tasks")
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            app.show_view("queues")
            queues = app.panel("queues").table
            await wait_until(pilot, lambda: "emails" in queues.rows, 20)
            queues.move_cursor(row=queues.shown_keys.index("emails"))
            await pilot.press("p")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen)
                             and "Delete the 4 ready message(s) of queue emails" in widget_text(app.screen), 10)
            assert not app.screen.query_one("#include_unacked", Checkbox).value
            await pilot.press("y")
            await wait_until(pilot, lambda: any(t == "Purge" for t, _, _ in notifications(app)), 20,
                             lambda: str(notifications(app)))
            assert r.llen("emails") == 0
            await wait_until(pilot, lambda: queues.items.get("emails") is None
                             or queues.items["emails"].messages == 0, 10)

            await pilot.press("colon", *"health", "enter")  # Redis health, read in a thread
            await wait_until(pilot, lambda: isinstance(app.screen, HealthScreen)
                             and "eviction" in widget_text(app.screen, "HealthPanel")
                             and "connected" in widget_text(app.screen, "HealthPanel"), 10)
            await pilot.press("escape")
            await pilot.pause()

            try:
                redis_server.stop()
                await wait_until(pilot, lambda: app.latest is not None and not app.latest.broker.ok, 20)
                await wait_until(pilot, lambda: "broker unreachable" in screen_text(app), 5)
                assert app.is_running
                assert [t for t, _, _ in notifications(app)].count("Broker unreachable") == 1
                assert "emails" in queues.rows  # last good data stays on screen
                await pilot.pause(1.0)  # several failed retries: still one notification
                assert [t for t, _, _ in notifications(app)].count("Broker unreachable") == 1
            finally:
                redis_server.start()
            demo_app.send_task("demo_tasks.tasks.send_email", args=("back@example.com",))
            await wait_until(pilot, lambda: app.latest is not None and app.latest.broker.ok, 30)
            await wait_until(pilot, lambda: "emails" in queues.rows and queues.items["emails"].messages == 1, 20,
                             lambda: str(app.latest))
            assert "broker unreachable" not in screen_text(app)
            assert [t for t, _, _ in notifications(app)].count("Broker back") == 1
            await settle(pilot)
    finally:
        app.collector.close()
