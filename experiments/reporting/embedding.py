"""Reports copied into Markdown documents between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers.

Every number in README.md and docs/ comes from a command this way, never by
hand: the command that writes a report under results/ also rewrites its copy
in the document (``--readme``), nested under the section that holds it.
"""

from __future__ import annotations

import re
from pathlib import Path

from experiments.core.atomic import write_text
from experiments.core.errors import UserError


def embed(readme: Path, name: str, table: str) -> None:
    """Replace the text between ``<!-- table:name -->`` and ``<!-- /table:name -->`` with ``table``."""
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--readme {readme}: cannot read it ({e}); name the README that holds the table's "
                        "markers") from None
    start, end = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
    if start not in text or end not in text:
        print(f"note: {readme} has no {start} ... {end} markers; add them where the table belongs to embed it")
        return
    body = table.split("\n", 2)[2]  # without the "# name" heading
    head, rest = text.split(start, 1)
    body = nested_headings(body, heading_level(head))
    write_text(readme, head + start + "\n" + body.rstrip() + "\n" + end + rest.split(end, 1)[1])


HEADING = re.compile(r"^(#{1,6}) ", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)  # a fenced code block, whose "# ..." lines are not headings


def heading_level(text: str) -> int:
    """The level of the last Markdown heading in ``text`` (0: none): the section a marker that follows it is in."""
    levels = [len(m.group(1)) for m in HEADING.finditer(FENCE.sub("", text))]
    return levels[-1] if levels else 0


def nested_headings(body: str, level: int) -> str:
    """``body``'s headings moved down so that its highest one sits just under a section of ``level`` (a report's
    "## gru: the trials" under docs/results.md's "## A fair fight" becomes "###"); never moved up."""
    levels = [len(m.group(1)) for m in HEADING.finditer(FENCE.sub("", body))]
    shift = max(0, level + 1 - min(levels)) if levels else 0
    if not shift:
        return body

    def deeper(prose: str) -> str:
        return HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + shift) + " ", prose)

    parts, last = [], 0
    for fence in FENCE.finditer(body):
        parts += [deeper(body[last:fence.start()]), fence.group(0)]
        last = fence.end()
    return "".join(parts + [deeper(body[last:])])
