"""The README's table of bad inputs is pinned down: every row names a test, and that test exists here.

The rows themselves are tested where the behaviour lives (decode, sample sheet, config, folds); this test
keeps the table and the tests from drifting apart, and fails when a row loses its test.
"""

import ast
import re

from conftest import REPO

# Every kind of bad input the issue that introduced the table named; each must keep a row.
KINDS = [
    "truncated",
    "not DICOM",
    "no pixel data",
    "unknown transfer syntax",
    "private transfer syntax",
    "signed pixels",
    "garbage high bits",
    "lossy",
    "VOI LUT Sequence",
    "missing file",
    "missing column",
    "blank id",
    "duplicate id",
    "empty CSV",
    "too many failures",
    "reversed percentiles",
    "unknown model",
    "fold without positives",
]


# The kinds docs/bad-inputs.md must keep (issue 25); other rows may follow them.
DOCS_KINDS = [
    "moved or copied run",
    "declared size too large",
    "codestream size disagrees with the header",
    "decoder out of memory",
    "decoder too slow",
    "too many failures, list kept",
    "full disk",
    "sharp, noisy edges with `decode.reduce`",
]


def _table_rows(text: str | None = None) -> list[list[str]]:
    if text is None:
        readme = (REPO / "README.md").read_text()
        text = readme[readme.index("### What a run checks, and what bad data gets") :]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| input"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = lines[start + 1 : end]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return [row for row in cells if any(c.strip("- ") for c in row)]


def _tests() -> set[str]:
    names = set()
    for path in (REPO / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(f"{path.name}::{node.name}")
    return names


def test_every_bad_input_row_names_an_existing_test():
    rows = _table_rows()
    assert [row[0] for row in rows] == KINDS
    tests = _tests()
    for row in rows:
        named = re.findall(r"`([\w.]+::\w+)`", row[-1])
        assert named, f"row {row[0]!r} names no test"
        missing = [n for n in named if n not in tests]
        assert not missing, f"row {row[0]!r}: {missing} not found under tests/"


def test_every_row_of_the_bad_inputs_page_names_an_existing_test():
    rows = _table_rows((REPO / "docs/bad-inputs.md").read_text())
    assert [row[0] for row in rows][: len(DOCS_KINDS)] == DOCS_KINDS
    tests = _tests()
    for row in rows:
        named = re.findall(r"`([\w.]+::\w+)`", row[-1])
        assert named, f"row {row[0]!r} names no test"
        missing = [n for n in named if n not in tests]
        assert not missing, f"row {row[0]!r}: {missing} not found under tests/"
