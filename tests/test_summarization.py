"""Summarization in the shared pipeline: SAMSum and AESLC on the real files, scored with ROUGE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rouge_score.rouge_scorer import RougeScorer

from experiments.data import TaskData
from experiments.train import run
from tests.conftest import compose_cfg, data_root


# The tokenizer learns from 4,000 texts instead of the full training split (25 CPU seconds for SAMSum alone):
# nothing here depends on its quality, and the real files are still read, validated and tokenized whole.
SAMPLE = "task.tokenizer.max_sentences=4000"


def real(task: str, cache: Path, *extra: str):
    from experiments.config import validate

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
