"""Shared fixtures. Real-data tests read the offline mirror at $S2S_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from experiments.config import validate

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


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
