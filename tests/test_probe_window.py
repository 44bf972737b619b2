"""CLIENT LIST attribution by creation time when the reply is read late: Redis ran the command between its
sending and the reading of its reply, so a connection's creation time is bounded by both, and a reply read
late on a loaded machine must not move a worker's connection out of its boot window (unit test: the
attribution is pure arithmetic on CLIENT LIST's whole-second ``age``; the real probe runs in
tests/test_liveness_workers.py against real workers)."""

from __future__ import annotations

from typing import Any

import pytest

from collectors.core.config import Settings
from collectors.reads.workers import WorkerMonitor


def _monitor(monkeypatch: pytest.MonkeyPatch, online_at: float, spoke_at: float) -> WorkerMonitor:
    mon = WorkerMonitor(Settings(broker_url="redis://127.0.0.1:1/0"))
    monkeypatch.setattr(mon, "_own_addrs", set)
    node = mon._node("w1@h", online_at)
    node.boot_online = online_at
    node.last_hb = node.alive_at = spoke_at
    return mon


def _subscriber(age: int) -> dict[str, Any]:
    return {"id": "7", "addr": "10.0.0.9:40000", "age": str(age), "psub": "1", "cmd": "psubscribe", "name": ""}


@pytest.mark.parametrize("read_delay", [0.0, 1.6, 3.0])
def test_a_reply_read_late_keeps_the_connection_in_the_boot_window(
        monkeypatch: pytest.MonkeyPatch, read_delay: float) -> None:
    # worker-online at 100.0, its pidbox subscriber connected at 99.3; CLIENT LIST sent and run at 100.6
    # (age = 100 - 99 = 1 whole second), its reply read read_delay seconds later
    mon = _monitor(monkeypatch, online_at=100.0, spoke_at=100.0 + read_delay)
    mon._absorb_client_list([_subscriber(age=1)], 100.6 + read_delay, sent_at=100.6)
    node = mon._nodes["w1@h"]
    assert node.conn_present is True, node.conn_detail
    assert node.conn_ok_at == 100.6 + read_delay


def test_a_connection_born_after_the_boot_window_is_not_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    # a connection 3 s younger than the worker's online event (a producer): not a candidate
    mon = _monitor(monkeypatch, online_at=100.0, spoke_at=104.0)
    mon._absorb_client_list([_subscriber(age=1)], 104.5, sent_at=104.5)
    assert mon._nodes["w1@h"].conn_present is not True
