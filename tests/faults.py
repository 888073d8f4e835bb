"""Builders of bad input for the fault-injection tests (tests/test_faults*.py): tiny corpora in a temp folder."""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from experiments.data.pipeline import TaskData
from tests.conftest import compose_cfg

# A tiny model and budget on the toy task: a few seconds of training.
TINY = ["task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=20", "model=transformer_tiny",
        "trainer=debug", "trainer.eval_max_sentences=0", "trainer.num_threads=1", "trainer.batch_tokens=512",
        "trainer.early_stopping_patience=0", "trainer.test_after_training=false", "decoding.beam_size=1",
        "logger.mode=disabled"]

SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}  # ours -> upstream Multi30k names


def sentences(n: int, lang: str) -> bytes:
    words = {"de": ("ein", "Hund", "rennt", "zwei", "Katzen", "schlafen"),
             "en": ("a", "dog", "runs", "two", "cats", "sleep")}[lang]
    return "".join(f"{words[i % 3]} {words[3 + i % 3]} {i}\n" for i in range(n)).encode()


def multi30k(root: Path, **files: bytes) -> Path:
    """A Multi30k folder under ``root`` with 40 good lines per file; ``files`` replaces some (``val_de=b"..."``)."""
    folder = root / "multi30k"
    folder.mkdir(parents=True, exist_ok=True)
    for upstream in SPLITS.values():
        for lang in ("de", "en"):
            content = files.get(f"{upstream}_{lang}", sentences(40, lang))
            (folder / f"{upstream}.{lang}.gz").write_bytes(gzip.compress(content))
    return folder


MULTI30K = ["task=multi30k_de_en", "task.download=false", "task.verify_checksums=false",
            "~task.splits.test_2017_flickr", "~task.splits.test_2017_mscoco", "~task.splits.test_2018_flickr",
            "task.tokenizer.vocab_size=40"]


@functools.cache
def _multi30k_base() -> DictConfig:
    return compose_cfg(MULTI30K)


def multi30k_task(root: Path, *extra: str) -> DictConfig:
    """The Multi30k task on the folder ``multi30k`` writes (train, val, test_2016_flickr), with ``key=value`` extras.

    Composed once: Hydra takes seconds a composition on a busy machine. Group
    choices (``model=...``) among ``extra`` need a composition of their own.
    """
    if any("." not in o.split("=", 1)[0] for o in extra):
        return compose_cfg([*MULTI30K, f"task.data_root={root}", *extra])
    return OmegaConf.merge(_multi30k_base(), OmegaConf.from_dotlist([f"task.data_root={root}", *extra]))


def jsonl(root: Path, split: str, lines: list[bytes]) -> Path:
    """``root/samsum/<split>.jsonl.gz`` holding ``lines``."""
    path = root / "samsum" / f"{split}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    return path


def load_all(cfg, cache: Path) -> TaskData:
    from experiments.core.config import validate

    cfg = validate(cfg)
    data = TaskData(cfg.task, cache)
    for name in cfg.task.splits:
        data.split(name)
    return data


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*.tmp")]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` (and what it holds) not writable, also for root (immutable attribute); skips where neither works."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
