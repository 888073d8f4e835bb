"""Random search as plain runs (experiments/training/search.py), its expected-maximum report
(experiments/reporting/expected_max.py) and the tuned recipes chosen from it (experiments/training/tuned.py)."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from experiments.core.config import validate
from experiments.core.config_groups import check_groups
from experiments.core.errors import ConfigError
from experiments.reporting.expected_max import (cpu_hours_text, crossing, early_ranking, expected_max, hours_text,
                                               kendall_tau, machine, main as evp_main, shared_settings)
from experiments.training import search
from experiments.training.search import Trial, apply_trial, apply_tuned, distributions, parameters
from experiments.training.train import run
from experiments.training.tuned import main as tuned_main
from tests.conftest import CONF, compose_cfg
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


def test_the_report_says_between_which_budgets_the_lead_changes_hands() -> None:
    def trials(*scores: float) -> list[Trial]:
        return [Trial("m", k, v, "bleu", 1, 1, 1, 0.0, None, 1, 1, {}, {}) for k, v in enumerate(scores, start=1)]

    # n = 1: means 2.0 against 2.25; n = 2: 1 x 1/4 + 3 x 3/4 = 2.5 against 2 x 1/4 + 2.5 x 3/4 = 2.375
    assert crossing({"gru": trials(1.0, 3.0), "transformer": trials(2.0, 2.5)}) == (
        "With n = 1 the transformer leads, with n = 2 the gru: the lead changes hands between n = 1 and n = 2 "
        "within n <= 2.")
    assert crossing({"gru": trials(3.0, 3.0), "transformer": trials(1.0, 2.0)}) == (
        "The gru leads at every n up to 2: the curves do not cross within n <= 2.")
    assert crossing({"gru": trials(3.0, 1.0), "transformer": trials(2.5)}) == (
        "With n = 1, all that both models have so far, the transformer leads.")


def test_cpu_hours_are_summed_and_say_how_many_trials_recorded_them() -> None:
    def trial(cpu: float | None) -> Trial:
        return Trial("m", 1, 30.0, "bleu", 1, 1, 1, 2.0, cpu, 1, 1, {}, {})

    assert cpu_hours_text([trial(1.25), trial(0.5)]) == "1.75"
    assert cpu_hours_text([trial(None), trial(0.5)]) == "0.50 (1 of 2 trials)"  # an older trial did not record it
    assert cpu_hours_text([trial(None)]) == "–"


def test_training_hours_are_split_by_device_where_trials_ran_on_a_gpu_too() -> None:
    def trial(device: str, hours: float) -> Trial:
        return Trial("m", 1, 30.0, "bleu", 1, 1, 1, hours, None, 1, 1, {}, {"hardware": {"device": device}})

    assert hours_text([trial("cpu", 2.5), trial("cpu", 1.0)]) == "3.50"
    assert hours_text([trial("cpu", 2.5), trial("cuda", 0.05), trial("cpu", 1.0)]) == "3.55 (cpu 3.50, cuda 0.05)"
    assert machine({"cpu": "AMD EPYC", "device": "cuda", "gpu": "NVIDIA H200"}) == "NVIDIA H200"
    assert machine({"cpu": "AMD EPYC", "device": "cpu"}) == "AMD EPYC"


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


def test_shapes_outside_the_parameter_budget_are_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    space = {"transformer": {"model.ff_size": {"choice": [64, 4096]}, "model.d_model": {"choice": [32, 64]}}}
    sizes = set()
    for trial in range(1, 7):
        cfg = validate(apply_trial(trial_cfg("transformer", trial, space, budget=[0, 60_000])))
        sizes.add((cfg.model.ff_size, cfg.model.d_model))
        assert parameters(cfg) <= 60_000
    assert sizes <= {(64, 32), (64, 64)} and (4096, 32) not in sizes
    monkeypatch.setattr(search, "MAX_REDRAWS", 20)  # the refusal after the last redraw, without building 1000 models
    with pytest.raises(ConfigError, match="no draw of transformer's space in 20 fell within"):
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
    # a run trainer.overwrite=true moved aside (as s2s-grid does to a job stopped before its first checkpoint):
    # neither a trial nor an unfinished one, even where it got as far as a results.json
    shutil.copytree(search_runs / "gru" / "seed1", search_runs / "gru" / "seed3.replaced-20261207-143704")
    evp_main([str(search_runs), "--out", str(tmp_path)])
    text = (tmp_path / f"{search_runs.name}_evp.md").read_text()
    scores = {m: [json.loads((search_runs / m / f"seed{t}" / "results.json").read_text())["valid_bleu"]
                  for t in (1, 2)] for m in ("gru", "transformer")}
    for n in (1, 2):
        row = "| {} | {:.2f} ± {:.2f} | {:.2f} ± {:.2f} |".format(n, *expected_max(scores["gru"], n),
                                                                 *expected_max(scores["transformer"], n))
        assert row in text
    assert "| gru | 2 / 3 |" in text and "| transformer | 2 / 2 |" in text
    # every trial here recorded its CPU seconds: the budget table sums them, each trial's row gives its own
    for model in ("gru", "transformer"):
        cpu = [json.loads((search_runs / model / f"seed{t}" / "results.json").read_text())["train_cpu_seconds"] / 3600
               for t in (1, 2)]
        assert all(c > 0 for c in cpu)
        assert re.search(rf"\| {model} \| 2 / \d \| [\d,]+ \| [\d.]+ \| [\d.]+ \| {sum(cpu):.2f} \|", text)
    assert "batch_tokens=" in text and "up to 3,000 real target tokens" in text
    rising = {m: sum(json.loads((search_runs / m / f"seed{t}" / "results.json").read_text())["best_step"] ==
                     json.loads((search_runs / m / f"seed{t}" / "results.json").read_text())["steps"] for t in (1, 2))
              for m in ("gru", "transformer")}
    assert f"(still rising, so a longer budget could rank them otherwise): gru {rising['gru']} of 2, " \
           f"transformer {rising['transformer']} of 2." in text
    assert (tmp_path / f"{search_runs.name}_evp.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / f"{search_runs.name}_settings.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / f"{search_runs.name}_trials.png").read_bytes().startswith(b"\x89PNG")
    assert f"`{search_runs.name}_settings.png`" in text and f"`{search_runs.name}_trials.png`" in text


def test_kendall_tau_counts_concordant_and_discordant_pairs() -> None:
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant pairs, 1 discordant
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(2 * 3))  # tau-b: the tie leaves x's side
    assert np.isnan(kendall_tau([1, 1], [1, 2]))


def test_the_early_ranking_reads_each_trials_best_up_to_half_the_budget() -> None:
    def trial(model: str, number: int, curve: list[tuple[int, float]]) -> Trial:
        rows = [{"event": "valid", "tokens": t, "bleu": b} for t, b in curve]
        return Trial(model, number, max(b for _, b in curve), "bleu", 1, 1, 1, 1.0, None, 1, 1000, {}, {}, {}, rows)

    # up to 500 tokens the GRU's trials rank 1 > 2 > 3, at the end 3 > 2 > 1; trial 3's 39 at 750 is not early
    gru = [trial("gru", 1, [(250, 25.0), (500, 30.0), (1000, 31.0)]), trial("gru", 2, [(500, 20.0), (1000, 35.0)]),
           trial("gru", 3, [(500, 10.0), (750, 39.0), (1000, 40.0)])]
    line = early_ranking({"gru": gru})
    assert "Ranked at 50% of the budget (500 real target tokens)" in line
    assert line.endswith("gru -1.00 over 3 trials, another best trial.")
    transformer = [trial("transformer", 1, [(500, 12.0), (1000, 20.0)]),
                   trial("transformer", 2, [(400, 11.0), (900, 19.0)])]
    line = early_ranking({"gru": gru, "transformer": transformer})
    together = kendall_tau([30, 20, 10, 12, 11], [31, 35, 40, 20, 19])
    assert line.endswith(f"transformer 1.00 over 2 trials, the same best trial; both models' trials together "
                         f"{together:.2f}.")


def test_the_settings_plot_reads_each_keys_distribution_from_the_space() -> None:
    """A bundle's keys are choices of their own (eval_every has no panel: it follows the batch size)."""
    assert distributions(SPACE, "gru") == {
        "trainer.batch_tokens": ("choice", [512, 1024]), "trainer.eval_every": ("choice", [4, 2]),
        "trainer.label_smoothing": ("choice", [0.0, 0.1]), "trainer.lr": ("log_uniform", [1e-3, 5e-3]),
        "model.attention": ("choice", ["bahdanau", "luong_dot"])}
    assert distributions(SPACE, "transformer")["model.dropout"] == ("uniform", [0.0, 0.3])

    def trial(model: str, settings: dict) -> Trial:
        return Trial(model, 1, 30.0, "bleu", 1, 1, 1, 1.0, None, 1, 1, settings, {}, SPACE)

    both = {"trainer.batch_tokens": 512, "trainer.eval_every": 4, "trainer.label_smoothing": 0.0, "trainer.lr": 2e-3}
    trials = {"gru": [trial("gru", {**both, "model.attention": "bahdanau"})],
              "transformer": [trial("transformer", {**both, "model.dropout": 0.1})]}
    assert shared_settings(trials) == ["trainer.batch_tokens", "trainer.label_smoothing", "trainer.lr"]


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


