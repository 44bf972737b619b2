"""Demo tasks: quick, slow (acks_late), failing, retrying, ETA-friendly, priority and poison tasks.

``record`` and every task that takes a ``tag`` count their executions in Redis (``demo:runs:<tag>``)
so tests can prove a message ran exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import redis

from demo_tasks.celery_app import BROKER_URL, app

_counter: redis.Redis | None = None


def _count(tag: str | None) -> int:
    """Increment and return the execution counter for ``tag`` (no-op when tag is None)."""
    global _counter
    if tag is None:
        return 0
    if _counter is None:
        _counter = redis.Redis.from_url(BROKER_URL)
    return int(_counter.incr(f"demo:runs:{tag}"))


@app.task
def add(x: int, y: int, tag: str | None = None) -> int:
    """A quick task."""
    _count(tag)
    return x + y


@app.task
def record(tag: str) -> int:
    """Count one execution under ``tag``; returns the count so far."""
    return _count(tag)


@app.task(acks_late=True)
def slow(seconds: float = 5.0, tag: str | None = None) -> dict[str, Any]:
    """A long acks_late task: stays in ``unacked`` while it runs."""
    time.sleep(seconds)
    return {"slept": seconds, "runs": _count(tag)}


@app.task
def fail(message: str = "boom") -> None:
    """Always raises, storing a FAILURE with a traceback."""
    raise ValueError(message)


@app.task(bind=True, max_retries=3, default_retry_delay=1)
def flaky(self: Any, fail_times: int = 2, tag: str | None = None) -> str:
    """Fails ``fail_times`` times with a retry, then succeeds."""
    if self.request.retries < fail_times:
        raise self.retry(exc=RuntimeError(f"flaky attempt {self.request.retries}"))
    _count(tag)
    return "ok"


@app.task
def prioritized(n: int, tag: str | None = None) -> int:
    """Routed to the ``priority`` queue; send with ``priority=0..9``."""
    _count(tag)
    return n


@app.task(acks_late=True, reject_on_worker_lost=True)
def poison(payload: str = "bad input") -> None:
    """Kills the pool process that runs it on every delivery: with reject_on_worker_lost it loops forever."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def send_email(to: str, subject: str = "hello") -> str:
    """Routed to ``emails``, a queue the demo leaves without a consumer."""
    time.sleep(random.uniform(0.01, 0.05))
    return f"sent to {to}"


@app.task(acks_late=True)
def spin(seconds: float = 5.0, tag: str | None = None) -> int:
    """A CPU-bound acks_late task (a pure-Python loop holding the GIL): in a solo worker the main loop is
    blocked for ``seconds``, so the worker neither heartbeats nor answers inspect — alive but silent."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    _count(tag)
    return n


@app.task
def tsum(values: list[int]) -> int:
    """A chord body: the sum of its header's results (issue 16's canvas tests)."""
    return sum(values)


@app.task
def nap(seconds: float = 30.0) -> float:
    """An early-ack sleeper: a kill -9 of its worker loses the message (a chord header part that never returns)."""
    time.sleep(seconds)
    return seconds


@app.task
def charge(seconds: float = 0.05, fail: bool = False) -> str:
    """Sleeps ``seconds`` then raises when ``fail``: a known runtime and failure ratio (issue 15's analytics)."""
    time.sleep(seconds)
    if fail:
        raise ValueError("card declined")
    return "charged"


@app.task(ignore_result=True)
def quiet(seconds: float = 0.1) -> None:
    """Sleeps and stores no result: per-name analytics come from events, not from the result backend."""
    time.sleep(seconds)
