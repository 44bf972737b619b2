"""The container image and the Kubernetes example, checked where no container engine can build them.

The Dockerfile's build cannot run here (base images come from a container registry this machine does not
reach), so its logic is checked as text: multi-stage, non-root, every package of the wheel copied and let
through .dockerignore, the same base for both stages; and its default command (``taskdash metrics``)
really serves. The Kubernetes manifest's command, variables and probe paths are run against a real
redis-server the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from collectors.core.config import APP_OPTIONS
from taskdash.procs import free_port

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MANIFEST = (ROOT / "deploy" / "kubernetes" / "taskdash-metrics.yaml").read_text()
KNOWN_ENV = {o.env for o in APP_OPTIONS} | {"TASKDASH_BROKER", "TASKDASH_BACKEND", "TASKDASH_APP", "TASKDASH_INTERVAL",
                                            "TASKDASH_AUDIT_LOG", "TASKDASH_READ_ONLY", "TASKDASH_CONTEXT",
                                            "TASKDASH_CONFIG"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(DOCKERFILE):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_dockerfile_is_multi_stage_non_root_and_copies_the_whole_wheel() -> None:
    build, runtime = stages()
    assert build[0] == ("FROM", "${BASE} AS build") and runtime[0] == ("FROM", "${BASE}")
    assert ("ARG", "BASE=python:3.12-slim") in instructions(DOCKERFILE)
    # the runtime stage takes the venv only: no source, no pip, no compiler
    copies = [args for ins, args in runtime if ins == "COPY"]
    assert copies == ["--from=build /opt/taskdash /opt/taskdash"]
    user = [args for ins, args in runtime if ins == "USER"]
    assert user == ["10001:10001"] and "useradd --system --uid 10001" in dict(runtime)["RUN"]
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["taskdash"]
    # every package the wheel ships is copied into the build stage and let through .dockerignore
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {args.split()[0].rstrip("/") for ins, args in build if ins == "COPY"}
    assert set(packages) <= copied and {"pyproject.toml"} <= {a.split()[0] for i, a in build if i == "COPY"}
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert set(packages) | {"pyproject.toml", "README.md"} <= allowed
    # the image's venv is checked to run before the stage ends
    assert "/opt/taskdash/bin/taskdash --version" in dict(build)["RUN"]


def wait_http(url: str, timeout: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
                return resp.status, resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def manifest_env() -> dict[str, str]:
    """The ConfigMap's data, commented entries included (the ones a user would uncomment)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"^\s+#?\s*(TASKDASH_[A-Z_]+):\s*(.+?)\s*$", MANIFEST, re.M):
        raw = m.group(2)
        out[m.group(1)] = json.loads(raw) if raw.startswith('"') else raw.strip("'")
    return out


@pytest.mark.parametrize("source", ["dockerfile", "kubernetes"])
def test_the_image_command_and_the_manifest_serve_metrics(source: str, redis_url: str, r: redis.Redis,
                                                          tmp_path: Path) -> None:
    if source == "dockerfile":
        (_, runtime) = stages()
        args = json.loads(dict(runtime)["CMD"])
        env = {"TASKDASH_BROKER": redis_url}
        probes = ["/", "/metrics"]
    else:
        m = re.search(r"^\s+args: (\[.*\])\s*$", MANIFEST, re.M)
        assert m, "no args: line in the manifest"
        args = json.loads(m.group(1))
        env = {k: v for k, v in manifest_env().items() if not k.startswith("TASKDASH_SSL_")}
        assert set(manifest_env()) <= KNOWN_ENV, set(manifest_env()) - KNOWN_ENV
        env["TASKDASH_BROKER"] = redis_url
        probes = re.findall(r"httpGet: \{path: (\S+), port: metrics\}", MANIFEST)
        assert probes == ["/", "/metrics"]
    assert args[0] == "metrics" and args[args.index("--host") + 1] == "0.0.0.0"
    # as in the container, but on loopback and a free port
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    r.rpush("celery", b"{}")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TASKDASH_", "CELERY_"))}
    full.update(env, TASKDASH_CONFIG=str(tmp_path / "none.toml"), TASKDASH_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    proc = subprocess.Popen([sys.executable, "-m", "taskdash", *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for path in probes:
            status, body = wait_http(f"http://127.0.0.1:{port}{path}")
            assert status == 200
            if path == "/metrics":
                assert 'taskdash_up{source="broker"} 1' in body, body[:500]
        proc.terminate()  # the container's stop: SIGTERM to PID 1 is a clean exit
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
