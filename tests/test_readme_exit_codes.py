"""The README's exit-code table (under "### Exit codes") is collectors.core.errors.EXIT_CODES (issue 21):
every code has its row, no row names a code the table does not have, and each row says what the code's
meaning says (errors.py: "the README copies it")."""

from __future__ import annotations

import re
from pathlib import Path

from collectors.core.errors import EXIT_CODES, exit_code_summary

ROOT = Path(__file__).resolve().parents[1]


def _readme_exit_rows() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^### Exit codes[ \t]*$(.*?)(?=^#{1,3} )", text, re.M | re.S)
    assert m, 'README.md has no "### Exit codes" section'
    section = m.group(1)
    rows: dict[int, str] = {}
    in_table = False
    for line in section.splitlines():
        if not line.startswith("|"):
            if in_table:
                break  # the first table of the section only
            continue
        in_table = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue  # header and separator rows
        code = int(cells[0])
        assert code not in rows, f"README exit-code table lists {code} twice"
        rows[code] = "|".join(cells[1:]).strip()
    assert rows, 'no table rows under "### Exit codes" in README.md'
    return rows


def test_readme_lists_exactly_the_exit_codes() -> None:
    rows = _readme_exit_rows()
    codes = [e.code for e in EXIT_CODES]
    missing = sorted(set(codes) - set(rows))
    extra = sorted(set(rows) - set(codes))
    assert not missing, f"exit codes missing from the README table: {missing}"
    assert not extra, f"README table lists codes that EXIT_CODES does not have: {extra}"
    assert list(rows) == codes, f"README table order {list(rows)} != EXIT_CODES order {codes}"


def test_each_readme_row_says_the_codes_meaning() -> None:
    rows = _readme_exit_rows()
    for e in EXIT_CODES:
        assert e.code in rows, f"exit code {e.code} ({e.name}) has no row in the README table"
        assert rows[e.code] == e.meaning, f"README row for {e.code}: {rows[e.code]!r} != {e.meaning!r}"


def test_readme_states_the_one_line_summary() -> None:
    text = (ROOT / "README.md").read_text()
    assert exit_code_summary() in text
