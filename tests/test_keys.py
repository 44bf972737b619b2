"""Every Redis key name is built by collectors/keyspace/keys.py's KeyLayout, from Settings.

Checks the names against kombu's and Celery's layout (docs/redis-layout.md#key-map), and that no module
spells a key name itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from collectors.core.config import Settings
from collectors.keyspace.keys import KeyLayout

ROOT = Path(__file__).resolve().parent.parent


def test_queue_keys_prefix_and_bands() -> None:
    k = KeyLayout.from_settings(Settings(global_keyprefix="p:"))
    assert k.queue_keys("q") == [(0, "p:q"), (3, "p:q\x06\x163"), (6, "p:q\x06\x166"), (9, "p:q\x06\x169")]
    assert [k.queue_key("q", p) for p in (None, 0, 2, 3, 5, 6, 8, 9, 42, -1)] == [
        "p:q", "p:q", "p:q", "p:q\x06\x163", "p:q\x06\x163", "p:q\x06\x166", "p:q\x06\x166", "p:q\x06\x169",
        "p:q\x06\x169", "p:q"]
    assert k.band_suffixes == ("\x06\x163", "\x06\x166", "\x06\x169")
    assert k.display_key("p:q\x06\x163") == "q (priority 3)" and k.display_key("p:q") == "q"
    custom = KeyLayout.from_settings(Settings(priority_steps=(0, 5, 9), sep=":"))
    assert custom.queue_key("q", 4) == "q" and custom.queue_key("q", 7) == "q:5"


def test_ledger_bindings_results_and_own_keys() -> None:
    s = Settings(global_keyprefix="app:", result_keyprefix="res_", control_exchange="ctl", event_exchange="ev",
                 unacked_key="u", unacked_index_key="ui", transport_options={"unacked_mutex_key": "um"})
    k = KeyLayout.from_settings(s)
    assert (k.unacked, k.unacked_index, k.unacked_mutex) == ("app:u", "app:ui", "app:um")
    assert KeyLayout().unacked_mutex == "unacked_mutex"
    assert k.binding("celery") == "app:_kombu.binding.celery"
    assert k.binding_prefix == "app:_kombu.binding." and k.binding_pattern == "app:_kombu.binding.*"
    assert k.binding_deadlines == "app:_kombu.binding_deadlines"
    assert k.binding_row("rk\x06\x16\x06\x16q") == ["rk", "", "q"]
    assert (k.pidbox_exchange, k.reply_exchange, k.pidbox_queue_suffix) == ("ctl.pidbox", "reply.ctl.pidbox",
                                                                            ".ctl.pidbox")
    assert k.reply_queue("oid") == "oid.reply.ctl.pidbox"
    assert k.result_key("abc") == "res_celery-task-meta-abc"
    assert k.result_pattern == "res_celery-task-meta-*" and k.result_prefix == "res_celery-task-meta-"
    assert (k.quarantine, k.quarantine_index) == ("app:taskdash.quarantine", "app:taskdash.quarantine.index")
    assert k.purge_temp("tok", 3) == "app:taskdash.purging.tok.3"
    assert k.restored_marker("e1") == "app:taskdash.restored.e1"


def test_fanout_channels() -> None:
    k = KeyLayout(global_keyprefix="app:")
    assert k.fanout_channel(k.pidbox_exchange, 0) == "app:/0.celery.pidbox"
    assert k.fanout_channel(k.event_exchange, 3) == "app:/3.celeryev"
    assert k.fanout_channel("x", 1, "pre.") == "app:pre.x" and k.fanout_channel("x", 1, False) == "app:x"


def test_internal_queue_filter() -> None:
    k = KeyLayout(control_exchange="celery", event_exchange="celeryev")
    assert k.control_event_exchanges == {"celery.pidbox", "reply.celery.pidbox", "celeryev"}
    assert k.internal_exchanges == k.control_event_exchanges | {"C.dq2"}
    for name in ("w1@h.celery.pidbox", "oid.reply.celery.pidbox", "celeryev.1234", "celeryev", "w1@h.dq2"):
        assert k.is_internal_queue(name), name
    for name in ("celery", "emails", "celeryevents", "pidbox"):
        assert not k.is_internal_queue(name), name
    # a search for a task's message still looks in worker-direct queues
    assert not k.is_control_or_event_queue("w1@h.dq2") and not k.is_control_or_event_queue("celeryev")
    assert k.is_control_or_event_queue("celeryev.1") and k.is_pidbox_queue("x.pidbox")


def test_layout_follows_custom_transport_options() -> None:
    """Renamed ledger keys and mutex (transport options) and a result prefix reach every key name."""
    s = Settings(global_keyprefix="myapp:", result_keyprefix="r-", priority_steps=(0, 5, 9), sep=":",
                 unacked_key="u", unacked_index_key="ui", transport_options={"unacked_mutex_key": "m"})
    k = KeyLayout.from_settings(s)
    assert (k.unacked, k.unacked_index, k.unacked_mutex) == ("myapp:u", "myapp:ui", "myapp:m")
    assert k.queue_keys("q") == [(0, "myapp:q"), (5, "myapp:q:5"), (9, "myapp:q:9")]
    assert [k.band(p) for p in range(10)] == [0, 0, 0, 0, 0, 5, 5, 5, 5, 9]
    assert k.result_key("t") == "r-celery-task-meta-t" and k.result_pattern == "r-celery-task-meta-*"


KEY_LITERALS = re.compile(r"_kombu\.binding|celery-task-meta|\bunacked_mutex\b|taskdash\.(quarantine|purging|restored)"
                          r"|\.pidbox\b|\bC\.dq2\b|\.dq2\b")
ALLOWED = {
    "collectors/keyspace/keys.py": "the home of key names",
}


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are code, not documentation (docstrings are left out)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def _owned_files() -> list[Path]:
    files = list((ROOT / "collectors").rglob("*.py"))
    files += [ROOT / "taskdash" / "cmd_actions.py", ROOT / "taskdash" / "cmd_control.py"]
    return [p for p in files if str(p.relative_to(ROOT)) not in ALLOWED]


@pytest.mark.parametrize("path", _owned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_key_name_literal_outside_keys_py(path: Path) -> None:
    found = [f"line {line}: {text!r}" for line, text in _code_strings(path) if KEY_LITERALS.search(text)]
    assert not found, f"{path.relative_to(ROOT)} spells key names itself: " + "; ".join(found)
