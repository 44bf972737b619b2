"""Every Lua script lives in collectors/keyspace/scripts.py, loads on a real Redis, and keeps its exact text.

The write scripts are compare-and-swap moves whose text is part of their contract: their SHA1s are
pinned here, so moving or editing one is a visible change. Outside scripts.py no module may carry Lua
or load/run scripts itself (``.eval(``, ``register_script``, ``evalsha``, ``script_load``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import redis

from collectors.keyspace import scripts
from collectors.keyspace.scripts import SCRIPTS, Script

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_PY = ROOT / "collectors" / "keyspace" / "scripts.py"

PINNED = {
    # the compare-and-swap write scripts, byte-for-byte as they were in collectors/writes/actions.py
    "move_unacked": "efa2b7d124280de5f62b08f2f3a6ef213bbea4fd",
    "unacked_to_quarantine": "65667ceb3f27df40cafc6495d875a5dbbd8c354f",
    "list_to_quarantine": "d1cb9116942ab1c95b843932545d648952d657e3",
    "quarantine_pop": "dc5c069bc2b4cdd8da7f2ecc78936c1bd19274ad",
    "delete_unacked": "76e3bb50a5ec03ba57589e8731f3df09e79644f0",
    "rename_lists": "88015f35af7e3d8eda95359f051beca28da45722",
    "undo_rename": "8d6951f31fe3d12aa25e82eb66f44755236b20b5",
    "release_mutex": "c0fe86dca9a7825a3e95860568351409cafd1294",
    # the writes' permission pre-check (read-only: redis.acl_check_cmd)
    "acl_probe": "bac92e6b64f4b29f7e5cdc2b2b71098f0fb43e12",
    # bulk actions on one priority list (issue 18)
    "list_batch": "3f6451007542d208b1425972bd43161e56b8a237",
    # the broker reader's scripts, as they were in collectors/reads/broker.py
    "queue": "08f194e27d8547d4e47d9e614304f4cbecbd47d8",
    "window": "3fb8ff083c5db69f86ca560d3ede08b0859515f8",
    "scan": "fd9d0dda7446f6cdd8d065c00b20bfceb797ac2c",
}


def test_every_script_is_listed_once_and_pinned() -> None:
    module_scripts = {id(v): v for v in vars(scripts).values() if isinstance(v, Script)}
    assert {id(s) for s in SCRIPTS} == set(module_scripts), "a Script of scripts.py is missing from SCRIPTS"
    assert len({s.name for s in SCRIPTS}) == len(SCRIPTS)
    assert {s.name: s.sha for s in SCRIPTS} == PINNED
    assert set(scripts.WRITE_SCRIPTS) | set(scripts.BROKER_SCRIPTS) == set(SCRIPTS)


def test_every_script_loads_on_redis_with_its_precomputed_sha(r: redis.Redis) -> None:
    for script in SCRIPTS:
        sha = script.load(r)
        assert (sha.decode() if isinstance(sha, bytes) else sha) == script.sha, script.name
    assert all(r.script_exists(*[s.sha for s in SCRIPTS]))


def test_direct_call_reloads_after_script_flush(r: redis.Redis) -> None:
    r.script_flush()
    r.set("mutex", "mine")
    assert scripts.release_mutex(r, "mutex", "theirs") == 0
    assert r.get("mutex") == b"mine"
    assert scripts.release_mutex(r, "mutex", "mine") == 1
    assert r.get("mutex") is None


def test_queued_call_adds_no_round_trip_and_reports_noscript(r: redis.Redis) -> None:
    """In a pipeline a script is one EVALSHA (no SCRIPT EXISTS); an unknown script is the caller's to reload."""
    r.script_flush()
    pipe = r.pipeline(transaction=False)
    scripts.unacked_routes(pipe, "unacked", 0, 10)
    assert len(pipe.command_stack) == 1
    res = pipe.execute(raise_on_error=False)
    assert isinstance(res[0], redis.exceptions.NoScriptError)
    pipe = r.pipeline(transaction=False)
    scripts.UNACKED_ROUTES.load(pipe)
    scripts.unacked_routes(pipe, "unacked", 0, 10)
    loaded, out = pipe.execute()
    assert out[0] in (b"0", 0)


def test_every_script_has_a_header_comment() -> None:
    text = SCRIPTS_PY.read_text()
    for m in re.finditer(r'^(_\w+_LUA) = """', text, re.M):
        header = []
        for line in reversed(text[: m.start()].splitlines()):
            if not line.startswith("#"):
                break
            header.append(line)
        block = "\n".join(header)
        assert "KEYS" in block and "ARGV" in block and "returns" in block.lower(), f"{m.group(1)}: no KEYS/ARGV/Returns header"


def _python_files() -> list[Path]:
    files: list[Path] = []
    for top in ("collectors", "taskdash", "tui"):
        files.extend(p for p in (ROOT / top).rglob("*.py") if p != SCRIPTS_PY)
    return files


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_script_outside_scripts_py(path: Path) -> None:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("eval", "evalsha", "register_script", "script_load"):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(
                r"redis\.p?call\s*\(", node.value):
            found.append(f"line {node.lineno}: a Lua string literal")
    assert not found, f"{path.relative_to(ROOT)}: " + "; ".join(found)
