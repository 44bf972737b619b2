"""Pilot tests of the dashboard's later features: ctrl+c, terminal-safe text, search, contexts,
crash forensics and the persistent history (fake collector unless the test says otherwise)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tui_fakes import (
    POISON,
    QUEUES,
    T0,
    UNACKED,
    WORKERS,
    FakeActions,
    FakeCollector,
    entry,
    make_app,
    make_snapshot,
)
from tui_helpers import notifications, screen_text, settle, wait_until, widget_text

from collectors.core.config import Settings
from collectors.core.models import QueueInfo, SourceError, SourceStatus, TaskRef
from collectors.reads.search import SEARCH_HELP
from collectors.writes.control import CONTROL_HELP
from tui.app import TaskDashApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.detail import DetailScreen
from tui.screens.health import TimelineScreen
from tui.screens.help import HelpScreen
from tui.widgets.status_bar import StatusBar


async def test_ctrl_c_quits_even_from_the_prompt() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("slash")  # the filter prompt has the focus: ctrl+c must still quit
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: app._exit, timeout=5)
    assert app.return_code == 0


EVIL = "evil\x1b[2J"
BINARY = b"bin\xff\xfe-q".decode("utf-8", "surrogateescape")
"""A queue name with undecodable bytes, as the broker reader keeps it (surrogate escapes)."""


def _evil_snapshot() -> Any:
    queues = (*QUEUES, QueueInfo(EVIL, 3, ((0, 3),), 1.0, 0, 0), QueueInfo(BINARY, 2, ((0, 2),), 1.0, 1, 0))
    bad = entry("tag-evil", "e0e0e0e0-0000-4000-8000-00000000000e", task="evil.task\x1b]0;pwned\x07",
                queue=EVIL, state="orphaned")
    bad = replace(bad, argsrepr="('\x1b[31mred',)", kwargsrepr=f"{{'q': '{BINARY}'}}")
    return make_snapshot(queues=queues, unacked=(*UNACKED, bad), unacked_total=len(UNACKED) + 1,
                         errors=(SourceError("broker", f"cannot read queue {EVIL}"),))


def _clean(text: str) -> bool:
    return "\x1b" not in text and "\x07" not in text and not any(0xDC80 <= ord(c) <= 0xDCFF for c in text)


async def test_redis_text_is_made_terminal_safe_everywhere() -> None:
    app = make_app([_evil_snapshot()])
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        assert _clean(screen_text(app)) and "evil\\x1b[2J" in screen_text(app)  # the overview names it too
        app.show_view("queues")
        await settle(pilot)
        table = app.panel("queues").table
        cells = [str(getattr(c, "plain", c)) for key in (EVIL, BINARY) for c in table.get_row(key)[1:]]
        assert all(_clean(c) for c in cells), cells
        text = screen_text(app)
        assert _clean(text) and "evil\\x1b[2J" in text and "bin\\xff\\xfe-q" in text
        assert any("evil\\x1b[2J" in m for _, m, _ in notifications(app))
        assert all(_clean(t + m) for t, m, _ in notifications(app))

        table.move_cursor(row=table.shown_keys.index(EVIL))
        await pilot.press("p")  # purge: the confirm dialog names the queue
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        body = widget_text(app.screen) + widget_text(app.screen, "Label")
        assert _clean(body) and "evil\\x1b[2J" in body
        await pilot.press("n")

        app.show_view("unacked")
        await settle(pilot)
        assert _clean(screen_text(app)) and "evil.task\\x1b]0;pwned\\x07" in screen_text(app)
        utable = app.panel().table
        utable.move_cursor(row=utable.shown_keys.index("tag-evil"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        body = widget_text(app.screen) + widget_text(app.screen, "Label")
        assert _clean(body), body
        assert "\\x1b[31mred" in body and "bin\\xff\\xfe-q" in body and "evil\\x1b[2J" in body


async def test_ctx_lists_and_switches_contexts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('default = "local"\n\n[contexts.local]\nbroker = "redis://broker.example:6379/0"\n\n'
                   '[contexts.prod]\nbroker = "redis://:hunter2@prod-redis:6380/2"\n'
                   'description = "production"\n')
    monkeypatch.setenv("TASKDASH_CONFIG", str(cfg))
    for var in ("TASKDASH_BROKER", "TASKDASH_BACKEND", "TASKDASH_APP", "TASKDASH_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    prod_snap = make_snapshot(queues=(QueueInfo("prod-only", 9, ((0, 9),), 3.0, 1, 0),), unacked=(),
                              unacked_total=0, poison=(),
                              broker=SourceStatus("redis://:***@prod-redis:6380/2", True))
    built: list[FakeCollector] = []

    def factory(settings: Settings) -> FakeCollector:
        built.append(FakeCollector([prod_snap], settings=settings))
        return built[-1]

    app = make_app(collector_factory=factory)
    old = app.collector
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("1")  # the queues view (the overview is the first screen)
        await settle(pilot)
        assert "celery" in app.panel("queues").table.shown_keys
        await pilot.press("colon", *"ctx", "enter")
        await wait_until(pilot, lambda: any(t == "Contexts" for t, _, _ in notifications(app)))
        listing = next(m for t, m, _ in notifications(app) if t == "Contexts")
        assert "local" in listing and "prod" in listing and "hunter2" not in listing and "default" in listing

        await pilot.press("colon", *"ctx nope", "enter")  # unknown: stays where it is
        await wait_until(pilot, lambda: any("nope" in m for _, m, s in notifications(app) if s == "error"))
        assert app.collector is old and not built

        await pilot.press("colon", *"ctx prod", "enter")
        await wait_until(pilot, lambda: old.closed and bool(built) and built[0].calls > 0)
        await settle(pilot)
        assert app.collector is built[0] and app.settings.context == "prod"
        assert built[0].settings.broker_url == "redis://:hunter2@prod-redis:6380/2"
        assert app.panel("queues").table.shown_keys == ["prod-only"]  # panels and history reset
        assert app.history.depth_values("celery") == []
        status = str(app.dash.query_one(StatusBar).content)
        assert "ctx prod" in status and "prod-redis:6380/2" in status and "hunter2" not in status
        app.show_view("unacked")
        await settle(pilot)
        assert app.panel().table.shown_keys == []


POISON_ID = "p0150n00-0000-4000-8000-000000000005"


class ViewCollector(FakeCollector):
    """A fake collector that also exposes ``workers_view`` (active tasks with their pool pid)."""

    def __init__(self, snapshots: list[Any], actives: list[tuple[TaskRef, ...]]) -> None:
        super().__init__(snapshots)
        self.actives = actives
        self.views = 0

    def workers_view(self, snapshot: Any) -> Any:
        active = self.actives[min(self.views, len(self.actives) - 1)]
        self.views += 1
        return SimpleNamespace(workers=snapshot.workers, active=active)


async def test_crash_forensics_timeline_and_poison_victims() -> None:
    s1 = make_snapshot()
    w1 = replace(WORKERS[0], pool_pids=(102, 103, 104, 106))  # pool process 105 died, 106 replaced it
    s2 = make_snapshot(taken_at=T0 + 2, workers=(w1, *WORKERS[1:]))
    ref = TaskRef(POISON_ID, "demo_tasks.tasks.poison", "active", "w1@host", worker_pid=105)
    collector = ViewCollector([s1, s2], [(ref,), ()])
    app = TaskDashApp(collector, actions=FakeActions(), interval=0, clock=lambda: T0 + 2.4, load_details=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        app.action_refresh()
        await settle(pilot)
        assert collector.views == 2
        assert app.forensics.victims(POISON_ID) == ["w1@host"]
        app.show_view("workers")
        await settle(pilot)
        assert app.panel().table.selected_key == "w1@host"
        await pilot.press("T")
        await wait_until(pilot, lambda: isinstance(app.screen, TimelineScreen))
        assert app.screen.hostname == "w1@host"  # type: ignore[attr-defined]
        text = widget_text(app.screen)
        assert "pool process 105 died while running demo_tasks.tasks.poison" in text
        await pilot.press("escape")
        await pilot.press("colon", *"crash w2@host", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, TimelineScreen))
        assert app.screen.hostname == "w2@host"  # type: ignore[attr-defined]
        await pilot.press("escape")
        app.show_view("poison")
        await settle(pilot)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        text = widget_text(app.screen)
        assert "Crash forensics" in text and "took down" in text and "w1@host pid 105" in text


async def test_history_survives_a_restart_and_keeps_delivery_counts(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    t0 = time.time() - 100  # recent: the store drops samples older than a week when it opens
    suspect = replace(POISON[0], first_seen=t0 - 120, last_seen=t0 - 1)
    s1 = make_snapshot(taken_at=t0, poison=(suspect,))
    s2 = make_snapshot(taken_at=t0 + 10, queues=(replace(QUEUES[0], messages=60), *QUEUES[1:]),
                       poison=(replace(suspect, deliveries=9),))
    app = make_app([s1, s2], history_path=path, clock=lambda: t0 + 10.4)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("1")  # the queues view (the overview is the first screen)
        await settle(pilot)
        app.action_refresh()
        await settle(pilot)
        assert app.store is not None and app.store.series("celery") == [(t0, 120), (t0 + 10, 60)]

    # Restart on the same file: the trend is there before the first refresh, the count is the stored max.
    s3 = make_snapshot(taken_at=t0 + 20, queues=(replace(QUEUES[0], messages=30), *QUEUES[1:]),
                       poison=(replace(suspect, deliveries=2),))
    app = make_app([s3], history_path=path, clock=lambda: t0 + 20.4)
    assert app.history.depth_values("celery") == [120.0, 60.0]
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.history.depth_values("celery") == [120.0, 60.0, 30.0]
        await pilot.press("1")
        await settle(pilot)
        trend = str(app.panel("queues").table.get_cell("celery", "trend"))
        assert len(trend) == 3 and trend[0] == "█"
        app.show_view("poison")
        await settle(pilot)
        assert str(app.panel().table.get_cell(suspect.task_id, "deliveries")) == "9"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert "deliveries seen  9" in widget_text(app.screen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(app.screen_stack) == 1)
        await pilot.press("Q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await settle(pilot)
        quarantine = [c for c in app.actions.calls if c[0] == "quarantine"]  # type: ignore[attr-defined]
        assert quarantine and quarantine[0][2]["deliveries"] == 9
        assert app.store.deliveries(suspect.task_id) == 0  # forgotten after the quarantine


async def test_help_lists_the_commands_and_both_syntaxes() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = widget_text(app.screen)
        for needle in (":lint", ":health", ":crash [HOST]", ":ctx [NAME]", "q / ctrl+c",
                       SEARCH_HELP.splitlines()[2], CONTROL_HELP.splitlines()[2]):
            assert needle in text, needle
