"""Connection settings and Redis key naming shared by every collector and action.

Resolution order (README, "Configuration"): flags > ``TASKDASH_*`` env > ``CELERY_BROKER_URL`` /
``CELERY_RESULT_BACKEND`` > the ``-A`` app's config > defaults.

Without ``-A`` (taskdash in its own pipx/uvx environment, or a container, where the user's app cannot be
imported) every transport option taskdash would read from the app can be given directly: see
:data:`APP_OPTIONS` (one table for the flags, the ``TASKDASH_*`` variables and the context keys).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
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
    app_path: str | None = None
    """``--app-path DIR``: the project folder put first on ``sys.path`` before ``-A`` is imported."""

    @property
    def queue_order_strategy(self) -> str:
        """kombu's ``queue_order_strategy`` (round_robin, sorted, priority) the workers consume with."""
        return str(self.transport_options.get("queue_order_strategy") or "round_robin")

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


# ---- transport options without -A -------------------------------------------------------------------
def _parse_str(value: Any) -> str:
    return str(value)


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _parse_sep(value: Any) -> str:
    """kombu's default separator is two control characters, so backslash escapes are read (``\\x06\\x16``)."""
    text = str(value)
    return codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape") if "\\" in text else text


def _parse_steps(value: Any) -> list[int]:
    parts = [p for p in re.split(r"[,\s]+", value.strip()) if p] if isinstance(value, str) else list(value)
    steps = [int(p) for p in parts]
    if not steps or any(s < 0 or s > 255 for s in steps):
        raise ValueError(f"priority steps must be integers 0..255, got {value!r}")
    return steps


_QUEUE_ORDER_STRATEGIES = ("round_robin", "sorted", "priority")


def _parse_strategy(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in _QUEUE_ORDER_STRATEGIES:
        raise ValueError(f"expected one of {', '.join(_QUEUE_ORDER_STRATEGIES)}, got {value!r}")
    return text


_CERT_REQS = {"required": "required", "cert_required": "required", "optional": "optional",
              "cert_optional": "optional", "none": "none", "cert_none": "none"}


def _parse_cert_reqs(value: Any) -> str:
    """``ssl_cert_reqs`` as redis-py and kombu read it from a URL: required, optional or none."""
    if isinstance(value, int) and not isinstance(value, bool):  # ssl.CERT_NONE/OPTIONAL/REQUIRED in an app
        if int(value) not in (0, 1, 2):
            raise ValueError(f"expected required, optional or none, got {value!r}")
        return ("none", "optional", "required")[int(value)]
    text = str(getattr(value, "name", value)).strip().lower()
    if text.startswith("ssl."):
        text = text[4:]
    if text not in _CERT_REQS:
        raise ValueError(f"expected required, optional or none, got {value!r}")
    return _CERT_REQS[text]


def _parse_option_value(text: str) -> Any:
    """A ``KEY=VALUE`` value: JSON when it parses (numbers, true/false, lists, objects), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_options(value: Any) -> dict[str, Any]:
    """A mapping (context table), a JSON object (environment) or ``KEY=VALUE`` items (repeated flag)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"expected a JSON object, got {value!r}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {value!r}")
        return data
    out: dict[str, Any] = {}
    for item in value:
        key, eq, raw = str(item).partition("=")
        if not eq or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = _parse_option_value(raw)
    return out


@dataclass(frozen=True, slots=True)
class AppOption:
    """One setting taskdash otherwise reads from the ``-A`` app, as a flag, a variable and a context key."""

    key: str
    """``resolve_settings`` keyword, click parameter name and context key."""
    flag: str
    env: str
    target: str
    """Where the value goes: ``broker`` (``broker_transport_options``), ``backend``
    (``result_backend_transport_options``), ``ssl`` (``broker_use_ssl``/``redis_backend_use_ssl``),
    ``broker*``/``backend*`` (a whole options mapping merged in) or ``app_path``."""
    option: str
    parse: Callable[[Any], Any]
    help: str
    metavar: str = "TEXT"
    multiple: bool = False


