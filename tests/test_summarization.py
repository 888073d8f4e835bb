"""Summarization in the shared pipeline: SAMSum and AESLC on the real files, scored with ROUGE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rouge_score.rouge_scorer import RougeScorer

from experiments.data.pipeline import TaskData
from experiments.training.train import run
from tests.conftest import compose_cfg, data_root


# The tokenizer learns from 4,000 texts instead of the full training split (25 CPU seconds for SAMSum alone):
# nothing here depends on its quality, and the real files are still read, validated and tokenized whole.
SAMPLE = "task.tokenizer.max_sentences=4000"


def real(task: str, cache: Path, *extra: str):
    from experiments.core.config import validate

    return validate(compose_cfg([f"task={task}", f"task.data_root={data_root()}", f"cache_dir={cache}", SAMPLE,
                                 *extra]))


@pytest.fixture(scope="module")
def samsum(shared_cache: Path) -> TaskData:
    cfg = real("samsum", shared_cache)
    return TaskData(cfg.task, shared_cache)


def test_samsum_splits_and_fields(samsum: TaskData) -> None:
    assert [len(samsum.split(s)) for s in ("train", "valid", "test")] == [14731, 818, 819]
    first = samsum.split("test").dataset[0]
    assert first["src"].startswith("Hannah: Hey, do you have Betty's number?\nAmanda: Lemme check")
    assert samsum.split("test").references()[0] == [first["tgt"]]


def test_samsum_long_dialogues_are_truncated_and_counted(samsum: TaskData) -> None:
    split = samsum.split("train")
    full = [len(ids) for ids in split.dataset["src_ids"]]
    assert split.truncated_src == sum(n > 400 for n in full) > 0
    assert split.src_lens.max() == 401  # 400 subwords + eos


def test_aeslc_scores_against_all_four_references(shared_cache: Path) -> None:
    cfg = real("aeslc", shared_cache)
    data = TaskData(cfg.task, shared_cache)
    assert [len(data.split(s)) for s in ("train", "valid", "test")] == [14436, 1960, 1906]
    dev = data.split("valid")
    refs = dev.references()
    assert all(len(r) == 4 for r in refs)
    assert refs[0] == ["Confirmation: Risk Management Simulation Meeting 10/30/01", "meeting confimation - tues, 8/10",
                       "meeting confirmation", "meeting confirmed"]
    assert data.split("train").references()[0] == [data.split("train").dataset[0]["tgt"]]


def test_short_summarization_run_reports_rouge_equal_to_rouge_score(tmp_path: Path, shared_cache: Path) -> None:
    cfg = compose_cfg([
        "task=aeslc", f"task.data_root={data_root()}", f"cache_dir={shared_cache}", SAMPLE, "model=transformer_tiny",
        "trainer=debug", "trainer.max_steps=6", "trainer.eval_every=3", "trainer.eval_max_sentences=40",
        "trainer.batch_tokens=4096", "trainer.num_threads=1", "trainer.test_after_training=false",
        "task.max_src_len=64", "decoding.max_len_a=0", "decoding.max_len_b=8", "logger.mode=disabled",
    ])
    run(cfg, tmp_path)
    valid = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "valid"]
    assert len(valid) == 2 and {"rouge1", "rouge2", "rougeLsum", "rouge_mean", "rouge_signature"} <= set(valid[-1])
    hyps = (tmp_path / "hyps" / "valid-step6.txt").read_text().split("\n")[:-1]
    data = TaskData(real("aeslc", shared_cache).task, shared_cache)
    refs = data.split("valid").references()[:40]
    scorer = RougeScorer(["rouge1"], use_stemmer=True)
    direct = sum(scorer.score_multi(r, h)["rouge1"].fmeasure for h, r in zip(hyps, refs)) / len(hyps) * 100
    assert valid[-1]["rouge1"] == pytest.approx(direct, abs=1e-9)


def test_the_aeslc_table_scores_the_subject_line_alone_and_the_best_of_the_four_references() -> None:
    """The committed table's "(subject)" columns are ROUGE against the `subject` field alone, as PEGASUS and the
    Hugging Face dataset score AESLC: re-scored here with rouge-score directly from the raw test file and the
    committed outputs (the GRU's best checkpoint and the first-sentence row); "(4 refs)" is what the run recorded."""
    import csv
    import gzip

    from experiments.reporting.baselines import first_sentence

    repo = Path(__file__).resolve().parents[1]
    with gzip.open(data_root() / "aeslc" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    run = repo / "results" / "runs" / "aeslc" / "gru" / "seed1"
    hyps = gzip.decompress((run / "hyps" / "test-beam5.txt.gz").read_bytes()).decode("utf-8").split("\n")[:-1]
    assert len(hyps) == len(rows) == 1906
    scorer = RougeScorer(["rouge1", "rouge2"], use_stemmer=True)

    def mean_f1(outputs: list[str], kind: str) -> float:
        return 100 * sum(scorer.score(r["subject"], o)[kind].fmeasure for o, r in zip(outputs, rows)) / len(rows)

    table = {row["model"]: row for row in csv.DictReader(open(repo / "results" / "aeslc.csv"))
             if row["checkpoint"] in ("best", "extractive")}
    firsts = [first_sentence(r["email_body"]) for r in rows]
    for kind in ("rouge1", "rouge2"):
        assert float(table["gru"][f"test_{kind}_subject_mean"]) == pytest.approx(mean_f1(hyps, kind), abs=1e-9)
        assert float(table["first sentence"][f"test_{kind}_subject_mean"]) == pytest.approx(mean_f1(firsts, kind),
                                                                                           abs=1e-9)
    recorded = json.loads((run / "results.json").read_text())["test"]["test"]
    assert float(table["gru"]["test_rouge1_mean"]) == recorded["rouge1"]
    assert recorded["rouge1"] > float(table["gru"]["test_rouge1_subject_mean"])  # the best of four is easier
