"""Checkpoint averaging: the snapshots kept, the mean taken, the averaged checkpoint tested and loadable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.training import averaging
from experiments.evaluation import checkpoint
from experiments.core.errors import CheckpointError, ConfigError
from experiments.evaluation.evaluate import evaluate_checkpoint, load_run
from experiments.training.train import run
from tests.conftest import REPO, compose_cfg

TINY = ["task=toy_reverse", "task.toy.train_size=400", "task.toy.eval_size=20", "model=gru_tiny",
        "trainer=debug", "trainer.eval_max_sentences=0", "trainer.max_steps=20", "trainer.eval_every=4", "trainer.early_stopping_patience=0",
        "trainer.keep_checkpoints=2", "trainer.average_checkpoints=3", "decoding.beam_size=2", "logger.mode=disabled"]


def test_mean_of_weights_is_taken_per_tensor_and_other_tensors_must_agree() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([3])}
    out = averaging.average_weights([a, b], ["a", "b"])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and torch.equal(out["n"], torch.tensor([3]))
    with pytest.raises(CheckpointError, match="integer tensor 'n' differs"):
        averaging.average_weights([a, {**b, "n": torch.tensor([4])}], ["a", "b"])
    with pytest.raises(CheckpointError, match="b holds other weights than a"):
        averaging.average_weights([a, {"w": torch.zeros(3), "n": torch.tensor([3])}], ["a", "b"])


def test_best_and_last_snapshots_are_chosen_by_score_and_step() -> None:
    scores = {10: 5.0, 20: 9.0, 30: 7.0, 40: 9.0, 50: 1.0}
    assert checkpoint.choose_snapshots(scores, 2, "last") == [40, 50]
    assert checkpoint.choose_snapshots(scores, 2, "best") == [20, 40]
    assert checkpoint.choose_snapshots(scores, 3, "best") == [20, 30, 40]
    assert checkpoint.choose_snapshots(scores, 9, "best") == [10, 20, 30, 40, 50]


def test_pruning_keeps_the_union_of_the_last_and_the_best(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        checkpoint.save({"model": {}}, checkpoint.snapshot_path(tmp_path, step))
    checkpoint.prune_snapshots(tmp_path, {10: 1.0, 20: 8.0, 30: 2.0, 40: 3.0}, keep=1)
    assert sorted(checkpoint.snapshots(tmp_path)) == [20, 40]


def test_averaging_more_snapshots_than_kept_is_refused_at_composition(make_cfg) -> None:
    with pytest.raises(ConfigError, match="average_checkpoints=3 must be between 0 .*keep_checkpoints=2"):
        make_cfg(*TINY)


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("avg")
    cfg = compose_cfg(TINY + ["trainer.keep_checkpoints=3", f"cache_dir={shared_cache}"])
    return run_dir, run(cfg, run_dir)


def test_a_run_keeps_its_snapshots_and_tests_their_average(averaged_run: tuple[Path, dict]) -> None:
    run_dir, results = averaged_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scores = {r["step"]: r["bleu"] for r in rows if r["event"] == "valid"}
    assert sorted(scores) == [4, 8, 12, 16, 20]
    kept = sorted(checkpoint.snapshots(run_dir / "checkpoints"))
    assert kept == sorted(set(checkpoint.choose_snapshots(scores, 3, "last"))
                          | set(checkpoint.choose_snapshots(scores, 3, "best")))
    avg = results["averaged"]
    assert avg["by"] == "best" and avg["n"] == 3 and avg["steps"] == checkpoint.choose_snapshots(scores, 3, "best")
    assert set(avg["test"]) == set(results["test"]) == {"test"}
    assert (run_dir / "hyps" / "test-beam2-average.txt").exists()
    assert {"valid_average", "test_average"} <= {r["event"] for r in rows}


def test_the_averaged_checkpoint_is_the_mean_of_its_snapshots_and_loads_like_any(
        averaged_run: tuple[Path, dict]) -> None:
    run_dir, results = averaged_run
    path = run_dir / "checkpoints" / results["averaged"]["checkpoint"]
    state = checkpoint.load(path)
    members = [checkpoint.load(checkpoint.snapshot_path(run_dir / "checkpoints", s))["model"]
               for s in results["averaged"]["steps"]]
    for key, value in state["model"].items():
        if value.is_floating_point():
            assert torch.allclose(value, sum(m[key] for m in members) / len(members), atol=1e-6), key
    # s2s-eval decodes it to the same score the trainer reported for the average
    evaluated = evaluate_checkpoint(str(path), ["split=test"])
    assert evaluated["bleu"] == pytest.approx(results["averaged"]["test"]["test"]["bleu"])
    assert load_run(path).step == max(results["averaged"]["steps"])


def test_snapshots_from_before_a_model_option_existed_average_with_later_ones(
        averaged_run: tuple[Path, dict], tmp_path: Path) -> None:
    """A run resumed at a later commit: its earlier snapshots lack an option the later ones hold at its default."""
    from experiments.core.config import MODEL_SCHEMAS

    run_dir, results = averaged_run
    old, new = (checkpoint.load(checkpoint.snapshot_path(run_dir / "checkpoints", s))
                for s in results["averaged"]["steps"][:2])
    defaults = MODEL_SCHEMAS[old["config"]["model"]["name"]]()
    at_default = next(k for k, v in old["config"]["model"].items() if k != "name" and v == getattr(defaults, k))
    del old["config"]["model"][at_default]
    checkpoint.save(old, tmp_path / "old.pt")
    checkpoint.save(new, tmp_path / "new.pt")
    averaging.average_files([tmp_path / "old.pt", tmp_path / "new.pt"], tmp_path / "avg.pt", {"by": "test"})
    new["config"]["model"]["dropout"] += 0.1  # a real difference still refuses
    checkpoint.save(new, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not snapshots of one model config"):
        averaging.average_files([tmp_path / "old.pt", tmp_path / "other.pt"], tmp_path / "avg2.pt", {"by": "test"})


def test_s2s_average_cli_writes_an_average_and_explains_what_is_missing(
        averaged_run: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = averaged_run
    out = tmp_path / "last2.pt"
    cli = [sys.executable, "-m", "experiments.training.averaging"]
    done = subprocess.run([*cli, str(run_dir), "--by", "last", "--n", "2", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert checkpoint.load(out)["averaged"]["steps"] == [16, 20]
    too_many = subprocess.run([*cli, str(run_dir), "--n", "9"], cwd=REPO, capture_output=True, text=True)
    assert too_many.returncode == 2 and "fewer than --n 9" in too_many.stderr and "Traceback" not in too_many.stderr
    zero = subprocess.run([*cli, str(run_dir), "--n", "0"], cwd=REPO, capture_output=True, text=True)
    assert zero.returncode == 2 and "--n 0: average at least 1 snapshot" in zero.stderr
    assert not list((run_dir / "checkpoints").glob("average-best0*"))
    empty = tmp_path / "run"
    (empty / "checkpoints").mkdir(parents=True)
    none = subprocess.run([*cli, str(empty)], cwd=REPO, capture_output=True, text=True)
    assert none.returncode == 2 and "trainer.keep_checkpoints" in none.stderr