# ---- the tuned recipe: each model's best trial, trained again by a preset


def best_trials(root: Path) -> dict[str, int]:
    scores = {(m, t): json.loads((root / m / f"seed{t}" / "results.json").read_text())["valid_bleu"]
              for m in ("gru", "transformer") for t in (1, 2)}
    return {m: max((1, 2), key=lambda t: (scores[m, t], -t)) for m in ("gru", "transformer")}


def test_the_tuned_recipe_is_each_models_best_trial_and_a_run_trains_with_it(
        search_runs: Path, tmp_path: Path, shared_cache: Path) -> None:
    out = tmp_path / "toy.yaml"
    tuned_main([str(search_runs), "--out", str(out)])
    node = OmegaConf.to_container(OmegaConf.load(out))
    assert out.read_text().startswith("# The tuned recipes of search tune_toy")
    assert node["search"] == "tune_toy" and node["metric"] == "bleu" and node["trials"] == 2
    for model, trial in best_trials(search_runs).items():
        assert node["best"][model]["trial"] == trial
        drawn = validate(apply_trial(trial_cfg(model, trial)))
        assert node["settings"][model] == {k: OmegaConf.select(drawn, k) for k in node["settings"][model]}
        assert set(DRAWN) <= set(node["settings"][model])
    # a run with the recipe trains with its model's settings, whatever the presets said
    cfg = compose_cfg([o for o in TINY if not o.startswith("model")] + ["model=gru_tiny", "trainer.lr=0.5",
                                                                          "trainer.max_steps=3",
                                                                          "trainer.test_after_training=false"])
    with open_dict(cfg):
        cfg.tuned = node
        cfg.cache_dir = str(shared_cache)
    run(cfg, tmp_path / "run")
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert {k: OmegaConf.select(saved, k) for k in node["settings"]["gru"]} == node["settings"]["gru"]
    assert saved.tuned.best.gru.trial == node["best"]["gru"]["trial"] and saved.trainer.max_steps == 3
    # a key given on the command line stays as given; the rest of the recipe still applies
    kept = validate(apply_tuned(cfg, keep=frozenset({"trainer.lr"})))
    assert kept.trainer.lr == 0.5
    assert {k: OmegaConf.select(kept, k) for k in node["settings"]["gru"] if k != "trainer.lr"} == {
        k: v for k, v in node["settings"]["gru"].items() if k != "trainer.lr"}


