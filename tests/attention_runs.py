"""The tiny trained runs the attention tests share (``attention_runs`` in conftest.py): trained once a session."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.training.train import run
from tests.conftest import compose_cfg
from tests.test_trainer import TINY


def tiny(*overrides: str, drop: tuple[str, ...] = ()) -> list[str]:
    """TINY with ``overrides`` replacing the keys they set, and without the keys starting with ``drop``."""
    keys = tuple(o.split("=")[0] + "=" for o in overrides) + drop
    return [o for o in TINY if not o.startswith(keys)] + list(overrides)


# 300 steps, so that both models emit a few tokens (after 60 the GRU emits only eos).
LONGER = ("trainer.max_steps=300", "trainer.eval_every=100", "trainer.test_after_training=false")
TRANSFORMER = tiny("model.dec_layers=2", *LONGER)  # 2 decoder layers x 2 heads
GRU = tiny("model=gru_tiny", "model.dropout=0", "trainer.lr=1e-2", *LONGER, drop=("model.",))


# With copy (model.copy=true), TINY's 60 updates: both emit a few tokens, mostly copied (p_gen about 0.1).
WITH_COPY = ("model.copy=true", "trainer.eval_every=60", "trainer.test_after_training=false")
COPY_RUNS = {"gru": tiny("model=gru_tiny", "model.dropout=0", "trainer.lr=1e-2", *WITH_COPY, drop=("model.",)),
             "transformer": tiny("model.dec_layers=2", *WITH_COPY)}


def train(tmp_path_factory: pytest.TempPathFactory, cache: Path,
          configs: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Train the runs of ``configs`` (by default the GRU and Transformer without copy); their folders by name."""
    dirs = {}
    for name, overrides in (configs or {"gru": GRU, "transformer": TRANSFORMER}).items():
        dirs[name] = tmp_path_factory.mktemp(name)
        run(compose_cfg(overrides + [f"cache_dir={cache}"]), dirs[name])
    return dirs
