"""A real ``celery beat`` subprocess for the beat tests (own process group; kill -9 like an OOM kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CeleryBeat:
    def __init__(self, broker_url: str, workdir: Path, *, redbeat: bool, interval: float,
                 app: str = "demo_tasks.beat_app") -> None:
        self.workdir = workdir
        self.logfile = workdir / f"beat-{time.monotonic_ns()}.log"
        self.args = [sys.executable, "-m", "celery", "-A", app, "beat", "--loglevel", "INFO",
                     "--max-interval", "1"]
        if redbeat:
            self.args += ["-S", "redbeat.RedBeatScheduler"]
        else:
            self.args += ["-s", str(workdir / "celerybeat-schedule")]
        self.env = {**os.environ, "CELERY_BROKER_URL": broker_url, "CELERY_RESULT_BACKEND": broker_url,
                    "DEMO_BEAT_INTERVAL": str(interval), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryBeat:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
            except ProcessLookupError:
                pass


def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
