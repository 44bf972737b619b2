"""Connection settings and Redis key naming shared by every collector and action.

Resolution order (README, "Configuration"): flags > ``TASKDASH_*`` env > ``CELERY_BROKER_URL`` /
``CELERY_RESULT_BACKEND`` > the ``-A`` app's config > defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_BROKER = "redis://localhost:6379/0"
DEFAULT_PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
DEFAULT_SEP = "\x06\x16"
DEFAULT_VISIBILITY_TIMEOUT = 3600.0


class ConfigError(Exception):
    """A setting is wrong (bad URL, app that cannot be imported); the message is user-facing."""


_CRED_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^@/\s;]*)@")


def mask_url(url: str | None) -> str:
    """Return ``url`` with any password replaced by ``***`` (user names are kept).

    Works for multi-host URLs (``sentinel://:pw@h1;sentinel://:pw@h2``) and query-string passwords.
    """
    if not url:
        return ""

    def _sub(m: re.Match[str]) -> str:
        cred = m.group("cred")
        if ":" in cred:
            user = cred.split(":", 1)[0]
            return f"{m.group('scheme')}{user}:***@"
        if cred:
            # redis://password@host is accepted by redis-py as a password-only URL.
            return f"{m.group('scheme')}***@"
        return m.group(0)

    masked = _CRED_RE.sub(_sub, url)
    masked = re.sub(r"(?i)(password|passwd|pwd|token|secret)=([^&;]*)", r"\1=***", masked)
    return masked


def mask_text(text: str, *urls: str | None) -> str:
    """Mask every credential of ``urls`` (and any URL-shaped credential) inside free text."""
    out = text
    for url in urls:
        if not url:
            continue
        for part in url.split(";"):
            try:
                parts = urlsplit(part.strip())
                password = parts.password
            except ValueError:
                continue
            if password:
                # as written in the URL and as redis-py/kombu use it (percent-decoded)
                for form in {password, unquote(password)}:
                    if len(form) >= 3:
                        out = out.replace(form, "***")
        out = out.replace(url, mask_url(url))
    return _CRED_RE.sub(lambda m: mask_url(m.group(0) + "x")[:-1] if ":" in m.group("cred") else m.group(0), out)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a collector or action needs to know about the system it watches."""

    broker_url: str = DEFAULT_BROKER
    backend_url: str | None = None
    """Result backend URL; None means "same Redis as the broker, db+1 is NOT assumed": use broker."""
    app: str | None = None
    interval: float = 1.0
    read_only: bool = False
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    sep: str = DEFAULT_SEP
    global_keyprefix: str = ""
    result_keyprefix: str = ""
    """Result backend key prefix, already normalised the way Celery does (ends with _ : - or .)."""
    unacked_key: str = "unacked"
    unacked_index_key: str = "unacked_index"
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    backend_transport_options: Mapping[str, Any] = field(default_factory=dict)
    app_queues: tuple[str, ...] = ()
    """Task queue names declared by the -A app (task_queues, task_routes, task_default_queue)."""
    control_exchange: str = "celery"
    event_exchange: str = "celeryev"
    inspect_interval: float = 5.0
    inspect_timeout: float = 1.0
    unacked_window: int = 500
    scan_count: int = 2000
    """Result-backend keys visited per refresh by the incremental SCAN."""
    poison_threshold: int = 3
    socket_timeout: float = 5.0
    audit_log: str | None = None
    context: str | None = None
    """Name of the context (collectors.core.contexts) these settings came from, if any."""
    broker_use_ssl: Mapping[str, Any] = field(default_factory=dict)
    """The -A app's ``broker_use_ssl`` (ssl_cert_reqs, ssl_ca_certs, ...) for ``rediss://`` brokers."""
    backend_use_ssl: Mapping[str, Any] = field(default_factory=dict)
    """The -A app's ``redis_backend_use_ssl`` for a ``rediss://`` result backend."""

    def __repr__(self) -> str:
        """Like the dataclass repr, with every URL masked (a Settings may end up in a log or traceback)."""
        fields = ", ".join(
            f"{name}={mask_url(value)!r}" if name in ("broker_url", "backend_url") and value else
            f"{name}={mask_text(repr(value), self.broker_url, self.backend_url)}"
            for name in self.__dataclass_fields__
            for value in (getattr(self, name),)
        )
        return f"Settings({fields})"

    @property
    def effective_backend_url(self) -> str:
        return self.backend_url or self.broker_url

    @property
    def broker_masked(self) -> str:
        return mask_url(self.broker_url)

    @property
    def backend_masked(self) -> str:
        return mask_url(self.effective_backend_url)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def normalise_result_prefix(prefix: str | None) -> str:
    """Celery appends ``_`` to a backend ``global_keyprefix`` unless it ends in one of ``:_-.``."""
    if not prefix:
        return ""
    return prefix if prefix[-1] in ":_-." else prefix + "_"


def load_app(spec: str) -> Any:
    """Import a Celery app the way ``celery -A`` does (``module``, ``module:app``, ``module.attr``)."""
    try:
        from celery.app.utils import find_app
    except ImportError as exc:  # pragma: no cover - celery is a dependency
        raise ConfigError(f"celery is not installed: {exc}") from exc
    try:
        return find_app(spec)
    except Exception as exc:  # noqa: BLE001 - any import error becomes a user-facing message
        raise ConfigError(f"cannot load Celery app {spec!r}: {type(exc).__name__}: {exc}") from exc


def app_queue_names(app: Any) -> tuple[str, ...]:
    """Task queue names an app declares: task_queues, task_routes targets and task_default_queue."""
    names: list[str] = []
    conf = app.conf
    default = conf.get("task_default_queue") or "celery"
    names.append(default)
    for q in conf.get("task_queues") or ():
        name = getattr(q, "name", None) or (q if isinstance(q, str) else None)
        if name:
            names.append(name)
    routes = conf.get("task_routes") or {}
    route_maps = routes if isinstance(routes, list | tuple) else [routes]
    for rm in route_maps:
        if isinstance(rm, Mapping):
            for target in rm.values():
                if isinstance(target, Mapping) and target.get("queue"):
                    q = target["queue"]
                    names.append(getattr(q, "name", q))
                elif isinstance(target, str):
                    names.append(target)
    seen: dict[str, None] = {}
    for n in names:
        if isinstance(n, str) and n:
            seen.setdefault(n, None)
    return tuple(seen)


def resolve_settings(
    broker: str | None = None,
    backend: str | None = None,
    app: str | None = None,
    env: Mapping[str, str] | None = None,
    context: str | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from flags, environment and an optional Celery app (README, "Configuration").

    ``context`` (or ``TASKDASH_CONTEXT``, or the config file's ``default``) selects a context of
    ``~/.config/taskdash/config.toml`` (``$TASKDASH_CONFIG``); see collectors.core.contexts.
    """
    env = os.environ if env is None else env
    from collectors.core.contexts import apply_context

    broker, backend, app, env, ctx_read_only, context = apply_context(context, env, broker, backend, app)
    if ctx_read_only:
        overrides["read_only"] = True
    overrides.setdefault("context", context)
    app_spec = app or env.get("TASKDASH_APP") or None
    app_obj = load_app(app_spec) if app_spec else None

    app_broker = app_backend = None
    transport: dict[str, Any] = {}
    backend_transport: dict[str, Any] = {}
    app_queues: tuple[str, ...] = ()
    control_exchange = "celery"
    event_exchange = "celeryev"
    if app_obj is not None:
        conf = app_obj.conf
        app_broker = conf.get("broker_url")
        app_backend = conf.get("result_backend")
        transport = dict(conf.get("broker_transport_options") or {})
        backend_transport = dict(conf.get("result_backend_transport_options") or {})
        app_queues = app_queue_names(app_obj)
        control_exchange = conf.get("control_exchange") or "celery"
        event_exchange = conf.get("event_exchange") or "celeryev"
        for conf_key, setting in (("broker_use_ssl", "broker_use_ssl"), ("redis_backend_use_ssl", "backend_use_ssl")):
            ssl_conf = conf.get(conf_key)
            if isinstance(ssl_conf, Mapping) and ssl_conf:
                overrides.setdefault(setting, dict(ssl_conf))

    broker_url = (
        broker or env.get("TASKDASH_BROKER") or env.get("CELERY_BROKER_URL") or app_broker or DEFAULT_BROKER
    )
    backend_url = (
        backend or env.get("TASKDASH_BACKEND") or env.get("CELERY_RESULT_BACKEND") or app_backend or None
    )
    if backend_url and not backend_url.startswith(("redis", "rediss", "sentinel", "redis+socket")):
        # A non-Redis backend (rpc://, db+..., etc.) cannot be read by taskdash; fall back to none.
        backend_url = backend_url  # kept so the status line can say why results are unavailable
    validate_url(broker_url)

    steps = tuple(sorted(int(s) for s in transport.get("priority_steps", DEFAULT_PRIORITY_STEPS)))
    if not steps or steps[0] != 0:
        steps = (0, *steps)
    kwargs: dict[str, Any] = dict(
        broker_url=broker_url,
        backend_url=backend_url,
        app=app_spec,
        visibility_timeout=float(transport.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT)),
        priority_steps=steps,
        sep=transport.get("sep", DEFAULT_SEP),
        global_keyprefix=transport.get("global_keyprefix", "") or "",
        result_keyprefix=normalise_result_prefix(backend_transport.get("global_keyprefix")),
        unacked_key=transport.get("unacked_key", "unacked"),
        unacked_index_key=transport.get("unacked_index_key", "unacked_index"),
        transport_options=transport,
        backend_transport_options=backend_transport,
        app_queues=app_queues,
        control_exchange=control_exchange,
        event_exchange=event_exchange,
    )
    for env_name, key, conv in (
        ("TASKDASH_INTERVAL", "interval", float),
        ("TASKDASH_VISIBILITY_TIMEOUT", "visibility_timeout", float),
        ("TASKDASH_GLOBAL_KEYPREFIX", "global_keyprefix", str),
        ("TASKDASH_AUDIT_LOG", "audit_log", str),
    ):
        if env.get(env_name):
            kwargs[key] = conv(env[env_name])
    if env.get("TASKDASH_MASTER_NAME") and not transport.get("master_name"):
        # Redis Sentinel without -A: the master name kombu would take from broker_transport_options.
        kwargs["transport_options"] = {**transport, "master_name": env["TASKDASH_MASTER_NAME"]}
    if env.get("TASKDASH_READ_ONLY", "").lower() in ("1", "true", "yes"):
        kwargs["read_only"] = True
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**kwargs)


_SCHEMES = ("redis", "rediss", "redis+socket", "unix", "sentinel", "sentinels")


def validate_url(url: str) -> None:
    """Raise ConfigError with a masked, user-facing message when ``url`` is not a Redis URL."""
    first = url.split(";")[0]
    scheme = first.split("://", 1)[0].lower() if "://" in first else ""
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported broker URL {mask_url(url)!r}: taskdash reads Redis brokers "
            "(redis://, rediss://, redis+socket://, sentinel://)"
        )
    try:
        urlsplit(first).port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"bad broker URL {mask_url(url)!r}: {exc}") from exc


def redis_client(url: str, settings: Settings | None = None, *, db_default: int = 0, **kw: Any) -> Any:
    """A redis-py client for a broker/backend URL, with timeouts (sentinel URLs resolved via kombu)."""
    import redis

    timeout = settings.socket_timeout if settings else 5.0
    opts: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 3.0),
        "health_check_interval": 0,
        # Key names read back from Redis keep undecodable bytes as surrogates (collectors.reads.broker): encode
        # them back to the same bytes instead of failing.
        "encoding_errors": "surrogateescape",
    }
    first = url.split(";")[0]
    scheme = first.split("://", 1)[0].lower()
    if settings is not None and scheme == "rediss":
        # The app's TLS options (URL query parameters still win, as in redis-py and kombu).
        role = settings.broker_use_ssl if url == settings.broker_url else (
            settings.backend_use_ssl or settings.broker_use_ssl)
        opts.update({k: v for k, v in role.items() if k.startswith("ssl_")})
    opts.update(kw)
    if scheme in ("sentinel", "sentinels"):
        return _sentinel_client(url, settings, opts)
    if scheme == "redis+socket":
        url = "unix://" + first.split("://", 1)[1]
    try:
        return redis.Redis.from_url(url, **opts)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {mask_url(url)!r}: {exc}") from exc


def _sentinel_client(url: str, settings: Settings | None, opts: dict[str, Any]) -> Any:
    from redis.sentinel import Sentinel

    hosts: list[tuple[str, int]] = []
    password = None
    db = 0
    for part in url.split(";"):
        p = urlsplit(part.strip())
        hosts.append((p.hostname or "localhost", p.port or 26379))
        password = password or p.password
        if p.path and p.path.strip("/").isdigit():
            db = int(p.path.strip("/"))
    topts = dict(settings.transport_options) if settings else {}
    master = topts.get("master_name")
    if not master:
        raise ConfigError("sentinel:// URLs need the 'master_name' transport option "
                          "(from the -A app's broker_transport_options, or TASKDASH_MASTER_NAME)")
    sentinel = Sentinel(hosts, sentinel_kwargs=topts.get("sentinel_kwargs") or {}, **opts)
    return sentinel.master_for(master, db=db, password=password)


def split_url_parts(url: str) -> tuple[str, str]:
    """(scheme, host:port/db) of a URL without credentials, for short display."""
    p = urlsplit(url.split(";")[0])
    netloc = p.hostname or ""
    if p.port:
        netloc += f":{p.port}"
    return p.scheme, urlunsplit(("", netloc, p.path, "", "")).lstrip("/")
