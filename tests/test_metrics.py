import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from experiments.metrics import (
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
    assert out["delta"] == 0.0
    assert out["p_value"] == 1.0
    assert out["a_ci"] == out["b_ci"]


@pytest.mark.parametrize("kind", ["translation", "summarization"])
def test_bootstrap_better_system_is_significant_either_way(kind):
    out = paired_bootstrap(kind, SYS_A, SYS_B, REF_LISTS)
    assert out["metric"] == PRIMARY[kind]
    assert out["a"] == pytest.approx(task_metrics(kind, SYS_A, REF_LISTS)[PRIMARY[kind]])
    assert out["delta"] > 10 and out["p_value"] < 0.05
    low, high = out["a_ci"]
    assert low <= out["a"] <= high and out["b_ci"][1] < low
    swapped = paired_bootstrap(kind, SYS_B, SYS_A, REF_LISTS)
    assert swapped["delta"] == pytest.approx(-out["delta"])
    assert swapped["p_value"] < 0.05


def test_bootstrap_close_systems_not_significant():
    # A and A-with-one-sentence-corrupted differ by too little to be reliable.
    near_a = SYS_A[:-1] + [SYS_B[-1]]
    out = paired_bootstrap("summarization", SYS_A, near_a, REF_LISTS)
    assert 0 < out["delta"] and out["p_value"] > 0.05


def test_bleu_bootstrap_intervals_match_sacrebleu(monkeypatch):
    monkeypatch.delenv("SACREBLEU_SEED", raising=False)
    out = paired_bootstrap("translation", SYS_A, SYS_B, REF_LISTS, seed=12345)
    _, res = PairedTest([("a", SYS_A), ("b", SYS_B)], {"BLEU": BLEU()}, [REFS], "bs")()
    for ours, theirs in zip((out["a_ci"], out["b_ci"]), res["BLEU"]):
        assert (ours[1] - ours[0]) / 2 == pytest.approx(theirs.ci)


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
