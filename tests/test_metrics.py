import os
import re
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from experiments.evaluation.metrics import (
    PRIMARY,
    corpus_bleu,
    length_buckets,
    paired_bootstrap,
    rouge,
    task_metrics,
)

REFS = [
    "The committee will meet again on Thursday to discuss the budget.",
    "Please send me the revised contract before the end of the week.",
    "The train to Berlin was delayed by almost two hours.",
    "She has been working at the hospital for ten years.",
    "We need to book a larger room for the annual meeting.",
    "The new policy takes effect at the beginning of next month.",
    "He forgot his umbrella and got soaked on the way home.",
    "Our team finished the project three days ahead of schedule.",
    "The museum is closed on Mondays and public holidays.",
    "Could you check whether the printer on the second floor works?",
    "The results of the survey will be published in the spring.",
    "Heavy rain caused flooding in several parts of the city.",
    "The children were playing football in the park after school.",
    "I would like to thank everyone for their help this year.",
    "The price of fresh vegetables rose sharply during the winter.",
    "Our flight leaves early tomorrow morning, so we should pack tonight.",
    "The author signed copies of her latest novel at the bookstore.",
    "Engineers are still investigating the cause of the power outage.",
    "The quarterly report shows a small increase in sales.",
    "Remember to lock the door when you leave the office.",
    "The orchestra played a beautiful symphony by Dvorak last night.",
    "Most students passed the final exam with good grades.",
    "The hotel offers free breakfast to all of its guests.",
    "A new bridge across the river will open next summer.",
    "The doctor advised him to get more sleep and exercise.",
    "The company plans to hire fifty new employees this year.",
    "We walked along the beach and watched the sun set.",
    "The software update fixes several security problems.",
    "Her presentation on climate change impressed the whole audience.",
    "The old library was renovated and reopened last week.",
]
REF_LISTS = [[r] for r in REFS]
# A: every reference with one word dropped; B: only every third word kept.
SYS_A = [" ".join(w for i, w in enumerate(r.split()) if i != 2) for r in REFS]
SYS_B = [" ".join(r.split()[::3]) for r in REFS]
CLOSE_TO_A = SYS_B[:2] + SYS_A[2:]  # A with two sentences of B


def test_bleu_matches_sacrebleu_and_signature():
    out = corpus_bleu(SYS_A, REF_LISTS)
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(SYS_A, [REFS]).score)
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(SYS_A, [REFS]).score)
    assert "tok:13a" in out["bleu_signature"]
    assert "case:mixed" in out["bleu_signature"]
    assert "nrefs:1" in out["bleu_signature"]
    assert corpus_bleu(REFS, REF_LISTS)["bleu"] == pytest.approx(100.0)


def test_bleu_multi_reference():
    alt = [f"Honestly, {r[0].lower()}{r[1:]}" for r in REFS]
    out = corpus_bleu(SYS_B, [[r, a] for r, a in zip(REFS, alt)])
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(SYS_B, [REFS, alt]).score)
    assert "nrefs:2" in out["bleu_signature"]


def test_bleu_variable_reference_count():
    # Repeating a sentence's reference cannot change BLEU, so a sentence with
    # fewer references must score as if its references were repeated.
    hyps = ["The meeting is on Thursday.", "Hi"]
    refs = [
        ["The meeting is on Thursday.", "We meet on Thursday."],
        ["Hello there, my good friend."],
    ]
    out = corpus_bleu(hyps, refs)
    streams = [[refs[0][0], refs[1][0]], [refs[0][1], refs[1][0]]]
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    assert "nrefs:var" in out["bleu_signature"]


def test_rouge_matches_rouge_score():
    scorer = RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)
    hyps = ["It purred loudly. The cat sat on the mat!", SYS_A[0], SYS_B[1]]
    refs = ["The cats sat on a mat. It purred.", REFS[0], REFS[1]]
    # The module should put one sentence per line before scoring.
    split = [
        ("The cats sat on a mat.\nIt purred.", "It purred loudly.\nThe cat sat on the mat!"),
        (REFS[0], SYS_A[0]),
        (REFS[1], SYS_B[1]),
    ]
    expected = [scorer.score(r, h) for r, h in split]
    out = rouge(hyps, [[r] for r in refs])
    for key in ("rouge1", "rouge2", "rougeLsum"):
        want = 100 * sum(s[key].fmeasure for s in expected) / len(expected)
        assert out[key] == pytest.approx(want)
    unsplit = scorer.score(refs[0], hyps[0])["rougeLsum"].fmeasure
    assert unsplit != pytest.approx(expected[0]["rougeLsum"].fmeasure)
    three = [out["rouge1"], out["rouge2"], out["rougeLsum"]]
    assert out["rouge_mean"] == pytest.approx(sum(three) / 3)
    assert "stem:yes" in out["rouge_signature"]


