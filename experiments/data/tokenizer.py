"""Subword tokenization with SentencePiece (unigram or BPE), trained on the training split only.

A model is cached under a key derived from the training data's content key and
the tokenizer settings, written atomically, and reused by every later run with
the same data and settings. The special ids are fixed for every model:
unk=0, pad=1, bos=2, eos=3 (the convention JoeyNMT uses too, so a vocabulary
can be shared with it for side-by-side benchmarks).
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm

from experiments.core.atomic import atomic_path
from experiments.core.errors import ConfigError

UNK_ID, PAD_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@dataclass
class Tokenizer:
    """Source and target SentencePiece models (the same object when the vocabulary is joint)."""

    src: spm.SentencePieceProcessor
    tgt: spm.SentencePieceProcessor
    src_path: Path
    tgt_path: Path

    @property
    def joint(self) -> bool:
        return self.src_path == self.tgt_path

    @functools.cached_property
    def key(self) -> str:
        """Content hash of the models: names the token-id caches made with them."""
        digest = hashlib.sha256(self.src_path.read_bytes() + self.tgt_path.read_bytes())
        return digest.hexdigest()[:16]

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        return self.src.encode(texts)

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        return self.tgt.encode(texts)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        """Detokenized text, ready for sacreBLEU / rouge-score against raw references."""
        return self.tgt.decode(ids)

    def src_pieces(self, ids: list[int]) -> list[str]:
        return [self.src.id_to_piece(i) for i in ids]

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [self.tgt.id_to_piece(i) for i in ids]


def settings_key(settings: Any, data_key: str, side: str) -> str:
    fields = (data_key, side, settings.model_type.value, settings.vocab_size, settings.character_coverage,
              settings.max_sentences, spm.__version__)
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


def train_model(sentences: Iterable[str], settings: Any, target: Path) -> None:
    """Train a SentencePiece model on ``sentences`` and write it atomically to ``target``."""
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=proto,
            model_type=str(settings.model_type.value),
            vocab_size=settings.vocab_size,
            character_coverage=settings.character_coverage,
            input_sentence_size=settings.max_sentences,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,  # small corpora (the toy task) may support fewer pieces
            unk_id=UNK_ID, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise tokenizer_error(e, settings) from None
    with atomic_path(target) as tmp:
        tmp.write_bytes(proto.getvalue())


def tokenizer_error(e: RuntimeError, settings: Any) -> ConfigError:
    """SentencePiece's refusal of the ``task.tokenizer`` settings, as the setting to change."""
    sizes = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
    if sizes:
        return ConfigError(f"task.tokenizer.vocab_size={settings.vocab_size} is smaller than the {sizes.group(2)} "
                           "characters and special pieces the training text needs: raise it (subword vocabularies "
                           "here are thousands), or lower task.tokenizer.character_coverage")
    return ConfigError(f"SentencePiece cannot train a tokenizer with these task.tokenizer settings: "
                       f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")


def lines(texts: Iterable[str]) -> Iterator[str]:
    """Training sentences: multi-line inputs (dialogues) contribute one sentence per line."""
    for text in texts:
        yield from (line for line in text.split("\n") if line.strip())


Texts = Callable[[int], Iterable[str]]  # limit -> at most that many training texts, spread over the split


def sample(texts: Texts, limit: int) -> Iterator[str]:
    """At most ``limit`` training sentences, read from at most ``limit`` texts: reading stops there."""
    return itertools.islice(lines(texts(limit)), limit)


def load_or_train(settings: Any, data_key: str, src_texts: Texts, tgt_texts: Texts, cache_dir: Path) -> Tokenizer:
    """The cached tokenizer for this data and these settings, trained first if absent.

    ``src_texts`` / ``tgt_texts`` give training-split text on demand, so
    nothing is read when the model is cached, and no more than
    ``settings.max_sentences`` sentences (half a side for a joint model) when
    it is not: SentencePiece keeps every sentence it is given in memory.
    """
    folder = cache_dir / "spm"
    budget = settings.max_sentences
    if settings.joint:
        path = folder / f"joint-{settings_key(settings, data_key, 'joint')}.model"
        if not path.exists():
            sentences = itertools.chain(sample(src_texts, budget // 2), sample(tgt_texts, budget - budget // 2))
            train_model(sentences, settings, path)
        paths = (path, path)
    else:
        paths = tuple(
            folder / f"{side}-{settings_key(settings, data_key, side)}.model" for side in ("src", "tgt")
        )
        for path, texts in zip(paths, (src_texts, tgt_texts)):
            if not path.exists():
                train_model(sample(texts, budget), settings, path)
    processors = [spm.SentencePieceProcessor(model_file=str(p)) for p in paths]
    return Tokenizer(processors[0], processors[1] if not settings.joint else processors[0], *paths)



def save(tokenizer: Tokenizer, folder: Path) -> None:
    """Copy the models into a run folder, so the run can be decoded without the cache."""
    for side, path in (("src", tokenizer.src_path), ("tgt", tokenizer.tgt_path)):
        with atomic_path(folder / f"{side}.model") as tmp:
            tmp.write_bytes(path.read_bytes())


def load_saved(folder: Path) -> Tokenizer:
    paths = [folder / "src.model", folder / "tgt.model"]
    src, tgt = (spm.SentencePieceProcessor(model_file=str(p)) for p in paths)
    if paths[0].read_bytes() == paths[1].read_bytes():
        return Tokenizer(src, src, paths[0], paths[0])
    return Tokenizer(src, tgt, *paths)
