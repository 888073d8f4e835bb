"""Hydra sweeps: the Optuna presets search the space and return the validation metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import HUNG_S, REPO, compose_cfg


@pytest.mark.parametrize("preset", ["tune_transformer", "tune_gru"])
def test_tune_presets_compose_with_the_optuna_sweeper(preset: str) -> None:
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert "optuna" in cfg.hydra.sweeper._target_.lower()
    assert cfg.hydra.sweeper.direction == "maximize" and "trainer.lr" in cfg.hydra.sweeper.params
    assert compose_cfg([f"experiment={preset}"]).model.name == preset.removeprefix("tune_")


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_the_best(tmp_path: Path, shared_cache: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "experiments.training.train", "-m", "experiment=tune_transformer", f"cache_dir={shared_cache}",
         "task.toy.train_size=2000", "task.toy.eval_size=100", "trainer=debug", "trainer.max_steps=20",
         "trainer.eval_every=10", "trainer.num_threads=1", "hydra.sweeper.n_trials=3", "model.d_model=choice(16,32)",
         "model.heads=2", "model.enc_layers=1", "model.dec_layers=1", "model.ff_size=64", "logger.mode=disabled",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=HUNG_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"trainer.lr", "trainer.warmup_steps", "model.dropout", "model.d_model"}
    trials = [json.loads(p.read_text()) for p in tmp_path.rglob("results.json")]
    assert len(trials) == 3
    assert best["best_value"] == pytest.approx(max(t["valid_bleu"] for t in trials))
