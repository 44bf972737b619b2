"""The write flow: confirm, then run one write in a thread, then report it with a typed message.

``SPECS`` maps each ``WriteRequested.kind`` to a builder of its ``ConfirmSpec`` (dialog title, body,
button, options and the ``run`` that performs the write). ``write_flow`` is the one straight-line
flow every kind goes through (``@work`` on the app + ``push_screen_wait``)::

    guards (read-only, nothing selected) → [purge: preview read in a thread] → spec
      → answer = await push_screen_wait(ConfirmScreen) → thread worker runs spec.run(answer)
      → post ActionDone(title, message, severity, quarantine_changed)

Every step that waits on Redis or the workers shows a "working…" notification the moment the key is
pressed (the purge preview, the write after "y"), removed when the step is over, so a key never looks
ignored. The purge dialog says its counts are as of the preview (the age ticks while it is open) and
that messages arriving before the purge are purged and exported too; the result names exactly what
was exported and deleted (``PurgeWrites.purge``).

The targets (and the actions object) are captured when the dialog opens, never re-read when the user
answers. Expected failures (``ActionError``, ``ReadOnlyError``, Redis down) become an ``ActionDone``
with severity "error"; only an unexpected crash of a worker reaches ``Worker.StateChanged``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.notifications import Notification, Notify

from collectors.core.config import mask_text
from tui.format import fmt_age, safe
from tui.messages import ActionDone, WriteRequested
from tui.screens.confirm import Confirmation, ConfirmScreen
from tui.widgets.panels import q_attr

if TYPE_CHECKING:
    from collectors.writes.actions import ActionResult, PurgePreview
    from collectors.writes.api import ActionsAPI
    from collectors.writes.control import ControlCommand, WorkerControl
    from tui.app import TaskDashApp

LIST_LIMIT = 8
"""Targets listed by name in a confirm dialog before "… and N more"."""

Option = tuple[str, str, bool]
"""A dialog checkbox: (id, label, default)."""

WORKING_TIMEOUT = 30.0
"""Longest a "working…" notification stays up (it is removed as soon as its step ends)."""


class Working:
    """A "working…" notification shown at once and removed when the step it announces is over.

    Posted as a ``Notify`` (what ``App.notify`` posts) so it can be taken down again; the removal is
    queued behind it, so a step that ends before the notification was even shown leaves nothing behind.
    """

    TITLE = "Working"
    """One title for every such notification: the result's title ("Purge", "Requeue", …) means done."""

    def __init__(self, app: TaskDashApp, message: str) -> None:
        self.app = app
        self.note = Notification(safe(message), self.TITLE, "information", WORKING_TIMEOUT, markup=False)
        app.post_message(Notify(self.note))

    def done(self) -> None:
        """Take the notification down (after it was shown, if it was not yet)."""
        self.app.call_later(self._remove)

    def _remove(self) -> None:
        with suppress(Exception):  # expired already, or a Textual without _unnotify: it times out
            self.app._unnotify(self.note)


@dataclass(frozen=True)
class ConfirmSpec:
    """One write, ready to confirm: what the dialog says and what "Yes" runs (in a thread)."""

    title: str
    body: str
    label: str
    run: Callable[[Confirmation], ActionResult]
    """The write itself, given the dialog's answer; runs in the "actions" thread worker."""
    done_title: str
    """Title of the result notification."""
    options: tuple[Option, ...] = ()
    quarantine_changed: bool = False
    """A success changes the quarantine list (the app re-reads it)."""
    working: str = "working…"
    """Shown at once after "Yes", until the result arrives."""
    body_fn: Callable[[], str] | None = None
    """Re-renders the body every second while the dialog is open (e.g. the age of a preview)."""


SpecBuilder = Callable[["TaskDashApp", "ActionsAPI", tuple[Any, ...], Any], "ConfirmSpec | None"]
"""(app, actions, items, command) → the spec, or None when the row has nothing to act on."""


