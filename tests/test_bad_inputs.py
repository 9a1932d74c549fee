"""The table of bad inputs (docs/bad-inputs.md) is pinned down: every row names a test, and that test
exists here.

The rows themselves are tested where the behaviour lives (decode, sample sheet, config, folds, stores,
artifacts); this test keeps the table and the tests from drifting apart, and fails when a row loses its test
or a kind of bad input loses its row.
"""

import ast
import re

import markdown_pages
from conftest import REPO

PAGE = REPO / "docs/bad-inputs.md"

# DICOM files, the sample sheet and the configuration: each kind must keep a row.
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
    "reversed percentiles",
    "unknown model",
    "fold without positives",
]


# Decoding limits, failure lists, moved runs, full disks: each must keep a row too.
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


def _table_rows(text: str) -> list[list[str]]:
    """The rows of every table of the page whose header starts with ``| input``."""
    rows, inside = [], False
    for line in markdown_pages.prose(text).splitlines():
        if line.startswith("| input"):
            inside = True
        elif inside and line.startswith("|"):
            if not re.fullmatch(r"\|[-:| ]+\|", line.strip()):  # not the header's separator
                rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
        else:
            inside = False
    return rows


def _tests() -> set[str]:
    names = set()
    for path in (REPO / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(f"{path.name}::{node.name}")
    return names


def test_the_page_keeps_a_row_for_every_kind():
    kinds = [row[0] for row in _table_rows(PAGE.read_text())]
    assert not [k for k in KINDS + DOCS_KINDS if k not in kinds]
    assert len(kinds) == len(set(kinds)), "a kind has two rows"


def test_every_row_of_the_bad_inputs_page_names_an_existing_test():
    rows = _table_rows(PAGE.read_text())
    assert len(rows) >= len(KINDS + DOCS_KINDS)
    tests = _tests()
    for row in rows:
        assert len(row) == 5, f"row {row[0]!r} has {len(row)} cells, not 5 (an unescaped | ?)"
        named = re.findall(r"`([\w.]+::\w+)`", row[-1])
        assert named, f"row {row[0]!r} names no test"
        missing = [n for n in named if n not in tests]
        assert not missing, f"row {row[0]!r}: {missing} not found under tests/"
