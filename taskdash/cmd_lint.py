"""``taskdash lint``: check the Celery/kombu configuration behind duplicates and poison loops."""

from __future__ import annotations

from typing import Any

import click

from taskdash.cli import EXIT_FOUND, EXIT_UNREACHABLE, common_options, fail, handle_errors, settings_from


@click.command("lint")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON document.")
@click.option("--timeout", type=float, default=None, help="Inspect window in seconds (default 1).")
@click.option("--long-task", "long_task", type=float, default=60.0, show_default=True,
              help="Seconds after which a running task counts as long (prefetch rule).")
@click.option("--max-clock-skew", "max_skew", type=float, default=2.0, show_default=True,
              help="Tolerated difference between a worker's clock and Redis' clock (seconds).")
@click.pass_context
@handle_errors
def lint_cmd(ctx: click.Context, as_json: bool, timeout: float | None, long_task: float, max_skew: float,
             **opts: Any) -> None:
    """Warn about settings that cause duplicate runs and redelivery loops (exit 3 on a warning).

    Reads the broker transport options, the -A app's settings, and `inspect stats/conf/registered/
    active/scheduled` plus heartbeat clocks from live workers (one window, read-only).
    """
    from collectors.config import redis_client
    from collectors.lint import RULES, dumps, run_lint

    settings = settings_from(ctx, **opts)
    try:
        redis_client(settings.broker_url, settings).ping()
    except Exception as exc:  # noqa: BLE001 - one clear line, masked
        from collectors.collector import describe_error

        fail(f"broker {settings.broker_masked} unreachable: {describe_error(exc, settings)}", EXIT_UNREACHABLE)
    report = run_lint(settings, timeout=timeout, long_task_s=long_task, max_clock_skew_s=max_skew)
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

    from collectors.config import redis_client
    from collectors.health import redis_health
    from tui.screens.health import health_text

    settings = settings_from(ctx, **opts)
    health = redis_health(redis_client(settings.broker_url, settings))
    if health.error:
        from collectors.config import mask_text

        fail(f"broker {settings.broker_masked} unreachable: {mask_text(health.error, settings.broker_url)}",
             EXIT_UNREACHABLE)
    if as_json:
        click.echo(json.dumps(health.to_json(), indent=2))
    else:
        click.echo(f"Redis health — {settings.broker_masked}")
        click.echo(health_text(health).plain.rstrip())
    if health.warnings:
        ctx.exit(EXIT_FOUND)


COMMANDS = [lint_cmd, health_cmd]
