"""``taskdash watch``: a headless loop on the Collector that evaluates the alert rules and notifies.

The rules are collectors.analysis.alerts (the same as deploy/prometheus/taskdash-rules.yml). A finding
becomes an alert once it has held for the rule's ``for`` duration; each (rule, subject) notifies once
when it fires, again only after ``cooldown`` seconds if it is still firing (a reminder), and once when
it resolves (after ``resolve_after`` clear evaluations; a rule that could not be judged — broker down,
inspect failed — neither fires nor resolves).

Notifications: ``--notify URL`` POSTs JSON (Slack-compatible ``text`` plus ``status``, ``rule``,
``subject``, ``severity``, ``value``, ``since``, ``fix`` ...); ``--notify-cmd CMD`` runs CMD through the
shell with the same JSON on stdin. Each receiver has its own ordered outbox, delivered by one sender
thread: a failed delivery is retried with exponential backoff (1 s doubling to ``--retry-max``), a
resolve is never dropped (when an outbox is full the oldest *firing* notifications go first), and on
SIGTERM the outboxes get one last try within ``--flush-timeout``. The HTTP client is the standard
library's urllib.request: one POST per notification needs no connection pool, and no dependency is
added to an image that runs next to the user's workers.

Logs go to stdout, one line per event (URLs and commands of receivers are masked: webhook URLs carry
tokens). ``--once`` evaluates one snapshot (after ``--observe`` seconds), ignoring ``for`` durations,
notifies what it found and exits with the worst severity: 0 nothing (or info only), 3 warning (the
CLI's "found problems"), 7 critical; 2 when the broker cannot be reached (as every command).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import click

from collectors.analysis.alerts import RULES, SEVERITY_RANK, AlertConfig, AlertEvaluator, Evaluation, Finding
from collectors.core.config import Settings, mask_text
from collectors.core.errors import EXIT_CRITICAL as _EXIT_CRITICAL
from taskdash.cli import (
    EXIT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    attach_history,
    common_options,
    fail,
    handle_errors,
    settings_for,
)

EXIT_WARNING = EXIT_FOUND
"""``--once``: the worst alert is a warning (the CLI table's "found problems", like snapshot --fail-on)."""
EXIT_CRITICAL = _EXIT_CRITICAL
"""``--once``: a critical alert fired (7, "critical" in the table of collectors.core.errors.EXIT_CODES)."""

log = logging.getLogger("taskdash.watch")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def mask_receiver(url: str) -> str:
    """A webhook URL safe for a log line: scheme, host and port only (paths and queries carry tokens)."""
    try:
        p = urlsplit(url)
        host = p.hostname or "?"
        port = f":{p.port}" if p.port else ""
    except ValueError:
        return "<webhook>"
    rest = "/***" if (p.path not in ("", "/") or p.query) else ""
    return f"{p.scheme}://{host}{port}{rest}"


# ---- receivers ----------------------------------------------------------------------------------------
class DeliveryError(Exception):
    """A notification could not be delivered; ``retry`` False when trying again cannot help (HTTP 4xx)."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class WebhookSink:
    """POST the JSON body to a URL (Slack incoming webhooks, Mattermost, Teams workflows, any receiver)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.name = mask_receiver(url)

    def deliver(self, body: bytes, payload: dict[str, Any]) -> None:
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "taskdash-watch"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - URL given by the operator
                resp.read(4096)
        except urllib.error.HTTPError as exc:
            retry = exc.code in (408, 425, 429) or exc.code >= 500
            raise DeliveryError(f"HTTP {exc.code} {exc.reason}", retry=retry) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(mask_text(str(reason), self.url).replace(self.url, self.name)) from None


class CommandSink:
    """Run a shell command with the JSON on stdin (exit 0 = delivered); ``TASKDASH_ALERT_*`` in its env."""

    def __init__(self, command: str, index: int, timeout: float = 30.0) -> None:
        self.command = command
        self.timeout = timeout
        self.name = f"notify-cmd #{index}"

    def deliver(self, body: bytes, payload: dict[str, Any]) -> None:
        env = dict(os.environ)
        for key in ("status", "rule", "subject", "severity"):
            env[f"TASKDASH_ALERT_{key.upper()}"] = str(payload.get(key, ""))
        try:
            res = subprocess.run(self.command, shell=True, input=body, capture_output=True,  # noqa: S602
                                 timeout=self.timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise DeliveryError(f"timed out after {self.timeout:.0f} s") from None
        except OSError as exc:
            raise DeliveryError(str(exc)) from None
        if res.returncode != 0:
            tail = res.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise DeliveryError(f"exit {res.returncode} {tail[0][:200]}".rstrip())


# ---- outboxes -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Item:
    payload: dict[str, Any]
    body: bytes
    attempts: int = 0
    next_try: float = 0.0


@dataclass(slots=True)
class _Outbox:
    sink: Any
    items: deque[_Item] = field(default_factory=deque)
    delivered: int = 0
    failures: int = 0
    dropped: int = 0


class Dispatcher:
    """One sender thread, one ordered outbox per receiver, retries with exponential backoff."""

    def __init__(self, sinks: Iterable[Any], *, retry_base: float = 1.0, retry_max: float = 60.0,
                 max_queued: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self.outboxes = [_Outbox(s) for s in sinks]
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_queued = max_queued
        self._clock = clock
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> Dispatcher:
        if self.outboxes:
            self._thread = threading.Thread(target=self._run, name="taskdash-notify", daemon=True)
            self._thread.start()
        return self

    def submit(self, payload: dict[str, Any], body: bytes) -> None:
        with self._cond:
            for box in self.outboxes:
                if len(box.items) >= self.max_queued:
                    self._drop_one(box)
                box.items.append(_Item(payload, body))
            self._cond.notify_all()

    def _drop_one(self, box: _Outbox) -> None:
        """Make room: the oldest firing notification goes (a resolve is never dropped)."""
        for i, item in enumerate(box.items):
            if item.payload.get("status") != "resolved":
                del box.items[i]
                box.dropped += 1
                log.warning("outbox of %s full: dropped a queued notification (%s %s)", box.sink.name,
                            item.payload.get("rule"), item.payload.get("subject"))
                return

    def pending(self) -> int:
        with self._cond:
            return sum(len(b.items) for b in self.outboxes)

    def _due(self, now: float) -> tuple[list[_Outbox], float | None]:
        due, wake = [], None
        for box in self.outboxes:
            if box.items:
                t = box.items[0].next_try
                if t <= now:
                    due.append(box)
                else:
                    wake = t if wake is None else min(wake, t)
        return due, wake

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                due, wake = self._due(self._clock())
                if not due:
                    self._cond.wait(None if wake is None else max(0.01, wake - self._clock()))
                    continue
            for box in due:
                self._try_head(box)

    def _try_head(self, box: _Outbox, *, final: bool = False) -> bool:
        with self._cond:
            if not box.items:
                return True
            item = box.items[0]
        p = item.payload
        try:
            box.sink.deliver(item.body, p)
        except DeliveryError as exc:
            with self._cond:
                item.attempts += 1
                box.failures += 1
                if not exc.retry:
                    box.items.popleft()
                    box.dropped += 1
                    log.error("notify %s rejected %s %s %s (not retried): %s", box.sink.name, p["status"],
                              p["rule"], p["subject"], exc)
                    return True
                delay = min(self.retry_max, self.retry_base * 2 ** (item.attempts - 1))
                item.next_try = self._clock() + delay
            log.warning("notify %s failed (%s %s %s, attempt %d): %s; %s", box.sink.name, p["status"], p["rule"],
                        p["subject"], item.attempts, exc, "giving up at exit" if final else f"retry in {delay:.0f} s")
            return False
        except Exception as exc:  # noqa: BLE001 - a broken receiver must never stop the watch
            with self._cond:
                item.attempts += 1
                item.next_try = self._clock() + self.retry_max
            log.error("notify %s crashed (%s): %s", box.sink.name, p["rule"], type(exc).__name__)
            return False
        with self._cond:
            if box.items and box.items[0] is item:
                box.items.popleft()
            box.delivered += 1
        log.info("notified %s: %s %s %s%s", box.sink.name, p["status"], p["rule"], p["subject"],
                 f" (after {item.attempts} failed attempt(s))" if item.attempts else "")
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every outbox is empty (the sender thread keeps retrying); True when all went."""
        deadline = self._clock() + timeout
        while self.pending() and self._clock() < deadline:
            time.sleep(0.05)
        return not self.pending()

    def close(self, flush_timeout: float) -> int:
        """Stop the sender thread, then give every queued notification one last try within
        ``flush_timeout`` (backoff ignored). Returns how many were left undelivered (logged)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(flush_timeout, 1.0))
        deadline = self._clock() + flush_timeout
        for box in self.outboxes:
            while box.items and self._clock() < deadline:
                if not self._try_head(box, final=True):
                    break
        left = self.pending()
        if left:
            log.error("%d notification(s) undelivered at exit", left)
        return left


# ---- alert state ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class _State:
    finding: Finding
    since: float
    firing: bool = False
    fired_at: float | None = None
    last_sent: float | None = None
    misses: int = 0


class AlertState:
    """``for``, dedupe, cooldown and resolve per (rule, subject): evaluations in, notifications out."""

    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self.states: dict[tuple[str, str], _State] = {}

    def firing(self) -> list[Finding]:
        return [st.finding for st in self.states.values() if st.firing]

    def update(self, ev: Evaluation, now: float) -> list[tuple[str, _State, bool]]:
        """Feed one evaluation; returns (status, state, repeat) for each notification to send."""
        cfg = self.config
        out: list[tuple[str, _State, bool]] = []
        present = {f.ident: f for f in ev.findings}
        for ident, f in present.items():
            st = self.states.get(ident)
            if st is None:
                st = self.states[ident] = _State(f, since=now)
            st.finding, st.misses = f, 0
            if not st.firing:
                if now - st.since >= cfg.rule_for(f.rule):
                    st.firing, st.fired_at, st.last_sent = True, now, now
                    out.append(("firing", st, False))
            elif cfg.cooldown_s > 0 and st.last_sent is not None and now - st.last_sent >= cfg.cooldown_s:
                st.last_sent = now
                out.append(("firing", st, True))
        for ident, st in list(self.states.items()):
            if ident in present or st.finding.rule in ev.unknown:
                continue  # still there, or cannot be judged now: no change either way
            if not st.firing:
                del self.states[ident]
                continue
            st.misses += 1
            if st.misses >= cfg.resolve_after:
                del self.states[ident]
                out.append(("resolved", st, False))
        return out


def payload_for(status: str, st: _State, *, now: float, repeat: bool = False, context: str | None = None,
                broker: str = "") -> dict[str, Any]:
    """The notification body: Slack-compatible ``text`` plus structured fields."""
    f = st.finding
    since = st.since
    if status == "resolved":
        took = now - (st.fired_at or since)
        text = f"[RESOLVED] {f.rule} {f.subject} (was {f.severity}, firing {took:.0f} s)"
    else:
        text = (f"[{'STILL ' if repeat else ''}FIRING {f.severity.upper()}] {f.rule} {f.subject}: {f.summary}"
                f" — fix: {f.fix}")
    where = context or broker
    if where:
        text += f" [{where}]"
    return {
        "text": text, "status": status, "rule": f.rule, "subject": f.subject, "severity": f.severity,
        "value": f.value, "since": since, "since_iso": _iso(since), "fix": f.fix, "key": f.key,
        "summary": f.summary, "repeat": repeat, "context": context, "broker": broker, "at": now, "at_iso": _iso(now),
        "prometheus_alert": RULES[f.rule].prometheus,
    }


def encode(payload: dict[str, Any], settings: Settings) -> bytes:
    """JSON body with every credential of the broker/backend URLs masked (belt and braces)."""
    return mask_text(json.dumps(payload, default=str), settings.broker_url, settings.backend_url).encode("utf-8")


def alert_config_for(settings: Settings, cooldown: float | None = None) -> AlertConfig:
    """The config file's ``[alerts]`` table with the context's ``[contexts.NAME.alerts]`` over it."""
    from collectors.core.config import ConfigError
    from collectors.core.contexts import load_contexts

    try:
        cfg_file = load_contexts()
        ctx_alerts = cfg_file.get(settings.context).alerts if settings.context else {}
        overrides = {"cooldown_s": cooldown} if cooldown is not None else {}
        return AlertConfig.from_layers(cfg_file.alerts, ctx_alerts, **overrides)
    except ValueError as exc:
        where = f"contexts.{settings.context}.alerts / alerts" if settings.context else "alerts"
        raise ConfigError(f"config file [{where}]: {exc}") from exc


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        handler.setFormatter(fmt)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _log_event(p: dict[str, Any]) -> None:
    level = logging.INFO if p["status"] == "resolved" else (
        logging.ERROR if p["severity"] == "critical" else logging.WARNING)
    log.log(level, "%s %s %s %s value=%s since=%s fix=%s", p["status"].upper() + (" (repeat)" if p["repeat"] else ""),
            p["severity"], p["rule"], p["subject"], f"{p['value']:g}", p["since_iso"], p["fix"])


class Watcher:
    """The loop: collect → evaluate → state → notify. ``step()`` is one round (tests drive it)."""

    def __init__(self, collector: Any, settings: Settings, config: AlertConfig, dispatcher: Dispatcher,
                 *, health_interval: float = 30.0) -> None:
        self.collector = collector
        self.settings = settings
        self.config = config
        self.dispatcher = dispatcher
        self.evaluator = AlertEvaluator(config)
        self.state = AlertState(config)
        self.health_interval = health_interval
        self._health: Any = None
        self._health_at = -1e18
        self._health_client: Any = None
        self.stop_event = threading.Event()

    def _health_reading(self) -> Any:
        memory_rules = {"broker_memory_high", "broker_evicting_policy", "broker_evicted_keys"}
        if not (memory_rules & self.config.enabled) or self.health_interval <= 0:
            return None
        if time.monotonic() - self._health_at >= self.health_interval:
            from collectors.core.config import redis_client
            from collectors.reads.health import redis_health

            self._health_at = time.monotonic()
            try:
                if self._health_client is None:
                    self._health_client = redis_client(self.settings.broker_url, self.settings)
                self._health = redis_health(self._health_client)
            except Exception as exc:  # noqa: BLE001 - a failed INFO leaves the memory rules unjudged
                log.warning("health read failed: %s", mask_text(str(exc), self.settings.broker_url))
                self._health = None
        return self._health

    def notify(self, status: str, st: _State, now: float, repeat: bool = False) -> dict[str, Any]:
        p = payload_for(status, st, now=now, repeat=repeat, context=self.settings.context,
                        broker=self.settings.broker_masked)
        _log_event(p)
        self.dispatcher.submit(p, encode(p, self.settings))
        return p

    def step(self) -> list[dict[str, Any]]:
        snap = self.collector.collect()
        ev = self.evaluator.evaluate(snap, self._health_reading())
        now = time.time()
        return [self.notify(status, st, now, repeat) for status, st, repeat in self.state.update(ev, now)]

    def run(self) -> None:
        interval = max(0.1, self.settings.interval)
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the watch outlives any one bad refresh
                log.error("refresh failed: %s", mask_text(f"{type(exc).__name__}: {exc}", self.settings.broker_url,
                                                          self.settings.backend_url))
            self.stop_event.wait(max(0.0, interval - (time.monotonic() - t0)))


def _sinks(urls: tuple[str, ...], cmds: tuple[str, ...], timeout: float) -> list[Any]:
    sinks: list[Any] = []
    for url in urls:
        if urlsplit(url).scheme not in ("http", "https"):
            raise click.BadParameter(f"{mask_receiver(url)} is not an http(s) URL", param_hint="--notify")
        sinks.append(WebhookSink(url, timeout=timeout))
    sinks.extend(CommandSink(c, i + 1, timeout=max(timeout, 30.0)) for i, c in enumerate(cmds))
    return sinks


def rules_table(config: AlertConfig) -> str:
    lines = [f"{'rule':24} {'severity':9} {'for':>6}  {'on':3}  fix"]
    for name, r in RULES.items():
        lines.append(f"{name:24} {config.rule_severity(name):9} {config.rule_for(name):>5.0f}s  "
                     f"{'yes' if name in config.enabled else 'no':3}  {r.fix}")
    return "\n".join(lines)


@click.command("watch")
@click.option("--notify", "urls", multiple=True, metavar="URL",
              help="POST each alert and resolve as JSON to URL (repeatable; Slack-compatible 'text').")
@click.option("--notify-cmd", "cmds", multiple=True, metavar="CMD",
              help="Run CMD (through the shell) with the alert JSON on stdin (repeatable).")
@click.option("--once", is_flag=True,
              help="Evaluate one snapshot, notify, exit 0/3/7 (nothing/warning/critical). For cron.")
@click.option("--observe", type=float, default=0.0, show_default=True,
              help="With --once: keep polling this long first (poison detection needs history).")
@click.option("--cooldown", type=float, default=None,
              help="Seconds before a still-firing alert notifies again (config 'cooldown', default 3600; 0: never).")
@click.option("--health-interval", type=float, default=30.0, show_default=True,
              help="Seconds between two INFO reads for the memory/eviction rules (0: off).")
@click.option("--retry-max", type=float, default=60.0, show_default=True,
              help="Longest wait between two delivery attempts (backoff doubles from 1 s).")
@click.option("--timeout", "send_timeout", type=float, default=10.0, show_default=True,
              help="Timeout of one HTTP delivery.")
@click.option("--flush-timeout", type=float, default=10.0, show_default=True,
              help="At exit (SIGTERM, --once): how long queued notifications may still be tried.")
@click.option("--poison-threshold", type=int, default=None, help="Deliveries that make a poison suspect (3).")
@click.option("--list-rules", is_flag=True, help="Print the rules (with this context's config) and exit.")
@common_options
@click.pass_context
@handle_errors
def watch_cmd(ctx: click.Context, urls: tuple[str, ...], cmds: tuple[str, ...], once: bool, observe: float,
              cooldown: float | None, health_interval: float, retry_max: float, send_timeout: float,
              flush_timeout: float, poison_threshold: int | None, list_rules: bool, **opts: Any) -> None:
    """Evaluate the alert rules on every refresh and notify on fire and on resolve (headless)."""
    settings = settings_for(ctx, opts, poison_threshold=poison_threshold)
    config = alert_config_for(settings, cooldown)
    if list_rules:
        click.echo(rules_table(config))
        sys.exit(EXIT_OK)
    _setup_logging()
    sinks = _sinks(urls, cmds, send_timeout)
    dispatcher = Dispatcher(sinks, retry_max=retry_max).start()
    from collectors.collector import Collector

    collector = Collector(settings, background=not once or observe > 0)
    attach_history(collector)
    watcher = Watcher(collector, settings, config, dispatcher, health_interval=health_interval)
    receivers = ", ".join(s.name for s in sinks) or "none (log only)"
    try:
        if once:
            code = _once(watcher, collector, settings, observe)
            dispatcher.drain(flush_timeout)
            dispatcher.close(0.0)
            sys.exit(code)

        def _stop(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            watcher.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        problem = collector.ping_broker()
        if problem:
            log.warning("broker %s unreachable at start: %s (watching anyway)", settings.broker_masked, problem)
        log.info("taskdash watch on %s%s every %.1f s; rules: %s; receivers: %s", settings.broker_masked,
                 f" (context {settings.context})" if settings.context else "", settings.interval,
                 ", ".join(r for r in RULES if r in config.enabled), receivers)
        watcher.run()
        firing = watcher.state.firing()
        log.info("stopped (%d alert(s) firing)", len(firing))
    finally:
        if not once:
            dispatcher.close(flush_timeout)
        collector.close()
    sys.exit(EXIT_OK)


def _once(watcher: Watcher, collector: Any, settings: Settings, observe: float) -> int:
    problem = collector.ping_broker()
    if problem:
        fail(f"broker {settings.broker_masked} unreachable: {problem}", EXIT_UNREACHABLE)
    snap = collector.collect()
    deadline = time.monotonic() + max(observe, 0.0)
    while time.monotonic() < deadline:
        time.sleep(min(settings.interval, max(deadline - time.monotonic(), 0)))
        snap = collector.collect()
    ev = watcher.evaluator.evaluate(snap, watcher._health_reading())
    now = time.time()
    for f in ev.findings:  # --once has no history: "for" durations do not apply
        watcher.notify("firing", _State(f, since=now, firing=True, fired_at=now), now)
    if ev.unknown:
        log.info("not judged this time: %s", ", ".join(sorted(ev.unknown)))
    worst = ev.worst()
    log.info("%d finding(s); worst severity: %s", len(ev.findings), worst or "none")
    if worst is None or SEVERITY_RANK[worst] < SEVERITY_RANK["warning"]:
        return EXIT_OK
    return EXIT_CRITICAL if worst == "critical" else EXIT_WARNING


COMMANDS = [watch_cmd]
