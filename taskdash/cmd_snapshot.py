"""``taskdash snapshot``: one refresh (optionally after observing for a while) as JSON or tables."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any

import click

from collectors.core.messages import printable
from collectors.core.models import Snapshot
from taskdash.cli import (
    EXIT_FOUND,
    EXIT_OK,
    EXIT_PARTIAL,
    attach_history,
    common_options,
    fail_redis,
    handle_errors,
    settings_from,
    strict_option,
)
from taskdash.events_option import enable_events_option


def _age(v: float | None) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v < 120:
        return f"{v:.0f}s"
    if v < 7200:
        return f"{v / 60:.0f}m"
    return f"{v / 3600:.1f}h"


safe_text = printable
"""Data from Redis made safe for a terminal (see :func:`collectors.core.messages.printable`)."""

POISON_OBSERVE_S = 10.0
"""``--fail-on poison|any`` without ``--observe``: watch this long first. One refresh cannot see a loop
(a delivery count needs successive reads); a loop that kills a pool process redelivers every second or
two, so 10 s sees the default threshold of 3 deliveries. Slower loops need a longer --observe."""

UNBOUNDED_WIDTH = 100_000
"""Table width when stdout is no terminal and COLUMNS is unset: tables take their natural width."""


def table_width() -> int:
    """The width readable tables are laid out for: ``COLUMNS`` when set, else the terminal's width when
    stdout is a terminal, else unbounded (a pipe or file gets every cell whole: nothing is cut to fit)."""
    cols = os.environ.get("COLUMNS", "").strip()
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((120, 24)).columns
    return UNBOUNDED_WIDTH


def render_tables(snap: Snapshot, width: int | None = None) -> str:
    """The snapshot as readable plain-text tables (rich, no colour when piped), laid out for ``width``
    columns (default :func:`table_width`); a cell is shortened only when the table cannot fit otherwise."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    class _Table(Table):
        """Cells are plain text: a queue named ``[/x]`` is not rich markup, and control bytes are escaped."""

        def add_row(self, *cells: object, **kw: Any) -> None:  # type: ignore[override]
            super().add_row(*(Text(safe_text(c)) for c in cells), **kw)

    buf = StringIO()
    console = Console(file=buf, width=width or table_width(), no_color=not sys.stdout.isatty(),
                      force_terminal=False)

    def _print(obj: object) -> None:
        if isinstance(obj, str):
            console.print(Text(safe_text(obj)), markup=False, highlight=False)
        else:
            console.print(obj)

    _print(
        f"broker {snap.broker.url} {'ok' if snap.broker.ok else 'DOWN: ' + str(snap.broker.error)}   "
        f"backend {snap.backend.url} {'ok' if snap.backend.ok else 'DOWN: ' + str(snap.backend.error)}"
    )
    t = _Table(title="Queues", title_justify="left")
    for col in ("queue", "ready", "by priority", "unacked", "consumers", "oldest", "flag"):
        t.add_column(col)
    for q in snap.queues:
        bands = " ".join(f"{b}:{n}" for b, n in q.by_priority if n)
        t.add_row(q.name, str(q.messages), bands or "-", str(q.unacked),
                  "?" if q.consumers is None else str(q.consumers), _age(q.oldest_age_s),
                  "NO CONSUMER" if q.no_consumer else "")
    _print(t)
    t = _Table(title=f"Unacked ({snap.unacked_total} total, {len(snap.unacked)} shown)", title_justify="left")
    for col in ("task", "id", "queue", "age", "redelivery in", "state", "holder", "redelivered"):
        t.add_column(col)
    for e in snap.unacked:
        ttr = "now (stale)" if e.stale else _age(e.time_to_redelivery_s)
        t.add_row(e.task or "?", (e.task_id or e.delivery_tag)[:36], e.queue or "?", _age(e.age_s), ttr, e.state,
                  e.holder or "-", "yes" if e.redelivered else "")
    _print(t)
    t = _Table(title="Workers", title_justify="left")
    for col in ("worker", "status", "pool", "conc", "active", "reserved", "scheduled", "processed", "queues", "seen"):
        t.add_column(col)
    for w in snap.workers:
        t.add_row(w.hostname, "online" if w.online else "OFFLINE", w.pool or "-", str(w.concurrency or "-"),
                  str(w.active), str(w.reserved), str(w.scheduled), str(w.processed if w.processed is not None else "-"),
                  ",".join(w.queues), _age(w.last_seen_s) + " ago" if w.last_seen_s is not None else "-")
    _print(t)
    states = ", ".join(f"{k}={v}" for k, v in snap.tasks.states) or "none"
    _print(f"Task states: {states}  (scanned {snap.tasks.scanned}, "
                  f"{'complete' if snap.tasks.complete else 'scan in progress'})")
    for f in snap.tasks.recent_failures[:10]:
        _print(f"  FAILURE {f.task or '?'} {f.task_id}: {f.exception}")
    ts = snap.task_stats  # issue 15: per task name, from task events
    if ts is not None and ts.tasks:
        t = _Table(title=f"Tasks by name (task events, last {ts.window_s:.0f}s)", title_justify="left")
        for col in ("task", "/min", "succeeded", "failed", "fail%", "p50", "p95", "p99", "wait p95", "top exception"):
            t.add_column(col)

        def _s(v: float | None) -> str:
            return "-" if v is None else f"{v:.3g}s"

        for x in ts.tasks[:30]:
            top = x.top_exceptions[0] if x.top_exceptions else None
            t.add_row(x.name, f"{x.per_min:.1f}", str(x.count("succeeded")), str(x.count("failed")),
                      "-" if x.failure_rate is None else f"{x.failure_rate:.0%}", _s(x.runtime_p50),
                      _s(x.runtime_p95), _s(x.runtime_p99), _s(x.wait_p95),
                      f"{top.exception} ({top.count})" if top else "")
        _print(t)
    elif ts is not None and ts.note and ts.state == "off":
        _print(f"Task events off: {ts.note}")
    if snap.poison:
        t = _Table(title="Poison suspects", title_justify="left")
        for col in ("task", "id", "queue", "deliveries", "workers", "reason"):
            t.add_column(col)
        for p in snap.poison:
            t.add_row(p.task or "?", p.task_id, p.queue or "?", str(p.deliveries), ",".join(p.workers), p.reason)
        _print(t)
    for st in snap.sources:
        if st.state != "ok":
            _print(f"source [{st.source}]: {st.state}: {st.reason or '-'}")
    for err in snap.errors:
        _print(f"error [{err.source}]: {err.message}")
    return buf.getvalue()