def test_the_tuned_presets_load_the_recipe_and_train_on_the_full_token_budget(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    settings = {"gru": {"trainer.lr": 0.002, "model.hidden_size": 384},
                "transformer": {"trainer.lr": 0.0007, "model.enc_layers": 4}}
    (conf / "tuned").mkdir(exist_ok=True)
    (conf / "tuned" / "multi30k_de_en.yaml").write_text(yaml.safe_dump(
        {"search": "tune_multi30k_de_en", "metric": "bleu", "trials": 12, "best": {}, "settings": settings}))
    for preset, task in (("multi30k_de_en_tuned", "multi30k_de_en"), ("multi30k_en_de_tuned", "multi30k_en_de")):
        budgets = []
        for model, keys in settings.items():
            with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
                cfg = validate(apply_tuned(compose("config", overrides=[f"experiment={preset}", f"model={model}"])))
            assert {k: OmegaConf.select(cfg, k) for k in keys} == keys
            assert cfg.task.name == task and cfg.trainer.max_tokens == 10_240_000 and cfg.experiment == preset
            t = cfg.trainer  # one budget for both models, in real target tokens: the update cap never binds first
            budgets.append((t.max_tokens, t.max_steps, t.early_stopping_patience, t.keep_checkpoints,
                            t.average_checkpoints, t.test_after_training, OmegaConf.to_container(cfg.decoding)))
        assert budgets[0] == budgets[1] and budgets[0][1] * 1024 > budgets[0][0]


def test_a_tuned_preset_before_its_recipe_exists_is_one_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("tuned"))
    for preset in ("multi30k_de_en_tuned", "multi30k_en_de_tuned"):
        with pytest.raises(ConfigError, match=r"conf/tuned/multi30k_de_en.yaml, which is not written yet.*s2s-tuned"):
            check_groups([f"experiment={preset}"], conf)
    check_groups(["experiment=multi30k_de_en"], conf)  # presets without a tuned recipe pass
    cfg = compose_cfg(TINY)
    with open_dict(cfg):
        cfg.tuned = {"search": "tune_toy", "settings": {"gru": {"trainer.lr": 0.001}}}
    with pytest.raises(ConfigError, match="no settings for model 'transformer'"):
        apply_tuned(cfg)


