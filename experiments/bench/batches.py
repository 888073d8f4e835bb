"""The bench's training batches: the trainer's length-sorted ones or unsorted random ones, and their padding."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from omegaconf import DictConfig

from experiments.data.batching import Batch
from experiments.data.pipeline import TaskData


def epoch_plan(data: TaskData, cfg: DictConfig, batching: str, epoch: int) -> list[np.ndarray]:
    """One epoch of training batches: the trainer's (sorted within trainer.pool_size) or unsorted random ones.

    Random batches shuffle the split and cut it greedily at the same token
    budget without sorting (JoeyNMT's token batches): the padding baseline.
    """
    tc = cfg.trainer
    return data.plan("train", tc.batch_tokens, shuffle=True, seed=cfg.seed, epoch=epoch, pool_size=tc.pool_size,
                     sort=batching != "random")


def batch_stream(data: TaskData, cfg: DictConfig, batching: str) -> Iterator[Batch]:
    """Training batches epoch after epoch, without end."""
    epoch = 0
    while True:
        yield from data.batches("train", epoch_plan(data, cfg, batching, epoch))
        epoch += 1


def plan_padding(data: TaskData, plan: list[np.ndarray]) -> dict[str, float]:
    """Padding of a whole epoch's batches, from the lengths alone (eos / bos included, as collated)."""
    split = data.split("train")
    src_real = src_all = tgt_real = tgt_all = sentences = 0
    for idx in plan:
        src, tgt = split.src_lens[idx], split.tgt_lens[idx]
        src_real, src_all = src_real + int(src.sum()), src_all + len(idx) * int(src.max())
        tgt_real, tgt_all = tgt_real + int(tgt.sum()), tgt_all + len(idx) * int(tgt.max())
        sentences += len(idx)
    return {
        "pad_src": 1 - src_real / src_all,
        "pad_tgt": 1 - tgt_real / tgt_all,
        "pad_all": 1 - (src_real + tgt_real) / (src_all + tgt_all),
        "batches_per_epoch": len(plan),
        "tgt_tokens_per_batch": tgt_real / len(plan),
        "sentences_per_batch": sentences / len(plan),
    }
