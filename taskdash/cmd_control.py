"""``taskdash worker ...`` (remote control of workers) and ``taskdash search QUERY``.

Worker writes ask for confirmation naming the command and the workers (``--yes`` skips it), print one
line per worker reply and exit 0 when at least one worker accepted, 1 when refused / no reply /
cancelled / read-only, 2 when the broker cannot be reached (one masked line on stderr).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click

from collectors.core.config import Settings, mask_text
from collectors.writes.actions import ActionError, ActionResult, BrokerUnreachableError
from taskdash.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    common_options,
    fail,
    handle_errors,
    settings_for,
    yes_option,
)

dest_option = click.option("--destination", "-d", "destination", multiple=True, metavar="HOST",
                           help="Worker hostname (repeatable; default: every worker).")


def _settings(ctx: click.Context, opts: dict[str, Any]) -> Settings:
    return settings_for(ctx, opts)


def _die(exc: Exception, settings: Settings) -> NoReturn:
    msg = mask_text(str(exc), settings.broker_url, settings.backend_url)
    fail(msg, EXIT_UNREACHABLE if isinstance(exc, BrokerUnreachableError) else EXIT_REFUSED)
    raise AssertionError("unreachable")  # pragma: no cover - fail() exits


def _write(ctx: click.Context, opts: dict[str, Any], what: str, destination: tuple[str, ...], yes: bool,
           do: Callable[[Any], ActionResult]) -> NoReturn:
    """Confirm, run one WorkerControl write, print the replies, exit with the convention's code."""
    from collectors.writes.control import WorkerControl

    settings = _settings(ctx, opts)
    if settings.read_only:
        fail(f"read-only mode: {what} refused, nothing was sent to the workers", EXIT_REFUSED)
    target = ", ".join(destination) if destination else "EVERY worker"
    if not yes and not click.confirm(f"{what} on {target} ({settings.broker_masked})?", default=False, err=True):
        fail("cancelled, nothing was sent", EXIT_REFUSED)
    ctl = WorkerControl(settings)
    try:
        res = do(ctl)
    except ActionError as exc:
        _die(exc, settings)
    click.echo(res.message)
    if res.action == "shutdown":
        sys.exit(EXIT_OK)
    sys.exit(EXIT_OK if res.count > 0 else EXIT_REFUSED)


@click.group("worker")
@common_options
def worker_group(**opts: Any) -> None:
    """Control workers (like Flower's worker page): pool, autoscale, consumers, limits, shutdown, show."""


@worker_group.command("shutdown")
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def shutdown_cmd(ctx: click.Context, destination: tuple[str, ...], yes: bool, **opts: Any) -> None:
    """Warm shutdown: finish running tasks, then exit."""
    _write(ctx, opts, "Warm shutdown", destination, yes, lambda c: c.shutdown(destination))


@worker_group.command("pool-restart")
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def pool_restart_cmd(ctx: click.Context, destination: tuple[str, ...], yes: bool, **opts: Any) -> None:
    """Restart the pool processes (the worker needs worker_pool_restarts=True)."""
    _write(ctx, opts, "Restart the pool", destination, yes, lambda c: c.pool_restart(destination))


@worker_group.command("pool-grow")
@click.argument("n", type=click.IntRange(min=1), default=1)
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def pool_grow_cmd(ctx: click.Context, n: int, destination: tuple[str, ...], yes: bool, **opts: Any) -> None:
    """Add N pool processes."""
    _write(ctx, opts, f"Grow the pool by {n}", destination, yes, lambda c: c.pool_grow(n, destination))


@worker_group.command("pool-shrink")
@click.argument("n", type=click.IntRange(min=1), default=1)
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def pool_shrink_cmd(ctx: click.Context, n: int, destination: tuple[str, ...], yes: bool, **opts: Any) -> None:
    """Remove N pool processes."""
    _write(ctx, opts, f"Shrink the pool by {n}", destination, yes, lambda c: c.pool_shrink(n, destination))


@worker_group.command("autoscale")
@click.argument("max_", metavar="MAX", type=click.IntRange(min=0))
@click.argument("min_", metavar="MIN", type=click.IntRange(min=0))
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def autoscale_cmd(ctx: click.Context, max_: int, min_: int, destination: tuple[str, ...], yes: bool,
                  **opts: Any) -> None:
    """Set the autoscaler range (workers started with --autoscale)."""
    if min_ > max_:
        raise click.UsageError(f"MIN ({min_}) is larger than MAX ({max_})")
    _write(ctx, opts, f"Autoscale max={max_} min={min_}", destination, yes,
           lambda c: c.autoscale(max_, min_, destination))


@worker_group.command("add-consumer")
@click.argument("queue")
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def add_consumer_cmd(ctx: click.Context, queue: str, destination: tuple[str, ...], yes: bool, **opts: Any) -> None:
    """Start consuming from QUEUE."""
    _write(ctx, opts, f"Add a consumer for {queue!r}", destination, yes, lambda c: c.add_consumer(queue, destination))


