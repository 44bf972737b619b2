"""Redis health against real redis-servers: an evicting broker vs noeviction vs CONFIG disabled."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.app import App, ComposeResult

from collectors.reads.health import RedisHealth, human_bytes, redis_health
from taskdash.procs import RedisServer
from tui.screens.health import HealthPanel, HealthScreen


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RedisServer]]:
    made: dict[str, RedisServer] = {}
    try:
        made["lru"] = RedisServer(extra_args=["--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru"]).start()
        made["noevict"] = RedisServer(extra_args=["--maxmemory", "10mb", "--maxmemory-policy", "noeviction",
                                                  "--appendonly", "yes"]).start()
        made["noconfig"] = RedisServer(extra_args=["--maxmemory", "10mb", "--maxmemory-policy", "volatile-lru",
                                                   "--rename-command", "CONFIG", ""]).start()
        yield made
    finally:
        for s in made.values():
            s.cleanup()


def _fill(server: RedisServer, mb: int) -> None:
    """Push ~mb MB of queue-like list entries (10 KB each) until Redis evicts or refuses."""
    c = server.client()
    blob = b"x" * 10_000
    for batch in range(mb):
        pipe = c.pipeline(transaction=False)
        for i in range(100):
            pipe.lpush(f"q{batch}:{i % 7}", blob)
        try:
            pipe.execute()
        except Exception:  # noqa: BLE001 - noeviction: OOM command not allowed
            return


def test_evicting_broker_is_a_warning(servers: dict[str, RedisServer]) -> None:
    server = servers["lru"]
    server.client().lpush("celery", b"a task message")
    _fill(server, 15)
    h = redis_health(server.client())
    assert h.error is None and h.maxmemory == 10 * 1024 * 1024
    assert h.maxmemory_policy == "allkeys-lru" and h.may_evict
    assert h.evicted_keys and h.evicted_keys > 0
    codes = {w.code for w in h.warnings}
    assert {"evicting-policy", "evicted"} <= codes
    assert h.connected_clients and h.connected_clients >= 1 and h.blocked_clients == 0
    assert h.role == "master" and h.version and h.uptime_s is not None and h.ops_per_sec is not None
    assert h.persistence == "none" and h.keys and h.keys > 0


def test_noeviction_broker_has_no_eviction_warning(servers: dict[str, RedisServer]) -> None:
    server = servers["noevict"]
    _fill(server, 15)  # refused with OOM instead of deleting anything
    h = redis_health(server.client())
    assert h.maxmemory_policy == "noeviction" and not h.may_evict
    assert h.evicted_keys == 0
    codes = {w.code for w in h.warnings}
    assert "evicting-policy" not in codes and "evicted" not in codes
    assert "memory-high" in codes  # it is full, though
    assert h.aof_enabled is True and h.persistence == "aof"


def test_config_disabled_still_reads_policy_from_info(servers: dict[str, RedisServer]) -> None:
    h = redis_health(servers["noconfig"].client())
    assert h.error is None
    # Redis 7 prints maxmemory_policy in INFO memory, so the policy is known without CONFIG
    assert h.maxmemory_policy == "volatile-lru" and h.policy_source == "info" and h.may_evict
    assert h.rdb_enabled is None  # the save schedule needs CONFIG


def test_unreachable_is_reported_not_raised() -> None:
    import redis

    from taskdash.procs import free_port

    h = redis_health(redis.Redis(port=free_port(), socket_connect_timeout=0.5))
    assert h.error and not h.warnings
    assert human_bytes(1536) == "1.5K"


async def test_health_screen_renders_real_info(servers: dict[str, RedisServer]) -> None:
    client = servers["lru"].client()

    class Host(App[None]):
        def compose(self) -> ComposeResult:
            yield HealthPanel(id="static")

    app = Host()
    async with app.run_test(size=(110, 30)) as pilot:
        await app.push_screen(HealthScreen(lambda: redis_health(client), interval=0))
        panel = app.screen.query_one(HealthPanel)
        for _ in range(50):
            await pilot.pause(0.05)
            if panel.health is not None:
                break
        assert isinstance(panel.health, RedisHealth)
        text = str(panel.render())
        assert "allkeys-lru" in text and "may evict" in text and "evicted" in text
        assert panel.has_class("-warn")
        await pilot.press("escape")
        assert not isinstance(app.screen, HealthScreen)


def test_cli_health_exit_codes(servers: dict[str, RedisServer]) -> None:
    import json

    from click.testing import CliRunner

    from taskdash.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["health", "--broker", servers["lru"].url], env={})
    assert res.exit_code == 3, res.output
    assert "allkeys-lru" in res.output and "may evict" in res.output
    fresh = RedisServer(extra_args=["--maxmemory-policy", "noeviction"]).start()
    try:
        res = runner.invoke(cli, ["health", "--broker", fresh.url, "--json"], env={})
        assert res.exit_code == 0, res.output
        doc = json.loads(res.output)
        assert doc["maxmemory_policy"] == "noeviction" and doc["warnings"] == [] and doc["may_evict"] is False
    finally:
        fresh.cleanup()
