"""DashboardScreen: the main screen (the app's ``get_default_screen()``).

It owns the composition (status bar, one tab per view, the prompt, the footer), which view shows,
the ``/`` ``:`` prompt in its four modes (filter, jump, worker command, task search), the task search
worker and the detail screens. The app sets data on it (``show_snapshot``, ``show_quarantine``,
``show_status``, ``reset``); the screen reads the app's state (snapshot, history, forensics) and
posts ``WriteRequested`` up like the panels do. The key table stays on the app (the footer order and
the binding ids are part of the screenshots); the dashboard keys' actions land here.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from itertools import groupby
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Footer, Input, TabbedContent, TabPane
from textual.widgets._footer import FooterKey, FooterLabel, KeyGroup

from collectors.core.config import mask_text
from collectors.core.models import Snapshot
from tui import details
from tui.messages import DetailRequested, WriteRequested
from tui.screens.detail import DetailScreen
from tui.widgets.overview import OverviewPanel
from tui.widgets.panels import PANELS, VIEWS, Panel, QuarantinePanel
from tui.widgets.status_bar import StatusBar, StatusState

if TYPE_CHECKING:
    from tui.app import TaskDashApp

TAB_LABELS: dict[str, str] = {"overview": "Overview", "queues": "Queues", "unacked": "Unacked", "workers": "Workers",
                              "tasks": "Tasks", "poison": "Poison", "quarantine": "Quarantine"}
SCREENS: tuple[str, ...] = ("health", "lint", "ctx", "crash", "beat", "canvas", "bulk")
"""``:`` words that open a screen (or run a command) instead of a view."""
ARG_SCREENS: tuple[str, ...] = ("ctx", "crash")
"""``:`` words that take an optional argument (``:ctx NAME``, ``:crash HOST``)."""
CONTROL_HINTS: tuple[str, ...] = ("grow N", "shrink N", "autoscale MAX MIN", "restart", "add-consumer Q",
                                   "cancel-consumer Q", "rate-limit TASK 10/m", "time-limit TASK SOFT HARD",
                                   "shutdown")
"""The worker commands the ``c`` prompt suggests, most used first (the help lists them all)."""
SEARCH_LIMIT = 200
"""Most hits one task search returns."""


class FittedFooter(Footer):
    """The footer, fitted to the terminal: compact below ``ROOMY`` columns, and when the keys still do not
    fit, the ones also reachable otherwise are left out, in ``DROP_ORDER`` (``?`` lists every key).
    The view's own keys (requeue, purge, ...) and help are always shown."""

    DEFAULT_CSS = """
    FittedFooter.-compact FooterLabel { margin: 0 1 0 0; }
    """
    ROOMY = 120
    DROP_ORDER: tuple[str, ...] = ("jump", "pause", "filter", "wide", "mark", "quit")
    """Actions left out first when the footer is too narrow."""
    PALETTE_WIDTH = 13
    """The ``^p palette`` key docked right, with its divider."""

    _composed: tuple[Any, ...] | None = None
    """What the keys shown were composed from (``_signature``)."""

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != getattr(self, "_fitted_for", None):
            self.call_after_refresh(self.recompose)

    def bindings_changed(self, screen: Screen[Any]) -> None:
        """Textual recomposes the footer on every bindings update (a view switch sends two: the tab,
        then the focus): each recompose mounts every key again and lays the screen out again. Only
        when the keys it would show differ."""
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._recompose_if_changed)

    def _signature(self) -> tuple[Any, ...]:
        width = self.size.width or self.app.size.width
        return (width, self.show_command_palette, tuple(
            (binding.key, binding.action, binding.description, binding.show, id(binding.group), enabled, tooltip)
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()))

    async def _recompose_if_changed(self) -> None:
        if self.is_attached and self._signature() != self._composed:
            await self.recompose()

    def fitted(self, actions: list[list[tuple[Binding, bool, str]]], width: int,
               compact: bool) -> list[list[tuple[Binding, bool, str]]]:
        """``actions`` (one list of bindings per action) minus the ones dropped to fit ``width``."""
        gap = 2 if compact else 3

        def cost(multis: list[list[tuple[Binding, bool, str]]]) -> int:
            total, groups = 0, set()
            for multi in multis:
                binding = multi[0][0]
                key = len(self.app.get_key_display(binding))
                if binding.group is not None:
                    total += key + (0 if id(binding.group) in groups else len(binding.group.description) + 4)
                    groups.add(id(binding.group))
                else:
                    total += key + 1 + len(binding.description) + gap - 1
            return total

        kept = list(actions)
        room = width - (self.PALETTE_WIDTH if self.show_command_palette else 0)
        for action in self.DROP_ORDER:
            if cost(kept) <= room:
                break
            kept = [m for m in kept if m[0][0].action != action]
        return kept

    def compose(self) -> ComposeResult:  # Footer.compose, with fitted() choosing the keys
        if not self._bindings_ready:
            return
        width = self.size.width or self.app.size.width
        self._fitted_for = width
        self._composed = self._signature()
        compact = width < self.ROOMY
        self.set_reactive(Footer.compact, compact)
        self.set_class(compact, "-compact")
        active_bindings = self.screen.active_bindings
        action_to_bindings: defaultdict[str, list[tuple[Binding, bool, str]]] = defaultdict(list)
        for (_, binding, enabled, tooltip) in active_bindings.values():
            if binding.show:
                action_to_bindings[binding.action].append((binding, enabled, tooltip))
        kept = self.fitted(list(action_to_bindings.values()), width, compact)
        self.styles.grid_size_columns = len(kept)
        for group, multi_iter in groupby(kept, lambda multi: multi[0][0].group):
            multi_bindings = list(multi_iter)
            if group is not None and len(multi_bindings) > 1:
                with KeyGroup(classes="-compact" if group.compact else ""):
                    for multi in multi_bindings:
                        binding, enabled, tooltip = multi[0]
                        yield FooterKey(binding.key, self.app.get_key_display(binding), "", binding.action,
                                        disabled=not enabled, tooltip=tooltip or binding.description,
                                        classes="-grouped").data_bind(compact=Footer.compact)
                yield FooterLabel(group.description)
            else:
                for multi in multi_bindings:
                    binding, enabled, tooltip = multi[0]
                    yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description,
                                    binding.action, disabled=not enabled,
                                    tooltip=tooltip).data_bind(compact=Footer.compact)
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            try:
                _node, binding, enabled, tooltip = active_bindings[self.app.COMMAND_PALETTE_BINDING]
            except KeyError:
                pass
            else:
                yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description,
                                binding.action, classes="-command-palette", disabled=not enabled,
                                tooltip=binding.tooltip or binding.description)


