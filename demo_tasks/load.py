"""Load generator for the taskdash demo: a realistic, endless mix of Celery traffic.

Run by ``taskdash demo`` as a child process (``python -m demo_tasks.load --broker URL``). It sends,
on a fixed schedule with some jitter:

* quick ``add`` tasks and periodic bursts of them (default queue ``celery``),
* ``slow`` acks_late tasks (queue ``slow``: the worker the demo kills holds several of them),
* failing (``fail``) and retrying (``flaky``) tasks, so failures with tracebacks and RETRY states show,
* ETA / countdown tasks (held by a worker in the unacked ledger as "scheduled"),
* ``prioritized`` tasks with priorities 0-9 (queue ``priority``),
* one ``poison`` task (queue ``risky``): it kills its pool process on every delivery and loops,
* a steady flow of ``send_email`` into ``emails``, a queue no worker consumes (a growing backlog).

It stops on SIGTERM/SIGINT, after ``--duration`` seconds, when the broker goes away, and when its
parent process (the demo) is gone, so it can never outlive the demo.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("demo_tasks.load")

_FAIL_MESSAGES = (
    "card declined for order 4411",
    "timeout talking to payments-api after 30s",
    "invalid VAT number 'DE000'",
    "inventory row locked by another transaction",
)
_EMAIL_SUBJECTS = ("Your receipt", "Password reset", "Weekly digest", "Welcome aboard", "Invoice overdue")


@dataclass
class Every:
    """A recurring send: ``action`` runs every ``period`` seconds (with jitter) from ``start`` on."""

    period: float
    action: Callable[[], Any]
    start: float = 0.0
    jitter: float = 0.2
    until: float | None = None
    """Stop sending after this many seconds (None: never)."""
    next_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.next_at = self.start

    def due(self, t: float) -> bool:
        """Whether it should fire at run time ``t`` (and schedule the next firing if so)."""
        if self.until is not None and t > self.until:
            return False
        if t < self.next_at:
            return False
        self.next_at = t + self.period * random.uniform(1 - self.jitter, 1 + self.jitter)
        return True


class LoadGenerator:
    """Sends the demo's task mix to a broker through a client-only Celery app."""

    def __init__(self, broker_url: str, *, rate: float = 1.0, poison: bool = True, seed: int | None = None) -> None:
        from demo_tasks.celery_app import make_app

        self.app = make_app(broker_url, broker_url, transport_options={})
        self.rate = max(rate, 0.05)
        self.sent: dict[str, int] = {}
        self._rng = random.Random(seed)
        r = self.rate
        self.schedule: list[Every] = [
            Every(0.5 / r, self.email),
            Every(1.0 / r, self.quick),
            Every(2.0 / r, self.slow, start=0.5, until=None),
            Every(3.0 / r, self.failing, start=1.0),
            Every(5.0 / r, self.retrying, start=2.0),
            Every(4.0 / r, self.eta, start=1.5),
            Every(6.0 / r, self.priority_burst, start=3.0),
            Every(15.0 / r, self.burst, start=8.0),
        ]
        if poison:
            self.schedule.append(Every(1e9, self.poison, start=1.0, jitter=0.0))

    # ---- the individual sends ------------------------------------------------------------------
    def _send(self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **opts: Any) -> None:
        self.app.send_task(f"demo_tasks.tasks.{name}", args=tuple(args), kwargs=kwargs or {}, **opts)
        self.sent[name] = self.sent.get(name, 0) + 1

    def email(self) -> None:
        """One message for ``emails``, which nobody consumes."""
        user = self._rng.randint(1000, 9999)
        self._send("send_email", (f"user{user}@example.com",), {"subject": self._rng.choice(_EMAIL_SUBJECTS)})

    def quick(self) -> None:
        """A quick add on the default queue."""
        self._send("add", (self._rng.randint(0, 100), self._rng.randint(0, 100)))

    def slow(self) -> None:
        """A long acks_late task on ``slow``."""
        self._send("slow", (round(self._rng.uniform(6, 30), 1),), {"tag": "slow"})

    def failing(self) -> None:
        """A task that raises (FAILURE with a traceback)."""
        self._send("fail", (self._rng.choice(_FAIL_MESSAGES),))

    def retrying(self) -> None:
        """A task that fails once or twice with a retry, then succeeds."""
        self._send("flaky", (self._rng.randint(1, 2),))

    def eta(self) -> None:
        """A task with a countdown: the worker keeps it in the unacked ledger until it is due."""
        self._send("add", (1, 2), countdown=self._rng.uniform(20, 60))

    def priority_burst(self) -> None:
        """A handful of prioritized tasks with mixed priorities."""
        for n in range(self._rng.randint(5, 10)):
            self._send("prioritized", (n,), priority=self._rng.randint(0, 9))

    def burst(self) -> None:
        """A traffic spike on the default queue."""
        for _ in range(self._rng.randint(15, 30)):
            self.quick()

    def poison(self) -> None:
        """The poison message: it kills the pool process on every delivery and is redelivered forever."""
        self._send("poison", ("corrupt-payload-7f3a",))

    # ---- the loop ------------------------------------------------------------------------------
    def tick(self, t: float) -> None:
        """Send whatever is due at run time ``t``."""
        for item in self.schedule:
            if item.due(t):
                item.action()

    def run(self, duration: float | None = None, parent_pid: int | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> None:
        """Send until ``duration`` elapsed, ``should_stop()`` is true or ``parent_pid`` is gone."""
        started = time.monotonic()
        while not should_stop():
            t = time.monotonic() - started
            if duration is not None and t >= duration:
                break
            if parent_pid is not None and os.getppid() != parent_pid:
                log.info("parent %s is gone: stopping", parent_pid)
                break
            self.tick(t)
            time.sleep(0.1)

    def close(self) -> None:
        """Release the client app's connections."""
        self.app.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m demo_tasks.load``."""
    parser = argparse.ArgumentParser(prog="python -m demo_tasks.load", description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="Broker URL (redis://...).")
    parser.add_argument("--duration", type=float, default=None, help="Stop after this many seconds.")
    parser.add_argument("--rate", type=float, default=1.0, help="Speed factor for every send (default 1).")
    parser.add_argument("--no-poison", action="store_true", help="Do not send the poison task.")
    parser.add_argument("--seed", type=int, default=None, help="Random seed.")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="Stop when this process is no longer our parent (default: the parent at start).")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s load: %(message)s")

    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    parent = ns.parent_pid if ns.parent_pid is not None else os.getppid()
    gen = LoadGenerator(ns.broker, rate=ns.rate, poison=not ns.no_poison, seed=ns.seed)
    try:
        gen.run(ns.duration, parent_pid=parent, should_stop=lambda: stopping)
    except Exception as exc:  # noqa: BLE001 - broker gone while the demo shuts down: exit quietly
        log.info("stopping: %s: %s", type(exc).__name__, exc)
        return 0 if stopping else 1
    finally:
        log.info("sent %s", gen.sent)
        try:
            gen.close()
        except Exception:  # noqa: BLE001
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
