"""What a run reads and whether its settings fit it, checked before the first update.

A batch budget below the longest example, a decoding budget that a beam
cannot fit, or a Transformer position table shorter than an example or an
output, would otherwise fail at the first validation or the final test, hours in.
"""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

from experiments.data.pipeline import Split, TaskData
from experiments.core.errors import ConfigError
from experiments.evaluation.evaluate import batch_tokens_key, source_tokens_per_batch

log = logging.getLogger(__name__)


def evaluation_splits(cfg: DictConfig) -> list[str]:
    """The splits decoded after training: ``trainer.test_splits``, else every split of the task but train and valid."""
    return list(cfg.trainer.test_splits) or [name for name in cfg.task.splits if name not in ("train", "valid")]


def run_splits(cfg: DictConfig) -> list[str]:
    """Every split a training run reads: train, valid and the evaluation splits."""
    return ["train", "valid", *evaluation_splits(cfg)]


def check_limits(cfg: DictConfig, data: TaskData) -> None:
    """Settings that cannot work with these splits, found at start rather than at the first validation or test."""
    tc, decoding = cfg.trainer, cfg.decoding
    valid = len(data.split("valid"))
    if tc.eval_max_sentences < 0:
        raise ConfigError(f"trainer.eval_max_sentences={tc.eval_max_sentences} must be 0 (the whole split) or more")
    if tc.eval_max_sentences > valid:  # a cap above the split's size: the whole split, as 0 would be
        log.info("trainer.eval_max_sentences=%d is more than the %d sentences of the validation split (%s): "
                 "validating on all of them", tc.eval_max_sentences, valid, cfg.task.splits.valid)
    for name in run_splits(cfg):
        split = data.split(name)
        longest = int(max(split.src_lens.max(), split.tgt_lens.max()))
        if longest > tc.batch_tokens:
            raise ConfigError(f"the longest {name} example has {longest} tokens, more than trainer.batch_tokens="
                              f"{tc.batch_tokens}: raise it, or lower task.max_src_len / task.max_tgt_len")
        check_positions(cfg, name, split)
        beam = tc.val_beam_size if name == "valid" else decoding.beam_size
        budget = source_tokens_per_batch(decoding, beam)
        if name != "train" and longest > budget:
            key = batch_tokens_key(beam)
            raise ConfigError(f"decoding.{key}={decoding[key]} leaves {budget} tokens a batch at beam {beam}, "
                              f"less than the {longest} of the longest {name} example: set decoding.{key} to at "
                              f"least {longest * beam}")


def check_positions(cfg: DictConfig, name: str, split: Split) -> None:
    """The Transformer's position table must hold the split's longest source and target, and the longest output
    decoding may write (``max_len_a`` x source + ``max_len_b`` tokens, plus the final eos step)."""
    if cfg.model.name != "transformer":
        return
    limit, decoding = cfg.model.max_positions, cfg.decoding
    longest_src, longest_tgt = int(split.src_lens.max()), int(split.tgt_lens.max())
    if max(longest_src, longest_tgt) > limit:
        side, longest = ("source", longest_src) if longest_src >= longest_tgt else ("target", longest_tgt)
        raise ConfigError(f"the longest {name} {side} has {longest} positions (with eos / bos), more than "
                          f"model.max_positions={limit}: raise it, or lower task.max_src_len / task.max_tgt_len")
    steps = math.floor(decoding.max_len_a * longest_src + decoding.max_len_b) + 1
    if name != "train" and steps > limit:
        raise ConfigError(f"decoding.max_len_a={decoding.max_len_a} and decoding.max_len_b={decoding.max_len_b} let "
                          f"an output of the longest {name} source ({longest_src} tokens) take {steps} positions, more "
                          f"than model.max_positions={limit}: lower them, or raise model.max_positions")
