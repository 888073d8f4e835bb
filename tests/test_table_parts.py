"""The pieces of a table: extractive reference rows, length buckets with intervals, compute-matched curves."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.reporting import baselines, buckets, curves, studies
from experiments.evaluation import metrics

DIALOGUE = "Ann: hi\nBob: are you coming to the party tonight or not\nAnn: yes\nBob: great, bring some cake please\n" \
           "Ann: ok sure"


def test_lead_and_longest_take_whole_utterances_in_dialogue_order() -> None:
    assert baselines.lead(3)(DIALOGUE) == "Ann: hi\nBob: are you coming to the party tonight or not\nAnn: yes"
    assert baselines.longest(2)(DIALOGUE) == \
        "Bob: are you coming to the party tonight or not\nBob: great, bring some cake please"
    assert baselines.longest(9)(DIALOGUE) == DIALOGUE  # fewer utterances than asked: all of them


def test_email_rows_take_the_first_sentence_and_a_subject_length_prefix() -> None:
    body = "Please review the attached contract. We need it signed by Friday.\nThanks"
    assert baselines.first_sentence(body) == "Please review the attached contract."
    assert baselines.first_sentence("\n\nno punctuation here\nsecond line") == "no punctuation here"
    rows = baselines.baselines("aeslc", ["a b c", "a b c d e"])  # mean subject length 4 words
    assert baselines.prefix(4)(body) == "Please review the attached" == rows["first 4 words"](body)
    assert baselines.baselines("multi30k_de_en", []) == {}


@pytest.mark.parametrize("kind", ["translation", "summarization"])
def test_bucket_intervals_hold_the_estimate_and_shrink_with_more_sentences(kind: str) -> None:
    rng = np.random.default_rng(0)
    words = "a man in a red shirt is riding a bike down the street with a dog".split()
    refs = [[" ".join(rng.choice(words, size=8))] for _ in range(120)]
    hyps = [r[0] if i % 3 else " ".join(rng.choice(words, size=8)) for i, r in enumerate(refs)]
    lengths = [4] * 10 + [12] * 110  # a small and a large bucket
    rows = buckets.by_length(kind, lengths, [hyps], refs, edges=(8,))
    small, large = rows
    assert (small["count"], large["count"]) == (10, 110)
    for row in rows:
        assert row["low"] <= row["score"] <= row["high"]
    assert large["high"] - large["low"] < small["high"] - small["low"]
    point = metrics.length_buckets(lengths, kind, hyps, refs, edges=(8,))
    assert [r["score"] for r in rows] == [p["score"] for p in point]  # the estimate is the table's own


def rows(points: list[tuple[int, int, float]]) -> list[dict]:
    return [{"step": s, "tokens": t, "train_seconds": s * 2.0, "bleu": b} for s, t, b in points]


def test_curves_are_compared_at_budgets_every_run_reached() -> None:
    m = 1_000_000
    by_model = {"gru": [rows([(100, 1 * m, 10.0), (200, 2 * m, 20.0)])],
                "transformer": [rows([(100, 3 * m // 2, 5.0), (200, 3 * m, 30.0)]),
                                rows([(100, 3 * m // 2, 7.0), (200, 3 * m, 32.0)])]}
    grid = np.array([1.0, 1.5, 2.0, 2.5]) * m
    values = curves.on_grid(by_model["gru"], "tokens", "bleu", grid)
    assert values[0, :3].tolist() == [10.0, 15.0, 20.0] and np.isnan(values[0, 3])  # no extrapolation
    # budgets: half and all of the smallest final budget (2M tokens, the GRU's); the Transformer starts at 1.5M
    table = curves.matched_table(by_model, "bleu", points=2)
    assert table == [["1.00", "10.00", "–"], ["2.00", "20.00", "14.33"]]
    assert curves.matched_table({"gru": by_model["gru"]}, "bleu") == []


def test_a_study_tests_the_models_under_each_recipe_and_each_recipe_against_the_first() -> None:
    def runs(*rows: tuple[str, str]) -> list[dict]:
        return [{"model": model, "experiment": preset, "task": "t", "seed": 1} for preset, model in rows]

    one = studies.by_preset(runs(("a", "transformer"), ("a", "gru")))
    assert studies.pairs(one) == [("gru", "transformer")]  # one preset: each model against the first, by name
    study = studies.by_preset(runs(("base", "transformer"), ("base", "gru"), ("noclip", "transformer"),
                                   ("copy", "gru"), ("copy", "transformer")))
    assert studies.pairs(study) == [
        ("gru (base)", "transformer (base)"), ("gru (copy)", "transformer (copy)"),  # the models, per recipe
        ("transformer (base)", "transformer (noclip)"),  # each recipe's effect on each model it trained
        ("gru (base)", "gru (copy)"), ("transformer (base)", "transformer (copy)")]
