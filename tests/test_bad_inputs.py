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


def _table_rows() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### What a run checks, and what bad data gets") :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| input"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
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