def findings(snap: Snapshot, fail_on: str | None) -> list[str]:
    """What ``--fail-on`` found (empty list: nothing to alert on)."""
    found: list[str] = []
    if fail_on in ("poison", "any") and snap.poison:
        found.append(f"{len(snap.poison)} poison suspect(s)")
    if fail_on in ("orphans", "any"):
        n = sum(1 for e in snap.unacked if e.state == "orphaned")
        if n:
            found.append(f"{n} orphaned unacked message(s)")
    if fail_on == "any":
        stuck = [q.name for q in snap.queues if q.no_consumer]
        if stuck:
            found.append(f"backlog without consumer: {', '.join(stuck)}")
        if not snap.broker.ok:
            found.append("broker unreachable")
    return found


@click.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as one JSON object (schema in the README, \"taskdash snapshot\").")
@click.option("--observe", type=click.FloatRange(min=0), default=None,
              help="Keep polling this many seconds before printing (poison detection needs history). "
                   f"Default 0, or {POISON_OBSERVE_S:g} with --fail-on poison/any: one refresh cannot see a "
                   "poison loop.")
@click.option("--poison-threshold", type=int, default=None, help="Deliveries that make a task a poison suspect (3).")
@click.option("--fail-on", type=click.Choice(["poison", "orphans", "any"]), default=None,
              help="Exit 3 when poison suspects / orphaned messages / any problem is found (poison and any "
                   "observe first, see --observe).")
