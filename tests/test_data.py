"""The shared data pipeline: real Multi30k, tokenizer cache, batching, bad input."""

from __future__ import annotations

import gzip
import unicodedata
from pathlib import Path

import datasets
import numpy as np
import pytest

from experiments.data import sources, tokenizer
from experiments.data.batching import make_batches, shard
from experiments.data.pipeline import TaskData
from experiments.core.errors import DataError
from tests.conftest import compose_cfg, data_root

MULTI30K_SIZES = {
    "train": 29000,
    "valid": 1014,
    "test": 1000,
    "test_2017_flickr": 1000,
    "test_2017_mscoco": 461,
    "test_2018_flickr": 1071,
}

# The toy task at a tenth of its default size: what these tests check does not depend on it.
SMALL_TOY = ("task=toy_reverse", "task.toy.train_size=2000", "task.toy.eval_size=100")


@pytest.fixture(scope="session")
def multi30k(shared_cache: Path) -> TaskData:
    root = data_root()
    from experiments.core.config import validate

    cfg = validate(compose_cfg(["task=multi30k_de_en", f"task.data_root={root}", "task.download=false"]))
    return TaskData(cfg.task, shared_cache)


def test_multi30k_splits_have_the_published_sizes_and_stay_aligned(multi30k: TaskData) -> None:
    for name, size in MULTI30K_SIZES.items():
        assert len(multi30k.split(name)) == size, name
    root = data_root() / "multi30k"
    for upstream, ours in (("val", "valid"), ("test_2017_mscoco", "test_2017_mscoco")):
        de = gzip.open(root / f"{upstream}.de.gz", "rt", encoding="utf-8").read().splitlines()
        en = gzip.open(root / f"{upstream}.en.gz", "rt", encoding="utf-8").read().splitlines()
        ds = multi30k.split(ours).dataset
        assert ds["src"] == de and ds["tgt"] == en


def test_tokenizer_round_trips_real_sentences(multi30k: TaskData) -> None:
    tok = multi30k.tokenizer
    assert tok.joint and tok.src.vocab_size() == 8000
    valid = multi30k.split("valid").dataset
    for text, ids in zip(valid["tgt"], valid["tgt_ids"]):
        # SentencePiece applies NFKC and collapses whitespace; nothing else may change.
        assert tok.decode_tgt([ids])[0] == " ".join(unicodedata.normalize("NFKC", text).split())
    assert [tok.src.piece_to_id(p) for p in ("<unk>", "<pad>", "<s>", "</s>")] == [0, 1, 2, 3]


def test_second_load_reuses_tokenizer_and_arrow_cache(multi30k: TaskData, monkeypatch) -> None:
    model = multi30k.tokenizer.src_path
    mtime = model.stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again although it is cached")

    monkeypatch.setattr(tokenizer, "train_model", refuse)
    monkeypatch.setattr(sources, "read_lines", lambda *a, **k: pytest.fail("text parsed again"))
    again = TaskData(multi30k.task, multi30k.cache_dir)
    assert again.tokenizer.src_path == model and model.stat().st_mtime_ns == mtime
    assert len(again.split("valid")) == 1014


def test_changed_tokenizer_settings_train_a_new_model(tmp_path: Path, make_cfg) -> None:
    a = TaskData(make_cfg(*SMALL_TOY).task, tmp_path)
    b = TaskData(make_cfg(*SMALL_TOY, "task.tokenizer.vocab_size=48").task, tmp_path)
    assert a.tokenizer.src_path != b.tokenizer.src_path


def test_every_example_once_per_epoch_within_budget(multi30k: TaskData) -> None:
    budget = 2048
    split = multi30k.split("train")
    plan = multi30k.plan("train", budget, shuffle=True, seed=3, epoch=1)
    seen = np.concatenate(plan)
    assert np.array_equal(np.sort(seen), np.arange(len(split)))
    for indices in plan:
        longest = max(split.src_lens[indices].max(), split.tgt_lens[indices].max())
        assert len(indices) * longest <= budget
    other = multi30k.plan("train", budget, shuffle=True, seed=3, epoch=2)
    assert [b.tolist() for b in plan] != [b.tolist() for b in other]
    assert [b.tolist() for b in plan] == [b.tolist() for b in multi30k.plan("train", budget, shuffle=True, seed=3, epoch=1)]