def fit_hint(head: str, parts: Sequence[str], width: int, more: str = "… (? lists all)") -> str:
    """``head`` then as many of ``parts`` (joined by " · ") as fit ``width``; ``more`` says some were left out."""
    out = head
    for i, part in enumerate(parts):
        sep = " · " if out != head else ""
        rest_marker = "" if i == len(parts) - 1 else f" · {more}"
        if len(out) + len(sep) + len(part) + len(rest_marker) > width:
            return f"{out} · {more}" if out != head else f"{out}{more}"
        out += sep + part
    return out


def resolve_view(text: str) -> str | None:
    """``":unacked"`` / ``"un"`` / ``"2"`` → a view name (exact, then unique prefix, then first prefix)."""
    word = text.strip().lstrip(":").strip().lower()
    if not word:
        return None
    if word.isdigit() and 0 <= int(word) < len(VIEWS):
        return VIEWS[int(word)]  # 0 = overview
    if word in VIEWS:
        return word
    matches = [v for v in VIEWS if v.startswith(word)]
    return matches[0] if matches else None


class DashboardScreen(Screen[None]):
    """Status bar, the views as tabs, the prompt and the footer; switches views, runs the prompt."""

    def __init__(self) -> None:
        super().__init__()
        self.prompt_mode = "filter"
        """What the open prompt does on enter: "filter", "jump", "control" or "search"."""
        self._control_targets: tuple[Any, ...] = ()

    @property
    def dash_app(self) -> TaskDashApp:
        """The app, typed."""
        return self.app  # type: ignore[return-value]

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with TabbedContent(id="views", initial=VIEWS[0]):
            for panel_cls in (OverviewPanel, *PANELS):
                with TabPane(TAB_LABELS[panel_cls.VIEW], id=panel_cls.VIEW):
                    yield panel_cls()
        yield Input(id="prompt", compact=True)
        yield FittedFooter(id="footer")

    class Ready(Message):
        """The dashboard is composed: the app may start polling (snapshots have somewhere to go)."""

    NARROW = 100
    """Below this many columns the tabs sit closer together (so the seven fit in 80 columns)."""

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < self.NARROW, "-narrow")

    def on_mount(self) -> None:
        self.set_class(self.app.size.width < self.NARROW, "-narrow")
        self.query_one("#prompt", Input).display = False
        self.focus_table()
        self.post_message(self.Ready())

    @property
    def current_view(self) -> str:
        """The active view name."""
        try:
            return self.query_one("#views", TabbedContent).active or VIEWS[0]
        except Exception:  # noqa: BLE001 - before compose
            return VIEWS[0]

    def panel(self, view: str | None = None) -> Panel:
        """The panel of ``view`` (default: the active one)."""
        return self.query_one(f"#{view or self.current_view}-panel", Panel)

    def focus_table(self) -> None:
        """Give the keyboard to the active panel's table."""
        try:
            self.panel().table.focus()
        except Exception:  # noqa: BLE001 - during shutdown
            pass

    @property
    def prompt_open(self) -> bool:
        """The prompt has the keyboard (tab then moves focus instead of switching views)."""
        try:
            return self.query_one("#prompt", Input).has_focus
        except Exception:  # noqa: BLE001
            return True

    # ---- data from the app (attributes down) --------------------------------------------------
    def show_snapshot(self, snap: Snapshot) -> None:
        """Show a snapshot with a reachable broker in every panel and in the tab labels."""
        for panel in self.query(Panel):
            panel.show_snapshot(snap)
        self._update_tabs(snap)

    def reset(self) -> None:
        """Empty every panel and reset the tab labels (``:ctx`` switched the broker)."""
        for panel in self.query(Panel):
            panel.reset()
        tabs = self.query_one("#views", TabbedContent)
        for view, label in TAB_LABELS.items():
            tab = tabs.get_tab(view)
            tab.label = Text(label)
            tab.set_class(False, "-alert")

    def redraw(self) -> None:
        """Cell colours come from the theme: redraw every table with the new one."""
        for panel in self.query(Panel):
            panel.table.invalidate()
            if panel.is_displayed_view():
                panel.resync()
            else:
                panel._synced = None

    def show_status(self, state: StatusState, secrets: tuple[str, ...]) -> None:
        """Update the status bar (no-op before compose / while shutting down)."""
        try:
            bar = self.query_one(StatusBar)
        except Exception:  # noqa: BLE001
            return
        bar.show(state, secrets)

    def show_quarantine(self, entries: tuple[Any, ...], error: str | None) -> None:
        """Show the quarantine list read by the app's worker (or why it could not be read)."""
        self.query_one(QuarantinePanel).show_entries(entries, error)
        tab = self.query_one("#views", TabbedContent).get_tab("quarantine")
        if error is None:
            tab.label = Text(f"Quarantine {len(entries)}")

    def _update_tabs(self, snap: Snapshot) -> None:
        tabs = self.query_one("#views", TabbedContent)
        online = sum(1 for w in snap.workers if w.online)
        labels = {
            "queues": f"Queues {len(snap.queues)}",
            "unacked": f"Unacked {snap.unacked_total:,}" + (f" ⚠{len(snap.orphaned)}" if snap.orphaned else ""),
            "workers": f"Workers {online}/{len(snap.workers)}",
            "tasks": "Tasks" + (f" ✖{dict(snap.tasks.states).get('FAILURE', 0):,}"
                                if dict(snap.tasks.states).get("FAILURE") else ""),
            "poison": f"Poison {len(snap.poison)}" + (" ⚠" if snap.poison else ""),
        }
        for view, label in labels.items():
            tab = tabs.get_tab(view)
            if tab.label_text != label:
                tab.label = Text(label)
            tab.set_class(view in ("unacked", "poison") and (bool(snap.orphaned) if view == "unacked"
                                                             else bool(snap.poison)), "-alert")
        overview = self.query_one(OverviewPanel)
        if not overview.is_displayed_view():  # shown: its resync already computed them
            overview.problems = overview.compute_problems(snap)
        label, alert = overview.tab_label()
        tab = tabs.get_tab("overview")
        if tab.label_text != label:
            tab.label = Text(label)
        tab.set_class(alert, "-alert")

    # ---- views -------------------------------------------------------------------------------
    def show_view(self, view: str) -> None:
        """Switch to ``view`` and focus its table."""
        if view not in VIEWS:
            self.dash_app.say(f"unknown view {view!r}; views: {', '.join(VIEWS)}", severity="warning")
            return
        self.query_one("#views", TabbedContent).active = view
        self._view_shown(view)

    def step_view(self, step: int) -> None:
        """Next (+1) / previous (-1) view, wrapping."""
        i = VIEWS.index(self.current_view)
        self.show_view(VIEWS[(i + step) % len(VIEWS)])

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._view_shown(self.current_view)

    def _view_shown(self, view: str) -> None:
        panel = self.panel(view)
        snapshot = self.dash_app.snapshot
        if snapshot is not None and panel._synced is not snapshot:
            panel.show_snapshot(snapshot, force=True)
        if view == "quarantine":
            self.dash_app.load_quarantine()
        if not self.query_one("#prompt", Input).has_focus:
            panel.table.focus()

    # ---- the prompt: filter, jump, worker command, search ----------------------------------------
    def prompt_width(self) -> int:
        """Characters of placeholder the prompt shows (its width less the cursor cell)."""
        return max(20, (self.size.width or self.app.size.width) - 2)

    def _open_prompt(self, mode: str, value: str, placeholder: str) -> None:
        prompt = self.query_one("#prompt", Input)
        self.prompt_mode = mode
        prompt.suggester = (SuggestFromList([*VIEWS, *SCREENS], case_sensitive=False) if mode == "jump"
                            else None)
        prompt.placeholder = placeholder
        prompt.value = value
        prompt.display = True
        prompt.focus()

    def _close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        prompt.display = False
        self.focus_table()

    def action_filter(self) -> None:
        """Open the filter prompt for the current view (the Tasks view searches instead)."""
        panel = self.panel()
        if panel.VIEW == "tasks":
            self._open_prompt("search", "", fit_hint("/ search tasks: ", (
                "words", "field:value (name: id: state: worker: queue: exc: args:)", "-exclude", '"a phrase"',
                "syntax in the help: ?"), self.prompt_width(), more="… (syntax: ?)"))
            return
        self._open_prompt("filter", panel.filter_text, f"/ filter {panel.VIEW} (enter keeps it, esc clears)")

    def action_jump(self) -> None:
        """Open the ``:`` prompt to jump to a view."""
        self._open_prompt("jump", "", fit_hint(": view — ", (" ".join(VIEWS), "or " + " ".join(SCREENS)),
                                               self.prompt_width(), more="…"))

    def open_control_prompt(self, workers: tuple[Any, ...]) -> None:
        """Ask for a one-line worker command (grow 2, rate-limit TASK 10/m, ...) for ``workers``."""
        if self.dash_app.read_only:
            self.dash_app.say("worker control is disabled: taskdash runs with --read-only", title="Read-only",
                              severity="warning", timeout=4)
            return
        self._control_targets = tuple(workers)
        width = self.prompt_width()
        names = ", ".join(w.hostname for w in workers[:3]) + (" …" if len(workers) > 3 else "")
        if len(names) > width // 3:  # the commands matter more than every name
            names = workers[0].hostname if len(workers) == 1 else f"{len(workers)} workers"
            if len(names) > width // 3:
                names = names[: max(8, width // 3 - 1)] + "…"
        self._open_prompt("control", "", fit_hint(f"command for {names}: ", CONTROL_HINTS, width))

    @on(Input.Changed, "#prompt")
    def _prompt_changed(self, event: Input.Changed) -> None:
        if self.prompt_mode == "filter" and event.input.display:
            self.panel().set_filter(event.value)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        mode = self.prompt_mode
        app = self.dash_app
        word, _, arg = value.strip().lstrip(":").strip().partition(" ")
        view = resolve_view(value) if mode == "jump" and word.lower() not in SCREENS else None
        if view is not None:
            # Switch first, while the prompt still has the keyboard: closing it then focuses the new
            # view's table (focusing the old one first would switch the tabs back).
            self.show_view(view)
        self._close_prompt()
        if mode == "control":
            self._control_submitted(value)
        elif mode == "search":
            if value:
                app.say(f"searching for {value!r}…", title="Searching", timeout=2)
                self._run_search(value, app.snapshot)
        elif mode == "jump":
            word = word.lower()
            if word in ARG_SCREENS:
                getattr(app, f"action_{word}")(arg.strip())
                return
            if word in SCREENS:
                getattr(app, f"action_{word}")()
                return
            if view is None:
                app.say(f"no view matches {value!r}; try one of: {', '.join(VIEWS)}", severity="warning")

    def _control_submitted(self, text: str) -> None:
        if not text:
            return
        from collectors.writes.actions import ActionError
        from collectors.writes.control import parse_command

        try:
            command = parse_command(text)
        except ActionError as exc:
            self.dash_app.say(str(exc), title="Worker command", severity="error", timeout=6)
            return
        self.post_message(WriteRequested("control", self._control_targets, command=command))

    def action_escape(self) -> None:
        """Close the prompt / clear the filter / clear marks."""
        prompt = self.query_one("#prompt", Input)
        panel = self.panel()
        if prompt.display:
            if self.prompt_mode == "filter":
                panel.set_filter("")
            self._close_prompt()
        elif panel.filter_text:
            panel.set_filter("")
        elif panel.table.marked:
            panel.table.clear_marks()
            panel._update_title()

    # ---- task search ---------------------------------------------------------------------------
    @work(thread=True, group="search", exclusive=True, exit_on_error=False, description="task search")
    def _run_search(self, text: str, snapshot: Snapshot | None) -> None:
        """``search_all`` over unacked, queued and stored results (thread), then the results screen."""
        from collectors.reads.search import SEARCH_HELP, SearchError, search_all

        app = self.dash_app
        settings = app.settings
        try:
            outcome = search_all(settings, text, limit=SEARCH_LIMIT, snapshot=snapshot)
        except SearchError as exc:
            app.call_from_thread(app.say, f"{exc}\n\n{SEARCH_HELP}", title="Search", severity="error",
                                 timeout=15)
            return
        except Exception as exc:  # noqa: BLE001 - Redis down, ...: tell, never crash
            msg = mask_text(f"{type(exc).__name__}: {exc}", settings.broker_url, settings.backend_url)
            app.call_from_thread(app.say, msg, title="Search failed", severity="error", timeout=8)
            return
        app.call_from_thread(self._show_search, outcome)

    def _show_search(self, outcome: Any) -> None:
        from tui.screens.search import SearchScreen

        if not self.app.screen_stack:
            return
        self.app.push_screen(SearchScreen(outcome, limit=SEARCH_LIMIT), lambda _: self.focus_table())

    # ---- details -------------------------------------------------------------------------------
    @on(DetailRequested)
    def _detail_requested(self, message: DetailRequested) -> None:
        app = self.dash_app
        snap = app.snapshot
        item = message.item
        if snap is None:
            return
        kind = message.kind
        if kind == "queue":
            title = f"Queue {item.name}"
            sections = details.queue_sections(item, snap, app.history.depth_values(item.name))
        elif kind == "unacked":
            title = f"Unacked message {item.task or '?'} [{item.task_id or item.delivery_tag}]"
            sections = details.unacked_sections(item, snap)
        elif kind == "worker":
            if app.load_details:
                # Live: the worker describes itself (stats, pool, queues, registered, conf), in a thread.
                from tui.screens.worker_detail import WorkerDetailScreen

                hostname = item.hostname
                app.push_screen(WorkerDetailScreen(hostname, loader=partial(app.worker_details, hostname)))
                return
            title = f"Worker {item.hostname}"
            sections = details.worker_sections(item, snap)
        elif kind == "failure":
            title = f"Failed task {item.task or '?'} [{item.task_id}]"
            sections = details.failure_sections(item, snap)
        elif kind == "poison":
            title = f"Poison suspect {item.task or '?'} [{item.task_id}]"
            if app.deliveries_of(item) != item.deliveries:  # the persistent history saw more
                item = dataclasses.replace(item, deliveries=app.deliveries_of(item))
            sections = details.poison_sections(item, snap)
            sections.insert(2, details.forensics_section(app.forensics.victims(item.task_id),
                                                         app.forensics.took_down(item.task_id), snap.taken_at))
        else:
            title = "Quarantined message"
            sections = details.generic_sections("Quarantined message", item)
        app.push_screen(DetailScreen(title, sections, loader=self.detail_loader(kind, item)))

    def detail_loader(self, kind: str, item: Any) -> Callable[[], Sequence[details.Section]] | None:
        """The slow part of a detail screen (headers, stored result), run in a thread by the screen."""
        app = self.dash_app
        if not app.load_details or kind not in ("unacked", "poison"):
            return None
        tag = getattr(item, "delivery_tag", None)
        task_id = getattr(item, "task_id", None)
        if not tag and not task_id:
            return None
        from tui.loaders import detail_sections

        return partial(detail_sections, app.settings, tag, task_id)