APP_OPTIONS: tuple[AppOption, ...] = (
    AppOption("global_keyprefix", "--global-keyprefix", "TASKDASH_GLOBAL_KEYPREFIX", "broker", "global_keyprefix",
              _parse_str, "kombu's global_keyprefix (broker_transport_options), e.g. 'myapp:'.", "PREFIX"),
    AppOption("sep", "--sep", "TASKDASH_SEP", "broker", "sep", _parse_sep,
              "kombu's priority-queue separator (default '\\x06\\x16'; backslash escapes are read).", "SEP"),
    AppOption("priority_steps", "--priority-steps", "TASKDASH_PRIORITY_STEPS", "broker", "priority_steps",
              _parse_steps, "kombu's priority_steps, comma-separated (default 0,3,6,9).", "N,N,..."),
    AppOption("visibility_timeout", "--visibility-timeout", "TASKDASH_VISIBILITY_TIMEOUT", "broker",
              "visibility_timeout", _parse_float, "kombu's visibility_timeout in seconds (default 3600).",
              "SECONDS"),
    AppOption("queue_order_strategy", "--queue-order-strategy", "TASKDASH_QUEUE_ORDER_STRATEGY", "broker",
              "queue_order_strategy", _parse_strategy,
              "kombu's queue_order_strategy: round_robin (default), sorted or priority.", "STRATEGY"),
    AppOption("master_name", "--master-name", "TASKDASH_MASTER_NAME", "broker", "master_name", _parse_str,
              "Redis Sentinel master name for sentinel:// URLs.", "NAME"),
    AppOption("result_keyprefix", "--result-keyprefix", "TASKDASH_RESULT_KEYPREFIX", "backend", "global_keyprefix",
              _parse_str, "The result backend's global_keyprefix (result_backend_transport_options).", "PREFIX"),
    AppOption("ssl_cert_reqs", "--ssl-cert-reqs", "TASKDASH_SSL_CERT_REQS", "ssl", "ssl_cert_reqs",
              _parse_cert_reqs, "TLS for rediss:// URLs: required, optional or none (broker_use_ssl).", "REQS"),
    AppOption("ssl_ca_certs", "--ssl-ca-certs", "TASKDASH_SSL_CA_CERTS", "ssl", "ssl_ca_certs", _parse_str,
              "TLS for rediss:// URLs: CA bundle that signs the server certificate.", "FILE"),
    AppOption("ssl_certfile", "--ssl-certfile", "TASKDASH_SSL_CERTFILE", "ssl", "ssl_certfile", _parse_str,
              "TLS for rediss:// URLs: client certificate.", "FILE"),
    AppOption("ssl_keyfile", "--ssl-keyfile", "TASKDASH_SSL_KEYFILE", "ssl", "ssl_keyfile", _parse_str,
              "TLS for rediss:// URLs: client certificate's key.", "FILE"),
    AppOption("transport_options", "--transport-option", "TASKDASH_TRANSPORT_OPTIONS", "broker*", "",
              _parse_options, "Any other broker transport option (repeatable; VALUE is JSON or text; "
              "the variable is a JSON object).", "KEY=VALUE", multiple=True),
    AppOption("backend_transport_options", "--backend-transport-option", "TASKDASH_BACKEND_TRANSPORT_OPTIONS",
              "backend*", "", _parse_options, "Any result backend transport option (repeatable, as above).",
              "KEY=VALUE", multiple=True),
    AppOption("app_path", "--app-path", "TASKDASH_APP_PATH", "app_path", "", _parse_str,
              "Project folder to import the -A app from (put first on sys.path).", "DIR"),
)
"""Every transport option taskdash reads from an app, settable without ``-A`` (README, "Configuration")."""

APP_OPTION_KEYS: tuple[str, ...] = tuple(o.key for o in APP_OPTIONS)
_SSL_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def _option_values(source: Mapping[str, Any], by: str) -> dict[str, Any]:
    """Parsed values of the options set in ``source`` (by ``"env"`` name or by ``"key"``); ConfigError names
    the flag/variable with a bad value."""
    out: dict[str, Any] = {}
    for opt in APP_OPTIONS:
        name = opt.env if by == "env" else opt.key
        raw = source.get(name)
        if raw is None or (isinstance(raw, str) and raw == "") or (opt.multiple and raw == ()):
            continue
        try:
            out[opt.key] = opt.parse(raw)
        except (TypeError, ValueError, KeyError) as exc:
            where = name if by == "env" else opt.flag
            raise ConfigError(f"bad {where} value {raw!r}: {exc}") from None
    return out


def _apply_options(values: Mapping[str, Any], transport: dict[str, Any], backend: dict[str, Any],
                   tls: dict[str, Any]) -> None:
    """Fold one source's option values in (whole mappings first, so a dedicated option beats them)."""
    for opt in sorted((o for o in APP_OPTIONS if o.key in values), key=lambda o: not o.target.endswith("*")):
        value = values[opt.key]
        if opt.target == "broker*":
            transport.update(value)
        elif opt.target == "backend*":
            backend.update(value)
        elif opt.target == "broker":
            transport[opt.option] = value
        elif opt.target == "backend":
            backend[opt.option] = value
        elif opt.target == "ssl":
            tls[opt.option] = value


def add_app_path(path: str) -> str:
    """Put the project folder ``path`` first on ``sys.path`` (once) so ``-A`` imports from it."""
    folder = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"--app-path {path!r} is not a folder")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return folder


