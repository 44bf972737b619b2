"""Incident-scale sub-commands (issue 18): ``bulk ACTION QUERY``, ``move``, ``pause`` / ``resume`` / ``paused``.

``bulk`` and ``move`` always print the dry run first (count, per source, the keys that would change, a
sample); ``--dry-run`` stops there. Above ``CONFIRM_THRESHOLD`` items the count must be typed to go on
(``--yes`` skips every question). The run goes in batches with a progress line on stderr; ctrl+c stops
it between batches (nothing half-moved) and says how far it got. Exit codes as the other writes: 0 done,
1 refused / nothing matched / cancelled / stopped, 2 broker unreachable.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import click

from collectors.core.messages import printable
from collectors.writes.base import ActionError, BrokerUnreachableError
from collectors.writes.bulk import ACTIONS, BulkActions, BulkPlan, BulkProgress
from collectors.writes.pause import PauseControl
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


def _die(exc: Exception, settings: Any) -> None:
    from collectors.core.config import mask_text

    msg = printable(mask_text(str(exc), settings.broker_url, settings.backend_url))
    fail(msg, EXIT_UNREACHABLE if isinstance(exc, BrokerUnreachableError) else EXIT_REFUSED)


def _read_only(settings: Any, what: str) -> None:
    if settings.read_only:
        fail(f"read-only mode: {what} refused, nothing was changed", EXIT_REFUSED)


def _show_and_confirm(plan: BulkPlan, *, dry_run: bool, yes: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(plan.to_json()))
    else:
        for line in plan.describe():
            click.echo(printable(line), err=not dry_run)
    if dry_run:
        sys.exit(EXIT_OK if plan.count else EXIT_REFUSED)
    if not plan.count:
        fail(f"bulk {plan.action}: nothing matched, nothing was changed", EXIT_REFUSED)
    if yes:
        return
    if plan.needs_typed_confirmation:
        typed = click.prompt(f"This changes {plan.count} item(s). Type the count ({plan.count}) to go on",
                             default="", show_default=False, err=True)
        if typed.strip() != str(plan.count):
            fail("cancelled (the count was not typed), nothing was changed", EXIT_REFUSED)
    elif not click.confirm(printable(f"{plan.action} {plan.count} item(s)?"), default=False, err=True):
        fail("cancelled, nothing was changed", EXIT_REFUSED)


def _execute(actions: BulkActions, plan: BulkPlan, *, batch: int, force: bool, export: str | None) -> None:
    stopping = {"flag": False}

    def on_sigint(_sig: int, _frame: Any) -> None:
        if stopping["flag"]:
            raise KeyboardInterrupt
        stopping["flag"] = True
        click.echo("\nstopping after this batch (ctrl+c again to abort at once)…", err=True)

    def progress(p: BulkProgress) -> None:
        click.echo(f"\r  {p.done}/{p.total} looked at, {p.changed} changed, {p.gone} gone, "
                   f"{p.refused} refused (batch {p.batches})", err=True, nl=False)

    old = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    try:
        res = actions.run(plan, batch=batch, force=force, stop=lambda: stopping["flag"], progress=progress,
                          export_path=export)
    except ActionError as exc:
        click.echo("", err=True)
        _die(exc, actions.settings)
        return
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    click.echo("", err=True)
    click.echo(printable(res.message))
    sys.exit(EXIT_OK if res.count > 0 and not res.details.get("stopped") else EXIT_REFUSED)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _bulk_actions(ctx: click.Context, opts: dict[str, Any]) -> BulkActions:
    return BulkActions(settings_for(ctx, opts))


_run_options = [
    click.option("--dry-run", is_flag=True, help="Only show what would change (count, keys, a sample)."),
    click.option("--limit", type=int, default=None, help="At most N items."),
    click.option("--batch", type=int, default=200, show_default=True, help="Items per atomic batch."),
    click.option("--force", is_flag=True, help="Unacked entries: move even those a worker may hold (may run twice)."),
    click.option("--export", "export", default=None, help="Export file (default: under the state dir)."),
    click.option("--json", "as_json", is_flag=True, help="Print the dry run as one JSON object."),
]


def run_options(f: Any) -> Any:
    for opt in reversed(_run_options):
        f = opt(f)
    return f


@click.command("bulk")
@click.argument("action", type=click.Choice(ACTIONS))
@click.argument("query", default="")
@click.option("--to", "target", default=None, help="Target queue (move).")
@run_options
@yes_option
@common_options
@click.pass_context
@handle_errors
def bulk_cmd(ctx: click.Context, action: str, query: str, target: str | None, dry_run: bool, limit: int | None,
             batch: int, force: bool, export: str | None, as_json: bool, yes: bool, **opts: Any) -> None:
    """ACTION everything QUERY matches (search syntax plus since:1h older:10m in:queue:NAME in:unacked
    in:results in:quarantine). A dry run is always shown first."""
    actions = _bulk_actions(ctx, opts)
    if not dry_run:
        _read_only(actions.settings, f"bulk {action}")
    try:
        plan = actions.plan(action, query, target=target, limit=limit)
    except ActionError as exc:
        _die(exc, actions.settings)
        return
    _show_and_confirm(plan, dry_run=dry_run, yes=yes, as_json=as_json)
    _execute(actions, plan, batch=batch, force=force, export=export)


@click.command("move")
@click.argument("source")
@click.argument("target")
@click.option("--task-id", "task_ids", multiple=True, help="Only these task ids (repeatable).")
@click.option("--query", default="", help="Only messages matching this search query.")
@click.option("--unacked", is_flag=True, help="Move unacked entries (of SOURCE when given) instead (liveness guard).")
@run_options
@yes_option
@common_options
@click.pass_context
@handle_errors
def move_cmd(ctx: click.Context, source: str, target: str, task_ids: tuple[str, ...], query: str,
             unacked: bool, dry_run: bool, limit: int | None, batch: int, force: bool, export: str | None,
             as_json: bool, yes: bool, **opts: Any) -> None:
    """Move waiting messages of SOURCE (all, --query, --task-id) or unacked entries onto TARGET, keeping
    their priority band, with delivery info rewritten for TARGET. ``move --unacked TARGET`` takes the
    whole ledger with SOURCE ``-`` (orphaned entries only without --force)."""
    actions = _bulk_actions(ctx, opts)
    src: str | None = None if source in ("-", "*") else source
    if not dry_run:
        _read_only(actions.settings, "move")
    try:
        plan = actions.move_plan(src, target, task_ids=task_ids, query=query, unacked=unacked, limit=limit)
    except ActionError as exc:
        _die(exc, actions.settings)
        return
    _show_and_confirm(plan, dry_run=dry_run, yes=yes, as_json=as_json)
    _execute(actions, plan, batch=batch, force=force, export=export)


def _pause_control(ctx: click.Context, opts: dict[str, Any]) -> PauseControl:
    return PauseControl(settings_for(ctx, opts))


@click.command("pause")
@click.argument("queue")
@yes_option
@common_options
@click.pass_context
@handle_errors
def pause_cmd(ctx: click.Context, queue: str, yes: bool, **opts: Any) -> None:
    """Stop every worker consuming QUEUE (cancel_consumer), remembered in Redis for `resume`."""
    settings = settings_for(ctx, opts)
    _read_only(settings, "pause")
    pc = PauseControl(settings)
    if not yes and not click.confirm(printable(f"Pause {queue} on every worker consuming it "
                                               f"({settings.broker_masked})?"), default=False, err=True):
        fail("cancelled, nothing was changed", EXIT_REFUSED)
    try:
        res = pc.pause(queue)
    except ActionError as exc:
        _die(exc, settings)
        return
    click.echo(printable(res.message))
    sys.exit(EXIT_OK)


@click.command("resume")
@click.argument("queue")
@yes_option
@common_options
@click.pass_context
@handle_errors
def resume_cmd(ctx: click.Context, queue: str, yes: bool, **opts: Any) -> None:
    """Re-add QUEUE's consumer on exactly the workers `pause` stopped."""
    settings = settings_for(ctx, opts)
    _read_only(settings, "resume")
    pc = PauseControl(settings)
    if not yes and not click.confirm(printable(f"Resume {queue}?"), default=False, err=True):
        fail("cancelled, nothing was changed", EXIT_REFUSED)
    try:
        res = pc.resume(queue)
    except ActionError as exc:
        _die(exc, settings)
        return
    click.echo(printable(res.message))
    sys.exit(EXIT_OK)


@click.command("paused")
@click.option("--enforce", is_flag=True, help="Tell workers that consume a paused queue to cancel it.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@common_options
@click.pass_context
@handle_errors
def paused_cmd(ctx: click.Context, enforce: bool, as_json: bool, **opts: Any) -> None:
    """List paused queues and flag workers that consume one anyway (started after the pause)."""
    settings = settings_for(ctx, opts)
    if enforce:
        _read_only(settings, "paused --enforce")
    pc = PauseControl(settings)
    paused = pc.paused()
    late = pc.late_consumers(enforce=enforce) if paused else {}
    if as_json:
        click.echo(json.dumps({q: {"workers": list(p.workers), "by": p.by, "since": p.since,
                                   "late_consumers": late.get(q, [])} for q, p in paused.items()}))
    else:
        if not paused:
            click.echo("no queue is paused")
        for q, p in sorted(paused.items()):
            click.echo(printable(p.line()))
            if late.get(q):
                click.echo(printable(f"  ⚠ consumed anyway by {', '.join(late[q])}"
                                     + (" (told to cancel it)" if enforce else " (use --enforce)")))
    sys.exit(EXIT_OK)


COMMANDS = [bulk_cmd, move_cmd, pause_cmd, resume_cmd, paused_cmd]
