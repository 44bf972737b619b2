"""Every command's help tells the truth (issue 21): the files and README sections it points to exist,
the ``serve`` install hint is the README's and pyproject's, and each help states the one exit-code table."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from collectors.core.errors import EXIT_CODES, EXIT_REFUSED
from taskdash.cli import COMMAND_EXIT_EPILOG, cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(cli, info_name="taskdash")

    def walk(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                yield from walk(sub, f"{path} {name}")

    yield from walk(cli, "taskdash")


def _help(path: str) -> str:
    res = CliRunner().invoke(cli, [*path.split()[1:], "--help"], env={"TASKDASH_CONFIG": "/nonexistent"},
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


def _readme_headings() -> set[str]:
    text = (ROOT / "README.md").read_text()
    heads = {m.group(1).strip().strip("`") for m in re.finditer(r"^#+ (.+)$", text, re.M)}
    bold = {m.group(1).strip("`") for m in re.finditer(r"\*\*([^*]+)\*\*", text)}
    return heads | bold


ALL = [p for p, _ in _commands()]


@pytest.mark.parametrize("path", ALL)
def test_help_points_only_to_files_and_sections_that_exist(path: str) -> None:
    text = _help(path)
    for name in re.findall(r"\b([\w./-]+\.md)\b", text):
        assert (ROOT / name).exists() or (ROOT / "docs" / name).exists(), f"{path} --help points to {name}"
    heads = _readme_headings()
    for quoted in re.findall(r"README(?: section)? [\"']([^\"']+)[\"']", text):
        assert quoted in heads, f"{path} --help points to README section {quoted!r}, which is not there"


def test_no_output_points_to_design_md() -> None:
    """DESIGN.md is not in the repository: nothing a user reads may send them there."""
    for p in (ROOT / "taskdash").glob("*.py"):
        assert "DESIGN" not in p.read_text(), p


def test_contexts_hint_names_a_readme_section_that_exists(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    res = CliRunner().invoke(cli, ["contexts"], env={"TASKDASH_CONFIG": str(cfg)})
    assert res.exit_code == 0, res.output
    quoted = re.findall(r"README '([^']+)'", res.stdout)
    assert quoted and all(q in _readme_headings() for q in quoted), res.stdout


@pytest.mark.parametrize("path", ALL[1:])
def test_every_command_states_the_exit_code_table(path: str) -> None:
    text = _help(path)
    assert " · ".join(f"{e.code} {e.name}" for e in EXIT_CODES) in text, text[-400:]
    # what a help says of a code agrees with the table
    meaning = {2: r"unreach", 3: r"found|warning|died|poison|problem|suspect", 6: r"partly|partial",
               7: r"critical", 64: r"usage|query|configuration|parsed"}
    for m in re.finditer(r"\b[Ee]xits? ((?:\d+)(?:/\d+)*)([^.]*)", text.replace("\n", " ")):
        for code in map(int, m.group(1).split("/")):
            assert code in {e.code for e in EXIT_CODES}, (path, m.group(0))
            if code in meaning and "/" not in m.group(1):
                assert re.search(meaning[code], m.group(2) + m.group(0), re.I), (path, m.group(0))


def test_group_help_has_the_whole_table_with_7_and_64() -> None:
    text = _help("taskdash")
    for e in EXIT_CODES:
        assert re.search(rf"^\s+{e.code}\s", text, re.M), e
    assert re.search(r"^\s+7\s+`?watch --once`?: a critical alert", text, re.M), text
    assert re.search(r"^\s+64\s+bad command line", text, re.M), text
    assert COMMAND_EXIT_EPILOG.endswith("7 critical · 64 usage")


def test_serve_install_hint_matches_readme_and_pyproject(monkeypatch: Any) -> None:
    from taskdash.cmd_serve import SERVE_INSTALL, SERVE_REQUIREMENT

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    assert extra == [SERVE_REQUIREMENT]
    assert "pip install -e '.[serve]'" in SERVE_INSTALL and "pip install 'taskdash[serve]'" in SERVE_INSTALL
    monkeypatch.setitem(sys.modules, "textual_serve", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "textual_serve.server", None)
    res = CliRunner().invoke(cli, ["serve"], env={"TASKDASH_CONFIG": "/nonexistent"})
    assert res.exit_code == EXIT_REFUSED
    line = res.stderr.strip()
    assert line == f"taskdash: taskdash serve needs textual-serve, the 'serve' extra: {SERVE_INSTALL}", line
    assert "'serve'" in line and SERVE_REQUIREMENT in line
