"""Write sub-commands: requeue, quarantine, replay, purge, restore, revoke, retry (and quarantine tools).

Each asks for confirmation on the terminal naming exactly what changes (``--yes`` skips it), prints one
result line on stdout and exits 0 when something was done, 1 when refused / nothing matched / cancelled,
2 when the broker cannot be reached (one masked line on stderr, no traceback).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, NoReturn

import click

from collectors.core.config import mask_text
from collectors.core.messages import printable
from collectors.writes.actions import ActionError, ActionResult, Actions, BrokerUnreachableError
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


def _actions(ctx: click.Context, opts: dict[str, Any]) -> Actions:
    settings = settings_for(ctx, opts)
    return Actions(settings)


def _echo(text: str, *, err: bool = False) -> None:
    """``click.echo`` of text that quotes Redis/user data (queue and task names, reprs, hostnames,
    errors): ESC sequences and undecodable bytes are shown as ``\\xNN`` instead of hitting the terminal."""
    click.echo(printable(text), err=err)


def _fail(message: str, code: int) -> None:
    """:func:`taskdash.cli.fail` for a message that quotes Redis/user data (made printable)."""
    fail(printable(message), code)


def _die(exc: Exception, actions: Actions | None = None) -> NoReturn:
    urls = (actions.settings.broker_url, actions.settings.backend_url) if actions else ()
    msg = mask_text(str(exc), *urls)
    if isinstance(exc, BrokerUnreachableError):
        _fail(msg, EXIT_UNREACHABLE)
    _fail(msg, EXIT_REFUSED)
    raise AssertionError("unreachable")  # pragma: no cover - fail() exits


def _refuse_read_only(actions: Actions, action: str) -> None:
    if actions.settings.read_only:
        fail(f"read-only mode: {action} refused, nothing was changed", EXIT_REFUSED)


def _confirm(yes: bool, prompt: str) -> None:
    if yes:
        return
    if not click.confirm(printable(prompt), default=False, err=True):
        fail("cancelled, nothing was changed", EXIT_REFUSED)


def _finish(actions: Actions, do: Callable[[], ActionResult]) -> NoReturn:
    try:
        res = do()
    except ActionError as exc:
        _die(exc, actions)
    _echo(res.message)
    sys.exit(EXIT_OK if res.count > 0 else EXIT_REFUSED)


def _guarded(actions: Actions, read: Callable[[], Any]) -> Any:
    """Run a read needed for the confirmation text; unreachable broker → exit 2."""
    try:
        return read()
    except ActionError as exc:
        _die(exc, actions)
    except Exception as exc:  # noqa: BLE001 - redis errors while previewing
        import redis

        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            _fail(mask_text(f"cannot reach the broker {actions.settings.broker_masked}: {exc}",
                           actions.settings.broker_url), EXIT_UNREACHABLE)
        raise


def _short(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


@click.command("requeue")
@click.option("--tag", "tags", multiple=True, help="Delivery tag of an unacked message (repeatable).")
@click.option("--task-id", "task_ids", multiple=True, help="Task id of an unacked message (repeatable).")
@click.option("--orphaned", is_flag=True, help="Every unacked message no live worker claims.")
@click.option("--older-than", type=float, default=None, help="With --orphaned: only deliveries older than S s.")
@click.option("--force", is_flag=True, help="Requeue even if a live worker runs it (it may run twice).")
@yes_option
@common_options
@click.pass_context
@handle_errors
def requeue_cmd(ctx: click.Context, tags: tuple[str, ...], task_ids: tuple[str, ...], orphaned: bool,
                older_than: float | None, force: bool, yes: bool, **opts: Any) -> None:
    """Move unacked messages back onto their queue (the end consumed next), atomically."""
    if sum(bool(x) for x in (tags, task_ids, orphaned)) != 1:
        raise click.UsageError("give exactly one of --tag, --task-id or --orphaned")
    if older_than is not None and not orphaned:
        raise click.UsageError("--older-than only goes with --orphaned")
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "requeue")
    broker = actions.settings.broker_masked
    if orphaned:
        # Said at once: the liveness guard asks the workers (one inspect window) and then watches
        # them for up to OBSERVE_S seconds before anything can be called orphaned (silent is not dead).
        from collectors.writes.requeue import OBSERVE_S

        _guarded(actions, actions.client.ping)  # an unreachable broker: its one line, nothing before it
        click.echo(f"taskdash: asking the workers what they hold, then watching them up to {OBSERVE_S:g} s "
                   "for liveness evidence (heartbeats, replies, connections)…", err=True)
        found, census = _guarded(actions, lambda: actions.orphan_census(older_than=older_than,
                                                                        live=None if not force else set()))
        watch = actions.last_watch
        if watch is not None:
            click.echo(f"taskdash: watched {watch[0]:.1f} s ({watch[1]})", err=True)
        if not found:
            from collectors.writes.requeue import not_requeued_summary

            held = not_requeued_summary(census)
            _echo("no orphaned unacked messages" + (f"; {held}" if held else ""))
            sys.exit(EXIT_REFUSED)
        by_queue = Counter(q or "?" for _t, _s, _id, q in found)
        what = ", ".join(f"{q}: {n}" for q, n in sorted(by_queue.items()))
        _confirm(yes, f"Requeue {len(found)} orphaned unacked message(s) ({what}) on {broker}?")
        _finish(actions, lambda: actions.requeue_orphaned(older_than=older_than, force=force))
    all_tags = list(tags)
    for task_id in task_ids:
        found_tags = _guarded(actions, lambda t=task_id: actions.find_tags(t))
        if not found_tags:
            _fail(f"no unacked message for task {task_id}", EXIT_REFUSED)
        all_tags.extend(found_tags)
    label = f"task(s) {_short(list(task_ids))}" if task_ids else f"tag(s) {_short(all_tags)}"
    _confirm(yes, f"Requeue {len(all_tags)} unacked message(s) of {label} onto their queues on {broker}"
                  f"{' (FORCED: may run twice)' if force else ''}?")
    _finish(actions, lambda: actions.requeue(all_tags, force=force))


@click.command("quarantine")
@click.option("--task-id", "task_ids", multiple=True, help="Task id to quarantine (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Delivery tag of an unacked message (repeatable).")
@click.option("--reason", default="", help="Why (kept with the message).")
@click.option("--queue", "queues", multiple=True, help="Queue(s) to search (default: all known queues).")
@click.option("--list", "list_", is_flag=True, help="List the quarantined messages instead.")
@yes_option
@common_options
@click.pass_context
@handle_errors
def quarantine_cmd(ctx: click.Context, task_ids: tuple[str, ...], tags: tuple[str, ...], reason: str,
                   queues: tuple[str, ...], list_: bool, yes: bool, **opts: Any) -> None:
    """Move messages (unacked or queued) into taskdash's dead-letter store; a poison loop stops."""
    if list_:
        ctx.invoke(quarantine_list_cmd, limit=500, as_json=False, **opts)
        return
    if not task_ids and not tags:
        raise click.UsageError("give --task-id or --tag (or --list)")
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "quarantine")
    _confirm(yes, f"Quarantine {_short(list(task_ids) + list(tags))} (removed from its queue/unacked) on "
                  f"{actions.settings.broker_masked}?")
    _finish(actions, lambda: actions.quarantine(tags=tags, task_ids=task_ids, reason=reason,
                                                queues=list(queues) or None))