@worker_group.command("cancel-consumer")
@click.argument("queue")
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def cancel_consumer_cmd(ctx: click.Context, queue: str, destination: tuple[str, ...], yes: bool,
                        **opts: Any) -> None:
    """Stop consuming from QUEUE."""
    _write(ctx, opts, f"Cancel the consumer of {queue!r}", destination, yes,
           lambda c: c.cancel_consumer(queue, destination))


@worker_group.command("rate-limit")
@click.argument("task")
@click.argument("rate")
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def rate_limit_cmd(ctx: click.Context, task: str, rate: str, destination: tuple[str, ...], yes: bool,
                   **opts: Any) -> None:
    """Set TASK's rate limit: RATE like 10/m, 2/s, 100/h, a number per second; 0 or none removes it."""
    value: str | None = None if rate.lower() in ("0", "none", "") else rate
    _write(ctx, opts, f"Set the rate limit of {task} to {value or 'none'}", destination, yes,
           lambda c: c.rate_limit(task, value, destination))


def _limit(value: str) -> float | None:
    if value.lower() in ("none", "0", "-"):
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a number of seconds (or 'none')") from exc


@worker_group.command("time-limit")
@click.argument("task")
@click.argument("soft")
@click.argument("hard")
@dest_option
@yes_option
@common_options
@click.pass_context
@handle_errors
def time_limit_cmd(ctx: click.Context, task: str, soft: str, hard: str, destination: tuple[str, ...], yes: bool,
                   **opts: Any) -> None:
    """Set TASK's SOFT and HARD time limits in seconds ('none' removes one)."""
    s, h = _limit(soft), _limit(hard)
    if s is not None and h is not None and s > h:
        raise click.UsageError(f"SOFT ({s:g}) is larger than HARD ({h:g})")
    _write(ctx, opts, f"Set the time limits of {task} to soft={s} hard={h}", destination, yes,
           lambda c: c.time_limit(task, s, h, destination))


def format_details(d: dict[str, Any]) -> str:
    """The readable form of ``WorkerControl.worker_details`` (also used by ``worker show``)."""
    lines = [f"Worker {d.get('hostname')} ({'online' if d.get('online') else 'no reply'})"]
    lv = d.get("liveness") or {}
    if lv:
        since = lv.get("since")
        when = time.strftime(" since %H:%M:%S", time.localtime(since)) if isinstance(since, int | float) else ""
        lines.append(f"Liveness: {lv.get('liveness') or 'unknown'} — {lv.get('evidence') or 'no evidence'}{when}")
        if lv.get("note"):
            lines.append(f"  ({lv['note']})")
    stats = d.get("stats") or {}
    pool = stats.get("pool") or {}
    if stats:
        lines += ["", "Stats",
                  f"  pid {stats.get('pid')}  uptime {stats.get('uptime')}s  prefetch {stats.get('prefetch_count')}",
                  f"  pool {pool.get('implementation')}  max-concurrency {pool.get('max-concurrency')}  "
                  f"processes {pool.get('processes')}",
                  f"  processed {stats.get('total')}"]
        ru = stats.get("rusage") or {}
        if ru:
            lines.append("  rusage " + "  ".join(f"{k}={ru[k]}" for k in ("utime", "stime", "maxrss") if k in ru))
        broker = stats.get("broker") or {}
        if broker:
            lines.append(f"  broker {broker.get('transport')}://{broker.get('hostname')}:{broker.get('port')}"
                         f"/{broker.get('virtual_host')}  transport_options {broker.get('transport_options')}")
    lines += ["", "Active queues"]
    lines += [f"  {q.get('name')}  exchange={(q.get('exchange') or {}).get('name')} "
              f"routing_key={q.get('routing_key')}" for q in d.get("active_queues") or []] or ["  (none)"]
    lines += ["", "Registered tasks"] + [f"  {t}" for t in d.get("registered") or []]
    lines += ["", "Configuration (non-default)"]
    lines += [f"  {k} = {v!r}" for k, v in sorted((d.get("conf") or {}).items())] or ["  (none)"]
    revoked = d.get("revoked") or []
    lines += ["", f"Revoked ids ({len(revoked)})"] + [f"  {t}" for t in revoked[:200]]
    for method, err in sorted((d.get("errors") or {}).items()):
        lines.append(f"! {method}: {err}")
    return "\n".join(lines)


def observe_liveness(settings: Any, host: str, seconds: float) -> dict[str, Any]:
    """Watch the workers ``seconds`` (heartbeats, inspect, connection probes) and decide ``host``'s liveness."""
    from collectors.analysis.liveness import annotate_workers, liveness_view
    from collectors.reads.workers import WorkerMonitor

    mon = WorkerMonitor(settings)
    try:
        mon.start()
        time.sleep(seconds)
        now = time.time()
        wv = mon.view(now)
        rows = {w.hostname: w for w in annotate_workers(wv.workers, liveness_view(wv, now, settings).decided)}
    finally:
        mon.stop()
    w = rows.get(host)
    note = "; ".join(n for n in (wv.inspect_denied, wv.conn_note) if n) or None
    if w is None:
        return {"liveness": None, "evidence": f"not heard in {seconds:g}s of watching", "since": None, "note": note}
    return {"liveness": w.liveness, "evidence": w.liveness_evidence, "since": w.liveness_since,
            "boot_at": w.boot_at, "note": note}