@click.option("--window", type=int, default=None, help="Unacked entries to decode (oldest first, default 500).")
@strict_option
@enable_events_option
@click.pass_context
@handle_errors
def snapshot(ctx: click.Context, as_json: bool, observe: float | None, poison_threshold: int | None,
             fail_on: str | None, window: int | None, strict: bool, enable_events: bool = False,
             enable_events_interval: float = 60.0, **opts: Any) -> None:
    """Print one snapshot of queues, unacked messages, workers, task states and poison suspects.

    Readable tables fit the terminal (COLUMNS, else its width; piped: whole cells); --json has every
    field (schema: README section "taskdash snapshot").
    """
    observe = observe_for(fail_on, observe)
    settings = settings_from(ctx, poison_threshold=poison_threshold, unacked_window=window, **opts)
    from collectors.collector import Collector

    collector = Collector(settings, background=observe > 0)
    attach_history(collector)
    enabler = None
    try:
        reason = collector.ping_broker()
        if reason:
            fail_redis(reason, settings)
        # task_stats: with --observe S the window covers what was observed
        collector.task_stats.set_window(max(collector.task_stats.window_s, observe + settings.interval))
        snap = collector.collect()  # first: the event subscriber is up before workers turn events on
        if enable_events:
            from taskdash.events_option import start_enabler

            enabler = start_enabler(settings, enable_events_interval, collector)
        deadline = time.monotonic() + max(observe, 0.0)
        while time.monotonic() < deadline:
            time.sleep(min(settings.interval, max(deadline - time.monotonic(), 0)))
            snap = collector.collect()
        # Finish the result scan if it is nearly done (bounded: a few extra steps only).
        extra = 0
        while not snap.tasks.complete and snap.broker.ok and extra < 20 and observe > 0:
            snap = collector.collect()
            extra += 1
    finally:
        if enabler is not None:
            enabler.stop()
        collector.close()
    if as_json:
        click.echo(json.dumps(snap.to_json(), default=str))
    else:
        click.echo(render_tables(snap), nl=False)
    sys.exit(exit_code(snap, fail_on, strict, settings))


def observe_for(fail_on: str | None, observe: float | None) -> float:
    """How long to observe: ``--observe`` as given; unset, ``POISON_OBSERVE_S`` when the check asked
    for needs poison detection, else 0. An explicit 0 with such a check warns on stderr."""
    wants_poison = fail_on in ("poison", "any")
    if observe is None:
        return POISON_OBSERVE_S if wants_poison else 0.0
    if wants_poison and observe < 2.0:
        click.echo(f"taskdash: warning: --fail-on {fail_on} with --observe {observe:g}: a poison loop needs "
                   f"successive reads to be seen (one refresh counts at most 2 deliveries); use --observe "
                   f"{POISON_OBSERVE_S:g} or more, or leave --observe out", err=True)
    return float(observe)


def exit_code(snap: Snapshot, fail_on: str | None, strict: bool, settings: Any) -> int:
    """The exit code of a printed snapshot (one table, see ``taskdash --help``), with its stderr line.

    A broker that answered PING but could not be read is never 0: its code says why (2 unreachable,
    4 authentication, 5 permission). Then ``--fail-on`` findings (3), then ``--strict`` partial reads (6).
    """
    if not snap.broker.ok:
        fail_redis(snap.broker.error or "no answer", settings)
    found = findings(snap, fail_on)
    if found:
        click.echo("taskdash: found " + "; ".join(found), err=True)
        return EXIT_FOUND
    if strict and snap.errors:
        sources = sorted({e.source for e in snap.errors})
        click.echo(f"taskdash: partial read (--strict): {', '.join(sources)} could not be read completely", err=True)
        return EXIT_PARTIAL
    return EXIT_OK


COMMANDS = [snapshot]
