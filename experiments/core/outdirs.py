"""Where report commands write unless told: ``outputs/<command>/``, never the committed ``results/``.

``results/`` holds what the README and docs/ quote and what tests/test_reproduce.py
rebuilds byte for byte, so a command run in a clone must not replace it by
accident: every report command (``s2s-tables``, ``s2s-compare``, ``s2s-bench``,
the sample-efficiency and scale reports) defaults to a folder under
``outputs/`` (git-ignored), and ``--out results`` replaces a committed report
on purpose. Each prints the folder it wrote, so the reader never has to guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

OUTPUTS = Path("outputs")


def default_out(command: str) -> Path:
    """The folder a command writes into when ``--out`` is not given (relative to the working directory)."""
    return OUTPUTS / command


def out_help(command: str, what: str = "report folder") -> str:
    """The ``--out`` help text: the default, and how to replace the committed copy."""
    return f"{what} (default: {default_out(command)}/; --out results replaces the committed report)"


def say_wrote(folder: Path, files: Iterable[Path | str]) -> None:
    """Print ``wrote FOLDER/: a.md, a.csv``: the folder first, so it can be copied from the terminal."""
    names = [Path(f).name for f in files]
    print(f"wrote {folder}/: {', '.join(names)}", flush=True)