def default_export_path(queue: str, now: float, export_dir: Path | None = None) -> Path:
    """Where a purge export goes: ``export_dir`` or taskdash's state dir (like the CLI), one file per purge."""
    if export_dir is None:
        from collectors.core.audit import state_dir

        export_dir = state_dir() / "exports"
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in queue)
    return export_dir / f"purge-{safe}-{stamp}.jsonl"


def _listing(lines: Sequence[str]) -> str:
    shown = [f"  • {line}" for line in lines[:LIST_LIMIT]]
    if len(lines) > LIST_LIMIT:
        shown.append(f"  … and {len(lines) - LIST_LIMIT} more")
    return "\n".join(shown)


def _describe_entry(e: Any) -> str:
    task = getattr(e, "task", None) or "?"
    tid = getattr(e, "task_id", None) or "?"
    queue = getattr(e, "queue", None) or "?"
    return f"{task} [{tid}] on {queue}"


# ---- the confirmation specs, one per kind -------------------------------------------------------
def requeue_spec(app: TaskDashApp, actions: ActionsAPI, items: tuple[Any, ...], command: Any) -> ConfirmSpec:
    """Requeue the marked/selected unacked entries (live ones only with force)."""
    tags = [e.delivery_tag for e in items]
    live = [e for e in items if getattr(e, "holder", None) or getattr(e, "state", None) != "orphaned"]
    body = (f"Move {len(tags)} unacked message(s) back onto their queue (the end consumed next), "
            "removing them from unacked:\n" + _listing([_describe_entry(e) + f" · {e.state}" for e in items]))
    if live:
        body += (f"\n\n{len(live)} of them are not proven orphaned (a worker reports them, or one not proven "
                 "dead may hold them): that worker may still be running it, and a requeue can run it twice. "
                 "They are refused unless you tick force.")
    options: tuple[Option, ...] = ((("force", "force: requeue even though the worker may still be running it "
                                     "(it can run twice)", False),) if live else ())
    return ConfirmSpec("Requeue?", body, "Requeue", lambda c: actions.requeue(tags, force=c.options.get("force", False)),
                       "Requeue", options, working=f"requeueing {len(tags)} message(s): asking the workers what "
                       "they hold first…")


def requeue_orphaned_spec(app: TaskDashApp, actions: ActionsAPI, items: tuple[Any, ...],
                          command: Any) -> ConfirmSpec:
    """Requeue every entry orphaned at the last refresh."""
    tags = [e.delivery_tag for e in items]
    body = (f"Requeue the {len(tags)} message(s) orphaned at the last refresh (no live worker holds "
            "them) back onto their queues:\n" + _listing([_describe_entry(e) for e in items]))
    snap = app.snapshot
    if snap is not None and snap.unacked_total > len(snap.unacked):
        body += (f"\n\nOnly the {len(snap.unacked):,} oldest of {snap.unacked_total:,} unacked entries were "
                 "read in this refresh; `taskdash requeue --orphaned` handles every one.")
    return ConfirmSpec("Requeue all orphaned?", body, "Requeue", lambda c: actions.requeue(tags, force=False),
                       "Requeue orphaned", working=f"requeueing {len(tags)} orphaned message(s): asking the "
                       "workers what they hold first…")


