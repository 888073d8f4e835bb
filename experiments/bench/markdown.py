"""The report's Markdown cells and tables: shared by ``report`` and the sections kept in modules of their own."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.core.atomic import write_text
from experiments.core.outdirs import say_wrote


def fmt(value: Any, spec: str = ".0f", missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_cell(value: float | None) -> str:
    return fmt(value, ".2f") + "x" * (value is not None)


def machine(meta: dict[str, Any]) -> str:
    """The report's machine as prose: "Intel(R) Xeon(R) Processor (2 cores, no GPU)"."""
    return f"{meta['cpu']} ({meta['cores']} cores" + (f", {meta['gpu']})" if meta.get("gpu") else ", no GPU)")


def save_report(text: str, out: Path | None, readme: Path | None) -> None:
    """Write a one-file report to ``out`` and embed it in ``readme`` between markers named for ``out``."""
    from experiments.reporting.embedding import embed

    if out:
        write_text(out, text)
        say_wrote(out.parent, [out])
    if readme:
        embed(readme, out.stem, text)