@click.command("quarantine-list")
@click.option("--limit", type=int, default=500, help="At most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@common_options
@click.pass_context
@handle_errors
def quarantine_list_cmd(ctx: click.Context, limit: int, as_json: bool, **opts: Any) -> None:
    """List quarantined messages (newest first)."""
    actions = _actions(ctx, opts)
    items = _guarded(actions, lambda: actions.list_quarantine(limit))
    from datetime import datetime, timezone

    for q in items:
        if as_json:
            click.echo(json.dumps({"id": q.id, "task_id": q.task_id, "task": q.task, "queue": q.queue,
                                   "reason": q.reason, "quarantined_at": q.quarantined_at,
                                   "deliveries": q.deliveries, "source": q.source}))
        else:
            when = datetime.fromtimestamp(q.quarantined_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            _echo(f"{q.id}  {when}  {q.queue or '-'}  {q.task or '-'}  {q.task_id or '-'}  "
                       f"deliveries={q.deliveries if q.deliveries is not None else '?'}  {q.reason}")
    if not as_json:
        click.echo(f"{len(items)} quarantined message(s)", err=True)


@click.command("replay")
@click.option("--task-id", "task_ids", multiple=True, help="Task id of a quarantined message (repeatable).")
@click.option("--id", "ids", multiple=True, help="Quarantine id (repeatable).")
@yes_option
@common_options
@click.pass_context
@handle_errors
def replay_cmd(ctx: click.Context, task_ids: tuple[str, ...], ids: tuple[str, ...], yes: bool, **opts: Any) -> None:
    """Put quarantined messages back on their original queue."""
    wanted = list(ids) + list(task_ids)
    if not wanted:
        raise click.UsageError("give --task-id or --id")
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "replay")
    _confirm(yes, f"Replay quarantined {_short(wanted)} onto its original queue on "
                  f"{actions.settings.broker_masked}?")
    _finish(actions, lambda: actions.replay(wanted))


@click.command("quarantine-delete")
@click.argument("ids", nargs=-1, required=True)
@yes_option
@common_options
@click.pass_context
@handle_errors
def quarantine_delete_cmd(ctx: click.Context, ids: tuple[str, ...], yes: bool, **opts: Any) -> None:
    """Drop quarantined messages (quarantine ids or task ids); a copy is exported first."""
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "delete")
    _confirm(yes, f"Delete quarantined {_short(list(ids))} for good on {actions.settings.broker_masked}?")
    _finish(actions, lambda: actions.delete_quarantined(list(ids)))


