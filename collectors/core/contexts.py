"""Contexts: several brokers/apps in one config file, switched like k9s contexts.

File: ``$TASKDASH_CONFIG``, else ``$XDG_CONFIG_HOME/taskdash/config.toml``, else
``~/.config/taskdash/config.toml``::

    default = "local"

    [contexts.local]
    broker = "redis://localhost:6379/0"

    [contexts.prod]
    broker = "redis://:secret@prod-redis:6379/0"
    backend = "redis://:secret@prod-redis:6379/1"
    app = "proj.celery"
    read_only = true          # a context can only make taskdash safer, never lift --read-only

Optional keys: ``interval``, ``visibility_timeout``, ``global_keyprefix``, ``audit_log``, and every other
transport option of collectors.core.config.APP_OPTIONS (for a context whose app taskdash cannot import)::

    [contexts.billing]
    broker = "rediss://monitor:secret@billing-redis:6380/0"
    sep = ":"                              # kombu's priority separator
    priority_steps = [0, 5, 9]             # or "0,5,9"
    queue_order_strategy = "priority"
    result_keyprefix = "billing-results"
    ssl_cert_reqs = "required"
    ssl_ca_certs = "/etc/ssl/billing-ca.pem"
    transport_options = { unacked_key = "billing_unacked" }   # any other broker transport option
    backend_transport_options = { result_chord_ordered = false }
    app_path = "~/src/billing"             # with app = "billing.celery": import it from there

Alert rules for ``taskdash watch`` (collectors.analysis.alerts): a top-level ``[alerts]`` table for every
context and ``[contexts.NAME.alerts]`` over it (thresholds, ``enabled``/``disabled`` rules, ``for`` and
``severity`` per rule, ``cooldown``). They are kept here as raw tables and validated by the alerts module.

Precedence (``resolve_settings(context=...)``): an explicitly chosen context (``--context NAME``,
``TASKDASH_CONTEXT``, ``:ctx NAME``) acts like command-line flags (only real flags beat it); the
file's ``default`` context acts like ``TASKDASH_*`` variables (the real environment beats it) and is
skipped entirely when a broker is given by ``--broker`` or ``TASKDASH_BROKER``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (a dependency there)
    import tomli as tomllib

from collectors.core.config import APP_OPTIONS, ConfigError, Settings, mask_url

_KEYS = {"broker", "backend", "app", "read_only", "interval", "visibility_timeout", "global_keyprefix",
         "audit_log", "description", "alerts"}
_OPTION_KEYS = {o.key for o in APP_OPTIONS} - _KEYS
"""Transport options a context may set besides the keys above (kept in ``Context.options``)."""
_KEYS |= _OPTION_KEYS
_ENV_NAMES = {"broker": "TASKDASH_BROKER", "backend": "TASKDASH_BACKEND", "app": "TASKDASH_APP",
              "interval": "TASKDASH_INTERVAL", "visibility_timeout": "TASKDASH_VISIBILITY_TIMEOUT",
              "global_keyprefix": "TASKDASH_GLOBAL_KEYPREFIX", "audit_log": "TASKDASH_AUDIT_LOG",
              **{o.key: o.env for o in APP_OPTIONS if o.key in _OPTION_KEYS}}


@dataclass(frozen=True, slots=True)
class Context:
    """One named broker/app."""

    name: str
    broker: str | None = None
    backend: str | None = None
    app: str | None = None
    read_only: bool = False
    interval: float | None = None
    visibility_timeout: float | None = None
    global_keyprefix: str | None = None
    audit_log: str | None = None
    description: str | None = None
    alerts: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """The context's ``[contexts.NAME.alerts]`` table (raw; see collectors.analysis.alerts)."""
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Other transport options (``sep``, ``priority_steps``, ``ssl_ca_certs``, ...; collectors.core.config
    APP_OPTIONS), validated, as ``TASKDASH_*`` variable values."""

    def describe(self) -> str:
        """One line with credentials masked (for lists and notifications)."""
        parts = [mask_url(self.broker) if self.broker else "(broker from env/defaults)"]
        if self.app:
            parts.append(f"-A {self.app}")
        if self.read_only:
            parts.append("read-only")
        if self.description:
            parts.append(f"— {self.description}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class ContextsFile:
    """The parsed config file."""

    path: Path | None
    contexts: Mapping[str, Context]
    default: str | None = None
    alerts: Mapping[str, Any] = field(default_factory=dict)
    """The top-level ``[alerts]`` table (every context; raw, see collectors.analysis.alerts)."""

    def names(self) -> list[str]:
        return sorted(self.contexts)

    def get(self, name: str) -> Context:
        """The context called ``name``; ConfigError naming the known ones otherwise."""
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            where = self.path or config_path()
            raise ConfigError(f"unknown context {name!r} (in {where}; known: {known})") from None


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is looked for."""
    env = os.environ if env is None else env
    if env.get("TASKDASH_CONFIG"):
        return Path(env["TASKDASH_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "taskdash" / "config.toml"


def load_contexts(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ContextsFile:
    """Parse the config file (an absent file means no contexts); ConfigError on a broken file."""
    p = Path(path) if path is not None else config_path(env)
    if not p.exists():
        return ContextsFile(None, {}, None)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc
    raw = data.get("contexts", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: [contexts] must be a table of [contexts.NAME] tables")
    contexts: dict[str, Context] = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: contexts.{name} must be a table")
        unknown = set(values) - _KEYS
        if unknown:
            raise ConfigError(f"{p}: contexts.{name}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"(allowed: {', '.join(sorted(_KEYS))})")
        try:
            contexts[name] = Context(
                name=name, broker=_opt_str(values.get("broker")), backend=_opt_str(values.get("backend")),
                app=_opt_str(values.get("app")), read_only=bool(values.get("read_only", False)),
                interval=_opt_float(values.get("interval")),
                visibility_timeout=_opt_float(values.get("visibility_timeout")),
                global_keyprefix=_opt_str(values.get("global_keyprefix")),
                audit_log=_opt_str(values.get("audit_log")), description=_opt_str(values.get("description")),
                alerts=_opt_table(values.get("alerts"), f"contexts.{name}.alerts"),
                options=_options(values),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{p}: contexts.{name}: {exc}") from exc
    default = data.get("default")
    if default is not None and (not isinstance(default, str) or default not in contexts):
        raise ConfigError(f"{p}: default = {default!r} is not one of the contexts ({', '.join(sorted(contexts))})")
    try:
        alerts = _opt_table(data.get("alerts"), "alerts")
    except TypeError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return ContextsFile(p, contexts, default, alerts)


def _options(values: Mapping[str, Any]) -> dict[str, str]:
    """The context's transport options, checked by the same parsers as the flags, as the text of their
    ``TASKDASH_*`` variable (apply_context layers a context through the environment)."""
    import json

    out: dict[str, str] = {}
    for opt in APP_OPTIONS:
        if opt.key not in _OPTION_KEYS or values.get(opt.key) is None:
            continue
        raw = values[opt.key]
        if opt.multiple and not isinstance(raw, dict):
            raise TypeError(f"{opt.key} must be a table")
        if not opt.multiple and isinstance(raw, dict | bool):
            raise TypeError(f"{opt.key}: expected a value, got {raw!r}")
        parsed = opt.parse(raw)
        if opt.multiple:
            out[opt.key] = json.dumps(parsed)
        elif opt.key == "priority_steps":
            out[opt.key] = ",".join(str(s) for s in parsed)
        elif opt.key == "sep":
            out[opt.key] = str(raw).encode("unicode_escape").decode("ascii")
        else:
            out[opt.key] = str(parsed)
    return out


def _opt_table(v: Any, what: str) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise TypeError(f"{what} must be a table")
    return v


def _opt_str(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


def apply_context(
    context: str | None, env: Mapping[str, str], broker: str | None, backend: str | None, app: str | None,
) -> tuple[str | None, str | None, str | None, Mapping[str, str], bool, str | None]:
    """The hook ``resolve_settings`` calls: fold a context into flags and environment.

    Returns ``(broker, backend, app, env, read_only, context_name)``. An explicit context (argument or
    ``TASKDASH_CONTEXT``) fills unset flags; the file's default context only fills unset
    ``TASKDASH_*`` variables, and only when no broker was given (flag or ``TASKDASH_BROKER``).
    Without a config file (and no explicit context) nothing changes.
    """
    name = context or env.get("TASKDASH_CONTEXT") or None
    explicit = name is not None
    if not explicit and not config_path(env).exists():
        return broker, backend, app, env, False, None
    cfg = load_contexts(env=env)
    if not explicit:
        name = cfg.default
        if name is None or broker or env.get("TASKDASH_BROKER"):
            # A broker chosen by flag/env is another system: none of the default context applies
            # (its app, key prefix or visibility timeout would describe the wrong broker).
            return broker, backend, app, env, False, None
    if explicit and cfg.path is None:
        raise ConfigError(f"context {name!r} requested but {config_path(env)} does not exist")
    assert name is not None
    ctx = cfg.get(name)
    layered = dict(env)
    values = {"broker": ctx.broker, "backend": ctx.backend, "app": ctx.app, "interval": ctx.interval,
              "visibility_timeout": ctx.visibility_timeout, "global_keyprefix": ctx.global_keyprefix,
              "audit_log": ctx.audit_log, **ctx.options}
    if explicit:
        broker = broker or ctx.broker
        backend = backend or ctx.backend
        app = app or ctx.app
        for key in ("broker", "backend", "app"):
            values.pop(key)
    for key, value in values.items():
        if value is not None and (explicit or not env.get(_ENV_NAMES[key])):
            layered[_ENV_NAMES[key]] = str(value)
    return broker, backend, app, layered, ctx.read_only, name


def switch(name: str, current: Settings, env: Mapping[str, str] | None = None) -> Settings:
    """Settings for context ``name`` (the TUI's ``:ctx NAME``), keeping the session's safety and pace.

    The running session's ``--read-only`` is kept (a switch never lifts it); interval and audit log
    carry over unless the context sets its own. Raises ConfigError (unknown context, bad file,
    unloadable app, bad URL) so the caller can show the message and stay on the current context.
    """
    from collectors.core.config import resolve_settings

    env = os.environ if env is None else env
    clean = {k: v for k, v in env.items() if k not in ("TASKDASH_BROKER", "TASKDASH_BACKEND", "TASKDASH_APP")}
    ctx = load_contexts(env=env).get(name)
    return resolve_settings(
        context=name, env=clean,
        read_only=True if current.read_only else None,
        interval=None if ctx.interval is not None else current.interval,
        audit_log=None if ctx.audit_log is not None else current.audit_log,
    )


def list_contexts(env: Mapping[str, str] | None = None) -> list[tuple[str, str, bool]]:
    """(name, masked one-line description, is_default) for every context, for ``:ctx`` completion."""
    cfg = load_contexts(env=env)
    return [(n, cfg.contexts[n].describe(), n == cfg.default) for n in cfg.names()]
