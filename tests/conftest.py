"""Shared fixtures. Real-data tests read the offline mirror at $S2S_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from experiments.core.config import validate

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# Seconds after which a child process counts as hung (a deadlocked rank): a safety net, not a speed limit.
# Far beyond what any machine, however loaded, needs for the tests' few-second trainings.
HUNG_S = 3 * 3600


def data_root() -> Path:
    root = os.environ.get("S2S_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("real-data test: set S2S_DATA_DIR to the offline data mirror (../shared/data)")
    return Path(root)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so Multi30k is parsed and its tokenizer trained once."""
    return tmp_path_factory.mktemp("cache")


def compose_cfg(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


@pytest.fixture
def make_cfg():
    """Compose and validate the Hydra config with overrides, as s2s-train does."""

    def make(*overrides: str) -> DictConfig:
        return validate(compose_cfg(list(overrides)))

    return make


@pytest.fixture(scope="session")
def attention_runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict[str, Path]:
    """A tiny trained GRU and Transformer, shared by the attention tests (trained once a session)."""
    from tests.attention_runs import train

    return train(tmp_path_factory, shared_cache)


@pytest.fixture(scope="session")
def copy_attention_runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict[str, Path]:
    """The same two models trained with copy for a few updates (trained once a session)."""
    from tests.attention_runs import COPY_RUNS, train

    return train(tmp_path_factory, shared_cache, COPY_RUNS)