@click.command("quarantine-export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@common_options
@click.pass_context
@handle_errors
def quarantine_export_cmd(ctx: click.Context, path: str, **opts: Any) -> None:
    """Write every quarantined message to a JSONL file (``taskdash restore FILE`` reads it back)."""
    actions = _actions(ctx, opts)
    _finish(actions, lambda: actions.export_quarantine(path))


@click.command("purge")
@click.argument("queue")
@click.option("--include-unacked", is_flag=True, help="Also remove the queue's orphaned unacked entries.")
@click.option("--export", "export_path", default=None, type=click.Path(dir_okay=False),
              help="Export file (default: in the user's state directory).")
@yes_option
@common_options
@click.pass_context
@handle_errors
def purge_cmd(ctx: click.Context, queue: str, include_unacked: bool, export_path: str | None, yes: bool,
              **opts: Any) -> None:
    """Delete every waiting message of QUEUE, after exporting them all (undo: taskdash restore FILE)."""
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "purge")
    preview = _guarded(actions, lambda: actions.purge_preview(queue))
    bands = ", ".join(f"priority {b}: {n}" for b, n in preview.by_priority if n) or "empty"
    extra = (f" and {preview.orphaned_unacked} orphaned unacked" if include_unacked
             else f" ({preview.unacked} unacked kept)")
    if preview.total == 0 and not (include_unacked and preview.orphaned_unacked):
        _echo(f"{queue} has no waiting messages")
        sys.exit(EXIT_REFUSED)
    _confirm(yes, f"Purge {preview.total} message(s) from {queue} ({bands}){extra} on "
                  f"{actions.settings.broker_masked}? They are exported first.")
    _finish(actions, lambda: actions.purge(queue, include_unacked=include_unacked, export_path=export_path))


@click.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Restore even if this export was restored before.")
@yes_option
@common_options
@click.pass_context
@handle_errors
def restore_cmd(ctx: click.Context, path: str, force: bool, yes: bool, **opts: Any) -> None:
    """Put back what a purge/quarantine export holds (same keys, same order, same bytes)."""
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "restore")
    _confirm(yes, f"Restore the messages in {path} onto {actions.settings.broker_masked}?")
    _finish(actions, lambda: actions.restore(path, force=force))


@click.command("revoke")
@click.argument("task_id")
@click.option("--terminate", is_flag=True, help="Also kill the task if it is running.")
@yes_option
@common_options
@click.pass_context
@handle_errors
def revoke_cmd(ctx: click.Context, task_id: str, terminate: bool, yes: bool, **opts: Any) -> None:
    """Revoke a task on every worker (Celery control)."""
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "revoke")
    _confirm(yes, f"Revoke{' and terminate' if terminate else ''} task {task_id} on "
                  f"{actions.settings.broker_masked}?")
    _finish(actions, lambda: actions.revoke(task_id, terminate=terminate))


@click.command("retry")
@click.argument("task_id")
@yes_option
@common_options
@click.pass_context
@handle_errors
def retry_cmd(ctx: click.Context, task_id: str, yes: bool, **opts: Any) -> None:
    """Send a FAILURE task again with its stored name/args/kwargs (needs result_extended)."""
    actions = _actions(ctx, opts)
    _refuse_read_only(actions, "retry")
    _confirm(yes, f"Send task {task_id} again with its stored arguments on {actions.settings.broker_masked}?")
    _finish(actions, lambda: actions.retry(task_id))


COMMANDS = [requeue_cmd, quarantine_cmd, quarantine_list_cmd, replay_cmd, quarantine_delete_cmd,
            quarantine_export_cmd, purge_cmd, restore_cmd, revoke_cmd, retry_cmd]