def test_batches_pad_and_mask_to_the_real_lengths(multi30k: TaskData) -> None:
    split = multi30k.split("valid")
    plan = multi30k.plan("valid", 1024, shuffle=False)
    for batch in list(multi30k.batches("valid", plan))[:10]:
        assert batch.src.size(0) * max(batch.src.size(1), batch.tgt_in.size(1)) <= 1024
        for row, index in enumerate(batch.indices.tolist()):
            ids = split.dataset[index]
            n_src, n_tgt = len(ids["src_ids"]) + 1, len(ids["tgt_ids"]) + 1
            assert batch.src_mask[row].sum() == n_src and batch.src_mask[row, :n_src].all()
            assert batch.src[row, n_src - 1] == multi30k.eos_id
            assert batch.tgt_in[row, 0] == multi30k.bos_id and batch.tgt_out[row, n_tgt - 1] == multi30k.eos_id
            assert (batch.tgt_out[row, n_tgt:] == multi30k.pad_id).all()
            assert batch.tgt_in[row, 1:n_tgt].tolist() == batch.tgt_out[row, : n_tgt - 1].tolist()


def test_truncation_is_counted_and_applied(tmp_path: Path, make_cfg) -> None:
    data = TaskData(make_cfg(*SMALL_TOY, "task.max_src_len=8", "task.max_tgt_len=6").task, tmp_path)
    split = data.split("valid")
    full = np.array([len(ids) for ids in split.dataset["src_ids"]])
    assert split.truncated_src == int((full > 8).sum()) > 0
    batch = next(data.batches("valid", data.plan("valid", 4096, shuffle=False)))
    assert batch.src.size(1) <= 9 and batch.tgt_in.size(1) <= 7


def test_random_batches_cut_the_shuffled_split_as_it_comes_within_the_budget() -> None:
    """JoeyNMT's token batches: no length sorting, so the same budget pads more and holds fewer real tokens."""
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 40, size=2000), rng.integers(1, 40, size=2000)
    unsorted = make_batches(src, tgt, 600, shuffle=True, seed=3, epoch=2, sort=False)
    sorted_ = make_batches(src, tgt, 600, shuffle=True, seed=3, epoch=2)
    order = np.concatenate(unsorted)
    assert np.array_equal(np.sort(order), np.arange(2000))  # each example once
    assert np.array_equal(order, np.random.default_rng([3, 2]).permutation(2000))  # in the shuffled order
    longest = np.maximum(src, tgt)
    assert all(len(b) * longest[b].max() <= 600 for b in unsorted)
    assert all((len(unsorted[i]) + 1) * max(longest[unsorted[i]].max(), longest[unsorted[i + 1][0]]) > 600
               for i in range(len(unsorted) - 1))  # each batch closed only when the next example would overflow
    assert len(unsorted) > 1.1 * len(sorted_)  # more padding, so more batches for the same examples
    again = make_batches(src, tgt, 600, shuffle=True, seed=3, epoch=2, sort=False)  # a pure function: resumable
    assert len(again) == len(unsorted) and all(np.array_equal(a, b) for a, b in zip(again, unsorted))


