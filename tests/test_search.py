"""Random search as plain runs (experiments/training/search.py) and its expected-maximum report (experiments/reporting/expected_max.py)."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict

from experiments.core.config import validate
from experiments.core.errors import ConfigError
from experiments.reporting.expected_max import expected_max, main as evp_main
from experiments.training.search import apply_trial, parameters
from experiments.training.train import run
from tests.conftest import compose_cfg
from tests.test_trainer import TINY

SPACE = {
    "shared": {
        "batch": {"choice": [{"trainer.batch_tokens": 512, "trainer.eval_every": 4},
                             {"trainer.batch_tokens": 1024, "trainer.eval_every": 2}]},
        "trainer.label_smoothing": {"choice": [0.0, 0.1]},
    },
    "transformer": {"trainer.lr": {"log_uniform": [1e-3, 5e-3]}, "model.dropout": {"uniform": [0.0, 0.3]}},
    "gru": {"trainer.lr": {"log_uniform": [1e-3, 5e-3]}, "model.attention": {"choice": ["bahdanau", "luong_dot"]}},
}
DRAWN = ["trainer.batch_tokens", "trainer.eval_every", "trainer.label_smoothing", "trainer.lr"]


def trial_cfg(model: str, trial: int, space: dict | None = None, budget: list[float] | None = None):
    model_overrides = ["model=gru_tiny"] if model == "gru" else [o for o in TINY if o.startswith("model")]
    overrides = [o for o in TINY if not o.startswith("model")] + model_overrides + [
        f"seed={trial}", "trainer.max_steps=200", "trainer.max_tokens=3000", "trainer.test_after_training=false",
        "trainer.early_stopping_patience=0"]
    cfg = compose_cfg(overrides)
    with open_dict(cfg):
        cfg.search = {"name": "tune_toy", "seed": 7, "param_budget": budget or [], "space": space or SPACE}
        cfg.experiment = "tune_toy"
    return cfg


# ---- the estimator


def brute_force(values: list[float], n: int) -> tuple[float, float]:
    maxima = [max(draw) for draw in itertools.product(values, repeat=n)]  # every ordered draw, equally likely
    return float(np.mean(maxima)), float(np.std(maxima))


def test_expected_max_is_the_mean_of_the_best_of_n_draws_with_replacement() -> None:
    assert expected_max([1.0, 2.0, 3.0], 2)[0] == pytest.approx(22 / 9)  # Dodge et al.'s estimator by hand
    values = [31.2, 35.0, 28.4, 36.1, 35.0]
    for n in (1, 2, 3, 4):
        assert expected_max(values, n) == pytest.approx(brute_force(values, n))
    assert expected_max(values, 1)[0] == pytest.approx(np.mean(values))
    assert expected_max(values, 200)[0] == pytest.approx(max(values), abs=1e-3)


# ---- the draws


def test_a_trial_is_a_pure_function_of_search_seed_model_and_trial() -> None:
    first = {k: OmegaConf.select(validate(apply_trial(trial_cfg("transformer", 3))), k) for k in DRAWN}
    again = {k: OmegaConf.select(validate(apply_trial(trial_cfg("transformer", 3))), k) for k in DRAWN}
    assert first == again
    others = [{k: OmegaConf.select(validate(apply_trial(trial_cfg("transformer", t))), k) for k in DRAWN}
              for t in range(1, 9)]
    assert len({json.dumps(o, sort_keys=True) for o in others}) > 4  # trials differ
    for o in others:  # a bundle's keys are set together
        assert (o["trainer.batch_tokens"], o["trainer.eval_every"]) in ((512, 4), (1024, 2))
        assert 1e-3 <= o["trainer.lr"] <= 5e-3
    gru = validate(apply_trial(trial_cfg("gru", 3)))
    assert gru.model.attention.value in ("bahdanau", "luong_dot")


def test_shapes_outside_the_parameter_budget_are_drawn_again() -> None:
    space = {"transformer": {"model.ff_size": {"choice": [64, 4096]}, "model.d_model": {"choice": [32, 64]}}}
    sizes = set()
    for trial in range(1, 7):
        cfg = validate(apply_trial(trial_cfg("transformer", trial, space, budget=[0, 60_000])))
        sizes.add((cfg.model.ff_size, cfg.model.d_model))
        assert parameters(cfg) <= 60_000
    assert sizes <= {(64, 32), (64, 64)} and (4096, 32) not in sizes
    with pytest.raises(ConfigError, match="no draw of transformer's space"):
        apply_trial(trial_cfg("transformer", 1, space, budget=[0, 10]))


@pytest.mark.parametrize("space, message", [
    ({"transformer": {"model.no_such_key": {"choice": [1]}}}, "not a config key of model 'transformer'"),
    ({"transformer": {"trainer.lr": {"normal": [0, 1]}}}, "expected one of"),
    ({"transformer": {"trainer.lr": {"log_uniform": [0.0, 1.0]}}}, "lo > 0"),
    ({"gru": {"trainer.lr": {"choice": [1e-3]}}}, "no space for model 'transformer'"),
])
def test_a_bad_space_is_one_clear_error(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_trial(trial_cfg("transformer", 1, space))


def test_runs_without_a_search_are_left_as_they_are() -> None:
    cfg = compose_cfg(TINY)
    assert apply_trial(cfg) is cfg


# ---- trials as runs, and the report


@pytest.fixture(scope="module")
def search_runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("tune_toy")
    for model, trial in itertools.product(("gru", "transformer"), (1, 2)):
        cfg = trial_cfg(model, trial)
        with open_dict(cfg):
            cfg.cache_dir = str(shared_cache)
        run(cfg, root / model / f"seed{trial}")
    return root


def test_a_trial_trains_with_its_draws_up_to_the_token_budget(search_runs: Path) -> None:
    for model, trial in itertools.product(("gru", "transformer"), (1, 2)):
        folder = search_runs / model / f"seed{trial}"
        saved = OmegaConf.load(folder / "config.yaml")
        drawn = validate(apply_trial(trial_cfg(model, trial)))
        assert {k: OmegaConf.select(saved, k) for k in DRAWN} == {k: OmegaConf.select(drawn, k) for k in DRAWN}
        events = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        tokens = max(e["tokens"] for e in events if e["event"] == "valid")
        # stopped by the budget: at the first update that reached it, far before max_steps
        assert 3000 <= tokens < 3000 + saved.trainer.batch_tokens
        assert json.loads((folder / "results.json").read_text())["steps"] < 200
        assert not list((folder / "hyps").glob("test*"))  # a search sees validation only


def test_the_report_gives_each_models_expected_best_and_its_trials(search_runs: Path, tmp_path: Path) -> None:
    (search_runs / "gru" / "seed3").mkdir()  # an unfinished trial: counted, not used
    evp_main([str(search_runs), "--out", str(tmp_path)])
    text = (tmp_path / f"{search_runs.name}_evp.md").read_text()
    scores = {m: [json.loads((search_runs / m / f"seed{t}" / "results.json").read_text())["valid_bleu"]
                  for t in (1, 2)] for m in ("gru", "transformer")}
    for n in (1, 2):
        row = "| {} | {:.2f} ± {:.2f} | {:.2f} ± {:.2f} |".format(n, *expected_max(scores["gru"], n),
                                                                 *expected_max(scores["transformer"], n))
        assert row in text
    assert "| gru | 2 / 3 |" in text and "| transformer | 2 / 2 |" in text
    assert "batch_tokens=" in text and "up to 3,000 real target tokens" in text
    assert (tmp_path / f"{search_runs.name}_evp.png").read_bytes().startswith(b"\x89PNG")


def test_export_keeps_each_trials_best_validation_outputs_re_scorable(search_runs: Path, tmp_path: Path) -> None:
    evp_main([str(search_runs), "--export", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    for model, trial in itertools.product(("gru", "transformer"), (1, 2)):
        copy = tmp_path / "runs" / "tune_toy" / model / f"seed{trial}"
        best = json.loads((copy / "results.json").read_text())["best_step"]
        assert sorted(p.name for p in copy.rglob("*") if p.is_file()) == [
            "config.yaml", "metrics.jsonl", "results.json", f"valid-step{best}.txt.gz"]
        original = (search_runs / model / f"seed{trial}" / "hyps" / f"valid-step{best}.txt").read_bytes()
        assert gzip.decompress((copy / "hyps" / f"valid-step{best}.txt.gz").read_bytes()) == original
    assert (tmp_path / "out" / "tune_toy_evp.md").read_text().count("| 2 | ") >= 1


def test_the_report_refuses_a_folder_without_trials(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        evp_main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
