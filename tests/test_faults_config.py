"""Fault injection, settings: every value that cannot work is one line naming the key, before the first update.

Ranges and cross-field rules (experiments/core/config_checks.py) at validation, the
device asked for and SentencePiece's limits when the run starts, the positions
the data needs once the splits are read. None of them may end in a traceback
at the first update or validation. The command line's own faults:
tests/test_faults_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.core.errors import ConfigError
from experiments.training.preflight import check_limits
from experiments.training.train import run
from tests.conftest import compose_cfg
from tests.faults import TINY, load_all


@pytest.mark.parametrize("overrides, message", [
    (["model=transformer", "model.heads=7"], r"model\.heads=7 does not divide model\.d_model=256: each head takes "
                                             r"d_model / heads dimensions; use heads in \[1, 2, 4, 8, 16\]"),
    (["model=transformer", "model.d_model=0"], r"model\.d_model=0 must be at least 1"),
    (["model=gru", "model.hidden_size=511"], r"model\.hidden_size=511 must be even: the bidirectional encoder"),
    (["task.tokenizer.vocab_size=0"], r"task\.tokenizer\.vocab_size=0 must be more than the 4 special pieces"),
    (["seed=-1"], r"seed=-1 must be between 0 and 2\*\*32 - 1"),
    ([f"seed={2**32}"], r"seed=4294967296 must be between 0 and 2\*\*32 - 1"),
    (["trainer.log_every=0"], r"trainer\.log_every=0 must be at least 1"),
    (["trainer.max_epochs=0"], r"trainer\.max_epochs=0 must be at least 1"),
    (["trainer.num_threads=-1"], r"trainer\.num_threads=-1 must be 0 \(the cores this process may use\) or more"),
    (["trainer.betas=[0.9]"], r"trainer\.betas=\[0\.9\] must be two numbers in \[0, 1\)"),
    (["trainer.weight_decay=-1"], r"trainer\.weight_decay=-1\.0 must be 0 \(none\) or more"),
    (["trainer.warmup_steps=-5"], r"trainer\.warmup_steps=-5 must be 0 \(no warm-up\) or more"),
    (["trainer.keep_checkpoints=-1"], r"trainer\.keep_checkpoints=-1 must be 0 \(no snapshots\) or more"),
    (["decoding.max_len_a=-1"], r"decoding\.max_len_a=-1\.0 must be 0 or more"),
    (["decoding.max_len_b=-3"], r"decoding\.max_len_b=-3 must be 0 or more"),
    (["trainer.device=cuda:x"], r"trainer\.device='cuda:x'; valid: auto, cpu, cuda, cuda:N"),
])
def test_a_value_out_of_range_is_named_at_validation(make_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_cfg(*overrides)


def test_cuda_asked_for_on_a_machine_without_it_is_one_line_before_anything_is_written(
        tmp_path: Path, shared_cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as a CPU-only torch says
    for asked in (["trainer.device=cuda"], ["trainer=gpu", "trainer.compile=false"]):
        with pytest.raises(ConfigError, match=r"trainer\.device=cuda, but this torch \S+ sees no CUDA GPU .*use "
                                              r"trainer\.device=cpu or auto"):
            run(compose_cfg([*TINY, f"cache_dir={shared_cache}", *asked]), tmp_path)
        assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_a_vocabulary_smaller_than_the_characters_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task\.tokenizer\.vocab_size=5 is smaller than the \d+ characters and "
                                          r"special pieces the training text needs: raise it"):
        run(compose_cfg([*TINY, "task.tokenizer.vocab_size=5", f"cache_dir={tmp_path / 'cache'}"]), tmp_path / "run")


@pytest.mark.parametrize("overrides, message", [
    (["model.max_positions=8"], r"the longest train (source|target) has \d+ positions \(with eos / bos\), more than "
                                r"model\.max_positions=8: raise it, or lower task\.max_src_len"),
    (["model.max_positions=20", "task.toy.max_len=8", "decoding.max_len_b=30"],
     r"decoding\.max_len_a=1\.2 and decoding\.max_len_b=30 let an output of the longest valid source \(\d+ tokens\) "
     r"take \d+ positions, more than model\.max_positions=20"),
])
def test_positions_the_data_needs_are_checked_at_start(make_cfg, shared_cache: Path, overrides: list[str],
                                                       message: str) -> None:
    cfg = make_cfg(*TINY, *overrides)
    with pytest.raises(ConfigError, match=message):
        check_limits(cfg, load_all(cfg, shared_cache))
