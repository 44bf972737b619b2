"""bench/s1_tui.py --splice: the issue-14 block goes after the issue-6 targets and is replaced in place."""

from __future__ import annotations

from pathlib import Path

from bench.report import ISSUE14_END, ISSUE14_START, splice_issue14


def test_splice_inserts_then_replaces_only_its_block(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# r\n\n## Targets (issue 6)\n\n| a |\n\n## Broker + unacked refresh\n\nrest\n")
    splice_issue14(path, [ISSUE14_START, "one", ISSUE14_END])
    text = path.read_text()
    assert text.index("| a |") < text.index("one") < text.index("## Broker + unacked refresh")
    splice_issue14(path, [ISSUE14_START, "two", ISSUE14_END])
    text = path.read_text()
    assert "two" in text and "one" not in text and text.count(ISSUE14_START) == 1
    assert text.endswith("rest\n") and text.startswith("# r\n")