def test_the_recipe_is_chosen_from_the_same_number_of_trials_per_model(search_runs: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "tune_toy"
    shutil.copytree(search_runs, runs)
    (runs / "gru" / "seed2" / "results.json").unlink()  # gru's trial 2 unfinished
    with pytest.raises(SystemExit) as exit_:
        tuned_main([str(runs), "--out", str(tmp_path / "a.yaml")])
    assert exit_.value.code == 2 and "different numbers of trials" in capsys.readouterr().err
    tuned_main([str(runs), "--trials", "1", "--out", str(tmp_path / "b.yaml")])
    node = OmegaConf.load(tmp_path / "b.yaml")
    assert node.trials == 1 and node.best.gru.trial == 1 and node.best.transformer.trial == 1
    with pytest.raises(SystemExit):
        tuned_main([str(runs), "--trials", "2", "--out", str(tmp_path / "c.yaml")])
    assert "gru trial(s) 2" in capsys.readouterr().err
    assert not (tmp_path / "a.yaml").exists() and not (tmp_path / "c.yaml").exists()


def test_the_report_counts_the_trials_its_preset_plans() -> None:
    """'trials done / planned': the preset's sweep (12 seeds a model), not only the trial folders found so far."""
    from experiments.reporting.expected_max import planned_trials

    assert planned_trials("tune_multi30k_de_en") == 12
    assert planned_trials("no_such_search") == 0 and planned_trials("") == 0
