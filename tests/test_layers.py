"""collectors/ is layered: a module imports only from its own layer or the layers below it.

core → keyspace → reads → analysis / serving → writes → collector (the composer). The check reads every
import statement (also the ones inside functions) with ``ast``, so a lazy import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "collectors"
RANK = {"core": 0, "keyspace": 1, "reads": 2, "analysis": 3, "serving": 3, "writes": 4, "collector": 5}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "collectors" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_every_module_sits_in_a_known_layer() -> None:
    stray = [p.name for p in ROOT.glob("*.py") if p.stem not in ("__init__", "collector")]
    assert not stray, f"modules outside a layer: {stray}"
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(RANK) - {
        "collector"}


def test_no_import_runs_up_the_layers() -> None:
    upward: list[str] = []
    checked = 0
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "__init__.py":
            continue
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own not in RANK:
            continue
        for module in _imports(path):
            target = _layer(module)
            if target is None or target not in RANK:
                continue
            checked += 1
            if RANK[target] > RANK[own]:
                upward.append(f"{rel} imports {module}")
    assert checked > 30  # the walk really saw the package's imports
    assert not upward, "\n".join(upward)