def with_tls_query(url: str | None, tls: Mapping[str, Any]) -> str | None:
    """``url`` with the TLS options as query parameters, for a ``rediss://`` URL.

    The query string is the one place every connection taskdash opens reads them from: redis-py clients,
    kombu connections (writes) and the Celery app that asks workers (inspect), kombu 5.3 to 5.7 alike.
    Parameters already in the URL win; other schemes are returned unchanged (TLS options apply to
    rediss:// only, as in redis-py)."""
    if not url or not tls or ";" in url or not url.lower().startswith("rediss://"):
        return url
    from urllib.parse import parse_qsl, quote

    base, _, query = url.partition("?")
    present = {k for k, _ in parse_qsl(query, keep_blank_values=True)}
    extra = []
    for key in _SSL_KEYS:
        value = tls.get(key)
        if value is None or value == "" or key in present:
            continue
        if key == "ssl_cert_reqs":
            value = _parse_cert_reqs(value)
        extra.append(f"{key}={quote(str(value), safe='/')}")
    if not extra:
        return url
    return base + "?" + "&".join(([query] if query else []) + extra)


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

    The :data:`APP_OPTIONS` (``global_keyprefix``, ``sep``, ``priority_steps``, ``visibility_timeout``,
    ``queue_order_strategy``, ``result_keyprefix``, TLS, ...) are keywords here (the flags), ``TASKDASH_*``
    variables and context keys, layered over the ``-A`` app's transport options in the same order:
    flags > environment (and context) > app > defaults. They land in ``transport_options`` too, so
    kombu connections taskdash opens (writes, inspect) use the same key layout as its reads.
    """
    env = os.environ if env is None else env
    from collectors.core.contexts import apply_context

    flags = _option_values({k: overrides.pop(k) for k in APP_OPTION_KEYS if k in overrides}, "key")
    broker, backend, app, env, ctx_read_only, context = apply_context(context, env, broker, backend, app)
    if ctx_read_only:
        overrides["read_only"] = True
    overrides.setdefault("context", context)
    from_env = _option_values(env, "env")
    app_path = flags.get("app_path") or from_env.get("app_path")
    if app_path:
        app_path = add_app_path(app_path)
    app_spec = app or env.get("TASKDASH_APP") or None
    if app_path and not app_spec:
        raise ConfigError("--app-path needs -A/--app (the Celery app to import from that folder)")
    app_obj = load_app(app_spec) if app_spec else None

    app_broker = app_backend = None
    transport: dict[str, Any] = {}
    backend_transport: dict[str, Any] = {}
    app_queues: tuple[str, ...] = ()
    control_exchange = "celery"
    event_exchange = "celeryev"
    broker_ssl: dict[str, Any] = {}
    backend_ssl: dict[str, Any] = {}
    if app_obj is not None:
        conf = app_obj.conf
        app_broker = conf.get("broker_url")
        app_backend = conf.get("result_backend")
        transport = dict(conf.get("broker_transport_options") or {})
        backend_transport = dict(conf.get("result_backend_transport_options") or {})
        app_queues = app_queue_names(app_obj)
        control_exchange = conf.get("control_exchange") or "celery"
        event_exchange = conf.get("event_exchange") or "celeryev"
        for conf_key, target in (("broker_use_ssl", broker_ssl), ("redis_backend_use_ssl", backend_ssl)):
            ssl_conf = conf.get(conf_key)
            if isinstance(ssl_conf, Mapping) and ssl_conf:
                target.update(ssl_conf)

    # the app's options, then the environment's, then the flags' (each later one wins)
    tls: dict[str, Any] = {}
    for values in (from_env, flags):
        _apply_options(values, transport, backend_transport, tls)
    if tls:
        broker_ssl.update(tls)
        backend_ssl = {**(backend_ssl or broker_ssl), **tls}
    for setting, value in (("broker_use_ssl", broker_ssl), ("backend_use_ssl", backend_ssl)):
        if value:
            overrides.setdefault(setting, value)

    broker_url = (
        broker or env.get("TASKDASH_BROKER") or env.get("CELERY_BROKER_URL") or app_broker or DEFAULT_BROKER
    )
    backend_url = (
        backend or env.get("TASKDASH_BACKEND") or env.get("CELERY_RESULT_BACKEND") or app_backend or None
    )
    validate_url(broker_url)
    try:
        broker_url = with_tls_query(broker_url, broker_ssl) or broker_url
        backend_url = with_tls_query(backend_url, backend_ssl or broker_ssl)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"bad ssl_cert_reqs: {exc}") from None

    try:
        steps = tuple(sorted(int(s) for s in transport.get("priority_steps", DEFAULT_PRIORITY_STEPS)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad priority_steps {transport.get('priority_steps')!r}: {exc}") from None
    if not steps or steps[0] != 0:
        steps = (0, *steps)
    try:
        visibility_timeout = float(transport.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad visibility_timeout {transport.get('visibility_timeout')!r}: {exc}") from None
    kwargs: dict[str, Any] = dict(
        broker_url=broker_url,
        backend_url=backend_url,
        app=app_spec,
        app_path=app_path or None,
        visibility_timeout=visibility_timeout,
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
        ("TASKDASH_AUDIT_LOG", "audit_log", str),
    ):
        if env.get(env_name):
            kwargs[key] = conv(env[env_name])
    if env.get("TASKDASH_READ_ONLY", "").lower() in ("1", "true", "yes"):
        kwargs["read_only"] = True
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**kwargs)


def settings_environment(settings: Settings) -> dict[str, str]:
    """``TASKDASH_*`` variables for every transport option of ``settings`` (a child ``taskdash`` process,
    e.g. the one ``taskdash serve`` starts per browser, then resolves the same key layout without -A)."""
    env = {
        "TASKDASH_GLOBAL_KEYPREFIX": settings.global_keyprefix,
        "TASKDASH_SEP": settings.sep.encode("unicode_escape").decode("ascii"),
        "TASKDASH_PRIORITY_STEPS": ",".join(str(s) for s in settings.priority_steps),
        "TASKDASH_VISIBILITY_TIMEOUT": str(settings.visibility_timeout),
        "TASKDASH_TRANSPORT_OPTIONS": json.dumps(dict(settings.transport_options), default=str),
        "TASKDASH_BACKEND_TRANSPORT_OPTIONS": json.dumps(dict(settings.backend_transport_options), default=str),
    }
    if settings.app_path:
        env["TASKDASH_APP_PATH"] = settings.app_path
    return env


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
    packer = _surrogate_safe_packer()
    if packer is not None:
        opts["command_packer"] = packer
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


OWN_NAME = "taskdash-monitor"
"""The client name of taskdash's long-lived connections (subscriptions, probes): the liveness probe's
CLIENT LIST skips them, so another taskdash process's connections are never taken for a worker's."""

_NAME_REFUSED: set[str] = set()


def own_client(url: str, settings: Settings | None = None) -> Any:
    """A client for ``url`` whose connections are named :data:`OWN_NAME`; unnamed where CLIENT SETNAME is
    refused (a least-privilege user), remembered per URL so the refusal costs one round trip."""
    import redis

    if url in _NAME_REFUSED:
        return redis_client(url, settings)
    client = redis_client(url, settings, client_name=OWN_NAME)
    try:
        client.ping()
    except redis.ResponseError as exc:
        text = str(exc).lower()
        if not (isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in text
                or "no permissions" in text or "unknown command" in text):
            raise
        _NAME_REFUSED.add(url)
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass
        return redis_client(url, settings)
    return client


class _SurrogateEscapePacker:
    """hiredis' command packer with ``str`` arguments encoded the way the client's ``encoding_errors`` says.

    With hiredis installed redis-py (>= 4.5) packs commands with ``hiredis.pack_command``, which encodes
    ``str`` arguments strictly and ignores ``encoding_errors``: a key name read back with undecodable bytes
    kept as surrogates (``b"bin\\xff"`` -> ``"bin\\udcff"``) then fails with UnicodeEncodeError instead of
    addressing the key it came from. Encoding them here first (``surrogateescape``, as the Python packer
    does) keeps hiredis' speed and the same bytes on the wire.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def pack(self, *args: Any) -> Any:
        try:  # nearly every command has no surrogate: hiredis as is (re-encoding each argument first cost
            return self._inner.pack(*args)  # more than hiredis saves: 1,750 commands a refresh at S1)
        except UnicodeEncodeError:
            return self._inner.pack(*(
                a.encode("utf-8", "surrogateescape") if isinstance(a, str) else a for a in args))


_PACKER: list[Any] = []


def _surrogate_safe_packer() -> Any:
    """A shared :class:`_SurrogateEscapePacker` when redis-py would pack with hiredis, else None (the
    Python packer already uses the client's encoder, ``encoding_errors`` included)."""
    if not _PACKER:
        packer = None
        try:
            import inspect

            import redis.connection as rc

            if (getattr(rc, "HIREDIS_AVAILABLE", False) and hasattr(rc, "HiredisRespSerializer")
                    and "command_packer" in inspect.signature(
                        getattr(rc, "AbstractConnection", rc.Connection).__init__).parameters):
                packer = _SurrogateEscapePacker(rc.HiredisRespSerializer())
        except (ImportError, AttributeError, TypeError, ValueError):
            packer = None
        _PACKER.append(packer)
    return _PACKER[0]


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