def test_rouge_multi_reference_uses_best_reference():
    scorer = RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)
    refs = [[REFS[i], REFS[i + 1], SYS_B[i]] for i in range(4)]
    expected = [scorer.score_multi(r, h) for r, h in zip(refs, SYS_A[:4])]
    out = rouge(SYS_A[:4], refs)
    for key in ("rouge1", "rouge2", "rougeLsum"):
        assert out[key] == pytest.approx(100 * sum(s[key].fmeasure for s in expected) / 4)
    assert out["rouge1"] > rouge(SYS_A[:4], [[SYS_B[i]] for i in range(4)])["rouge1"]


@pytest.mark.parametrize("kind", ["translation", "summarization"])
def test_length_mismatch_names_both_counts(kind):
    with pytest.raises(ValueError, match=r"3 hypotheses.*2 reference"):
        task_metrics(kind, SYS_A[:3], REF_LISTS[:2])


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match=r"'parsing'.*translation, summarization"):
        task_metrics("parsing", SYS_A, REF_LISTS)
    with pytest.raises(ValueError, match="valid kinds"):
        paired_bootstrap("parsing", SYS_A, SYS_B, REF_LISTS)


def test_task_metrics_dispatch():
    assert task_metrics("translation", SYS_A, REF_LISTS) == corpus_bleu(SYS_A, REF_LISTS)
    assert task_metrics("summarization", SYS_A, REF_LISTS) == rouge(SYS_A, REF_LISTS)


@pytest.mark.parametrize("kind", ["translation", "summarization"])
def test_bootstrap_identical_systems(kind):
    out = paired_bootstrap(kind, SYS_A, list(SYS_A), REF_LISTS)
    for test in out["metrics"].values():
        assert test["delta"] == 0.0
        # sacreBLEU's p never goes below 1 / (n + 1), and takes that value for identical systems.
        assert test["p_value"] == pytest.approx(1 / 1001)
        assert test["a_ci"] == test["b_ci"]


@pytest.mark.parametrize("kind", ["translation", "summarization"])
def test_bootstrap_better_system_is_significant_either_way(kind):
    out = paired_bootstrap(kind, SYS_A, SYS_B, REF_LISTS)
    assert list(out["metrics"]) == {"translation": ["bleu", "chrf"], "summarization": ["rouge_mean"]}[kind]
    assert out["sentences"] == len(REFS) and out["n_samples"] == 1000 and out["seed"] == "12345"
    test = out["metrics"][PRIMARY[kind]]
    assert test["a"] == pytest.approx(task_metrics(kind, SYS_A, REF_LISTS)[PRIMARY[kind]])
    assert test["delta"] > 10 and test["p_value"] < 0.05
    assert test["b_mean"] + test["b_ci"] < test["a_mean"] - test["a_ci"]
    assert "bs:1000|seed:12345" in test["signature"]
    swapped = paired_bootstrap(kind, SYS_B, SYS_A, REF_LISTS)["metrics"][PRIMARY[kind]]
    assert swapped["delta"] == pytest.approx(-test["delta"])
    assert swapped["p_value"] == pytest.approx(test["p_value"])


def test_bootstrap_close_systems_not_significant():
    # A and A-with-one-sentence-corrupted differ by too little to be reliable.
    near_a = SYS_A[:-1] + [SYS_B[-1]]
    test = paired_bootstrap("summarization", SYS_A, near_a, REF_LISTS)["metrics"]["rouge_mean"]
    assert 0 < test["delta"] and test["p_value"] > 0.05


