"""Issue 21, quarantine: a quarantined poison suspect leaves the Poison view at once (and stays out), and a
quarantine without a caller's count records the poison tracker's delivery count from the persistent
history, not the lower bound the message proves (real Redis, real Collector and TUI; no mocks)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from collectors.analysis.history import History
from collectors.analysis.poison import PoisonTracker
from collectors.core.config import Settings, resolve_settings
from collectors.core.models import PoisonSuspect, Snapshot, SourceStatus, UnackedEntry
from collectors.writes.actions import Actions


def plant(r: Any, task_id: str, tag: str, score: float, queue: str = "risky") -> None:
    """An unacked entry of a message delivered again (``redelivered``) at ``score``."""
    payload = {"body": "W10=", "headers": {"id": task_id, "task": "demo_tasks.tasks.poison", "redelivered": True},
               "properties": {"priority": 0, "delivery_tag": tag,
                              "delivery_info": {"exchange": "", "routing_key": queue}}}
    r.hset("unacked", tag, json.dumps([payload, "", queue]))
    r.zadd("unacked_index", {tag: score})


def _entry(task_id: str, score: float) -> UnackedEntry:
    return UnackedEntry(delivery_tag="t1", task_id=task_id, task="poison", queue="risky", priority=0,
                        reserved_at=score, age_s=0.0, redelivered=True, state="reserved", holder=None,
                        stale=False, time_to_redelivery_s=None, argsrepr="()")


def record_suspect(path: Path, scope: str, task_id: str, deliveries: int) -> None:
    now = time.time()
    suspect = PoisonSuspect(task_id=task_id, task="demo_tasks.tasks.poison", queue="risky", deliveries=deliveries,
                            first_seen=now - 600, last_seen=now, reason="looping", workers=("w1@h",),
                            delivery_tag="pt1")
    with History(path, scope=scope) as h:
        assert h.record(Snapshot(taken_at=now, broker=SourceStatus("b", True, None),
                                 backend=SourceStatus("b", True, None), poison=(suspect,)), force=True)


def test_forgotten_suspect_leaves_at_once_and_stale_reports_do_not_bring_it_back() -> None:
    t = PoisonTracker(threshold=3)
    for score in (100.0, 110.0, 120.0):
        t.observe_unacked([_entry("p1", score)], now=score)
    assert [s.task_id for s in t.suspects(now=130.0)] == ["p1"]
    t.forget("p1", at=125.0)  # quarantined at 125
    assert t.suspects(now=130.0) == ()
    # a ledger read and an event from before the quarantine arrive late: ignored
    t.observe_unacked([_entry("p1", 120.0)], now=131.0)
    t.observe_event({"type": "task-received", "uuid": "p1", "hostname": "w", "timestamp": 121.0})
    assert t.deliveries("p1") == 0 and t.suspects(now=132.0) == ()
    # replayed, and it loops again: counted afresh from the replay
    for score in (200.0, 210.0, 220.0):
        t.observe_unacked([_entry("p1", score)], now=score)
    (s,) = t.suspects(now=230.0)
    assert s.deliveries == 3


def test_forget_from_another_thread_while_the_poll_thread_feeds() -> None:
    t = PoisonTracker(threshold=2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def feed() -> None:
        i = 0
        try:
            while not stop.is_set():
                t.observe_unacked([_entry(f"id{i % 500}", float(i))], now=float(i))
                t.suspects(now=float(i))
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        for i in range(2000):
            t.forget(f"id{i % 500}")
    finally:
        stop.set()
        thread.join(10)
    assert not errors


def test_cli_quarantine_records_the_trackers_count_from_the_history(r: Any, redis_url: str,
                                                                   tmp_path: Path) -> None:
    from taskdash.cli import cli

    state = tmp_path / "state"
    scope = resolve_settings(broker=redis_url, env={}).broker_masked
    record_suspect(state / "taskdash" / "history.sqlite3", scope, "poison-cli", 117)
    plant(r, "poison-cli", "pt1", time.time() - 60)
    res = CliRunner().invoke(cli, ["quarantine", "--tag", "pt1", "--yes", "--broker", redis_url,
                                   "--audit-log", str(tmp_path / "audit.jsonl")],
                             env={"XDG_STATE_HOME": str(state)}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (q,) = Actions(Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl")), r).list_quarantine()
    assert q.task_id == "poison-cli" and q.deliveries == 117  # was 2: the redelivered flag's lower bound
    record = json.loads(r.hget("taskdash.quarantine", q.id))
    assert record["deliveries_source"] == "history"


def test_without_history_the_lower_bound_is_kept_and_said(r: Any, redis_url: str, tmp_path: Path) -> None:
    actions = Actions(Settings(broker_url=redis_url, audit_log=str(tmp_path / "audit.jsonl")), r)
    actions.history_path = tmp_path / "missing.sqlite3"
    plant(r, "p-none", "pt2", time.time() - 60)
    res = actions.quarantine(tags=["pt2"])
    assert res.details["items"][0]["deliveries"] == 2
    assert res.details["items"][0]["deliveries_source"] == "message"
    assert not (tmp_path / "missing.sqlite3").exists()  # read-only: never created
    # a caller's count (the TUI passes the tracker's) wins
    plant(r, "p-given", "pt3", time.time() - 60)
    res = actions.quarantine(tags=["pt3"], deliveries=42)
    assert res.details["items"][0]["deliveries"] == 42


async def test_quarantined_suspect_leaves_the_poison_view_and_stays_out(r: Any, redis_url: str,
                                                                      tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "tui"))
    from tui_helpers import notifications, wait_until

    from collectors.collector import Collector
    from tui.app import TaskDashApp
    from tui.screens.confirm import ConfirmScreen

    settings = resolve_settings(broker=redis_url, backend=redis_url, env={}, interval=0.3, inspect_interval=1.0,
                                inspect_timeout=0.3, audit_log=str(tmp_path / "audit.jsonl"))
    collector = Collector(settings)
    app = TaskDashApp(collector, actions_factory=lambda: Actions(settings), show_welcome=False)
    base = time.time() - 120
    plant(r, "poison-tui", "ptt", base)
    try:
        async with app.run_test(size=(120, 32)) as pilot:
            # three distinct delivery times of one tag, seen by three refreshes: a suspect
            for i in (1, 2):
                seen = app._refreshes
                await wait_until(pilot, lambda seen=seen: app._refreshes >= seen + 2, 20)
                r.zadd("unacked_index", {"ptt": base + 10 * i})
            await wait_until(pilot, lambda: app.snapshot is not None
                             and any(p.task_id == "poison-tui" for p in app.snapshot.poison), 20,
                             lambda: str(app.snapshot and app.snapshot.poison))
            app.show_view("poison")
            table = app.panel("poison").table
            await wait_until(pilot, lambda: "poison-tui" in table.rows, 10)
            table.move_cursor(row=table.shown_keys.index("poison-tui"))
            await pilot.press("Q")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
            await pilot.press("y")
            await wait_until(pilot, lambda: any(t == "Quarantine" for t, _, _ in notifications(app)), 20,
                             lambda: str(notifications(app)))
            assert r.hlen("unacked") == 0
            await wait_until(pilot, lambda: "poison-tui" not in table.rows, 5,
                             lambda: str(app.snapshot and app.snapshot.poison))
            seen = app._refreshes
            await wait_until(pilot, lambda: app._refreshes >= seen + 4, 20)
            assert not any(p.task_id == "poison-tui" for p in app.snapshot.poison)  # type: ignore[union-attr]
            assert "poison-tui" not in table.rows
            (q,) = Actions(settings, r).list_quarantine()
            assert q.task_id == "poison-tui" and q.deliveries == 3  # the tracker's count
    finally:
        app.collector.close()
