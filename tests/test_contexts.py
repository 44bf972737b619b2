"""Contexts from a temporary config file: resolution order, switching, errors, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from collectors.core.config import ConfigError, resolve_settings
from collectors.core.contexts import config_path, list_contexts, load_contexts, switch
from collectors.keyspace.keys import KeyLayout

CONFIG = """
default = "local"

[contexts.local]
broker = "redis://127.0.0.1:6390/0"
interval = 2.5

[contexts.prod]
broker = "redis://:s3cret@prod-redis:6379/0"
backend = "redis://:s3cret@prod-redis:6379/1"
read_only = true
visibility_timeout = 7200
global_keyprefix = "app1:"
description = "production, careful"

[contexts.demo]
broker = "{demo_url}"
app = "demo_tasks"
"""


@pytest.fixture()
def cfg(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("{demo_url}", "redis://127.0.0.1:6391/3"))
    return {"TASKDASH_CONFIG": str(path)}


def test_default_context_applies_like_env(cfg: dict[str, str]) -> None:
    s = resolve_settings(env=cfg)
    assert s.context == "local" and s.broker_url == "redis://127.0.0.1:6390/0" and s.interval == 2.5
    # the real environment beats the default context
    s = resolve_settings(env={**cfg, "TASKDASH_INTERVAL": "7"})
    assert s.context == "local" and s.interval == 7.0
    # a broker given by flag or TASKDASH_BROKER is another system: the default context stays out
    s = resolve_settings(env={**cfg, "TASKDASH_BROKER": "redis://10.0.0.1:6379/0"})
    assert s.broker_url == "redis://10.0.0.1:6379/0" and s.context is None and s.interval == 1.0
    s = resolve_settings(broker="redis://flag:1/0", env=cfg)
    assert s.broker_url == "redis://flag:1/0" and s.context is None


def test_explicit_context_beats_env_and_is_read_only(cfg: dict[str, str]) -> None:
    env = {**cfg, "TASKDASH_BROKER": "redis://10.0.0.1:6379/0", "CELERY_BROKER_URL": "redis://c:1/0"}
    s = resolve_settings(context="prod", env=env)
    assert s.context == "prod" and s.broker_url.endswith("prod-redis:6379/0")
    assert s.backend_url and s.backend_url.endswith("/1")
    assert s.read_only and s.visibility_timeout == 7200 and s.global_keyprefix == "app1:"
    assert KeyLayout.from_settings(s).key("unacked") == "app1:unacked"
    # TASKDASH_CONTEXT is the same as --context
    assert resolve_settings(env={**cfg, "TASKDASH_CONTEXT": "prod"}).context == "prod"
    # a context with an app loads it (the app's queues become known)
    demo = resolve_settings(context="demo", env=cfg)
    assert demo.app == "demo_tasks" and "risky" in demo.app_queues and demo.broker_url.endswith(":6391/3")


def test_switch_keeps_session_safety(cfg: dict[str, str]) -> None:
    start = resolve_settings(env=cfg, read_only=True, interval=0.5)
    assert start.context == "local"
    prod = switch("prod", start, env=cfg)
    assert prod.context == "prod" and prod.read_only
    back = switch("local", prod, env=cfg)  # prod was read-only, so the session stays read-only
    assert back.broker_url.endswith(":6390/0") and back.read_only and back.interval == 2.5
    writable = switch("demo", resolve_settings(env=cfg), env=cfg)
    assert not writable.read_only and writable.interval == 2.5
    with pytest.raises(ConfigError, match="unknown context 'nope'.*known: demo, local, prod"):
        switch("nope", start, env=cfg)


def test_list_masks_passwords(cfg: dict[str, str]) -> None:
    rows = list_contexts(env=cfg)
    assert [(n, d) for n, _desc, d in rows] == [("demo", False), ("local", True), ("prod", False)]
    prod = dict((n, desc) for n, desc, _d in rows)["prod"]
    assert "s3cret" not in prod and "***" in prod and "read-only" in prod


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    env = {"TASKDASH_CONFIG": str(path)}
    assert load_contexts(env=env).contexts == {}  # no file: no contexts, nothing changes
    assert resolve_settings(env=env).context is None
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_settings(context="prod", env=env)
    path.write_text("[contexts.a]\nbrokr = 'redis://x'\n")
    with pytest.raises(ConfigError, match="unknown key.*brokr"):
        load_contexts(env=env)
    path.write_text("default = 'b'\n[contexts.a]\nbroker = 'redis://x:1/0'\n")
    with pytest.raises(ConfigError, match="default = 'b'"):
        load_contexts(env=env)
    path.write_text("[contexts.a\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_contexts(env=env)
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/taskdash/config.toml")


def test_cli_context_via_env_reaches_a_real_broker(redis_server, r, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """TASKDASH_CONTEXT picks the broker for any sub-command (here `health` against the test Redis)."""
    from taskdash.cli import cli

    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("{demo_url}", redis_server.url))
    res = CliRunner().invoke(cli, ["health", "--json"], env={"TASKDASH_CONFIG": str(path), "TASKDASH_CONTEXT": "demo"})
    assert res.exit_code in (0, 3), res.output
    assert '"maxmemory_policy"' in res.output
    res = CliRunner().invoke(cli, ["health"], env={"TASKDASH_CONFIG": str(path), "TASKDASH_CONTEXT": "nope"})
    assert res.exit_code != 0 and "unknown context 'nope'" in res.output


def test_cli_contexts_lists_masked(cfg: dict[str, str]) -> None:
    from taskdash.cli import cli

    res = CliRunner().invoke(cli, ["contexts"], env=cfg)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].startswith("* local") and "prod" in lines[2] and "s3cret" not in res.output