def sacrebleu_cli_paired_bs(tmp_path, hyps_a, hyps_b, refs, seed: str) -> tuple[list[list[float]], list[float]]:
    """``sacrebleu REF -i A B -m bleu chrf --paired-bs`` on files: (score, mean, ci) per system and metric, and B's p."""
    for name, lines in (("ref", refs), ("a", hyps_a), ("b", hyps_b)):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "SACREBLEU_SEED": seed}
    out = subprocess.run([sys.executable, "-m", "sacrebleu", "ref.txt", "-i", "a.txt", "b.txt", "-m", "bleu", "chrf",
                          "--paired-bs", "-f", "text", "-q", "--width", "6", "--no-color"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, check=True).stdout
    triple = re.compile(r"(-?[\d.]+) \((-?[\d.]+) ± ([\d.]+)\)")
    rows = [[float(v) for match in triple.findall(line) for v in match] for line in out.splitlines()
            if triple.search(line)]
    p_values = [float(p) for p in re.findall(r"p = ([\d.]+)", out)]
    return rows, p_values


@pytest.mark.parametrize("seed", ["12345", "7"])
def test_bleu_and_chrf_bootstrap_equal_the_sacrebleu_command_line(tmp_path, monkeypatch, seed):
    hyps_b = CLOSE_TO_A  # p-values well above sacreBLEU's floor of 1 / 1001
    rows, p_values = sacrebleu_cli_paired_bs(tmp_path, SYS_A, hyps_b, REFS, seed)
    monkeypatch.setenv("SACREBLEU_SEED", seed)
    out = paired_bootstrap("translation", SYS_A, hyps_b, REF_LISTS)["metrics"]
    assert out["bleu"]["signature"].startswith(f"nrefs:1|bs:1000|seed:{seed}|")
    for system, row in zip("ab", rows):
        ours = [out[m][k] for m in ("bleu", "chrf") for k in (system, f"{system}_mean", f"{system}_ci")]
        assert ours == pytest.approx(row, abs=1e-6)
    assert [out["bleu"]["p_value"], out["chrf"]["p_value"]] == pytest.approx(p_values, abs=5e-5)
    assert min(p_values) > 0.01
    assert paired_bootstrap("translation", SYS_A, hyps_b, REF_LISTS, seed=int(seed))["metrics"] == out


def test_rouge_bootstrap_follows_sacrebleus_method():
    """The ROUGE test, recomputed by hand: sacreBLEU's resamples, its interval and its p-value formula."""
    hyps_b = CLOSE_TO_A
    out = paired_bootstrap("summarization", SYS_A, hyps_b, REF_LISTS, seed=3)["metrics"]["rouge_mean"]
    per_sentence = {}
    for name, hyps in (("a", SYS_A), ("b", hyps_b)):
        table = np.array([[rouge([h], [r])[t] for t in ("rouge1", "rouge2", "rougeLsum")]
                          for h, r in zip(hyps, REF_LISTS)])
        per_sentence[name] = table.mean(axis=1)
    idx = np.random.default_rng(3).choice(len(REFS), size=(1000, len(REFS)), replace=True)
    samples = {k: v.astype(np.float32)[idx].mean(axis=1) for k, v in per_sentence.items()}
    diffs = np.abs(samples["b"] - samples["a"])
    delta = abs(per_sentence["a"].mean() - per_sentence["b"].mean())
    p = (np.sum(diffs - diffs.mean() > delta) + 1) / 1001
    assert out["a"] == pytest.approx(rouge(SYS_A, REF_LISTS)["rouge_mean"])
    assert out["p_value"] == pytest.approx(p)
    low, high = np.sort(samples["b"])[[25, 974]]
    assert out["b_ci"] == pytest.approx((high - low) / 2, abs=1e-3)
    assert out["b_mean"] == pytest.approx(samples["b"].mean(), abs=1e-3)


def test_length_buckets_partition():
    lengths = [len(r.split()) for r in REFS]
    buckets = length_buckets(lengths, "translation", SYS_A, REF_LISTS, edges=(10, 11, 40))
    assert [b["bucket"] for b in buckets] == ["0-9", "10-10", "11-39", "40+"]
    assert sum(b["count"] for b in buckets) == len(REFS)
    assert buckets[0]["count"] == sum(n < 10 for n in lengths)
    short = [i for i, n in enumerate(lengths) if n < 10]
    want = corpus_bleu([SYS_A[i] for i in short], [REF_LISTS[i] for i in short])["bleu"]
    assert buckets[0]["score"] == pytest.approx(want)
    assert buckets[-1] == {"bucket": "40+", "count": 0, "metric": "bleu", "score": None}
    with pytest.raises(ValueError, match="increasing"):
        length_buckets(lengths, "translation", SYS_A, REF_LISTS, edges=(20, 10))


def test_tables_name_the_test_its_size_and_every_signature():
    from experiments.reporting.tables import significance_text

    tests = [{"seed": 1, "model_a": "gru", "model_b": "transformer",
              "test": paired_bootstrap("translation", SYS_A, CLOSE_TO_A, REF_LISTS)}]
    text = significance_text(tests)
    assert "sacreBLEU's paired bootstrap resampling (its PairedTest, as `sacrebleu --paired-bs`), 1000 resamples of " \
           "the 30 sentences, seed 12345, baseline gru" in text
    assert "/ 1001, two-sided" in text
    bleu, chrf = (tests[0]["test"]["metrics"][m] for m in ("bleu", "chrf"))
    assert f"| 1 | bleu | {bleu['a']:.2f} ({bleu['a_mean']:.2f} ± {bleu['a_ci']:.2f}) |" in text
    assert f"| {bleu['delta']:+.2f} | {bleu['p_value']:.4f} |" in text and f"{chrf['p_value']:.4f}" in text
    assert "bleu `nrefs:1|bs:1000|seed:12345|case:mixed|eff:no|tok:13a" in text
    assert "chrf `nrefs:1|bs:1000|seed:12345|case:mixed|eff:yes|nc:6" in text
