"""What went wrong talking to Redis, typed: the one place that reads redis-py / kombu exceptions.

``classify(exc)`` turns an exception (redis-py, kombu's ``OperationalError`` wrapping one, a plain
``OSError``) into a :class:`RedisProblem` of one :class:`Kind`; ``classify_text(message)`` does the same
for a message whose exception is gone (a ``SourceError`` string). Everything that decides between
"unreachable" and "wrong password", or between "falls back to plain commands" and "fails", asks here:

================  ==================================================================  =========
kind              recognised by                                                       exit code
================  ==================================================================  =========
unreachable       ``ConnectionError`` (not auth), ``TimeoutError``, ``OSError``, TLS   2
not-ready         ``LOADING`` / ``BUSY`` / ``MASTERDOWN`` / ``TRYAGAIN`` / ``CLUSTERDOWN``  2
auth              ``WRONGPASS``, ``NOAUTH``, "invalid username-password pair",         4
                  redis-py ``AuthenticationError``
permission        ``NOPERM`` (names the command, or "a key" / "a channel"), ``READONLY``  5
unknown-command   "unknown command 'X'" / "unknown subcommand" (renamed or disabled)   5
noscript          ``NOSCRIPT`` (cache flushed; reloadable unless scripting is refused)  1
other             anything else                                                        1
================  ==================================================================  =========

:data:`EXIT_CODES` is the exit-code table every ``taskdash`` command follows (the README copies it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote, urlsplit

from collectors.core.config import mask_text, mask_url

# ---- exit codes: one table for every command -------------------------------------------------------
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
EXIT_FOUND = 3
EXIT_AUTH = 4
EXIT_PERMISSION = 5
EXIT_PARTIAL = 6
EXIT_CRITICAL = 7
"""``taskdash watch --once``: a critical alert is firing (a warning is 3, "found")."""
EXIT_USAGE = 64
"""Click's usage errors exit 2 by default, which would collide with "unreachable": taskdash maps them
to 64 (``EX_USAGE`` of sysexits.h) so a script can trust that 2 always means the broker did not answer."""


@dataclass(frozen=True, slots=True)
class ExitCode:
    code: int
    name: str
    meaning: str


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(EXIT_OK, "ok", "done; for read commands: every needed source was read (partial sources are "
                            "listed in `errors`)"),
    ExitCode(EXIT_REFUSED, "refused", "refused (read-only mode, a guard), cancelled, nothing matched, or an "
                                      "unexpected error"),
    ExitCode(EXIT_UNREACHABLE, "unreachable", "the broker/backend did not answer: connection refused, DNS, TLS, "
                                              "timeout, or not ready (LOADING, BUSY, MASTERDOWN): retry later"),
    ExitCode(EXIT_FOUND, "found", "the check found problems: `snapshot --fail-on`, `lint` or `health` warnings, "
                                  "`forensics` saw a pool process die (a killer task), `watch --once` a "
                                  "warning alert"),
    ExitCode(EXIT_AUTH, "auth", "authentication failed: unknown user, wrong password, or a password is "
                                "required (WRONGPASS, NOAUTH)"),
    ExitCode(EXIT_PERMISSION, "permission", "permission denied for a needed read or write (ACL NOPERM, a "
                                            "renamed/disabled command, a read-only replica)"),
    ExitCode(EXIT_PARTIAL, "partial", "`--strict`: some source could only be read partly (see `errors`)"),
    ExitCode(EXIT_CRITICAL, "critical", "`watch --once`: a critical alert is firing"),
    ExitCode(EXIT_USAGE, "usage", "bad command line or configuration (click usage errors, unknown context, "
                                  "bad URL, an unreadable contexts file)"),
)


def exit_code_summary() -> str:
    """The table in one line: "0 ok · 1 refused · 2 unreachable · ... · 64 usage" (every command's help)."""
    return " · ".join(f"{e.code} {e.name}" for e in EXIT_CODES)


def exit_code_table_markdown() -> str:
    """The exit-code table as Markdown (README, ``taskdash acl --help``)."""
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {e.code} | {e.meaning} |" for e in EXIT_CODES]
    return "\n".join(rows)


# ---- classification ---------------------------------------------------------------------------------
class Kind(str, Enum):
    """A StrEnum (``str(Kind.AUTH) == "auth"``) that Python 3.10 has too."""

    UNREACHABLE = "unreachable"
    NOT_READY = "not-ready"
    AUTH = "auth"
    PERMISSION = "permission"
    UNKNOWN_COMMAND = "unknown-command"
    NOSCRIPT = "noscript"
    OTHER = "other"

    def __str__(self) -> str:
        return str(self.value)


_EXIT_FOR_KIND = {
    Kind.UNREACHABLE: EXIT_UNREACHABLE, Kind.NOT_READY: EXIT_UNREACHABLE, Kind.AUTH: EXIT_AUTH,
    Kind.PERMISSION: EXIT_PERMISSION, Kind.UNKNOWN_COMMAND: EXIT_PERMISSION, Kind.NOSCRIPT: EXIT_REFUSED,
    Kind.OTHER: EXIT_REFUSED,
}

NOT_READY_PREFIXES = ("LOADING", "BUSY ", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")

_AUTH_RE = re.compile(r"WRONGPASS|NOAUTH|invalid username-password pair|authentication required|"
                      r"must be called with the client already authenticated|"
                      r"AUTH <password> called without any password|invalid password|"
                      r"Client sent AUTH, but no password is set|\bAuthenticationError\b", re.I)
_NOPERM_CMD_RE = re.compile(r"no permissions to run the '([^']+)' command(?: or its subcommand)?", re.I)
_NOPERM_ANY_RE = re.compile(r"NOPERM|no permissions to (?:access|run)|can't run this command|"
                            r"\bNoPermissionError\b", re.I)
_NOPERM_WHAT_RE = re.compile(r"no permissions to access one of the (keys|channels)", re.I)
_UNKNOWN_CMD_RE = re.compile(r"unknown command [`'\"]([^`'\"]*)[`'\"]|unknown subcommand [`'\"]([^`'\"]*)[`'\"]",
                             re.I)
_NOSCRIPT_RE = re.compile(r"NOSCRIPT|No matching script", re.I)
_PIPE_CMD_RE = re.compile(r"Command # ?\d+ \((\S+)")
_READONLY_RE = re.compile(r"READONLY|can't write against a read only replica", re.I)
_UNREACHABLE_RE = re.compile(r"Error \d+ connecting|Connection refused|connection reset|timed out|Timeout|"
                             r"cannot connect|Name or service not known|certificate verify failed|"
                             r"Connection closed by server|No route to host|Temporary failure in name", re.I)


@dataclass(frozen=True, slots=True)
class RedisProblem:
    """One classified failure. ``detail`` is the server's (or the library's) own message."""

    kind: Kind
    detail: str
    command: str | None = None
    """The refused command (NOPERM on a command, unknown command), upper case; None when unknown."""
    target: str | None = None
    """"key" or "channel" when a NOPERM is about a key/channel pattern rather than a command."""

    @property
    def exit_code(self) -> int:
        return _EXIT_FOR_KIND[self.kind]

    @property
    def use_plain_commands(self) -> bool:
        """True when a reader should give up on this command path (Lua, CONFIG, CLIENT) for the session
        and use plain read commands instead: the server refuses it, it is no transient failure."""
        return self.kind in (Kind.PERMISSION, Kind.UNKNOWN_COMMAND)

    @property
    def transient(self) -> bool:
        return self.kind in (Kind.UNREACHABLE, Kind.NOT_READY)

    def reason(self) -> str:
        """Short reason for a field or source that could not be read: "NOPERM EVALSHA", "CONFIG disabled"."""
        if self.kind is Kind.PERMISSION:
            if self.command:
                return f"NOPERM {self.command}"
            if self.target:
                return f"NOPERM on a {self.target}"
            return "NOPERM"
        if self.kind is Kind.UNKNOWN_COMMAND:
            return f"{self.command or 'command'} disabled or renamed"
        if self.kind is Kind.AUTH:
            return "authentication failed"
        if self.kind is Kind.NOT_READY:
            return f"Redis not ready ({self.detail.split()[0] if self.detail else '?'})"
        if self.kind is Kind.UNREACHABLE:
            return "unreachable"
        if self.kind is Kind.NOSCRIPT:
            return "NOSCRIPT"
        return self.detail

    def describe(self, url: str | None = None, *, role: str = "broker") -> str:
        """One line for a person: what failed, where (masked URL), and the server's words.

        ``url`` is the raw or masked URL of the Redis that answered; credentials never show.
        """
        where = mask_url(url) if url else ""
        detail = mask_text(self.detail, url) if url else self.detail
        if self.kind is Kind.AUTH:
            user = user_of(url)
            at = f" at {where}" if where else ""
            return f"authentication failed for user {user}{at}: {detail}"
        if self.kind is Kind.PERMISSION:
            what = (self.command if self.command else
                    f"a {self.target}" if self.target else "a command it needs")
            at = f" at {where}" if where else ""
            return f"permission denied for user {user_of(url)}{at} ({role}): {what} not permitted: {detail}"
        if self.kind is Kind.UNKNOWN_COMMAND:
            return f"{role} {where}: {self.command or 'a command'} is disabled or renamed on this server ({detail})"
        if self.kind is Kind.NOT_READY:
            return f"{role} {where} is not ready: {detail}"
        if self.kind is Kind.UNREACHABLE:
            return f"{role} {where} unreachable: {detail}"
        return f"{role} {where}: {detail}"


def user_of(url: str | None) -> str:
    """The ACL user a URL logs in as: its user name, ``default`` for a password-only or bare URL."""
    if not url:
        return "default"
    try:
        parts = urlsplit(url.split(";")[0].strip())
        user = parts.username
    except ValueError:
        return "default"
    if user and parts.password is not None:
        return unquote(user)
    if user and parts.password is None:
        # redis://secret@host: redis-py reads the single credential as the password
        return "default"
    query_user = re.search(r"(?:^|&)username=([^&]*)", parts.query or "")
    return unquote(query_user.group(1)) if query_user else "default"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _types(exc: BaseException) -> set[str]:
    return {t.__name__ for t in type(exc).__mro__}


def classify(exc: BaseException | None) -> RedisProblem | None:
    """The :class:`RedisProblem` behind ``exc`` (its ``__cause__``/``__context__`` chain included: kombu
    and Celery re-raise redis-py errors as ``OperationalError``); None for ``None``."""
    if exc is None:
        return None
    chain = _chain(exc)
    # The most specific answer anywhere in the chain wins: auth > permission > unknown command > ...
    found: list[RedisProblem] = []
    for e in chain:
        p = _classify_one(e)
        if p is not None:
            found.append(p)
    if not found:
        return RedisProblem(Kind.OTHER, _text(exc))
    order = (Kind.AUTH, Kind.PERMISSION, Kind.UNKNOWN_COMMAND, Kind.NOSCRIPT, Kind.NOT_READY, Kind.UNREACHABLE,
             Kind.OTHER)
    return min(found, key=lambda p: order.index(p.kind))


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _classify_one(exc: BaseException) -> RedisProblem | None:
    names = _types(exc)
    text = _text(exc)
    if "AuthenticationError" in names or "AuthenticationWrongNumberOfArgsError" in names:
        return RedisProblem(Kind.AUTH, text)
    if "NoPermissionError" in names:
        return _permission(text)
    if "NoScriptError" in names:
        return RedisProblem(Kind.NOSCRIPT, text)
    if "BusyLoadingError" in names:
        return RedisProblem(Kind.NOT_READY, text if text.upper().startswith("LOADING") else f"LOADING {text}")
    if "ReadOnlyError" in names:
        return RedisProblem(Kind.PERMISSION, text, target="read-only replica")
    by_text = classify_text(text)
    if by_text is not None and by_text.kind is not Kind.OTHER:
        return by_text
    if {"ConnectionError", "TimeoutError", "OSError", "SSLError"} & names:
        return RedisProblem(Kind.UNREACHABLE, text)
    if "OperationalError" in names:  # kombu: connection-level by definition
        return RedisProblem(Kind.UNREACHABLE, text)
    return None


def _permission(text: str) -> RedisProblem:
    m = _NOPERM_CMD_RE.search(text)
    if m:
        return RedisProblem(Kind.PERMISSION, text, command=m.group(1).upper())
    w = _NOPERM_WHAT_RE.search(text)
    pipe = _PIPE_CMD_RE.search(text)
    return RedisProblem(Kind.PERMISSION, text, command=pipe.group(1).upper() if pipe else None,
                        target=w.group(1)[:-1] if w else None)


def _clause(text: str, start: int) -> str:
    """The server's own words: ``text`` from the clause holding ``start`` (after the last ``": "``
    before it), so "broker X unreachable: cannot connect: WRONGPASS ..." gives "WRONGPASS ..."."""
    cut = text.rfind(": ", 0, start)
    return text[cut + 2:] if cut >= 0 else text


def classify_text(text: str | None) -> RedisProblem | None:
    """Classify a message whose exception is gone (``SourceError.message``, a worker reply). None for
    empty text; kind ``other`` when nothing is recognised. ``detail`` keeps only the server's words."""
    if not text:
        return None
    m = _AUTH_RE.search(text)
    if m:
        return RedisProblem(Kind.AUTH, _clause(text, m.start()))
    m = _NOPERM_ANY_RE.search(text)
    if m:
        return _permission(_clause(text, m.start()) if "Command #" not in text else text)
    m = _READONLY_RE.search(text)
    if m:
        return RedisProblem(Kind.PERMISSION, _clause(text, m.start()), target="read-only replica")
    m = _UNKNOWN_CMD_RE.search(text)
    if m:
        return RedisProblem(Kind.UNKNOWN_COMMAND, _clause(text, m.start()),
                            command=(m.group(1) or m.group(2) or "").upper() or None)
    m = _NOSCRIPT_RE.search(text)
    if m:
        return RedisProblem(Kind.NOSCRIPT, _clause(text, m.start()))
    stripped = re.sub(r"^(?:[\w ]+: )?(?:Redis is not ready: )?", "", text)
    if any(stripped.startswith(p) or text.startswith(p) for p in NOT_READY_PREFIXES) or "Redis is not ready" in text:
        return RedisProblem(Kind.NOT_READY, stripped)
    if _UNREACHABLE_RE.search(text):
        return RedisProblem(Kind.UNREACHABLE, text)
    return RedisProblem(Kind.OTHER, text)


def exit_code_for(exc_or_text: BaseException | str | None, default: int = EXIT_REFUSED) -> int:
    """The exit code for a failure (``default`` when it is not a Redis problem taskdash knows)."""
    p = classify(exc_or_text) if isinstance(exc_or_text, BaseException) else classify_text(exc_or_text)
    if p is None or p.kind is Kind.OTHER:
        return default
    return p.exit_code
