"""oneDNN's kernel cache: widened before the first matmul, so that shapes seen once are not compiled again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.bench.plan import TINY_TASK
from experiments.core.runtime import ONEDNN_CACHE_CAPACITY
from tests.conftest import REPO, compose_cfg

SHAPES = 1100  # more distinct matmul shapes than oneDNN's default cache holds (1024)

# Two passes over SHAPES bf16 matmuls of distinct shapes, after widen_onednn_cache(); oneDNN logs each kernel it
# compiles ("create:cache_miss") and each it finds cached ("create:cache_hit").
PASSES = f"""
import torch
from experiments.core.runtime import widen_onednn_cache
widen_onednn_cache()
w = torch.randn(64, 64).bfloat16()
for _ in range(2):
    for m in range(64, 64 + {SHAPES}):
        torch.nn.functional.linear(torch.ones(m, 64, dtype=torch.bfloat16), w)
"""


def kernels_compiled(env: dict[str, str]) -> tuple[int, int]:
    """(compiled, found cached) matmul kernels of the two passes, from oneDNN's log."""
    out = subprocess.run([sys.executable, "-c", PASSES], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**env, "ONEDNN_VERBOSE": "profile_create"}).stdout
    lines = [line for line in out.splitlines() if ",matmul," in line]
    return sum("cache_miss" in line for line in lines), sum("cache_hit" in line for line in lines)


def test_the_widened_cache_compiles_each_shape_once_where_the_default_compiles_it_every_pass() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    compiled, cached = kernels_compiled(env)
    if compiled == 0:
        pytest.skip("this CPU's bf16 matmuls do not run through oneDNN's compiled kernels")
    assert (compiled, cached) == (SHAPES, SHAPES)
    # one who sets the variable keeps it: oneDNN's own 1024, cycled through by 1100 shapes, keeps none of them
    assert kernels_compiled({**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}) == (2 * SHAPES, 0)


@pytest.mark.parametrize("given", [None, "1024"])
def test_a_cpu_trainer_widens_the_cache_before_its_model_is_built_unless_the_user_set_it(
        given: str | None, tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.training import trainer

    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", given or "")  # restored after the test, whatever it sets
    if not given:
        monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    seen, build = [], trainer.build_model

    def build_model(*args, **kwargs):  # noqa: ANN002, ANN003
        seen.append(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"))
        return build(*args, **kwargs)

    monkeypatch.setattr(trainer, "build_model", build_model)
    trainer.Trainer(compose_cfg([*TINY_TASK, "model=gru_tiny", "trainer.device=cpu", "logger.mode=disabled",
                                 f"cache_dir={shared_cache}"]), tmp_path / "run")
    assert seen == [given or str(ONEDNN_CACHE_CAPACITY)]


def test_the_cache_bench_trains_both_caches_to_the_same_losses_side_by_side(tmp_path: Path,
                                                                           shared_cache: Path) -> None:
    from experiments.bench import onednn_cache

    out = tmp_path / "cache.md"
    onednn_cache.main(["--models", "gru_tiny", "--steps", "4", "--log-every", "2", "--work-dir", str(tmp_path / "work"),
                       "--out", str(out), *TINY_TASK, "trainer.batch_tokens=256", f"cache_dir={shared_cache}"])
    text = out.read_text()
    windows = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| gru_tiny | ") and
               line.split(" | ")[1][0].isdigit()]
    assert [w[1] for w in windows] == ["1-2", "3-4"] * 2  # the cache pair, then bf16 against fp32
    assert all(float(cell) > 0 for w in windows for cell in w[3:5])
    runs = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| gru_tiny | cache |") or
            line.startswith("| gru_tiny | precision |")]
    wide = f"bf16, cache {ONEDNN_CACHE_CAPACITY}"
    assert [(r[1], r[2], r[5]) for r in runs] == [("cache", "bf16, cache 1024", "–"), ("cache", wide, "the same"),
                                                  ("precision", "fp32", "–"), ("precision", wide, "the same")]