def quarantine_spec(app: TaskDashApp, actions: ActionsAPI, items: tuple[Any, ...], command: Any) -> ConfirmSpec:
    """Quarantine unacked entries (by tag) or poison suspects / queued messages (by task id)."""
    reason = "quarantined from the taskdash TUI"
    if items and hasattr(items[0], "deliveries"):
        reason = f"poison suspect: {items[0].reason}"
    # Each message is recorded with its own delivery count (the poison tracker's, or the persistent
    # history's when it saw more); messages of one count go in one call.
    groups: dict[int | None, tuple[list[str], list[str]]] = {}
    for e in items:
        tags, task_ids = groups.setdefault(deliveries_of(app, e), ([], []))
        if hasattr(e, "delivery_tag") and hasattr(e, "reserved_at") and e.delivery_tag:
            tags.append(e.delivery_tag)
        else:
            task_ids.append(e.task_id)
    body = (f"Move {len(items)} message(s) into taskdash's quarantine (out of their queue and of "
            "unacked; kept whole, replayable):\n" + _listing([_describe_entry(e) for e in items]))

    def run(c: Confirmation) -> ActionResult:
        results = []
        for deliveries, (tags, task_ids) in groups.items():
            kwargs: dict[str, Any] = {"reason": reason}
            if deliveries is not None:
                kwargs["deliveries"] = deliveries
            if tags:
                kwargs["tags"] = tags
            if task_ids:
                kwargs["task_ids"] = task_ids
            results.append(actions.quarantine(**kwargs))
        done = [d.get("task_id") for res in results for d in (res.details or {}).get("items", ())]
        forget_poison(app, done)
        app.forget_deliveries(getattr(e, "task_id", None) for e in items)
        return results[0] if len(results) == 1 else _merged("quarantine", results)

    return ConfirmSpec("Quarantine?", body, "Quarantine", run, "Quarantine", quarantine_changed=True,
                       working=f"quarantining {len(items)} message(s)…")


def deliveries_of(app: TaskDashApp, item: Any) -> int | None:
    """The delivery count to record for ``item``: a poison suspect's (tracker or persistent history), the
    suspect's of an unacked/queued row of the same task id, else None (the write then asks the history)."""
    if hasattr(item, "deliveries"):
        return int(app.deliveries_of(item))
    task_id = getattr(item, "task_id", None)
    snap = app.snapshot
    if task_id and snap is not None:
        suspect = next((p for p in snap.poison if p.task_id == task_id), None)
        if suspect is not None:
            return int(app.deliveries_of(suspect))
    return None


def forget_poison(app: TaskDashApp, task_ids: Iterable[str | None]) -> None:
    """Take quarantined/revoked tasks out of the poison suspects now (the collector's tracker drops them
    and ignores their earlier deliveries), so the Poison view does not keep showing a stopped loop."""
    forget = getattr(app.collector, "forget_poison", None)
    if not callable(forget):
        return
    for task_id in dict.fromkeys(t for t in task_ids if t):
        forget(task_id)


def _merged(kind: str, results: Sequence[ActionResult]) -> ActionResult:
    """One result for several calls of the same write (counts added, messages joined)."""
    first = results[0]
    items = [d for res in results for d in (res.details or {}).get("items", ())]
    missing = [m for res in results for m in (res.details or {}).get("missing", ())]
    return type(first)(kind, sum(res.count for res in results), "; ".join(res.message for res in results),
                       {"items": items, "missing": missing})


def revoke_spec(app: TaskDashApp, actions: ActionsAPI, items: tuple[Any, ...], command: Any) -> ConfirmSpec | None:
    """Revoke one task (optionally terminate its process)."""
    item = items[0]
    task_id = item.task_id
    if not task_id:
        return None
    body = (f"Revoke task {_describe_entry(item)}.\nWorkers will discard it if it has not started; "
            "with terminate, the process running it gets SIGTERM.")

    def run(c: Confirmation) -> ActionResult:
        result = actions.revoke(task_id, terminate=c.options.get("terminate", False))
        forget_poison(app, [task_id])
        app.forget_deliveries([task_id])
        return result

    return ConfirmSpec("Revoke?", body, "Revoke", run, "Revoke",
                       (("terminate", "terminate (SIGTERM the running process)", False),))


