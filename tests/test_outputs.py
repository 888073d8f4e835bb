"""Report commands run with their defaults write under outputs/, never over the committed results/, and say where.

Each command runs in a scratch copy of what it reads (the committed run
outputs or saved reports), with the working directory there, as a user runs it
in a clone: its files land in the folder it prints, and ``results/`` keeps the
bytes it had. The report it writes is the committed one (same command, same
inputs), so ``diff`` against ``results/`` is how a reader checks a table.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from experiments.core import outdirs
from tests.conftest import REPO


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the committed inputs these commands read, under results/ as in the repo."""
    results = tmp_path / "results"
    for experiment in ("multi30k_en_de", "multi30k_de_en", "multi30k_de_en_2k"):
        shutil.copytree(REPO / "results" / "runs" / experiment, results / "runs" / experiment)
    shutil.copy(REPO / "results" / "benchmarks_samsum.json", results)
    for name in ("multi30k_en_de.md", "multi30k_en_de.csv"):
        shutil.copy(REPO / "results" / name, results)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def printed_folder(out: str) -> Path:
    """The folder of the ``wrote FOLDER/: files`` line a command printed."""
    match = re.search(r"^wrote (\S+)/: (.+)$", out, re.MULTILINE)
    assert match, out
    return Path(match.group(1))


def check(clone: Path, before: dict[str, str], out: str, folder: str, files: list[str]) -> None:
    assert snapshot(clone / "results") == before  # nothing committed was replaced
    assert printed_folder(out) == outdirs.default_out(folder)
    for name in files:
        assert (clone / "outputs" / folder / name).is_file(), name


def test_s2s_tables_writes_the_committed_table_again_under_outputs(clone: Path, capsys) -> None:
    from experiments.reporting.tables import main
    from tests.conftest import data_root

    data_root()
    before = snapshot(clone / "results")
    main(["results/runs/multi30k_en_de"])  # the committed table's own "Regenerate:" command, as printed
    check(clone, before, capsys.readouterr().out, "tables", ["multi30k_en_de.md", "multi30k_en_de_length.png"])
    for name in ("multi30k_en_de.md", "multi30k_en_de.csv"):
        assert (clone / "outputs" / "tables" / name).read_text() == (REPO / "results" / name).read_text()


def test_sample_efficiency_writes_under_outputs(clone: Path, capsys) -> None:
    from experiments.reporting.sample_efficiency import main

    before = snapshot(clone / "results")
    main(["results/runs/multi30k_de_en", "results/runs/multi30k_de_en_2k", "--threshold", "38.9"])
    check(clone, before, capsys.readouterr().out, "sample_efficiency",
          ["sample_efficiency.md", "sample_efficiency.png"])
    assert ((clone / "outputs" / "sample_efficiency" / "sample_efficiency.md").read_text()
            == (REPO / "results" / "sample_efficiency.md").read_text())


def test_s2s_bench_rerender_writes_under_outputs(clone: Path, capsys) -> None:
    from experiments.bench.cli import main

    before = snapshot(clone / "results")
    main(["--from-json", "results/benchmarks_samsum.json", "--report", "benchmarks_samsum"])
    check(clone, before, capsys.readouterr().out, "bench", ["benchmarks_samsum.md", "benchmarks_samsum.json"])


@pytest.mark.parametrize("module, folder", [("experiments.analysis.compare", "compare_mt"), ("experiments.bench.scale_bench", "scale")])
def test_other_report_commands_default_under_outputs(module: str, folder: str, capsys) -> None:
    """s2s-compare (needs two trained runs: its run is tests/test_research_commands.py) and the scale bench (minutes
    of work) are checked by their --help; s2s-ensemble and s2s-align write nothing unless --out is given."""
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    assert f"default: {outdirs.default_out(folder)}/" in " ".join(capsys.readouterr().out.split())
