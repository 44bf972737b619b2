"""``taskdash metrics``: a Prometheus endpoint fed by the same Collector as the dashboard.

Each scrape costs at most one refresh (``Collector.collect()``); scrapes arriving within ``--cache``
seconds of the last refresh get the same snapshot. Binds to 127.0.0.1 unless ``--host`` says
otherwise. Runs until Ctrl-C / SIGTERM (exit 0); exit 2 when the broker cannot be reached at start,
1 when the port cannot be bound.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from taskdash.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    attach_history,
    common_options,
    fail,
    handle_errors,
    settings_for,
)
from taskdash.events_option import enable_events_option


@click.command("metrics")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=9808, show_default=True,
              help="TCP port (0: any free port, printed at start).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address; 0.0.0.0 exposes the endpoint to the network.")
@click.option("--cache", "cache_s", type=float, default=None,
              help="Seconds a snapshot is reused between scrapes (default: the refresh interval).")
@common_options
@enable_events_option
@click.pass_context
@handle_errors
def metrics_cmd(ctx: click.Context, port: int, host: str, cache_s: float | None, enable_events: bool = False,
                enable_events_interval: float = 60.0, **opts: Any) -> None:
    """Serve Prometheus metrics (queues per priority, oldest age, unacked, orphans, poison, workers, tasks)."""
    from collectors.collector import Collector
    from collectors.serving.metrics import MetricsServer

    settings = settings_for(ctx, opts)
    collector = Collector(settings)
    attach_history(collector)
    problem = collector.ping_broker()
    if problem:
        collector.close()
        fail(f"cannot reach the broker {settings.broker_masked}: {problem}", EXIT_UNREACHABLE)
    try:
        from collectors.core.config import redis_client
        from collectors.reads.health import redis_health

        health_client = redis_client(settings.broker_url, settings)  # one INFO per 15 s: memory/eviction alerts
        server = MetricsServer(collector.collect, host=host, port=port,
                               cache_s=cache_s if cache_s is not None else settings.interval,
                               health=lambda: redis_health(health_client))
    except OSError as exc:
        collector.close()
        fail(f"cannot listen on {host}:{port}: {exc}", EXIT_REFUSED)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    enabler = None
    if enable_events:  # after the collector's event subscriber is up (first collect)
        from taskdash.events_option import start_enabler

        collector.collect()
        enabler = start_enabler(settings, enable_events_interval, collector)
    click.echo(f"taskdash metrics on {server.url} (broker {settings.broker_masked})", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if enabler is not None:
            enabler.stop()
        server.shutdown()
        collector.close()
    sys.exit(EXIT_OK)


COMMANDS = [metrics_cmd]