def control_spec(app: TaskDashApp, actions: ActionsAPI | None, items: tuple[Any, ...],
                 command: ControlCommand) -> ConfirmSpec:
    """Send a parsed worker command to the marked/selected workers."""
    hosts = [w.hostname for w in items]
    body = f"Send to {len(hosts)} worker(s): {command.description}\n" + _listing(hosts)
    control: Callable[[], WorkerControl] = app.worker_control  # type: ignore[assignment] - same API
    return ConfirmSpec("Worker command?", body, "Send", lambda c: command.run(control(), hosts), "Worker control")


def retry_spec(app: TaskDashApp, actions: ActionsAPI, items: tuple[Any, ...], command: Any) -> ConfirmSpec:
    """Send a failed task again from its stored args."""
    item = items[0]
    task_id = item.task_id
    body = (f"Send task {item.task or '?'} [{task_id}] again with its stored args and kwargs:\n"
            f"  args: {item.args or '–'}\n  kwargs: {item.kwargs or '–'}")
    return ConfirmSpec("Retry?", body, "Retry", lambda c: actions.retry(task_id), "Retry")


def replay_spec(app: TaskDashApp, actions: ActionsAPI, items: tuple[Any, ...], command: Any) -> ConfirmSpec:
    """Put quarantined messages back on their original queue."""
    ids = [str(q_attr(e, "id", "qid", "task_id")) for e in items]
    body = (f"Put {len(ids)} quarantined message(s) back on their original queue:\n"
            + _listing([f"{q_attr(e, 'task') or '?'} [{q_attr(e, 'task_id') or '?'}] → "
                        f"{q_attr(e, 'queue') or '?'}" for e in items]))
    return ConfirmSpec("Replay?", body, "Replay", lambda c: actions.replay(ids), "Replay", quarantine_changed=True)


def delete_quarantined_spec(app: TaskDashApp, actions: ActionsAPI, items: tuple[Any, ...],
                            command: Any) -> ConfirmSpec:
    """Drop quarantined messages for good."""
    ids = [str(q_attr(e, "id", "qid", "task_id")) for e in items]
    body = (f"Delete {len(ids)} quarantined message(s) for good (they cannot be replayed afterwards):\n"
            + _listing([f"{q_attr(e, 'task') or '?'} [{q_attr(e, 'task_id') or '?'}]" for e in items]))
    return ConfirmSpec("Delete from quarantine?", body, "Delete", lambda c: actions.delete_quarantined(ids),
                       "Delete", quarantine_changed=True)


def purge_body(name: str, preview: PurgePreview, age_s: float, export: Path) -> str:
    """The purge dialog: the preview's counts *as of* its age, and that later arrivals go too."""
    bands = ", ".join(f"priority {band}: {n:,}" for band, n in preview.by_priority) or "–"
    orphaned = preview.orphaned_unacked
    return (f"Delete the {preview.total:,} ready message(s) of queue {name} as of {fmt_age(max(0.0, age_s))} ago\n"
            f"({bands}).\nMessages arriving before the purge are purged and exported too.\n"
            f"{preview.unacked:,} unacked message(s) of this queue ({orphaned:,} orphaned) stay unless you "
            "include the orphaned ones below.\n"
            f"Everything purged is first written to {export}\n(undo with: taskdash restore FILE).")


def purge_spec(app: TaskDashApp, actions: ActionsAPI, name: str, preview: PurgePreview,
               preview_at: float | None = None) -> ConfirmSpec:
    """Purge a queue, from the preview read when the key was pressed (export first).

    ``preview_at``: when the preview was read, on ``app.clock`` (default: now).
    """
    at = app.clock() if preview_at is None else preview_at
    export = default_export_path(name, at, app.export_dir)
    orphaned = preview.orphaned_unacked

    def body() -> str:
        return purge_body(name, preview, app.clock() - at, export)

    def run(c: Confirmation) -> ActionResult:
        return actions.purge(name, include_unacked=c.options.get("include_unacked", False),
                             export_path=str(export))

    return ConfirmSpec(f"Purge queue {name}?", body(), "Purge", run, "Purge",
                       (("include_unacked", f"also purge the {orphaned:,} orphaned unacked message(s)", False),),
                       working=f"purging {name}: exporting, then deleting…", body_fn=body)


