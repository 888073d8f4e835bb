"""The README and docs/*.md as a CommonMark renderer reads them: comments closed, links alive, markers paired.

A generated table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``
(or ``<!-- compute-plan -->`` ... ``<!-- /compute-plan -->``); the commands
that write it look for both markers. A marker typed wrong (``<!-- /table:samsum``
without its ``-->``) opens a comment that hides everything up to the next
``-->``, and the command then finds no markers: both are caught here, as is a
relative link to a file or heading that is not there.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- (/?)(table:[\w.-]+|compute-plan) -->")
COMMENTS_ONLY = re.compile(r"(\s*<!--.*?-->)+\s*", re.DOTALL)


def tokens(text: str) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(text)


def slug(heading: str, seen: Counter) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    n = seen[base]
    seen[base] += 1
    return base if n == 0 else f"{base}-{n}"


def anchors(path: Path) -> set[str]:
    found, seen = set(), Counter()
    stream = tokens(path.read_text())
    for i, token in enumerate(stream):
        if token.type == "heading_open":
            inline = stream[i + 1]
            found.add(slug("".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline")),
                           seen))
    return found


def problems(path: Path) -> list[str]:
    """Everything wrong with one document, as messages naming the line."""
    text = path.read_text()
    found = []
    stream = tokens(text)
    for token in stream:
        line = token.map[0] + 1 if token.map else "?"
        if token.type == "html_block" and "<!--" in token.content:
            if token.content.count("<!--") != token.content.count("-->"):
                found.append(f"{path.name}:{line}: an HTML comment is not closed: it hides the rest of the page")
            elif not COMMENTS_ONLY.fullmatch(token.content):
                found.append(f"{path.name}:{line}: text inside or beside an HTML comment is hidden: "
                             f"{token.content.strip()[:80]!r}")
    for block, token in ((b, t) for b in stream if b.type == "inline" for t in b.children or []):
        if token.type == "text" and "<!--" in token.content:  # a comment that never closes renders as text
            found.append(f"{path.name}:{block.map[0] + 1 if block.map else '?'}: an HTML comment is not closed")
    found += link_problems(path, stream)
    found += marker_problems(path, stream)
    return found


def link_problems(path: Path, stream: list[Token]) -> list[str]:
    found = []
    for block in (t for t in stream if t.type == "inline"):
        for token in block.children or []:
            target = token.attrs.get("href") if token.type == "link_open" else (
                token.attrs.get("src") if token.type == "image" else None)
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", str(target)):
                continue  # no link, or http:, mailto: ...
            file, _, anchor = str(target).partition("#")
            where = (path.parent / file).resolve() if file else path
            line = block.map[0] + 1 if block.map else "?"
            if not where.exists():
                found.append(f"{path.name}:{line}: link to {target}: no such file")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                found.append(f"{path.name}:{line}: link to {target}: {where.name} has no heading #{anchor}")
    return found


def marker_problems(path: Path, stream: list[Token]) -> list[str]:
    """Each marker a block of its own (not in code), opened before it is closed, once."""
    found, open_ = [], None
    seen: Counter = Counter()
    for token in stream:
        if token.type != "html_block":
            continue
        for closing, name in MARKER.findall(token.content):
            line = token.map[0] + 1 if token.map else "?"
            if not closing:
                if open_:
                    found.append(f"{path.name}:{line}: <!-- {name} --> opens inside {open_}, which is not closed")
                open_ = name
                seen[name] += 1
            elif open_ != name:
                found.append(f"{path.name}:{line}: <!-- /{name} --> closes what was not opened")
            else:
                open_ = None
    if open_:
        found.append(f"{path.name}: <!-- {open_} --> is never closed")
    found += [f"{path.name}: <!-- {name} --> appears {n} times" for name, n in seen.items() if n > 1]
    raw = Counter(f"{'/' if c else ''}{n}" for c, n in MARKER.findall(path.read_text()))
    for name in {n.lstrip("/") for n in raw}:
        if raw[name] != raw["/" + name]:
            found.append(f"{path.name}: {raw[name]} <!-- {name} --> against {raw['/' + name]} closing markers")
    return found


def markers(path: Path) -> set[str]:
    return {name for closing, name in MARKER.findall(path.read_text()) if not closing}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_document_renders_whole_with_live_links_and_paired_markers(path: Path) -> None:
    assert problems(path) == []


def test_each_generated_table_lives_in_one_document() -> None:
    owners: dict[str, list[str]] = {}
    for path in DOCUMENTS:
        for name in markers(path):
            owners.setdefault(name, []).append(path.name)
    assert {name: files for name, files in owners.items() if len(files) > 1} == {}
    # the tables the commands write: every committed comparison table and report has its place
    assert {"table:summary", "compute-plan", "table:multi30k_de_en", "table:samsum", "table:aeslc",
            "table:benchmarks", "table:time_to_bleu", "table:sample_efficiency"} <= set(owners)


def test_readme_is_short_and_leads_with_the_finding() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert text.index("## The finding") < text.index("## Quick start") < text.index("## Contents")


@pytest.mark.parametrize("broken, message", [
    ("a\n<!-- table:x -->\n| t |\n<!-- /table:xWhat this shows\n\n## Next\n\n<!-- table:y -->\n<!-- /table:y -->\n",
     "not closed"),
    ("a\n<!-- table:x -->\nbody\n\n## Next\n", "never closed"),
    ("a\n<!-- table:x -->\n<!-- /table:x --> and text\n\n## Next\n", "hidden"),
    ("see [the plan](#nowhere) and [a file](missing.md)\n", "no heading #nowhere"),
    ("text <!-- a comment that runs on\n\nand on\n", "not closed"),
])
def test_the_checks_catch_what_broke_the_readme(broken: str, message: str, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(broken)
    assert any(message in p for p in problems(page)), problems(page)
