"""Fault injection, run folders: one live process per folder, no old run mixed into a new one.

A second ``s2s-train`` on a folder in use, a fresh start over a finished run
and a resume under other settings are each refused with one line, and leave
the folder as it was. Checkpoint and resume exactness: tests/test_faults_runs.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.training import locks
from experiments.core.errors import ConfigError, RunFolderError
from experiments.training.runs import find_runs
from experiments.training.train import run
from experiments.training.trainer import Trainer
from tests.conftest import REPO, compose_cfg
from tests.faults import TINY

SHORT = [*TINY, "trainer.max_steps=20", "trainer.eval_every=10", "trainer.log_every=4", "trainer.warmup_steps=5"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (lock files aside) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in locks.NAMES}


@pytest.fixture
def finished_run(tmp_path: Path, shared_cache: Path) -> Path:
    """A finished 20-update run (validations at 10 and 20) in tmp_path/run."""
    folder = tmp_path / "run"
    run(compose_cfg([*SHORT, f"cache_dir={shared_cache}"]), folder)
    return folder


def test_a_second_train_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path: Path, shared_cache: Path) -> None:
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from experiments.training import locks\n"
                               "with locks.hold(Path(sys.argv[1]), locks.TRAIN):\n"
                               "    print('held', flush=True); time.sleep(600)", str(folder)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    cfg = [*SHORT, f"cache_dir={shared_cache}"]
    # As under s2s-grid: the grid's own lock on the job folder does not stop the s2s-train it starts there.
    with locks.hold(folder, locks.GRID) as other:
        assert other is None
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(RunFolderError, match=rf"{folder} is in use by s2s-train pid {holder.pid} on host "
                                                     rf"{socket.gethostname()} .*wait for that run to end, or "
                                                     r"choose another hydra\.run\.dir"):
                run(compose_cfg(cfg), folder)
            assert not (folder / "metrics.jsonl").exists() and not (folder / "config.yaml").exists()
        finally:
            holder.kill()
            holder.wait()
        assert run(compose_cfg(cfg), folder)["steps"] == 20  # a dead holder keeps nothing locked


def test_a_folder_in_use_is_one_error_line_and_exit_2_from_the_command_line(tmp_path: Path) -> None:
    with locks.hold(tmp_path, locks.TRAIN):
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        done = subprocess.run([sys.executable, "-m", "experiments.training.train", *TINY, "trainer.max_steps=2",
                               f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=REPO, env=env)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    assert f"error: {tmp_path} is in use by s2s-train pid {os.getpid()} on host {socket.gethostname()}" in lines[0]
    assert not (tmp_path / ".hydra").exists()  # refused before Hydra wrote over the live run's record


def test_a_fresh_start_over_a_run_is_refused_and_overwrite_moves_the_old_run_aside(finished_run: Path,
                                                                                   shared_cache: Path) -> None:
    before = snapshot(finished_run)
    short = [*SHORT, f"cache_dir={shared_cache}", "trainer.max_steps=10"]  # validates at step 10 only
    with pytest.raises(RunFolderError, match=r"run already holds a run \(metrics\.jsonl, results\.json, checkpoints, "
                                             r"hyps\): add trainer\.resume=true to go on with it, choose another "
                                             r"hydra\.run\.dir, or add trainer\.overwrite=true to move it aside"):
        run(compose_cfg(short), finished_run)
    assert snapshot(finished_run) == before

    run(compose_cfg([*short, "trainer.overwrite=true"]), finished_run)
    (aside,) = finished_run.parent.glob("run.replaced-*")
    assert snapshot(aside) == before  # the old run whole, beside the new one
    assert sorted(p.name for p in (finished_run / "hyps").iterdir()) == ["valid-step10.txt"]  # no step-20 leftovers
    assert {json.loads(r)["step"] for r in (finished_run / "metrics.jsonl").read_text().splitlines()} <= {4, 8, 10}
    assert [r["run_dir"] for r in find_runs([finished_run.parent])] == [str(finished_run)]  # the old one is not tabled


def test_a_fresh_start_does_not_take_the_tokenizer_an_earlier_start_left(tmp_path: Path, shared_cache: Path) -> None:
    cfg = [*TINY, f"cache_dir={shared_cache}"]
    other = Trainer(compose_cfg([*cfg, "task.tokenizer.vocab_size=24"]), tmp_path / "other")
    (tmp_path / "run").mkdir()
    (tmp_path / "other" / "tokenizer").rename(tmp_path / "run" / "tokenizer")  # a start that died before training
    fresh = Trainer(compose_cfg(cfg), tmp_path / "run")
    assert other.data.src_vocab_size == 24 and fresh.data.src_vocab_size != 24


# ---------------------------------------------------------------------------
# Resume: the settings that shape training are the checkpoint's; the final tests are not logged twice.


def test_resuming_with_other_training_settings_is_refused_listing_them(finished_run: Path,
                                                                       shared_cache: Path) -> None:
    before = snapshot(finished_run)
    changed = [*SHORT, f"cache_dir={shared_cache}", "trainer.resume=true", "seed=7", "trainer.lr=0.01",
               "trainer.batch_tokens=1024", "model.dropout=0.2"]
    with pytest.raises(ConfigError, match=r"trainer\.resume=true with settings other than those .*last\.pt was "
                                          r"trained with: model\.dropout 0\.1 -> 0\.2, seed 1 -> 7, trainer\.batch_tokens "
                                          r"512 -> 1024, trainer\.lr \S+ -> 0\.01\. Resume with its settings"):
        run(compose_cfg(changed), finished_run)
    assert snapshot(finished_run) == before  # config.yaml and metrics.jsonl still the run's own


def test_a_new_budget_on_resume_needs_its_flag_and_is_recorded(finished_run: Path, shared_cache: Path) -> None:
    before = snapshot(finished_run)
    longer = [*SHORT, f"cache_dir={shared_cache}", "trainer.resume=true", "trainer.max_steps=30"]
    with pytest.raises(ConfigError, match=r"another budget than .*last\.pt was trained with: trainer\.max_steps 20 -> "
                                          r"30\. Add trainer\.change_budget=true to go on with the new budget"):
        run(compose_cfg(longer), finished_run)
    assert snapshot(finished_run) == before
    # where and how the run goes on, and how it is tested at the end, may change without a flag
    free = ["trainer.num_threads=2", "decoding.beam_size=2", "trainer.test_after_training=true",
            "decoding.min_len_choices=[0,3]"]
    resumed_results = run(compose_cfg([*longer, "trainer.change_budget=true", *free]), finished_run)
    assert resumed_results["steps"] == 30
    assert [t["min_len"] for t in resumed_results["length_choice"]["tried"]] == [0, 3]
    resumed = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 20, "changed": {"trainer.max_steps": [20, 30]}} in resumed
    assert [r["step"] for r in resumed if r["event"] == "valid"] == [10, 20, 30]


FINAL_TESTS = [*SHORT, "trainer.test_after_training=true", "trainer.keep_checkpoints=2",
               "trainer.average_checkpoints=2"]
TIMINGS = ("tokens_per_s", "train_seconds", "decode_seconds")


def events(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows without their timings (the only values an interruption may change)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def same_events(a: list[dict], b: list[dict]) -> bool:
    """The same rows in the same order; numbers equal to 1e-9 (the resume test's tolerance)."""
    def same(x, y) -> bool:
        return x == pytest.approx(y, rel=1e-9) if isinstance(y, float) else x == y

    return len(a) == len(b) and all(r.keys() == s.keys() and all(same(r[k], s[k]) for k in s) for r, s in zip(a, b))


def test_a_run_killed_in_its_final_tests_or_resumed_when_finished_logs_each_test_once(
        tmp_path: Path, shared_cache: Path, monkeypatch) -> None:
    common = [*FINAL_TESTS, f"cache_dir={shared_cache}"]
    run(compose_cfg(common), tmp_path / "straight")
    straight = events(tmp_path / "straight")
    assert [r["event"] for r in straight if r["step"] == 20] == ["train", "valid", "test", "valid_average",
                                                                 "test_average"]

    killed = tmp_path / "killed"
    record = Trainer.record

    def killed_in_the_averages_test(self, event, values):
        if event == "test_average":
            raise KeyboardInterrupt("killed")
        record(self, event, values)

    monkeypatch.setattr(Trainer, "record", killed_in_the_averages_test)
    with pytest.raises(KeyboardInterrupt):
        run(compose_cfg(common), killed)
    monkeypatch.setattr(Trainer, "record", record)
    resumed = [*common, "trainer.resume=true"]
    run(compose_cfg(resumed), killed)
    assert same_events(events(killed), straight)
    run(compose_cfg(resumed), killed)  # a finished run resumed: tested again, logged once
    assert same_events(events(killed), straight)
