"""The documentation as a reader meets it: every relative link and anchor between README.md and docs/
resolves, every page says first what it is for, and no page tells the project's own development history
(issue numbers, who had which machine, how a figure was reached): measurements live in docs/benchmarks.md
with their command, machine and date."""

from __future__ import annotations

import re
from pathlib import Path

import markdown_pages
import pytest
from conftest import REPO

DOCS = REPO / "docs"
DOC_PAGES = sorted(DOCS.glob("*.md"))
# Pages linked before they exist (none now): the link test skips them, the next test fails once one exists.
PENDING: set[Path] = set()

# Words of the project's history, never of its use. Checked on every docs page, code included.
HISTORY = {
    "an issue number": r"\bissues?\s*#?\d+",
    "a numbered reference": r"(?<![\w/&])#\d+\b",
    "who was lent a machine": r"\b(?:was|were|been|is|no GPU)\s+lent\b",
    "a dated remark": r"\b(?:at|as of) the time of writing\b",
    "a development branch": r"\bthe [\w-]+ branch\b",
    "a development session": r"\bthis (?:task|session|helper)\b",
    "a note to developers": r"\bTODO\b|\bintegrator\b",
}
# Stories of how a figure came to be: they belong with the measurement in benchmarks.md.
STORY = {
    "a figure from before a change": r"\d\s+before\)",
    "how a figure was reached": r"\bwas reached\b|\bhow (?:a|the) figure\b",
}


def _target(page: Path, link: str) -> tuple[Path | None, str]:
    """The file a relative link points to (None for the page itself) and its anchor."""
    path, _, anchor = link.partition("#")
    return ((page.parent / path).resolve() if path else None), anchor


def _relative_links() -> list[tuple[Path, str]]:
    found = []
    for page in markdown_pages.PAGES:
        for link in markdown_pages.links(page.read_text()):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
                found.append((page, link))
    return found


LINKS = _relative_links()


def test_the_pages_link_each_other():
    assert len(LINKS) > 50
    assert {p.name for p, _ in LINKS} >= {"README.md", "scale.md", "cluster.md", "predict.md"}


@pytest.mark.parametrize("page", markdown_pages.PAGES, ids=[p.name for p in markdown_pages.PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for source, link in LINKS:
        if source != page:
            continue
        target, anchor = _target(page, link)
        if target in PENDING:
            continue
        if target is not None and not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and (target or page).suffix == ".md":
            offered = markdown_pages.anchors((target or page).read_text())
            if anchor not in offered:
                broken.append(f"{link}: no heading gives #{anchor}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_pending_pages_are_still_to_come():
    arrived = [p.name for p in PENDING if p.exists()]
    assert not arrived, f"{arrived} exist now: take them out of PENDING so that links to them are checked"


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_every_page_says_first_what_it_is_for(page):
    """The title, then a paragraph of prose (not a heading, a list, a table or code) before anything else."""
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# "), f"{page.name} starts without a title"
    body = next(line for line in lines[1:] if line.strip())
    assert not re.match(r"^(#|```|\||- |\* |\d+\. |!\[)", body), f"{page.name}: {body!r}"


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_no_page_tells_the_projects_history(page):
    text = page.read_text()
    patterns = {**HISTORY, **({} if page.name == "benchmarks.md" else STORY)}
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in patterns.items():
            for match in re.finditer(pattern, line, flags=re.I):
                if not _in_test_name(line, match):
                    found.append(f"line {number}, {what}: {match.group(0)!r}")
    assert not found, f"{page.name}: " + "; ".join(found)


def _in_test_name(line: str, match: re.Match) -> bool:
    """A test's name quoted in a table (`test_x.py::test_the_issues_cases`) is the test's, not prose."""
    return any(m.start() <= match.start() < m.end() for m in re.finditer(r"`[\w./]+::\w+`", line))


def test_the_history_check_finds_what_it_looks_for():
    samples = [
        "the bound of issue 12",
        "see #42",
        "no GPU was lent to this work",
        "at the time of writing",
        "measured by the gan-projected branch",
    ]
    for sample in samples:
        assert any(re.search(p, sample, flags=re.I) for p in HISTORY.values()), sample
    assert re.search(STORY["a figure from before a change"], "0.21 (1.82 before)")
    assert not any(re.search(p, "see [GPU check](#gpu-check), job 12", flags=re.I) for p in HISTORY.values())
