"""Settings resolution, URL masking and kombu key naming."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collectors.core.config import ConfigError, mask_text, mask_url, resolve_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://alice:s3cret@h:1/2", "redis://alice:***@h:1/2"),
        ("rediss://bob:p%40ss@h:6380/0?ssl_cert_reqs=required", "rediss://bob:***@h:6380/0?ssl_cert_reqs=required"),
        ("sentinel://:pw@h1:26379;sentinel://:pw@h2:26379", "sentinel://:***@h1:26379;sentinel://:***@h2:26379"),
        ("redis://h:1/0?password=topsecret", "redis://h:1/0?password=***"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_mask_text_hides_password_inside_messages() -> None:
    url = "redis://alice:hunter2@db.example:6379/0"
    text = f"Error connecting to {url}: hunter2 rejected"
    out = mask_text(text, url)
    assert "hunter2" not in out
    assert "alice" in out


def test_resolution_order_flags_env_defaults() -> None:
    env = {"TASKDASH_BROKER": "redis://envhost:1/0", "CELERY_BROKER_URL": "redis://celeryhost:2/0"}
    assert resolve_settings(env={}).broker_url == "redis://localhost:6379/0"
    assert resolve_settings(env=env).broker_url == "redis://envhost:1/0"
    assert resolve_settings(env={"CELERY_BROKER_URL": "redis://c:2/0"}).broker_url == "redis://c:2/0"
    assert resolve_settings(broker="redis://flag:3/0", env=env).broker_url == "redis://flag:3/0"


def test_app_config_gives_transport_options_and_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_GLOBAL_KEYPREFIX", "myapp:")
    monkeypatch.setenv("DEMO_PRIORITY_STEPS", "0,5,9")
    monkeypatch.setenv("DEMO_VISIBILITY_TIMEOUT", "120")
    code = (
        "from collectors.core.config import resolve_settings;"
        "s = resolve_settings(app='demo_tasks', env={});"
        "print(s.global_keyprefix, s.priority_steps, s.visibility_timeout, sorted(s.app_queues))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "myapp: (0, 5, 9) 120.0 ['celery', 'emails', 'priority', 'risky', 'slow']"


def test_bad_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported broker URL"):
        resolve_settings(broker="amqp://guest:guest@h//", env={})
    with pytest.raises(ConfigError) as info:
        resolve_settings(broker="http://u:pw@h/", env={})
    assert "pw" not in str(info.value)


def test_collectors_never_import_textual() -> None:
    """collectors/ is UI-free: importing every module of every subpackage must not load textual (or rich)."""
    code = (
        "import importlib, pkgutil, sys, collectors\n"
        "names = [m.name for m in pkgutil.walk_packages(collectors.__path__, 'collectors.')]\n"
        "assert len(names) >= 20 and 'collectors.reads.broker' in names, names\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_context_flag_before_and_after_the_subcommand(redis_url: str, tmp_path) -> None:
    """``--context NAME`` picks a broker from the config file, in either position."""
    import json
    import os

    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[contexts.test]\nbroker = "{redis_url}"\ndescription = "the test redis"\n')
    env = {**os.environ, "TASKDASH_CONFIG": str(cfg)}
    env.pop("TASKDASH_BROKER", None)
    env.pop("CELERY_BROKER_URL", None)
    for args in (["--context", "test", "snapshot", "--json"], ["snapshot", "--json", "--context", "test"]):
        res = subprocess.run([sys.executable, "-m", "taskdash", *args], capture_output=True, text=True, env=env,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["broker"]["url"] == redis_url
    res = subprocess.run([sys.executable, "-m", "taskdash", "--context", "nope", "snapshot"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode != 0 and "nope" in res.stderr and "Traceback" not in res.stderr
