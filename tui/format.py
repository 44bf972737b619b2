"""Pure formatting helpers for the dashboard (no Textual import: unit-testable on their own)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from rich.text import Text

from collectors.core.messages import printable

SPARK_CHARS = "▁▂▃▄▅▆▇█"


def fmt_age(seconds: float | None) -> str:
    """A short human age: ``"4s"``, ``"3m05s"``, ``"2h04m"``, ``"3d02h"``; ``"–"`` when unknown."""
    if seconds is None:
        return "–"
    neg = seconds < 0
    s = int(abs(seconds))
    if s < 60:
        out = f"{s}s"
    elif s < 3600:
        out = f"{s // 60}m{s % 60:02d}s"
    elif s < 86400:
        out = f"{s // 3600}h{(s % 3600) // 60:02d}m"
    else:
        out = f"{s // 86400}d{(s % 86400) // 3600:02d}h"
    return f"-{out}" if neg else out


def fmt_ago(seconds: float | None) -> str:
    """How long ago, as people read it: ``"12s ago"``, ``"3m05s ago"``; ``"–"`` when unknown; a time in
    the future (clock skew) is ``"in 4s"``."""
    if seconds is None:
        return "–"
    if seconds < 0:
        return f"in {fmt_age(-seconds)}"
    return f"{fmt_age(seconds)} ago"


def fmt_age_coarse(seconds: float | None) -> str:
    """An age to its largest unit only (``"9m"``, ``"2h"``, ``"3d"``, ``"45s"``): for a lower bound,
    where the minor unit would be false precision."""
    if seconds is None:
        return "–"
    s = int(max(0.0, seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def fmt_age_summary(seconds: float | None) -> str:
    """An age at the Overview's precision, always rounded down: seconds for the first ten (``"7s"``), then
    steps of ten to the minute (``"40s"`` for 47 s), then whole minutes (``"14m"``), then ``fmt_age``
    (``"2h04m"``, ``"3d02h"``, which move once a minute or slower).

    The Overview summarises; the views show the second. An age that ticks every second repaints every
    line it is on every second: most of an idle dashboard's cost, in an incident's first minute too
    (when taskdash has just started, every age it only bounds from below starts at 0)."""
    if seconds is not None and 10 <= abs(seconds) < 60:
        return ("-" if seconds < 0 else "") + f"{int(abs(seconds)) // 10 * 10}s"
    if seconds is not None and 60 <= abs(seconds) < 3600:  # whole minutes: fmt_age_coarse's rule
        return ("-" if seconds < 0 else "") + fmt_age_coarse(abs(seconds))
    return fmt_age(seconds)


def fmt_oldest_summary(seconds: float | None, lower_bound: bool = False) -> str:
    """``fmt_oldest`` at the Overview's precision (:func:`fmt_age_summary`): ``"≥ 40s"``, ``"≥ 9m"``."""
    if seconds is None:
        return fmt_oldest(seconds, lower_bound)
    if lower_bound:
        return f"≥ {fmt_age_summary(seconds) if seconds < 3600 else fmt_age_coarse(seconds)}"
    return fmt_age_summary(seconds)


def fmt_oldest(seconds: float | None, lower_bound: bool = False) -> str:
    """The Queues "Oldest" cell: ``"9m00s"``, or ``"≥ 9m"`` when the age is only a lower bound (the
    oldest message carries no usable timestamp, so it waited at least that long)."""
    if seconds is None:
        return "–"
    return f"≥ {fmt_age_coarse(seconds)}" if lower_bound else fmt_age(seconds)


def parse_time(value: str | float | None) -> float | None:
    """Epoch seconds of an ISO-8601 time (Celery's ``date_done``; naive means UTC) or of a number;
    None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def fmt_int(value: int | None) -> str:
    """An integer with thousands separators; ``"–"`` when unknown."""
    if value is None:
        return "–"
    return f"{value:,}"


def fmt_rate(per_s: float | None) -> str:
    """A signed rate per second (``"+3.2/s"``, ``"-120/s"``); ``"–"`` when not enough history."""
    if per_s is None:
        return "–"
    if abs(per_s) < 0.05:
        return "0/s"
    if abs(per_s) >= 100:
        return f"{per_s:+.0f}/s"
    return f"{per_s:+.1f}/s"


def short_id(task_id: str | None, width: int = 8) -> str:
    """The first ``width`` characters of a task id (full ids stay in detail screens)."""
    if not task_id:
        return "–"
    return task_id[:width]


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """A unicode block sparkline of the last ``width`` values, scaled from 0 to the maximum."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return SPARK_CHARS[0] * len(vals)
    last = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[min(last, int(round(v / top * last)))] for v in vals)


def by_priority_text(by_priority: Sequence[tuple[int, int]]) -> str:
    """``"p0:5 p3:1 p9:2"`` for the non-empty bands (``"–"`` when all are empty)."""
    parts = [f"p{band}:{n:,}" for band, n in by_priority if n]
    return " ".join(parts) if parts else "–"


def truncate(text: str | None, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis; ``"–"`` for None."""
    if text is None:
        return "–"
    text = printable(text).replace("\n", " ")
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def safe(value: object) -> str:
    """Redis-derived text made terminal-safe (``collectors.core.messages.printable``): ESC and other control
    characters and surrogate-escaped bytes become ``\\xNN``, so a queue named ``"evil\\x1b[2J"`` cannot
    clear the screen."""
    return printable(value)


def safe_text(text: Text) -> Text:
    """``text`` with every unprintable character escaped, keeping its styles (unchanged when clean)."""
    plain = text.plain
    if printable(plain) == plain:
        return text
    cuts = sorted({0, len(plain), *(s.start for s in text.spans), *(s.end for s in text.spans)})
    out = text.blank_copy()
    for a, b in zip(cuts, cuts[1:], strict=False):
        if a >= b or a >= len(plain):
            continue
        piece = printable(plain[a:b])
        start = len(out.plain)
        out.append(piece)
        for span in text.spans:
            if span.start <= a and span.end >= b:
                out.stylize(span.style, start, start + len(piece))
    return out


def safe_cell(cell: object) -> object:
    """A table cell (str or Text) made terminal-safe; other renderables pass through."""
    if isinstance(cell, str):
        return printable(cell)
    if isinstance(cell, Text):
        return safe_text(cell)
    return cell
