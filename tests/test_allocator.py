"""The malloc a run trains on: found, preloaded by the launchers, recorded, and never a change in what is computed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.bench.plan import TINY_TASK
from experiments.core import allocator
from experiments.core.errors import UserError
from tests.conftest import REPO

TCMALLOC = allocator.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None, reason="no tcmalloc here (" + allocator.INSTALL_HINT + ")")

IN_USE = "from experiments.core.allocator import malloc_in_use; print(malloc_in_use())"


def malloc_of(env: dict[str, str]) -> str:
    """What a Python process started with ``env`` reports as its malloc."""
    return subprocess.run([sys.executable, "-c", IN_USE], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def without_preload() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def test_the_system_choice_leaves_the_environment_as_it_is() -> None:
    env, said = allocator.preload_env(without_preload(), "system")
    assert env == without_preload() and said == "system"
    assert malloc_of(env) == "system"


def test_asking_for_tcmalloc_where_there_is_none_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    with pytest.raises(UserError, match="libtcmalloc-minimal4.*--allocator system"):
        allocator.preload_env(without_preload(), "tcmalloc")
    env, said = allocator.preload_env(without_preload(), "auto")  # auto falls back, and says why
    assert "LD_PRELOAD" not in env and said.startswith("system (no tcmalloc found")
    with pytest.raises(UserError, match="unknown allocator 'jemalloc'"):
        allocator.preload_env(without_preload(), "jemalloc")


@needs_tcmalloc
@pytest.mark.parametrize("choice", ["auto", "tcmalloc"])
def test_a_preloaded_process_runs_on_tcmalloc_and_keeps_what_was_preloaded_before(choice: str) -> None:
    env, said = allocator.preload_env(without_preload(), choice)
    assert env["LD_PRELOAD"] == TCMALLOC and said == f"tcmalloc ({TCMALLOC})"
    assert malloc_of(env) == "tcmalloc"
    again, said = allocator.preload_env(env, "system")  # a tcmalloc the user preloaded stays
    assert again == env and said.startswith("tcmalloc")


@needs_tcmalloc
def test_the_grid_starts_its_jobs_on_tcmalloc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.training import grid

    started, real_popen = [], subprocess.Popen

    class Stop(Exception):
        pass

    def popen(cmd: list[str], **kwargs: object) -> subprocess.Popen:
        if cmd[1:3] != ["-m", "experiments.training.train"]:
            return real_popen(cmd, **kwargs)  # ldconfig, git
        started.append(kwargs["env"])
        raise Stop  # the job's environment is all this test needs

    monkeypatch.setattr(grid.subprocess, "Popen", popen)
    monkeypatch.setenv("LD_PRELOAD", "")
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit):
        grid.main(["smoke:1", "--runs-dir", str(runs), "--jobs", "1", "--committed", "none"])
    assert started and all(env["LD_PRELOAD"] == TCMALLOC for env in started)
    started.clear()
    with pytest.raises(SystemExit):
        grid.main(["smoke:1", "--runs-dir", str(runs), "--jobs", "1", "--committed", "none", "--allocator", "system"])
    assert started and all(env["LD_PRELOAD"] == "" for env in started)


@needs_tcmalloc
def test_training_on_tcmalloc_logs_the_system_mallocs_losses_side_by_side(tmp_path: Path, shared_cache: Path) -> None:
    from experiments.bench import allocator as bench

    out = tmp_path / "allocator.md"
    bench.main(["--models", "gru_tiny", "--steps", "4", "--log-every", "2", "--work-dir", str(tmp_path / "work"),
                "--out", str(out), "--no-bf16", *TINY_TASK, "trainer.batch_tokens=256", f"cache_dir={shared_cache}"])
    text = out.read_text()
    windows = [line.strip("| ").split(" | ") for line in text.splitlines()
               if line.startswith("| gru_tiny | ") and line.split(" | ")[1][0].isdigit()]
    assert [w[1] for w in windows] == ["1-2", "3-4"]
    assert all(float(cell) > 0 for w in windows for cell in w[3:5])
    runs = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| gru_tiny | fp32 |")]
    assert [(r[2], r[5], r[6]) for r in runs] == [("fp32, system", "–", "system"),
                                                  ("fp32, tcmalloc", "the same", "tcmalloc")]


@needs_tcmalloc
def test_a_run_on_the_system_malloc_is_told_how_to_preload_tcmalloc_and_one_on_it_is_not() -> None:
    hint = "from experiments.core.allocator import preload_hint; print(preload_hint())"
    on = {"system": without_preload(), "tcmalloc": allocator.preload_env(without_preload(), "tcmalloc")[0]}
    said = {name: subprocess.run([sys.executable, "-c", hint], cwd=REPO, env=env, capture_output=True, text=True,
                                 check=True).stdout.strip() for name, env in on.items()}
    assert f"LD_PRELOAD={TCMALLOC}" in said["system"] and said["tcmalloc"] == "None"
