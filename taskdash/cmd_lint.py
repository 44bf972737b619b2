"""Diagnostics: ``taskdash lint`` (config behind duplicates and poison loops), ``taskdash health``
(the broker's Redis), ``taskdash forensics`` (crash timeline per worker) and ``taskdash contexts``."""

from __future__ import annotations

from typing import Any

import click

from taskdash.cli import (
    EXIT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    common_options,
    fail,
    handle_errors,
    settings_from,
)


@click.command("lint")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON document.")
@click.option("--timeout", type=float, default=None, help="Inspect window in seconds (default 1).")
@click.option("--long-task", "long_task", type=float, default=60.0, show_default=True,
              help="Seconds after which a running task counts as long (prefetch rule).")
@click.option("--max-clock-skew", "max_skew", type=float, default=2.0, show_default=True,
              help="Tolerated difference between a worker's clock and Redis' clock (seconds).")
@click.option("--observe", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds to watch the workers first (heartbeats, inspect, queue depths) to decide their "
                   "liveness, for the ghost-worker rule (a worker heartbeating but not consuming); 40 s "
                   "applies the dashboard's 30-s ghost threshold, shorter watches 3/4 of their length. "
                   "0: skip the rule.")
@click.pass_context
@handle_errors
def lint_cmd(ctx: click.Context, as_json: bool, timeout: float | None, long_task: float, max_skew: float,
             observe: float, **opts: Any) -> None:
    """Warn about settings that cause duplicate runs and redelivery loops (exit 3 on a warning).

    Reads the broker transport options, the -A app's settings, and `inspect stats/conf/registered/
    active/scheduled` plus heartbeat clocks from live workers (one window, read-only). With --observe,
    first watches the workers that long and warns about ghosts (heartbeating, answering, not consuming).
    """
    from collectors.analysis.lint import RULES, dumps, run_lint
    from collectors.core.config import redis_client

    settings = settings_from(ctx, **opts)
    try:
        redis_client(settings.broker_url, settings).ping()
    except Exception as exc:  # noqa: BLE001 - one clear line, masked
        from collectors.collector import describe_error

        fail(f"broker {settings.broker_masked} unreachable: {describe_error(exc, settings)}", EXIT_UNREACHABLE)
    report = run_lint(settings, timeout=timeout, long_task_s=long_task, max_clock_skew_s=max_skew,
                      observe=observe)
    if as_json:
        click.echo(dumps(report))
    else:
        workers = ", ".join(report.workers) or "none answered"
        click.echo(f"taskdash lint — broker {settings.broker_masked}, app {settings.app or '-'}, "
                   f"workers: {workers}")
        if not report.findings:
            click.echo("no problems found")
        for f in report.findings:
            mark = "WARN" if f.severity == "warning" else "info"
            title = RULES.get(f.rule, f.rule)
            click.echo(f"{mark}  {f.rule}  ({title})")
            click.echo(f"      {f.message}")
            click.echo(f"      fix: {f.fix}")
        for err in report.errors:
            click.echo(f"note: {err}", err=True)
        n = len(report.warnings)
        click.echo(f"{n} warning{'s' if n != 1 else ''}")
    if report.warnings:
        ctx.exit(EXIT_FOUND)


@click.command("health")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the health as one JSON object.")
@click.pass_context
@handle_errors
def health_cmd(ctx: click.Context, as_json: bool, **opts: Any) -> None:
    """Redis health of the broker: memory vs maxmemory, eviction policy, clients, persistence (exit 3 on a warning)."""
    import json

    from collectors.core.config import redis_client
    from collectors.reads.health import redis_health
    from tui.screens.health import health_text

    settings = settings_from(ctx, **opts)
    health = redis_health(redis_client(settings.broker_url, settings))
    if health.error:
        from collectors.core.config import mask_text

        fail(f"broker {settings.broker_masked} unreachable: {mask_text(health.error, settings.broker_url)}",
             EXIT_UNREACHABLE)
    if as_json:
        click.echo(json.dumps(health.to_json(), indent=2))
    else:
        click.echo(f"Redis health — {settings.broker_masked}")
        click.echo(health_text(health).plain.rstrip())
    if health.warnings:
        ctx.exit(EXIT_FOUND)


@click.command("forensics", epilog="Exit 3 when a pool process died while watching (KILLER lines name the task "
                                     "that was running), 0 when none did, 2 when the broker is unreachable.")
@common_options
@click.option("--observe", type=float, default=30.0, show_default=True, help="Seconds to watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the events as one JSON document.")
@click.pass_context
@handle_errors
def forensics_cmd(ctx: click.Context, observe: float, as_json: bool, **opts: Any) -> None:
    """Watch the workers for a while and print what happened to them: offline/online, heartbeat gaps,
    pool processes that died and the task that was running on each (exit 3 if a process died)."""
    import json
    import time

    from collectors.analysis.forensics import Forensics, format_timeline
    from collectors.collector import Collector

    settings = settings_from(ctx, **opts)
    # finer than the dashboard's 5 s: a poison task is on its process for a few seconds only
    settings = settings.with_(inspect_interval=min(settings.inspect_interval, 1.0))
    fx = Forensics()
    deadline = time.monotonic() + max(0.0, observe)
    with Collector(settings, forensics=fx) as collector:  # each collect() feeds fx with its workers view
        while True:
            snap = collector.collect()
            if not snap.broker.ok:
                fail(f"broker {settings.broker_masked} unreachable: {snap.broker.error}", EXIT_UNREACHABLE)
            if time.monotonic() >= deadline:
                break
            time.sleep(min(settings.interval, max(0.0, deadline - time.monotonic())))
    events = fx.events()
    deaths = [e for e in events if e.kind == "process-died"]
    if as_json:
        click.echo(json.dumps({"events": [e.to_json() for e in events],
                               "killers": [{"task_id": t, "task": n, "processes": k, "workers": w}
                                           for t, n, k, w in fx.killers()]}, indent=2))
    else:
        for task_id, name, n, victims in fx.killers():
            click.echo(f"KILLER  {name or '?'} [{task_id}] took down {n} pool process"
                       f"{'es' if n != 1 else ''} on {', '.join(victims)}")
        for line in format_timeline(events):
            click.echo(line)
        click.echo(f"{len(events)} events, {len(deaths)} pool process deaths in {observe:g}s")
    if deaths:
        ctx.exit(EXIT_FOUND)


@click.command("contexts")
@click.option("--json", "as_json", is_flag=True,
              help="Print the contexts as one JSON object: file, default, and each name with its masked "
                   "description.")
def contexts_cmd(as_json: bool) -> None:
    """List the contexts of ~/.config/taskdash/config.toml ($TASKDASH_CONFIG); * marks the default.

    Exit 0 (also when there are none), 64 when the file cannot be read or parsed (a configuration error).
    """
    import json

    from collectors.core.config import ConfigError
    from collectors.core.contexts import config_path, list_contexts

    try:
        rows = list_contexts()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if as_json:
        default = next((name for name, _d, is_default in rows if is_default), None)
        click.echo(json.dumps({"file": str(config_path()), "default": default,
                               "contexts": [{"name": name, "description": desc, "default": is_default}
                                            for name, desc, is_default in rows]}, indent=2))
        return
    if not rows:
        click.echo(f"no contexts ({config_path()} has none); see README 'Beyond the usual tools' (Contexts)")
    for name, desc, default in rows:
        click.echo(f"{'*' if default else ' '} {name:<16} {desc}")


COMMANDS = [lint_cmd, health_cmd, forensics_cmd, contexts_cmd]
