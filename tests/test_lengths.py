"""Length settings chosen on validation (experiments/evaluation/lengths.py): every checkpoint picks its own from
the preset's lists on the validation split alone, the test set is decoded with the pick, and the choice is
re-scorable from the outputs it kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.core.errors import ConfigError
from experiments.data.pipeline import TaskData
from experiments.evaluation import lengths
from experiments.evaluation import evaluate
from experiments.evaluation.evaluate import choose_lengths, evaluate_checkpoint, score
from experiments.training.runs import export, find_runs
from experiments.training.train import run
from tests.attention_runs import tiny
from tests.conftest import compose_cfg

PENALTIES, MINIMUMS = [0.6, 1.0, 2.0], [0, 6]
CHOICES = (f"decoding.length_penalty_choices=[{','.join(map(str, PENALTIES))}]",
           f"decoding.min_len_choices=[{','.join(map(str, MINIMUMS))}]")


@pytest.fixture(scope="module")
def chosen(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> tuple[Path, dict]:
    """A tiny run with two snapshots averaged, so both the best and the averaged checkpoint choose."""
    run_dir = tmp_path_factory.mktemp("lengths")
    overrides = tiny(*CHOICES, "trainer.keep_checkpoints=2", "trainer.average_checkpoints=2",
                     "logger.mode=disabled") + [f"cache_dir={shared_cache}"]
    return run_dir, run(compose_cfg(overrides), run_dir)


def test_every_pair_is_tried_on_validation_and_the_best_decodes_the_test_set(chosen: tuple[Path, dict]) -> None:
    run_dir, results = chosen
    for choice, suffix in ((results["length_choice"], ""), (results["averaged"]["length_choice"], "-average")):
        tried = choice["tried"]
        assert [(t["length_penalty"], t["min_len"]) for t in tried] == [(p, m) for p in PENALTIES for m in MINIMUMS]
        best = max(tried, key=lambda t: t["valid_bleu"])
        assert (choice["length_penalty"], choice["min_len"]) == (best["length_penalty"], best["min_len"])
        assert all(t["hyps"].endswith(f"{suffix}.txt") for t in tried)
    tried = results["length_choice"]["tried"]
    outputs = {t["hyps"]: (run_dir / "hyps" / t["hyps"]).read_text() for t in tried}
    assert len(set(outputs.values())) > 1, "a minimum length of 6 changes some outputs: the settings were not applied"


def test_the_recorded_validation_scores_are_those_of_the_kept_outputs(chosen: tuple[Path, dict]) -> None:
    run_dir, results = chosen
    from omegaconf import OmegaConf

    from experiments.core.config import validate

    data = TaskData(validate(OmegaConf.load(run_dir / "config.yaml")).task, results_cache(run_dir),
                    tokenizer_dir=run_dir / "tokenizer")
    for t in results["length_choice"]["tried"]:
        hyps = (run_dir / "hyps" / t["hyps"]).read_text().split("\n")[:-1]
        assert score(data, "valid", hyps)["bleu"] == pytest.approx(t["valid_bleu"], abs=1e-9)


def results_cache(run_dir: Path) -> str:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())["cache_dir"]


def test_s2s_eval_makes_the_same_choice_and_with_the_pick_given_writes_the_run_s_test_outputs(
        chosen: tuple[Path, dict]) -> None:
    run_dir, results = chosen
    again = evaluate_checkpoint(str(run_dir), ["split=test"])  # the run's config lists the choices
    assert again["length_choice"] == {**results["length_choice"],
                                      "tried": [{**t, "decode_seconds": a["decode_seconds"]} for t, a in
                                                zip(results["length_choice"]["tried"], again["length_choice"]["tried"])]}
    pick = results["length_choice"]
    given = evaluate_checkpoint(str(run_dir), ["split=test", f"decoding.length_penalty={pick['length_penalty']}",
                                               f"decoding.min_len={pick['min_len']}",
                                               "decoding.length_penalty_choices=[]", "decoding.min_len_choices=[]"])
    assert "length_choice" not in given
    assert (run_dir / "eval" / "test-beam2.txt").read_text() == (run_dir / "hyps" / "test-beam2.txt").read_text()
    assert given["bleu"] == pytest.approx(results["test"]["test"]["bleu"], abs=1e-9)


def test_the_export_keeps_the_outputs_that_chose(chosen: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, results = chosen
    (exported,) = [export(r, tmp_path) for r in find_runs([run_dir])]
    kept = {p.name for p in (exported / "hyps").iterdir()}
    for choice in (results["length_choice"], results["averaged"]["length_choice"]):
        assert {t["hyps"] + ".gz" for t in choice["tried"]} <= kept


def test_without_choices_the_preset_s_values_decode_as_given() -> None:
    decoding = compose_cfg(["decoding.length_penalty=1.3", "decoding.min_len=2"]).decoding
    assert lengths.settings(decoding) == [(1.3, 2)]
    assert choose_lengths(None, None, decoding, None, None, "bleu", Path("unused")) == (decoding, {})  # type: ignore


def test_equal_validation_scores_keep_the_earlier_setting(monkeypatch, tmp_path: Path) -> None:
    from experiments.evaluation.evaluate import Decoded

    decoding = compose_cfg(list(CHOICES)).decoding
    monkeypatch.setattr(evaluate, "decode_split", lambda *a, **k: Decoded([str(a[3].min_len)], [], 0.0))
    monkeypatch.setattr(evaluate, "score", lambda data, split, hyps: {"bleu": 5.0 if hyps == ["6"] else 1.0})
    picked, choice = choose_lengths(None, None, decoding, None, None, "bleu", tmp_path)  # type: ignore[arg-type]
    assert (choice["length_penalty"], choice["min_len"]) == (0.6, 6)
    assert (picked.length_penalty, picked.min_len, list(picked.min_len_choices)) == (0.6, 6, [])


def test_a_length_penalty_choice_needs_beam_search(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"length_penalty_choices needs decoding.beam_size > 1"):
        make_cfg("decoding.beam_size=1", CHOICES[0])
    with pytest.raises(ConfigError, match=r"min_len_choices=\[-1\] must all be 0"):
        make_cfg("decoding.min_len_choices=[-1]")


def test_the_table_names_each_checkpoint_s_pick_and_the_lists_it_chose_from() -> None:
    from experiments.evaluation.lengths import choice_text

    def choice(penalty: float, min_len: int) -> dict:
        tried = [{"length_penalty": p, "min_len": m} for p in PENALTIES for m in MINIMUMS]
        return {"length_penalty": penalty, "min_len": min_len, "tried": tried}

    runs = [{"model": "transformer", "seed": 1, "length_choice": choice(2.0, 6)},
            {"model": "gru", "seed": 1, "length_choice": choice(0.6, 0), "averaged": {"length_choice": choice(1.0, 6)}},
            {"model": "gru", "seed": 2}]
    text = choice_text(runs, "rouge_mean")
    assert "over length_penalty {0.6, 1, 2} x min_len {0, 6}" in text
    assert text.endswith(": gru seed 1 0.6, 0; gru seed 1 average 1, 6; transformer seed 1 2, 6; the other runs "
                         "decode with their preset's.\n")


def test_a_table_of_runs_that_chose_names_their_picks(chosen: tuple[Path, dict], tmp_path: Path) -> None:
    """s2s-tables over runs that chose their lengths: the line above, in the table (the table once failed there)."""
    from experiments.reporting.tables import write_table

    run_dir, results = chosen
    table = write_table("tiny_lengths", find_runs([run_dir]), tmp_path, "regenerate").read_text()
    pick, average = results["length_choice"], results["averaged"]["length_choice"]
    assert (f"transformer seed {results['seed']} {pick['length_penalty']:g}, {pick['min_len']}; "
            f"transformer seed {results['seed']} average {average['length_penalty']:g}, {average['min_len']}.") in table
