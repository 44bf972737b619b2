"""Task search from the Tasks view (``/``) on a real Redis holding results in Celery's stored format."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import redis
from tui_fakes import FakeActions, FakeCollector, make_snapshot
from tui_helpers import notifications, settle, wait_until, widget_text

from collectors.core.config import Settings
from collectors.reads.search import SEARCH_HELP
from tui.app import TaskDashApp
from tui.screens.detail import DetailScreen
from tui.screens.search import SearchScreen

NAMES = ("app.tasks.send_email", "app.tasks.resize_image", "billing.charge_card", "app.tasks.add")
STATES = ("SUCCESS", "FAILURE", "STARTED", "RETRY")


def _meta(i: int, rng: random.Random) -> dict[str, Any]:
    """One stored result as Celery writes it with ``result_extended`` (JSON serializer)."""
    state = rng.choice(STATES)
    meta: dict[str, Any] = {
        "status": state, "result": i * 2, "traceback": None, "children": [],
        "date_done": "2026-11-25T16:34:07.736482+00:00", "task_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "name": rng.choice(NAMES), "args": [i, f"user-{i % 37}"], "kwargs": {"tag": f"t{i % 11}"},
        "worker": f"w{i % 3}@host", "retries": 0, "queue": "celery",
    }
    if state in ("FAILURE", "RETRY"):
        meta["result"] = {"exc_type": "TimeoutError", "exc_message": [f"slow {i % 5}"], "exc_module": "builtins"}
        meta["traceback"] = f"Traceback (most recent call last):\n  ...\nTimeoutError: slow {i % 5}\n"
    return meta


async def test_search_finds_stored_results_and_opens_details(redis_url: str, r: redis.Redis) -> None:
    rng = random.Random(3)
    metas = [_meta(i, rng) for i in range(400)]
    pipe = r.pipeline(transaction=False)
    for m in metas:
        pipe.setex(f"celery-task-meta-{m['task_id']}", 600, json.dumps(m))
    pipe.execute()
    truth = {m["task_id"] for m in metas if m["name"] == "billing.charge_card" and m["status"] == "FAILURE"
             and "user-1" in json.dumps(m["args"])}
    assert truth
    settings = Settings(broker_url=redis_url, backend_url=redis_url, interval=0)
    app = TaskDashApp(FakeCollector([make_snapshot()], settings=settings), actions=FakeActions(), interval=0,
                      load_details=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        app.show_view("queues")
        await pilot.press("slash")  # in other views / is still the filter
        assert app.dash.prompt_mode == "filter"
        await pilot.press("escape")
        app.show_view("tasks")
        await settle(pilot)
        await pilot.press("slash")
        assert app.dash.prompt_mode == "search"
        await pilot.press(*"name:charge state:fail args:user-1", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SearchScreen), timeout=15)
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        table = screen.query_one("#search-table")
        shown = {screen.hits[k].task_id for k in table.shown_keys}  # type: ignore[attr-defined]
        assert shown == truth
        assert all(screen.hits[k].source == "result" for k in table.shown_keys)  # type: ignore[attr-defined]
        assert "args: " in str(table.get_row(table.shown_keys[0])[-1])  # type: ignore[attr-defined]
        first = screen.hits[table.shown_keys[0]]  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        body = widget_text(app.screen)
        assert first.task_id in body and "TimeoutError" in body and "user-1" in body
        await pilot.press("escape")
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(app.screen_stack) == 1)

        await pilot.press("slash", *"color:red", "enter")  # bad query: the syntax is explained
        await wait_until(pilot, lambda: any(t == "Search" for t, _, _ in notifications(app)))
        msg = next(m for t, m, _ in notifications(app) if t == "Search")
        assert "unknown field" in msg and SEARCH_HELP.splitlines()[2].strip() in msg
        assert len(app.screen_stack) == 1
