"""Fault injection, s2s-tables: a damaged or partial run folder is one line naming the file, never a table.

Built on a copy of the committed Multi30k en->de runs (results/runs/), each
test damages one file the way a cut copy, a full disk or a hand edit would.
Real-data test: the references come from $S2S_DATA_DIR.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest

from experiments.training import runs
from experiments.reporting import tables
from experiments.core.errors import UserError
from tests.conftest import REPO, data_root

COMMITTED = REPO / "results" / "runs" / "multi30k_en_de"


@pytest.fixture
def copied(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("S2S_DATA_DIR", str(data_root()))
    shutil.copytree(COMMITTED, tmp_path / "multi30k_en_de")
    return tmp_path / "multi30k_en_de"


def s2s_tables(capsys, *args: str) -> str:
    """The one error line of ``s2s-tables ARGS`` (exit 2)."""
    with pytest.raises(SystemExit) as done:
        tables.main(list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, message", [
    (truncate, r"results\.json is not readable JSON .*cut short or damaged; write it again with trainer\.resume"),
    (lambda p: p.write_text(""), r"results\.json is not readable JSON"),
    (lambda p: p.write_text("[]"), r"results\.json holds a list, not a run's summary"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "test": None})),
     r"results\.json has no scores of the test split \(\"test\": null\).*trainer\.test_after_training=true"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "model"})),
     r"results\.json lacks \['model'\]"),
])
def test_a_damaged_results_json_is_named(copied: Path, tmp_path: Path, capsys, damage, message: str) -> None:
    damage(copied / "gru" / "seed1" / "results.json")
    line = s2s_tables(capsys, str(copied), "--out", str(tmp_path / "out"))
    assert "gru/seed1/results.json" in line and re.search(message, line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:200])),
     r"test-beam5\.txt\.gz has \d+ lines, but test has 1000 sentences: cut short"),
    (lambda p: p.write_bytes(gzip.compress(b"\xff\xfe not UTF-8\n" * 1000)), r"test-beam5\.txt\.gz is not readable "
                                                                          r"UTF-8 text"),
    (truncate, r"test-beam5\.txt\.gz is not readable UTF-8 text .*damaged"),
])
def test_damaged_test_outputs_are_named(copied: Path, tmp_path: Path, capsys, damage, message: str) -> None:
    damage(copied / "transformer" / "seed1" / "hyps" / "test-beam5.txt.gz")
    line = s2s_tables(capsys, str(copied), "--out", str(tmp_path / "out"))
    assert re.search(message, line), line


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), r"cannot read .*gru/seed1/metrics\.jsonl .*the run folder is incomplete"),
    (truncate, r"gru/seed1/metrics\.jsonl:\d+ is not an event row: cut short or damaged"),
])
def test_a_missing_or_cut_metrics_file_is_named(copied: Path, tmp_path: Path, capsys, damage, message: str) -> None:
    damage(copied / "gru" / "seed1" / "metrics.jsonl")
    line = s2s_tables(capsys, str(copied), "--out", str(tmp_path / "out"))
    assert re.search(message, line), line


def test_a_missing_readme_is_named_before_any_work(copied: Path, tmp_path: Path, capsys) -> None:
    line = s2s_tables(capsys, str(copied), "--out", str(tmp_path / "out"), "--readme", str(tmp_path / "README.md"))
    assert f"--readme {tmp_path / 'README.md'}: no such file" in line and not (tmp_path / "out").exists()


def test_two_runs_of_one_model_and_seed_are_not_one_row(copied: Path, tmp_path: Path, capsys) -> None:
    shutil.copytree(copied / "gru" / "seed1", tmp_path / "longer" / "gru" / "seed1")  # e.g. another budget
    line = s2s_tables(capsys, str(copied), str(tmp_path / "longer"), "--out", str(tmp_path / "out"),
                      "--name", "multi30k_en_de")
    assert "has two gru runs of seed 1" in line


def test_an_export_that_fails_half_way_leaves_the_earlier_export_whole(copied: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:
    (run,) = [r for r in runs.find_runs([copied]) if r["model"] == "gru"]
    exported = runs.export(run, tmp_path / "export")
    before = {p.name: p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    real = runs.hypotheses

    def disk_full_at_the_second_split(run, split, averaged=False, expected=None):
        if split != "test":
            raise OSError(28, "No space left on device")
        return real(run, split, averaged, expected)

    run["steps"] += 1000  # a longer training of the same seed, exported over the earlier one
    (Path(run["run_dir"]) / "results.json").write_text(json.dumps(run))
    monkeypatch.setattr(runs, "hypotheses", disk_full_at_the_second_split)
    with pytest.raises((OSError, UserError)):
        runs.export(run, tmp_path / "export")
    assert {p.name: p.read_bytes() for p in exported.rglob("*") if p.is_file()} == before