def test_shards_cover_the_epoch_once_with_equal_step_counts() -> None:
    rng = np.random.default_rng(0)
    lens = rng.integers(1, 40, size=1001)
    batches = make_batches(lens, lens, 300, shuffle=True, seed=1)
    for world in (2, 3, 4):
        shards = [shard(batches, rank, world) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1
        union = np.sort(np.concatenate([b for s in shards for b in s]))
        assert np.array_equal(union, np.arange(1001))


# ---------------------------------------------------------------------------
# Bad input: each yields its own clear message naming the file / line / name.


def fake_multi30k(root: Path, de: bytes, en: bytes) -> Path:
    folder = root / "multi30k"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test_2016_flickr"):
        for lang, content in (("de", de), ("en", en)):
            (folder / f"{split}.{lang}.gz").write_bytes(gzip.compress(content))
    return folder


def load_fake(root: Path, cache: Path, *extra: str) -> TaskData:
    from experiments.core.config import validate

    cfg = validate(compose_cfg(["task=multi30k_de_en", f"task.data_root={root}", "task.download=false",
                                "task.verify_checksums=false", "task.splits={train:train,valid:val,test:test_2016_flickr}",
                                *extra]))
    return TaskData(cfg.task, cache)


def test_missing_data_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data root folder .*nowhere/multi30k does not exist.*S2S_DATA_DIR"):
        load_fake(tmp_path / "nowhere", tmp_path / "cache")


def test_missing_file(tmp_path: Path) -> None:
    folder = fake_multi30k(tmp_path, b"ein Hund\n", b"a dog\n")
    (folder / "train.en.gz").unlink()
    with pytest.raises(DataError, match=r"missing data file .*train\.en\.gz"):
        load_fake(tmp_path, tmp_path / "cache")


@pytest.mark.parametrize("download", ["false", "true"])
def test_a_link_to_nothing_is_named_not_taken_for_a_missing_file(tmp_path: Path, download: str) -> None:
    """A loop of links (or a dangling one) is the user's mistake to see, not a file to download over."""
    folder = fake_multi30k(tmp_path, b"ein Hund\n", b"a dog\n")
    (folder / "train.en.gz").unlink()
    (folder / "train.en.gz").symlink_to(folder / "loop.gz")
    (folder / "loop.gz").symlink_to(folder / "train.en.gz")
    with pytest.raises(DataError, match=r"train\.en\.gz is a symbolic link to .*loop\.gz, which does not exist or "
                                        r"loops back"):
        load_fake(tmp_path, tmp_path / "cache", f"task.download={download}")


def test_mismatched_line_counts(tmp_path: Path) -> None:
    fake_multi30k(tmp_path, b"ein Hund\nzwei Katzen\n", b"a dog\n")
    with pytest.raises(DataError, match=r"train\.de\.gz has 2 lines but .*train\.en\.gz has 1"):
        load_fake(tmp_path, tmp_path / "cache")


def test_invalid_utf8(tmp_path: Path) -> None:
    fake_multi30k(tmp_path, b"ein Hund\nzwei \xff Katzen\n", b"a dog\ntwo cats\n")
    with pytest.raises(DataError, match=r"train\.de\.gz, line 2: not valid UTF-8"):
        load_fake(tmp_path, tmp_path / "cache")


def test_empty_line(tmp_path: Path) -> None:
    fake_multi30k(tmp_path, b"ein Hund\nzwei Katzen\n", b"a dog\n  \n")
    with pytest.raises(DataError, match=r"train\.en\.gz, line 2: empty line"):
        load_fake(tmp_path, tmp_path / "cache")


def test_checksum_mismatch(tmp_path: Path) -> None:
    fake_multi30k(tmp_path, b"ein Hund\n", b"a dog\n")
    with pytest.raises(DataError, match=r"train\.de\.gz: sha256 .* does not match the published"):
        load_fake(tmp_path, tmp_path / "cache", "task.verify_checksums=true")


def test_unknown_split(tmp_path: Path, make_cfg) -> None:
    data = TaskData(make_cfg(*SMALL_TOY).task, tmp_path)
    with pytest.raises(DataError, match=r"no split 'tset'; its splits are \['train', 'valid', 'test'\]"):
        data.split("tset")


def test_unknown_task_lists_the_tasks() -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"(?s)task/nope.*multi30k_de_en.*toy_reverse"):
        compose_cfg(["task=nope"])


def test_missing_summarization_file(tmp_path: Path, make_cfg) -> None:
    (tmp_path / "samsum").mkdir()
    cfg = make_cfg("task=samsum", f"task.data_root={tmp_path}")
    with pytest.raises(DataError, match=r"missing data file .*samsum/train\.jsonl\.gz"):
        TaskData(cfg.task, tmp_path / "cache")


def test_interrupted_cache_write_leaves_nothing_to_trust(tmp_path: Path, make_cfg, monkeypatch) -> None:
    task = make_cfg(*SMALL_TOY).task
    real_save = datasets.Dataset.save_to_disk

    def crash(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        raise KeyboardInterrupt("killed while writing the cache")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", crash)
    with pytest.raises(KeyboardInterrupt):
        TaskData(task, tmp_path)
    assert not list((tmp_path / "raw").iterdir())  # neither a partial split nor a temporary left behind
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", real_save)
    assert len(TaskData(task, tmp_path).split("train")) == task.toy.train_size
