"""Reading the documentation's Markdown as GitHub renders it: fenced code blocks, the prose around them,
headings with their anchors, and links. The docs tests share it, so that a fence, a heading or a link is
read one way everywhere.

Fences follow CommonMark: a line of three or more backticks or tildes (indented at most three spaces)
opens a block, with an optional info string (``bash``, ``yaml``, ...); only a fence of the same character,
at least as long and without an info string, closes it. (Pairing every run of backticks with the next,
whatever its info string, takes the closing fence of a ```yaml block for an opening one and reads the
prose after it as code.)
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


@dataclass(frozen=True)
class Block:
    info: str  # the fence's language ("" when none)
    body: str
    line: int  # 1-based line of the opening fence


def split(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a page, and its other lines (prose; a fence's lines replaced by blanks)."""
    blocks, prose = [], []
    opened: tuple[str, str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if opened is None:
            if fence:
                opened, body = (fence.group(1), fence.group(2), number), []
                prose.append("")
            else:
                prose.append(line)
            continue
        closes = fence and not fence.group(2) and fence.group(1)[0] == opened[0][0]
        if closes and len(fence.group(1)) >= len(opened[0]):
            blocks.append(Block(opened[1], "\n".join(body) + ("\n" if body else ""), opened[2]))
            opened = None
        else:
            body.append(line)
        prose.append("")
    if opened is not None:  # CommonMark: an unclosed fence runs to the end of the page
        blocks.append(Block(opened[1], "\n".join(body) + ("\n" if body else ""), opened[2]))
    return blocks, prose


def code_blocks(text: str, languages: tuple[str, ...] | None = None) -> list[Block]:
    blocks, _ = split(text)
    return [b for b in blocks if languages is None or b.info in languages]


def prose(text: str) -> str:
    """The page without its fenced blocks and without its indented (four-space) code."""
    _, lines = split(text)
    return "\n".join(line for line in lines if not line.startswith("    "))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "").lower()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in " -_" or category[0] in ("L", "N") or category == "Mn":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page offers: its headings' (duplicates numbered as GitHub numbers them) and
    explicit ``<a name=...>`` ones."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(text).splitlines():
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def links(text: str) -> list[str]:
    """The targets of the page's links and images, in its prose (code is not a link)."""
    body = re.sub(r"`[^`\n]*`", "", prose(text))
    return LINK.findall(body) + IMAGE.findall(body)