SPECS: dict[str, SpecBuilder] = {
    "requeue": requeue_spec,
    "requeue_orphaned": requeue_orphaned_spec,
    "quarantine": quarantine_spec,
    "revoke": revoke_spec,
    "control": control_spec,
    "retry": retry_spec,
    "replay": replay_spec,
    "delete_quarantined": delete_quarantined_spec,
}
"""Action kind → its confirmation spec ("purge" needs a preview first: see ``write_flow``)."""


# ---- the flow ------------------------------------------------------------------------------------
def _masked(app: TaskDashApp, text: str) -> str:
    return mask_text(text, app.settings.broker_url, app.settings.backend_url)


def _read_preview(app: TaskDashApp, actions: ActionsAPI, name: str) -> PurgePreview | str:
    """The purge preview (thread), or the masked reason it could not be read."""
    try:
        return actions.purge_preview(name)
    except Exception as exc:  # noqa: BLE001 - Redis down / refused: told in a notification
        return _masked(app, str(exc) or type(exc).__name__)


def run_write(app: TaskDashApp, spec: ConfirmSpec, answer: Confirmation) -> None:
    """Run the confirmed write (thread worker) and post its ``ActionDone``."""
    try:
        result = spec.run(answer)
        done = ActionDone(spec.done_title, result.message or str(result),
                          "information" if result.count > 0 else "warning", spec.quarantine_changed)
    except Exception as exc:  # noqa: BLE001 - ActionError / ReadOnlyError / Redis down: notify
        name = type(exc).__name__
        title = "Refused" if name in ("ActionError", "ReadOnlyError") else f"Failed ({name})"
        done = ActionDone(title, _masked(app, str(exc) or name), "error")
    app.post_message(done)


async def write_flow(app: TaskDashApp, request: WriteRequested) -> None:
    """Confirm ``request`` and run it: the straight-line flow behind every write key and palette command."""
    kind, items = request.kind, tuple(request.items)
    if app.read_only:
        app.say(f"{kind.replace('_', ' ')} is disabled: taskdash runs with --read-only",
                title="Read-only", severity="warning", timeout=4)
        return
    if not items:
        app.say("nothing selected" if kind != "requeue_orphaned" else "no orphaned message",
                severity="warning", timeout=3)
        return
    actions = app.actions
    if actions is None and kind != "control":
        app.say("actions are not available in this build", severity="error")
        return
    spec: ConfirmSpec | None
    if kind == "purge":
        assert actions is not None
        name = items[0].name
        working = Working(app, f"reading queue {name}…")
        try:
            preview = await app.run_worker(partial(_read_preview, app, actions, name), thread=True,
                                           group="preview", exit_on_error=False, description="purge preview").wait()
        finally:
            working.done()
        if isinstance(preview, str):
            app.say(preview, title="Purge preview failed", severity="error")
            return
        spec = purge_spec(app, actions, name, preview, app.clock())
    else:
        build = SPECS.get(kind)
        if build is None:
            app.say(f"unknown action {kind}", severity="error")
            return
        spec = build(app, actions, items, request.command)  # type: ignore[arg-type]
        if spec is None:
            app.say("this row has no task id to act on", severity="warning", timeout=4)
            return
    answer = await app.push_screen_wait(ConfirmScreen(spec.title, spec.body_fn or spec.body,
                                                      confirm_label=spec.label, options=spec.options))
    app.focus_table()
    if answer is None:
        return
    working = Working(app, spec.working)
    worker = app.run_worker(partial(run_write, app, spec, answer), thread=True, group="actions",
                            exit_on_error=False, description="write action")
    try:
        await worker.wait()
    except Exception:  # noqa: BLE001 - a crash is reported by Worker.StateChanged (app.on_worker_state_changed)
        pass
    finally:
        working.done()
