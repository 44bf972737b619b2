"""WorkerDetailScreen in isolation (a bare App pushes it): given details, a loader, a failing loader, a real worker."""

from __future__ import annotations

import threading
from typing import Any

from textual.app import App
from tui_helpers import screen_text, settle, wait_until, widget_text

from collectors.core.config import Settings
from collectors.writes.control import WorkerControl
from tui.screens.worker_detail import WorkerDetailScreen, worker_sections

DETAILS: dict[str, Any] = {
    "hostname": "w1@host", "online": True,
    "stats": {"pid": 4242, "uptime": 77, "prefetch_count": 8, "clock": "12", "total": {"app.add": 5},
              "pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 2,
                       "processes": [111, 222], "max-tasks-per-child": "N/A", "timeouts": [0, 0]},
              "rusage": {"utime": 1.5, "stime": 0.25, "maxrss": 65536},
              "broker": {"transport": "redis", "hostname": "127.0.0.1", "port": 6379,
                         "transport_options": {"visibility_timeout": 43200}}},
    "registered": ["app.add", "app.send_email"],
    "active_queues": [{"name": "celery", "exchange": {"name": "celery"}, "routing_key": "celery"},
                      {"name": "emails", "exchange": {"name": "emails"}, "routing_key": "emails"}],
    "conf": {"result_extended": True, "broker_url": "redis://:***@h:6379/0"},
    "revoked": [f"rev-{i:04d}" for i in range(250)],
    "errors": {},
}


class Host(App[None]):
    """Just enough app to push the screen."""

    def __init__(self, screen: WorkerDetailScreen) -> None:
        super().__init__()
        self.detail = screen

    def on_mount(self) -> None:
        self.push_screen(self.detail)


def test_sections_are_pure_and_complete() -> None:
    ids = [sid for sid, _ in worker_sections(DETAILS)]
    assert ids == ["stats", "pool", "rusage", "broker", "queues", "registered", "conf", "revoked"]
    text = "".join(t.plain for _, t in worker_sections(DETAILS))
    assert "Revoked ids (250)" in text and "… 50 more" in text and "rev-0199" in text and "rev-0200" not in text
    assert "visibility_timeout" in text and "43200" in text
    assert worker_sections({"hostname": "x", "errors": {"stats": "no reply within 2s"}})[0][0] == "errors"


async def test_shows_details_and_escape_closes() -> None:
    app = Host(WorkerDetailScreen("w1@host", DETAILS))
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, WorkerDetailScreen)
        text = screen_text(app)
        for expected in ("Worker w1@host", "replied", "prefetch_count", "8", "prefork:TaskPool", "[111, 222]",
                         "maxrss", "transport_options", "Active queues (2)", "emails", "Registered tasks (2)",
                         "app.send_email", "result_extended"):
            assert expected in text, expected
        await pilot.press("r")  # no loader: a warning, the screen stays
        await settle(pilot)
        assert isinstance(app.screen, WorkerDetailScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, WorkerDetailScreen)


async def test_loader_runs_in_a_thread_and_reloads() -> None:
    calls: list[str] = []

    def loader() -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        return {**DETAILS, "registered": [f"app.task{len(calls)}"]}

    screen = WorkerDetailScreen("w1@host", loader=loader)
    app = Host(screen)
    async with app.run_test(size=(120, 50)) as pilot:
        await wait_until(pilot, lambda: screen.loads == 1)
        assert "app.task1" in screen_text(app) and calls[0] != threading.main_thread().name
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.loads == 2)
        text = screen_text(app)
        assert "app.task2" in text and "app.task1" not in text
        await pilot.press("q")
        await settle(pilot)
        assert not isinstance(app.screen, WorkerDetailScreen)


async def test_failing_loader_is_shown_not_raised() -> None:
    def loader() -> dict[str, Any]:
        raise ConnectionError("broker gone")

    screen = WorkerDetailScreen("w9@host", loader=loader)
    app = Host(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: screen.loads == 1)
        text = screen_text(app)
        assert "no reply" in text and "ConnectionError: broker gone" in text


async def test_real_worker(start_worker: Any, redis_url: str) -> None:
    worker = start_worker(("celery", "emails"), concurrency=1)
    control = WorkerControl(Settings(broker_url=redis_url))
    screen = WorkerDetailScreen(worker.hostname, loader=lambda: control.worker_details(worker.hostname))
    app = Host(screen)
    async with app.run_test(size=(140, 80)) as pilot:
        await wait_until(pilot, lambda: screen.loads == 1, timeout=20)
        assert "replied" in screen_text(app)
        text = widget_text(screen, ".wd-section")  # includes what is scrolled out of view
        assert "Active queues (2)" in text and "emails" in text
        assert "demo_tasks.tasks.send_email" in text and "prefork" in text and "result_extended" in text
