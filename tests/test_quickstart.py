"""The README's `make run`, end to end on the default task, on CPU (about 4 minutes on 2 cores)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def make_run_command() -> list[str]:
    """The s2s-train command line that `make run` executes (from `make -n`)."""
    dry = subprocess.run(["make", "-n", "run", "VENV=/nonexistent"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    line = next(line for line in dry.splitlines() if "s2s-train" in line)
    return line.split("s2s-train", 1)[1].split()


@pytest.mark.slow
def test_make_run_trains_the_toy_task_and_prints_bleu(tmp_path: Path) -> None:
    args = make_run_command()
    assert args == ["experiment=quickstart"]
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args, f"hydra.run.dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}"],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = re.search(r"test: BLEU (\d+\.\d+)", result.stdout + result.stderr)
    assert printed, (result.stdout + result.stderr)[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert float(printed.group(1)) == pytest.approx(results["test"]["test"]["bleu"], abs=0.005)
    assert results["test"]["test"]["bleu"] > 80  # the toy task is learnt, not just run
