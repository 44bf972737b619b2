"""The three ways to install taskdash (README, "Install"), each in a fresh environment.

- into the user's own project venv, pinned to an older Celery: pip keeps their Celery/kombu as they are;
- ``uvx --from . taskdash`` and ``pipx install .``: taskdash in its own environment, where the user's app
  cannot be imported, reading a prefixed, custom-priority broker from flags alone.

They download from PyPI (cached after the first run), so they run in CI or with TASKDASH_SLOW_TESTS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("TASKDASH_SLOW_TESTS")),
    reason="installs taskdash into fresh environments from PyPI: runs in CI or with TASKDASH_SLOW_TESTS=1")

LAYOUT = {"global_keyprefix": "shop:", "priority_steps": [0, 5, 9]}
LAYOUT_FLAGS = ("--global-keyprefix", "shop:", "--priority-steps", "0,5,9")


def tool(name: str) -> str:
    """``uv``/``pipx`` from PATH or next to this interpreter (the test extras install both)."""
    for cand in (shutil.which(name), str(Path(sys.executable).parent / name)):
        if cand and os.access(cand, os.X_OK):
            return cand
    pytest.fail(f"{name} is not installed (pip install '.[test]' brings it)")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No venv, no PYTHONPATH, no taskdash settings: what a user's shell looks like."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith(("TASKDASH_", "CELERY_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(Path(sys.executable).parent)))
    env["TASKDASH_CONFIG"] = str(tmp_path / "no-config.toml")
    env["TASKDASH_AUDIT_LOG"] = str(tmp_path / "audit.jsonl")
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert res.returncode == 0, f"{cmd}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def seed(redis_url: str) -> None:
    from demo_tasks.celery_app import make_app

    app = make_app(redis_url, redis_url, transport_options=LAYOUT)
    try:
        for p in (0, 5, 5, 9):
            app.send_task("demo_tasks.tasks.prioritized", args=(p,), priority=p)
    finally:
        app.close()


def check_snapshot(stdout: str) -> None:
    snap: dict[str, Any] = json.loads(stdout)
    q = {q["name"]: q for q in snap["queues"]}["priority"]
    assert q["by_priority"] == {"0": 1, "5": 2, "9": 1}, q


def test_uvx_from_the_checkout_reads_without_the_app(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    seed(redis_url)
    env = clean_env(tmp_path, UV_TOOL_DIR=str(tmp_path / "uv-tools"), UV_TOOL_BIN_DIR=str(tmp_path / "uv-bin"))
    res = run([tool("uv"), "tool", "run", "--isolated", "--from", str(ROOT), "taskdash", "snapshot", "--json",
               "--broker", redis_url, *LAYOUT_FLAGS], env, cwd=tmp_path)
    check_snapshot(res.stdout)


def test_pipx_install_of_the_checkout_reads_without_the_app(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    seed(redis_url)
    home, bin_dir = tmp_path / "pipx-home", tmp_path / "pipx-bin"
    env = clean_env(tmp_path, PIPX_HOME=str(home), PIPX_BIN_DIR=str(bin_dir), PIPX_MAN_DIR=str(tmp_path / "man"))
    run([tool("pipx"), "install", "--python", sys.executable, str(ROOT)], env, cwd=tmp_path)
    exe = bin_dir / "taskdash"
    assert exe.exists() and str(home) in os.path.realpath(exe)
    res = run([str(exe), "snapshot", "--json", "--broker", redis_url, *LAYOUT_FLAGS], env, cwd=tmp_path)
    check_snapshot(res.stdout)
    env_vars = {**env, "TASKDASH_GLOBAL_KEYPREFIX": "shop:", "TASKDASH_PRIORITY_STEPS": "0,5,9"}
    res = run([str(exe), "snapshot", "--json", "--broker", redis_url], env_vars, cwd=tmp_path)
    check_snapshot(res.stdout)


def test_pip_install_into_a_celery_53_project_keeps_its_celery(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """The issue's report: a project pinned to celery 5.3.6 / kombu 5.3.7. pip installs taskdash beside it
    without touching Celery, and taskdash there reads the project's app with -A."""
    venv = tmp_path / "project-venv"
    env = clean_env(tmp_path)
    run([tool("uv"), "venv", "-q", "--seed", "--python", sys.executable, str(venv)], env, cwd=tmp_path)
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", "celery[redis]==5.3.6", "kombu==5.3.7"], env, cwd=tmp_path)
    run([py, "-m", "pip", "install", "-q", str(ROOT)], env, cwd=tmp_path)
    res = run([py, "-c", "import celery, kombu; print(celery.__version__, kombu.__version__)"], env, cwd=tmp_path)
    assert res.stdout.split() == ["5.3.6", "5.3.7"], res.stdout
    seed(redis_url)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "shopapp.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('shop', broker={redis_url!r}, backend={redis_url!r})\n"
        f"app.conf.broker_transport_options = {LAYOUT!r}\n")
    res = run([str(venv / "bin" / "taskdash"), "snapshot", "--json", "-A", "shopapp"], env, cwd=tmp_path / "proj")
    check_snapshot(res.stdout)
