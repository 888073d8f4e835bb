"""s2s-bench --time-to-quality: the recipe a run trains with, JoeyNMT's seconds to the threshold, the ratios,
the targets' verdicts and the report section (the toy task end to end; JoeyNMT itself is not installed here).

No timing is asserted, nor where BLEU lands: thresholds 0 (reached at the first validation) and 101 (never).
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch
import yaml

from experiments.bench import analysis, cli, plan, ttq
from experiments.bench.plan import compose
from experiments.bench.report import render_markdown
from experiments.bench.targets import JOEYNMT_BEST, JOEYNMT_CURVE


@pytest.fixture
def cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("S2S_CACHE_DIR", str(shared_cache))
    return shared_cache


# ---------------------------------------------------------------------------
# JoeyNMT's updates and seconds to a threshold


@pytest.mark.parametrize(("threshold", "updates"), [
    (38.86, 2500), (JOEYNMT_BEST, 2500), (37.4, 2000), (37.41, 2500), (35.0, 2000), (10.5, 500), (0.0, 500),
    (38.87, None), (40.0, None)])
def test_joeynmt_updates_to_a_threshold_are_the_first_on_its_curve_at_or_above_it(threshold, updates) -> None:
    assert JOEYNMT_CURVE[2500] == 38.86 == JOEYNMT_BEST
    assert ttq.joeynmt_updates_to(threshold) == updates


def test_joeynmt_seconds_need_its_transformer_measured_here_at_its_curves_batches() -> None:
    measured = {"transformer": {"step_s": 2.0, "batch_tokens": 4096}, "gru": {"step_s": 9.0, "batch_tokens": 4096}}
    assert ttq.joeynmt_seconds(35.0, measured, 4096)["seconds"] == pytest.approx(2.0 * 2000)  # its Transformer's
    above = ttq.joeynmt_seconds(39.0, measured, 4096)
    assert above["seconds"] is None and above["updates"] is None and "not reached by its curve" in above["why"]
    assert "needs --joeynmt" in ttq.joeynmt_seconds(JOEYNMT_BEST, {}, 4096)["why"]
    assert "add transformer" in ttq.joeynmt_seconds(JOEYNMT_BEST, {"gru": measured["gru"]}, 4096)["why"]
    other = ttq.joeynmt_seconds(JOEYNMT_BEST, {"transformer": {"step_s": 1.0, "batch_tokens": 2048}}, 4096)
    assert other["seconds"] is None and "2048-token batches" in other["why"]
    failed = ttq.joeynmt_seconds(JOEYNMT_BEST, {"transformer": {"error": "boom"}}, 4096)
    assert failed["seconds"] is None and "boom" in failed["why"]


# ---------------------------------------------------------------------------
# the ratios and the targets, from a given report's rows

REPORT_JSON = """{
  "meta": {"cpu": "Some 2-core CPU", "cores": 2, "gpu": null, "task": "multi30k_de_en", "batch_tokens": 4096},
  "joeynmt": {"transformer": {"model": "transformer", "step_s": 2.2, "batch_tokens": 4096},
              "gru": {"model": "gru", "step_s": 2.5, "batch_tokens": 4096}},
  "time_to_quality": [
    {"model": "transformer", "config": "base", "recipe": "multi30k_de_en", "batch_tokens": 4096,
     "threshold": 38.86, "reached": true, "steps_to_bleu": 1750, "tokens_to_bleu": 6000000, "tokens": 6000000,
     "train_s": 400.0, "val_s": 80.0, "wall_s": 500.0, "best_bleu": 38.9, "eval_every": 250, "max_steps": 3000,
     "history": []},
    {"model": "gru", "config": "base", "recipe": "multi30k_de_en", "batch_tokens": 4096,
     "threshold": 38.86, "reached": true, "steps_to_bleu": 2250, "tokens_to_bleu": 7700000, "tokens": 7700000,
     "train_s": 880.0, "val_s": 100.0, "wall_s": 1000.0, "best_bleu": 39.1, "eval_every": 250, "max_steps": 3000,
     "history": []}]
}"""


def test_ratios_are_joeynmts_seconds_over_ours_by_hand() -> None:
    given = json.loads(REPORT_JSON)
    result = analysis.analyse([], given["joeynmt"], torch.device("cpu"), 4096, task="multi30k_de_en",
                              ttq=given["time_to_quality"])
    transformer, gru = result["time_to_quality"]
    # JoeyNMT: 2500 updates (its curve's first >= 38.86) x 2.2 s, its Transformer's, for both of ours
    assert transformer["joeynmt"]["seconds"] == gru["joeynmt"]["seconds"] == pytest.approx(5500.0)
    assert transformer["ratio_wall"] == pytest.approx(5500 / 500) and transformer["ratio_train"] == pytest.approx(
        5500 / 400)
    assert gru["ratio_wall"] == pytest.approx(5.5) and gru["ratio_train"] == pytest.approx(6.25)
    verdicts = {t["target"].split(" ")[0]: (t["verdict"], t["value"]) for t in result["targets"]}
    assert verdicts == {"transformer": ("yes", pytest.approx(11.0)), "gru": ("**no**", pytest.approx(5.5))}
    markdown = render_markdown({**given, **result}, ("time_to_quality", "targets"))
    assert "on Some 2-core CPU (2 cores, no GPU)" in markdown
    assert ("| transformer | multi30k_de_en | base | 4096 | 38.86 | yes | 1750 | 6.00 | 400 | 80 | 500 | 5500 | "
            "11.00x | 13.75x |") in markdown
    assert "| gru | multi30k_de_en | base | 4096 | 38.86 | yes | 2250 | 7.70 | 880 | 100 | 1000 | 5500 | 5.50x | " \
           "6.25x |" in markdown
    assert "- JoeyNMT: 2500 updates x 2.200 s an update = 5500 s." in markdown


def run_row(reached: bool = True, wall_s: float = 500.0, threshold: float = JOEYNMT_BEST) -> dict:
    return {"model": "transformer", "config": "base", "recipe": "multi30k_de_en", "batch_tokens": 4096,
            "threshold": threshold, "reached": reached, "steps_to_bleu": 1750 if reached else None,
            "tokens_to_bleu": None, "tokens": 5e6, "train_s": wall_s * 0.8, "val_s": wall_s * 0.1,
            "wall_s": wall_s, "best_bleu": 39.0 if reached else 37.0, "eval_every": 250, "max_steps": 3000}


MEASURED = {"transformer": {"step_s": 2.0, "batch_tokens": 4096}}  # JoeyNMT: 2500 x 2.0 = 5000 s to 38.86


@pytest.mark.parametrize(("row", "joeynmt", "device", "comparable", "verdict"), [
    (run_row(wall_s=500.0), MEASURED, "cpu", True, "yes"),            # 10x
    (run_row(wall_s=1000.0), MEASURED, "cpu", True, "**no**"),        # 5x
    (run_row(False, wall_s=1000.0), MEASURED, "cpu", True, "**no**"),  # past 5000 / 8 s and not there: < 5x
    (run_row(False, wall_s=400.0), MEASURED, "cpu", True, "not measured"),  # stopped before 625 s: cannot tell
    (run_row(wall_s=500.0), {}, "cpu", True, "not measured"),         # no --joeynmt: no ratio from elsewhere
    (run_row(wall_s=500.0), MEASURED, "cuda", True, "not measured"),  # the target is a CPU's
    (run_row(wall_s=500.0), MEASURED, "cpu", False, "not measured"),  # --tiny
    (run_row(wall_s=500.0, threshold=35.0), MEASURED, "cpu", True, "not measured"),  # another threshold
    (run_row(wall_s=500.0, threshold=39.5), MEASURED, "cpu", True, "not measured"),  # above JoeyNMT's curve
])
def test_time_to_quality_targets_say_yes_no_or_not_measured(row, joeynmt, device, comparable, verdict) -> None:
    rows = ttq.ttq_rows([row], joeynmt, 4096)
    [target, gru] = ttq.ttq_targets(rows, device, "multi30k_de_en", comparable)
    assert target["verdict"] == verdict and (target["met"] is None) == (verdict == "not measured")
    assert gru["verdict"] == "not measured" and "no time-to-quality run" in gru["against"]
    if not joeynmt:
        assert rows[0]["ratio_wall"] is None and "needs --joeynmt" in target["against"]


# ---------------------------------------------------------------------------
# the recipe


def ttq_spec(*argv: str) -> plan.Spec:
    specs, _ = plan.build_specs(cli.parse_args(["--configs", "none", "--no-decode", "--no-scaling", *argv]),
                                torch.device("cpu"))
    [spec] = [s for s in specs if s.kind == "ttq"]
    return spec


def test_preset_keys_follow_the_presets_defaults() -> None:
    keys = plan.preset_keys("multi30k_de_en_parity")
    assert {"trainer.batch_tokens", "trainer.max_steps", "trainer.keep_checkpoints", "decoding.beam_size"} <= keys
    assert not [k for k in keys if k.startswith(("hydra", "defaults"))]


def test_a_tuned_recipe_is_the_benchs_recipe_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(plan.CONF_DIR, conf)
    (conf / "tuned").mkdir(exist_ok=True)
    (conf / "tuned" / "multi30k_de_en.yaml").write_text(yaml.safe_dump(
        {"search": "tune_multi30k_de_en", "metric": "bleu", "trials": 12, "best": {},
         "settings": {"gru": {"trainer.batch_tokens": 1024, "trainer.lr": 0.002},
                      "transformer": {"trainer.batch_tokens": 2048, "model.enc_layers": 4}}}))
    monkeypatch.setattr(plan, "CONF_DIR", str(conf))
    plan._composed.cache_clear()
    try:
        assert {"trainer.batch_tokens", "trainer.lr", "model.enc_layers", "trainer.max_tokens"} <= \
            plan.preset_keys("multi30k_de_en_tuned")
        spec = ttq_spec("--tiny", "--models", "gru", "--time-to-quality", "--ttq-recipe", "multi30k_de_en_tuned")
        cfg = compose(spec.overrides)
        assert (cfg.trainer.batch_tokens, cfg.trainer.lr, cfg.experiment) == (1024, 0.002, "multi30k_de_en_tuned")
        forced = compose(ttq_spec("--tiny", "--models", "gru", "--time-to-quality", "--ttq-recipe",
                                  "multi30k_de_en_tuned", "trainer.lr=0.0005").overrides)
        assert (forced.trainer.batch_tokens, forced.trainer.lr) == (1024, 0.0005)  # the command line over the recipe
        (conf / "tuned" / "multi30k_de_en.yaml").unlink()
        with pytest.raises(plan.UserError, match="not written yet"):
            ttq_spec("--tiny", "--time-to-quality", "--ttq-recipe", "multi30k_de_en_tuned")
    finally:
        plan._composed.cache_clear()


def test_the_recipe_wins_over_the_bench_settings_and_the_command_line_over_both() -> None:
    # --tiny: no conf/experiment/toy_reverse.yaml, so the bench's 512-token batches; the parity preset's 2048
    plain = compose(ttq_spec("--tiny", "--models", "gru", "--time-to-quality").overrides)
    assert (plain.trainer.batch_tokens, plain.experiment) == (512, None)
    spec = ttq_spec("--tiny", "--models", "gru", "--time-to-quality", "--ttq-recipe", "multi30k_de_en_parity")
    parity = compose(spec.overrides)
    assert (parity.trainer.batch_tokens, parity.experiment, parity.task.name) == (2048, "multi30k_de_en_parity",
                                                                                  "toy_reverse")
    assert spec.ttb["recipe"] == "multi30k_de_en_parity" and spec.ttb["threshold"] == JOEYNMT_BEST
    assert spec.ttb["eval_every"] == parity.trainer.eval_every == 250 and spec.ttb["max_steps"] == 4  # --tiny's cap
    assert parity.trainer.precision.value == "fp32"  # the bench's, which the preset does not set
    forced = compose(ttq_spec("--tiny", "--models", "gru", "--time-to-quality", "--ttq-recipe",
                              "multi30k_de_en_parity", "trainer.batch_tokens=1024").overrides)
    assert forced.trainer.batch_tokens == 1024
    # the task's own preset by default, over --batch-tokens; its update limit below --ttb-max-steps'
    full = ttq_spec("--task", "multi30k_de_en", "--models", "transformer", "--batch-tokens", "1024",
                    "--time-to-quality", "30")
    cfg = compose(full.overrides)
    assert (cfg.trainer.batch_tokens, cfg.experiment, full.ttb["recipe"]) == (4096, "multi30k_de_en", "multi30k_de_en")
    assert (full.ttb["max_steps"], full.ttb["threshold"], cfg.trainer.val_beam_size) == (3000, 30.0, 1)
    with pytest.raises(plan.UserError, match="conf/experiment/ has no nope.yaml"):
        ttq_spec("--tiny", "--time-to-quality", "--ttq-recipe", "nope")


# ---------------------------------------------------------------------------
# end to end on the toy task


def test_tiny_time_to_quality_reports_the_recipe_and_seconds_apart(cache: Path, tmp_path: Path) -> None:
    out, readme = tmp_path / "out", tmp_path / "README.md"
    readme.write_text("<!-- table:benchmarks -->\n<!-- /table:benchmarks -->\n")
    common = ["--tiny", "--in-process", "--configs", "none", "--no-decode", "--no-scaling", "--work-dir",
              str(tmp_path / "work"), "trainer.num_threads=1", "trainer.eval_every=2"]
    report = cli.main([*common, "--time-to-quality", "0", "--out", str(out), "--readme", str(readme)])
    rows = report["time_to_quality"]
    assert [(r["model"], r["reached"], r["steps_to_bleu"]) for r in rows] == [("transformer", True, 2), ("gru", True, 2)]
    for r in rows:
        assert "error" not in r and r["recipe"] == f"recipe/{r['model']}_tiny" and r["batch_tokens"] == 512
        assert 0 < r["val_s"] and 0 < r["train_s"] and r["val_s"] + r["train_s"] <= r["wall_s"]
        assert r["joeynmt"]["seconds"] is None and r["ratio_wall"] is None  # no --joeynmt: no ratio
    assert [t["verdict"] for t in report["targets"]] == ["not measured", "not measured"]
    saved = json.loads((out / "benchmarks.json").read_text())
    assert saved["time_to_quality"][0]["val_s"] == pytest.approx(rows[0]["val_s"])
    md = (out / "benchmarks.md").read_text()
    assert "## Time to quality" in md and "the ratio needs --joeynmt" in md and "2 cores" in md
    assert "#### Time to quality" in readme.read_text()
    again = tmp_path / "again"
    cli.main(["--from-json", str(out / "benchmarks.json"), "--out", str(again)])
    assert (again / "benchmarks.md").read_text() == md

    # a threshold never reached, with the parity preset's recipe: its batch tokens are the trained config's
    never = cli.main([*common, "--models", "gru", "--time-to-quality", "101", "--ttq-recipe",
                      "multi30k_de_en_parity", "--out", str(tmp_path / "never")])
    [row] = never["time_to_quality"]
    assert not row["reached"] and row["steps_to_bleu"] is None and row["max_steps"] == 4
    assert row["batch_tokens"] == row["settings"]["trainer.batch_tokens"] == 2048
    assert row["recipe"] == "multi30k_de_en_parity" and row["val_s"] + row["train_s"] <= row["wall_s"]
    assert row["joeynmt"]["updates"] is None and "not reached by its curve" in row["joeynmt"]["why"]
    assert f"| no (best {row['best_bleu']:.2f}) | 4 (all) |" in (tmp_path / "never" / "benchmarks.md").read_text()


@pytest.mark.parametrize("ttq", [True, False])
def test_time_to_quality_measures_joeynmts_transformer_whatever_models_are_timed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ttq: bool) -> None:
    """JoeyNMT's curve is its Transformer's: --time-to-quality --models gru still measures that one's seconds."""
    from experiments.bench import joeynmt

    measured = []
    monkeypatch.setattr(joeynmt, "ensure_venv", lambda *a, **k: tmp_path / "python")
    monkeypatch.setattr(joeynmt, "bench_model", lambda cfg, *a, **k: measured.append(str(cfg.model.name)) or
                        {"model": str(cfg.model.name), "tokens_per_s": 1.0, "step_s": 1.0, "params": 1})
    argv = ["--tiny", "--models", "gru", "--joeynmt", "--work-dir", str(tmp_path)] + ["--time-to-quality"] * ttq
    args = cli.parse_args(argv)
    runner = SimpleNamespace(say=lambda *a: None)
    results = joeynmt.run_all(args, None, torch.device("cpu"), runner)
    assert sorted(results) == (["gru", "transformer"] if ttq else ["gru"])
    assert len(measured) == len(results)
