"""Task -> Arrow datasets -> subword ids -> token-budget batches, shared by both models.

``TaskData(cfg.task)`` loads (or builds and caches) the raw splits, trains or
reuses the tokenizer on the training split, tokenizes each split once through
``datasets.map`` (cached by content key), and hands out padded ``Batch``es.
Token ids stay in memory-mapped Arrow files; only the length arrays live in
NumPy, so a corpus larger than memory can be batched.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import sentencepiece as spm

from experiments.core.atomic import NO_SPACE, NOT_WRITABLE, owned_temporary, remove_stale, storage_error
from experiments.data.batching import Batch, collate, make_batches, shard
from experiments.core.errors import DataError
from experiments.data.sources import default_cache_dir, default_data_root, iter_text, raw_split
from experiments.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, load_or_train, load_saved

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _processor(path: str) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=path)


def _tokenize(batch: dict[str, list], src_model: str, tgt_model: str) -> dict[str, list]:
    src_ids = _processor(src_model).encode(batch["src"])
    tgt_ids = _processor(tgt_model).encode(batch["tgt"])
    return {
        "src_ids": src_ids,
        "tgt_ids": tgt_ids,
        "src_len": [len(s) for s in src_ids],
        "tgt_len": [len(t) for t in tgt_ids],
    }


def spread(ds: datasets.Dataset, limit: int, runs: int = 100) -> datasets.Dataset:
    """At most ``limit`` rows of ``ds``: ``runs`` runs of neighbouring rows, evenly spaced from its first to its last.

    Large corpora are often concatenations (WMT: Europarl, then Common Crawl,
    then News Commentary); a tokenizer trained on a sample must see every part.
    Runs rather than single rows: reading them touches a share of the Arrow
    file's pages, where rows spaced evenly would touch (and map) all of them.
    """
    n = len(ds)
    if n <= limit:
        return ds
    runs = min(runs, limit)
    length = limit // runs
    starts = np.linspace(0, n - length, runs).astype(np.int64)
    return ds.select((starts[:, None] + np.arange(length)).ravel())


def is_cached(cache: Path) -> bool:
    """Whether ``cache`` holds a tokenized split: its file, or the shards several processes wrote (``_i_of_n``)."""
    return cache.exists() or any(cache.parent.glob(f"{cache.stem}_*_of_*{cache.suffix}"))


@dataclass
class Split:
    """One tokenized split. Lengths are clipped to the task maxima and count eos / bos."""

    name: str
    dataset: datasets.Dataset
    src_lens: np.ndarray
    tgt_lens: np.ndarray
    truncated_src: int
    truncated_tgt: int

    def __len__(self) -> int:
        return len(self.dataset)

    def sources(self) -> list[str]:
        return list(iter_text(self.dataset, "src"))

    def references(self) -> list[list[str]]:
        """Raw references per example: every annotation where the split has several."""
        column = "refs" if "refs" in self.dataset.column_names else "tgt"
        refs = list(iter_text(self.dataset, column))
        return refs if column == "refs" else [[r] for r in refs]


class TaskData:
    def __init__(self, task: Any, cache_dir: str | Path | None = None, tokenizer_dir: Path | None = None) -> None:
        """``tokenizer_dir``: a run's saved tokenizer (``src.model``, ``tgt.model``), used instead of the cache.

        With a saved tokenizer the training split is not read until a split is
        asked for, so a trained run translates and scores new text on a machine
        without the task's corpus.
        """
        self.task = task
        self.data_root = Path(task.data_root) if task.data_root else default_data_root()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        for folder in ("spm", "tokenized"):
            remove_stale(self.cache_dir / folder)
        if tokenizer_dir is not None and (tokenizer_dir / "src.model").exists():
            self.tokenizer = load_saved(tokenizer_dir)
        else:
            train = self.raw_train[0]
            self.tokenizer = load_or_train(
                task.tokenizer,
                self.train_key,
                lambda limit: iter_text(spread(train, limit), "src"),
                lambda limit: iter_text(spread(train, limit), "tgt"),
                self.cache_dir,
            )
        self._splits: dict[str, Split] = {}

    @functools.cached_property
    def raw_train(self) -> tuple[datasets.Dataset, str]:
        """The training split as read from the corpus, and its content key."""
        return raw_split(self.task, self.task.splits["train"], self.data_root, self.cache_dir)

    @property
    def train_key(self) -> str:
        return self.raw_train[1]

    @property
    def src_vocab_size(self) -> int:
        return self.tokenizer.src.vocab_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tokenizer.tgt.vocab_size()

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

    def split(self, name: str) -> Split:
        if name not in self.task.splits:
            raise DataError(
                f"task {self.task.name!r} has no split {name!r}; its splits are {list(self.task.splits)}"
            )
        if name not in self._splits:
            self._splits[name] = self._load(name)
        return self._splits[name]

    def _load(self, name: str) -> Split:
        upstream = self.task.splits[name]
        raw, key = raw_split(self.task, upstream, self.data_root, self.cache_dir)
        tok = self.tokenizer
        cache = self.cache_dir / "tokenized" / f"{self.task.name}-{upstream}-{key}-{tok.key}.arrow"

        def tokenize(into: Path) -> datasets.Dataset:
            return raw.map(_tokenize, batched=True, cache_file_name=str(into), desc=f"tokenize {name}",
                           fn_kwargs={"src_model": str(tok.src_path), "tgt_model": str(tok.tgt_path)},
                           num_proc=self.task.num_proc if self.task.num_proc > 1 else None)

        try:
            if not is_cached(cache):
                # Written in a folder named for this process, then moved beside the others: a killed or failed
                # tokenization leaves that folder, which the next run removes (remove_stale), never datasets'
                # anonymous tmp* files among the caches.
                with owned_temporary(cache) as tmp:
                    tokenize(tmp / cache.name)
                    for made in sorted(tmp.iterdir()):  # the file, or one per process (num_proc)
                        os.replace(made, cache.parent / made.name)
            ds = tokenize(cache)  # read from the cache just written
        except OSError as e:
            if e.errno in NO_SPACE | NOT_WRITABLE:
                raise storage_error(cache, e) from None
            raise
        src_full = ds.data.column("src_len").to_numpy()
        tgt_full = ds.data.column("tgt_len").to_numpy()
        task = self.task
        split = Split(
            name=name,
            dataset=ds,
            src_lens=np.minimum(src_full, task.max_src_len) + 1,
            tgt_lens=np.minimum(tgt_full, task.max_tgt_len) + 1,
            truncated_src=int((src_full > task.max_src_len).sum()),
            truncated_tgt=int((tgt_full > task.max_tgt_len).sum()),
        )
        if split.truncated_src or split.truncated_tgt:
            log.warning(
                "%s/%s: truncated %d sources to %d tokens and %d targets to %d tokens (of %d examples)",
                task.name, name, split.truncated_src, task.max_src_len,
                split.truncated_tgt, task.max_tgt_len, len(split),
            )
        return split

    def plan(
        self,
        name: str,
        max_tokens: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pool_size: int = 0,
        sort: bool = True,
        limit: int = 0,
    ) -> list[np.ndarray]:
        """This rank's batches (example indices) of one epoch of split ``name``.

        ``limit`` > 0 keeps only the first ``limit`` examples (quick validation).
        """
        split = self.split(name)
        src_lens, tgt_lens = split.src_lens, split.tgt_lens
        if limit:
            src_lens, tgt_lens = src_lens[:limit], tgt_lens[:limit]
        batches = make_batches(src_lens, tgt_lens, max_tokens, shuffle=shuffle, seed=seed, epoch=epoch,
                               pool_size=pool_size, sort=sort)
        return shard(batches, rank, world_size)

    def batches(self, name: str, plan: list[np.ndarray]) -> Iterator[Batch]:
        """Padded batches for the index arrays of ``plan``, read from the Arrow file as needed."""
        columns = self.split(name).dataset.select_columns(["src_ids", "tgt_ids"])
        for indices in plan:
            rows = columns[indices]
            yield collate(
                rows["src_ids"], rows["tgt_ids"], indices,
                max_src_len=self.task.max_src_len, max_tgt_len=self.task.max_tgt_len,
                pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            )