@worker_group.command("show")
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Print the details as one JSON object.")
@click.option("--observe", type=float, default=5.0, show_default=True,
              help="Seconds to watch heartbeats and connections for the liveness evidence (0: skip).")
@common_options
@click.pass_context
@handle_errors
def show_cmd(ctx: click.Context, host: str, as_json: bool, observe: float, **opts: Any) -> None:
    """Show one worker: liveness and its evidence, stats, registered tasks, active queues, configuration,
    revoked ids."""
    from collectors.writes.control import WorkerControl

    settings = _settings(ctx, opts)
    d = WorkerControl(settings).worker_details(host)
    if observe > 0:
        d["liveness"] = observe_liveness(settings, host, observe)
    errors = d.get("errors") or {}
    if not d["online"] and any("cannot reach" in str(e) for e in errors.values()):
        fail(next(iter(errors.values())), EXIT_UNREACHABLE)
    click.echo(json.dumps(d, indent=2, default=str) if as_json else format_details(d))
    if not d["online"]:
        fail(f"worker {host} did not reply", EXIT_REFUSED)


def hit_lines(hit: Any) -> tuple[str, list[str]]:
    """One terminal-safe line for a search hit (its exception reduced to ``Type: message``) and the
    traceback lines it had (empty when none)."""
    import dataclasses

    from collectors.core.messages import printable

    tb: list[str] = []
    exc = hit.exception
    if exc and "\n" in exc:
        lines = [ln for ln in exc.splitlines() if ln.strip()]
        tb_at = next((i for i, ln in enumerate(lines) if ln.startswith("Traceback")), None)
        if tb_at is not None:
            tb = [printable(ln) for ln in lines[tb_at:]]
            head = lines[:tb_at]
            exc = head[0] if head else (lines[-1] if len(lines) > tb_at + 1 else None)
        else:
            exc = lines[0] if lines else None
        hit = dataclasses.replace(hit, exception=exc)
    line = printable(hit.line()).replace("\r", "\\r").replace("\n", "\\n")
    return line, tb


@click.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Matches at most.")
@click.option("--scan-budget", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Result-backend keys looked at at most.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every match (tracebacks included).")
@click.option("--traceback", "full_traceback", is_flag=True,
              help="Print each failure's stored traceback under its line (default: one line per match, "
                   "the exception only).")
@common_options
@click.pass_context
@handle_errors
def search_cmd(ctx: click.Context, query: tuple[str, ...], limit: int, scan_budget: int, as_json: bool,
               full_traceback: bool, **opts: Any) -> None:
    """Search tasks: result backend (result_extended), unacked and queued messages.

    QUERY: free words match name, id, args/kwargs, state, worker, exception; field:value filters
    (name: id: state: worker: queue: exc: args:), "quoted phrases", -negation. One line per match (the
    exception, not its traceback: --traceback adds it). Exit 0 when found, 1 when not, 2 unreachable,
    64 for a bad query.
    """
    from collectors.reads.search import SEARCH_HELP, SearchError, parse_query, search_all

    settings = _settings(ctx, opts)
    text = " ".join(query)
    try:
        parse_query(text)
    except SearchError as exc:
        raise click.UsageError(f"{exc}\n\n{SEARCH_HELP}") from exc
    try:
        out = search_all(settings, text, limit=limit, scan_budget=scan_budget)
    except (ConnectionError, OSError) as exc:
        fail(mask_text(f"cannot reach {settings.broker_masked}: {exc}", settings.broker_url), EXIT_UNREACHABLE)
    except Exception as exc:  # noqa: BLE001 - redis errors
        import redis

        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            fail(mask_text(f"cannot reach Redis ({settings.broker_masked}): {exc}", settings.broker_url,
                           settings.backend_url),
                 EXIT_UNREACHABLE)
        raise
    if as_json:
        click.echo(json.dumps(out.to_json(), default=str))
    else:
        with_tb = 0
        for hit in out.hits:
            line, tb = hit_lines(hit)
            click.echo(line)
            if tb:
                with_tb += 1
                if full_traceback:
                    click.echo("\n".join(f"    {ln}" for ln in tb))
        if with_tb and not full_traceback:
            click.echo(f"{with_tb} match(es) have a stored traceback: --traceback prints them", err=True)
        click.echo(f"{len(out.hits)} match(es); {out.scanned} result key(s) scanned"
                   f"{' (budget reached, more may exist)' if out.truncated else ''}", err=True)
    sys.exit(EXIT_OK if out.hits else EXIT_REFUSED)


COMMANDS = [worker_group, search_cmd]
