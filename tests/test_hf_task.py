"""Any Hugging Face dataset as a task: local JSON-lines / Parquet files, nested fields, memory-mapped splits."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experiments.data import tokenizer
from experiments.core.config import check_override_keys
from experiments.data.pipeline import TaskData
from experiments.core.errors import DataError
from experiments.training.train import run
from tests.test_trainer import TINY

SIZES = {"train": 400, "validation": 60, "test": 60}
WORDS = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"][:20]


def pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Toy "translations": a random sentence and its reversal."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 10))]
        out.append((" ".join(words), " ".join(reversed(words))))
    return out


def records(n: int, seed: int) -> list[dict]:
    """WMT-shaped rows: the text sits in a nested ``translation`` field beside other fields."""
    return [{"id": i, "translation": {"de": de, "en": en}, "source": "toy"}
            for i, (de, en) in enumerate(pairs(n, seed))]


@pytest.fixture(scope="module")
def jsonl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder as the hub's loaders infer it: one JSON-lines file per split, named after it."""
    folder = tmp_path_factory.mktemp("pairs")
    for seed, (split, n) in enumerate(SIZES.items()):
        with open(folder / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records(n, seed))
    return folder


def hf_task(path: str, *overrides: str) -> list[str]:
    return ["task.name=local_pairs", "task.loader=hf", f"task.hf.path={path}", "task.src_field=translation.de",
            "task.tgt_field=translation.en", "task.splits.valid=validation", *overrides]


def test_a_local_folder_task_loads_tokenizes_and_trains(jsonl_folder: Path, tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg(*TINY, *hf_task(str(jsonl_folder)), f"cache_dir={tmp_path / 'cache'}", "logger.mode=disabled",
                   "trainer.max_steps=10", "trainer.eval_every=10", "trainer.log_every=5")
    results = run(cfg, tmp_path / "run")
    assert results["steps"] == 10 and results["test"]["test"]["bleu"] >= 0
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "train"]
    assert len(losses) == 2 and losses[1] < losses[0]

    data = TaskData(cfg.task, cfg.cache_dir)
    for ours, upstream in (("train", "train"), ("valid", "validation"), ("test", "test")):
        split = data.split(ours)
        expected = records(SIZES[upstream], list(SIZES).index(upstream))
        assert split.dataset["src"] == [r["translation"]["de"] for r in expected]
        assert split.dataset["tgt"] == [r["translation"]["en"] for r in expected]
        assert data.tokenizer.decode_tgt(split.dataset["tgt_ids"][:5]) == split.dataset["tgt"][:5]
        # Text and ids are read from Arrow files on disk, not held in memory.
        assert split.dataset.cache_files and all(Path(f["filename"]).exists() for f in split.dataset.cache_files)


def test_parquet_files_by_split(tmp_path: Path, make_cfg) -> None:
    files = {}
    for seed, (split, n) in enumerate(SIZES.items()):
        files[split] = tmp_path / f"{split}-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(records(n, seed)), files[split])
    cfg = make_cfg(*hf_task("parquet", *(f"+task.hf.data_files.{split}=[{path}]" for split, path in files.items())))
    data = TaskData(cfg.task, tmp_path / "cache")
    assert {name: len(data.split(name)) for name in ("train", "valid", "test")} == {
        "train": SIZES["train"], "valid": SIZES["validation"], "test": SIZES["test"]}
    assert data.split("valid").dataset[0]["src"] == records(1, 1)[0]["translation"]["de"]


def test_a_wrong_field_names_the_real_ones(jsonl_folder: Path, tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg(*hf_task(str(jsonl_folder), "task.src_field=translation.fr"))
    with pytest.raises(DataError, match=r"no field 'translation.fr'; its fields are "
                                        r"\['id', 'translation.de', 'translation.en', 'source'\]"):
        TaskData(cfg.task, tmp_path)
    cfg = make_cfg(*hf_task(str(jsonl_folder), "task.src_field=id"))
    with pytest.raises(DataError, match=r"field 'id' holds Value\('int64'\), not text"):
        TaskData(cfg.task, tmp_path)
    cfg = make_cfg(*hf_task(str(jsonl_folder), "task.splits.valid=dev"))
    with pytest.raises(DataError, match=r"split 'dev'.*\['train', 'validation', 'test'\]"):
        TaskData(cfg.task, tmp_path).split("valid")


def test_the_tokenizer_trains_on_a_capped_sample_spread_over_the_split(tmp_path: Path, make_cfg,
                                                                       monkeypatch) -> None:
    n = 3000
    folder = tmp_path / "big"
    folder.mkdir()
    rows = [{"translation": {"de": f"quelle {i}\nzeile {i}", "en": f"ziel {i}"}} for i in range(n)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "validation.jsonl").write_text(json.dumps(rows[0]) + "\n")
    seen: list[str] = []
    train = tokenizer.train_model

    def recording(sentences, settings, target):
        seen.extend(sentences)
        train(seen, settings, target)

    monkeypatch.setattr(tokenizer, "train_model", recording)
    cfg = make_cfg(*hf_task(str(folder), "task.tokenizer.max_sentences=200",
                            "task.tokenizer.vocab_size=40"))
    TaskData(cfg.task, tmp_path / "cache")
    # Half the budget a side; a two-line source text gives two sentences, so 50 texts fill the source half.
    src = [s for s in seen if not s.startswith("ziel")]
    tgt = [s for s in seen if s.startswith("ziel")]
    assert len(src) == len(tgt) == 100
    assert src[:2] == ["quelle 0", "zeile 0"]
    assert tgt[0] == "ziel 0" and tgt[-1] == f"ziel {n - 1}"  # spread to the end of the split, not its head
    assert len({int(s.split()[1]) for s in tgt}) == 100


def test_a_task_can_be_named_on_the_command_line() -> None:
    check_override_keys(["task=wmt14_de_en", "task.name=my_pairs", "task.hf.path=/data/my_pairs"])


def test_example_tasks_point_at_the_hub_datasets(make_cfg) -> None:
    wmt = make_cfg("task=wmt14_de_en").task
    assert (wmt.loader.value, wmt.hf.path, wmt.hf.name) == ("hf", "wmt/wmt14", "de-en")
    assert (wmt.src_field, wmt.tgt_field, wmt.kind.value) == ("translation.de", "translation.en", "translation")
    assert dict(wmt.splits) == {"train": "train", "valid": "validation", "test": "test"}
    cnn = make_cfg("task=cnn_dailymail").task
    assert (cnn.hf.path, cnn.hf.name, cnn.src_field, cnn.tgt_field) == ("abisee/cnn_dailymail", "3.0.0",
                                                                       "article", "highlights")
    assert cnn.kind.value == "summarization" and dict(cnn.splits)["valid"] == "validation"
