"""The README's `make run`, end to end: the Makefile's own command, on a budget of a few updates.

What is shortened is only the budget (updates, validation sentences, output length, examples on the page);
the steps are those of `make run`: data, both trainings side by side, the tables, the attention page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HUNG_S, REPO, data_root

# A few updates, a short output limit (an untrained model otherwise decodes to the limit), two examples.
SHORT = ["trainer.max_steps=4", "trainer.eval_every=2", "trainer.eval_max_sentences=10", "trainer.log_every=2",
         "decoding.beam_size=2", "decoding.max_len_a=0", "decoding.max_len_b=4"]


def make_run_command() -> list[str]:
    """The command line of `make run`'s recipe line that runs the virtualenv's interpreter (from `make -n`; the
    note on the extras follows it), the interpreter left out."""
    # --no-print-directory: under `make test` this make is nested and would add "Leaving directory" lines.
    dry = subprocess.run(["make", "-n", "--no-print-directory", "run", "VENV=/nonexistent", "OVERRIDES="], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    runs = [line.split() for line in dry.strip().splitlines() if line.startswith("/nonexistent/bin/python ")]
    assert runs, dry
    line = runs[-1]  # the virtualenv's interpreter, after the install steps
    return line[1:]


def run_demo(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = make_run_command()
    assert command == ["-m", "experiments.demo"]
    return subprocess.run([sys.executable, *command, "--out", str(out), "--examples", "2", *args], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=HUNG_S)


def printed_paths(stdout: str) -> dict[str, Path]:
    found = dict(re.findall(r"^  (comparison table|attention maps): +(\S+)", stdout, flags=re.M))
    return {name: Path(path) for name, path in found.items()}


def check_outputs(out: Path, stdout: str, preset: str, task: str, models: list[str]) -> None:
    """The printed table and page exist; the table's numbers are the runs' own; each run kept to the budget."""
    paths = printed_paths(stdout)
    assert paths == {"comparison table": out / f"{preset}.md", "attention maps": out / "attention" / "attention.html"}
    table = paths["comparison table"].read_text()
    assert table in stdout  # printed as written
    assert "Paired bootstrap" in table and "test chrf" in table and "by source length" in table
    for model in models:
        results = json.loads((out / "runs" / preset / model / "seed1" / "results.json").read_text())
        assert (results["task"], results["experiment"], results["steps"]) == (task, preset, 4)
        assert list(results["test"]) == ["test"]  # the demo decodes test_2016_flickr only
        row = next(line for line in table.splitlines() if line.startswith(f"| {results['model']} |"))
        assert f"| {results['test']['test']['bleu']:.2f} |" in row and f"| {results['test']['test']['chrf']:.2f} |" in row
    page = paths["attention maps"].read_text()
    assert all(model in page for model in models)  # both runs are on the page


@pytest.mark.slow
def test_make_run_compares_both_models_on_multi30k(tmp_path: Path, shared_cache: Path) -> None:
    data_root()  # the offline mirror (a fresh machine downloads the files instead)
    result = run_demo(tmp_path, *SHORT, f"cache_dir={shared_cache}")  # the data tests' parsed splits, if they ran
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Falling back" not in result.stdout
    check_outputs(tmp_path, result.stdout, "demo", "multi30k_de_en", ["gru_small", "transformer_small"])


@pytest.mark.slow
def test_make_run_falls_back_to_the_toy_task_and_says_so(tmp_path: Path, shared_cache: Path) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = run_demo(tmp_path / "out", *SHORT, "task.download=false", f"cache_dir={shared_cache}",
                      env={"S2S_DATA_DIR": str(empty)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert re.search(r"Multi30k could not be read or downloaded: .*no-data/multi30k.*\nFalling back to the toy task",
                     result.stdout)
    check_outputs(tmp_path / "out", result.stdout, "smoke", "toy_reverse", ["gru_tiny", "transformer_tiny"])
