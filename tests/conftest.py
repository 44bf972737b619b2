"""Shared fixtures: a private redis-server per test session (never the one on 6379) and real workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from taskdash.procs import CeleryWorker, RedisServer


def pytest_configure(config: pytest.Config) -> None:
    """taskdash's state (history, audit log, exports) goes to a directory of this test process, not the
    user's: test processes (and the commands they run) share no history file and leave nothing behind."""
    import tempfile

    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="taskdash-state-")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest-xdist's workers get COLUMNS=80 (and LINES): taskdash reads COLUMNS as the user's terminal
        # width, so a test under -n would see an 80-column terminal that a plain run does not
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server on a free port for the whole session."""
    server = RedisServer().start()
    yield server
    server.cleanup()


_next_db = iter(range(0, 16))


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A flushed Redis on the session server (FLUSHALL before each test, so tests never see each other)."""
    redis_server.client().flushall()
    # kombu caches "already declared" queues/exchanges per process (producer pools): after FLUSHALL
    # the bindings are gone, and a publish to an unbound exchange is silently dropped by kombu 5.7.
    import kombu.pools

    kombu.pools.reset()
    yield redis_server.url


@pytest.fixture()
def r(redis_server: RedisServer, redis_url: str) -> redis.Redis:
    """A raw redis client on db 0 of the session server, for ground truth."""
    return redis_server.client()


@pytest.fixture()
def start_worker(redis_url: str, tmp_path: Any) -> Iterator[Callable[..., CeleryWorker]]:
    """Factory: start a real ``celery -A demo_tasks worker``; every worker is stopped at teardown."""
    workers: list[CeleryWorker] = []

    def _start(queues: tuple[str, ...] = ("celery",), *, broker_url: str | None = None, wait: bool = True,
               **kw: Any) -> CeleryWorker:
        # Each worker gets its own TMPDIR under tmp_path so billiard's pymp-* dirs of killed workers
        # are not left in /tmp.
        wtmp = tmp_path / f"worker{len(workers)}-tmp"
        wtmp.mkdir(exist_ok=True)
        env = {"TMPDIR": str(wtmp), **(kw.pop("env", None) or {})}
        w = CeleryWorker(broker_url or redis_url, queues=queues, logfile=tmp_path / f"worker{len(workers)}.log",
                         env=env, **kw)
        workers.append(w)
        return w.start(wait=wait)

    yield _start
    for w in workers:
        w.stop(timeout=5)


@pytest.fixture()
def demo_app(redis_url: str) -> Any:
    """A client Celery app with the demo configuration on the test Redis (send tasks by name)."""
    from demo_tasks.celery_app import make_app

    app = make_app(redis_url, redis_url, transport_options={})
    yield app
    app.close()


os.environ.setdefault("TASKDASH_AUDIT_LOG", os.path.join(os.environ.get("TMPDIR", "/tmp"), "taskdash-test-audit.jsonl"))


def svg_screen_lines(svg: str) -> list[str]:
    """The text of a Textual SVG screenshot, one string per terminal line (cell x positions rounded to
    columns), for a readable diff when a snapshot does not match."""
    import html
    import re

    cells: dict[int, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text [^>]*x="([\d.]+)"[^>]*clip-path="url\(#[\w-]*line-(\d+)\)">([^<]*)</text>', svg):
        cells.setdefault(int(m.group(2)), []).append((float(m.group(1)), html.unescape(m.group(3))))
    lines = []
    for n in range(max(cells, default=-1) + 1):
        line = ""
        for x, text in sorted(cells.get(n, [])):
            col = round(x / 12.2)
            line = line.ljust(col) + text
        lines.append(line.replace("\xa0", " ").rstrip())
    return lines


@pytest.fixture()
def snap_compare(snap_compare: Callable[..., bool], request: pytest.FixtureRequest) -> Callable[..., bool]:
    """pytest-textual-snapshot's ``snap_compare`` that, when the screen does not match, fails with the lines
    that differ (expected vs actual, as text), so a failure in CI — where the HTML report is gone — says
    what changed."""
    import difflib
    import pickle

    from pytest_textual_snapshot import node_to_report_path

    def compare(*args: Any, **kwargs: Any) -> bool:
        if snap_compare(*args, **kwargs):
            return True
        try:
            data = pickle.loads(node_to_report_path(request.node).read_bytes())
            diff = "\n".join(difflib.unified_diff(svg_screen_lines(str(data[1])), svg_screen_lines(str(data[2])),
                                                  "expected", "actual", n=1, lineterm=""))
            diff = diff or "(the same text: only colours or styles differ)"
        except Exception as exc:  # noqa: BLE001 - diagnostics only: the test fails either way
            diff = f"(no text diff: {exc!r})"
        raise AssertionError(f"the screen does not match its snapshot; screen text that differs:\n{diff}")

    return compare
