"""trainer.precision=auto: bf16 only where the hardware has it, and a resumed run keeps the precision it began in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments.evaluation import builders
from experiments.training.train import run
from experiments.training.trainer import Trainer
from tests.conftest import compose_cfg

TINY = ["task=toy_reverse", "task.toy.train_size=200", "task.toy.eval_size=10", "model=transformer_tiny",
        "trainer=debug", "trainer.max_steps=4", "trainer.eval_every=4", "trainer.eval_max_sentences=0",
        "trainer.test_after_training=false", "logger.mode=disabled"]


@pytest.mark.parametrize("flags, expected", [("fpu avx2 fma", "fp32"), ("fpu avx512f avx512_bf16", "bf16"),
                                             ("fpu amx_bf16 amx_tile", "bf16")])
def test_auto_chooses_bf16_only_on_cpus_with_native_bf16(flags: str, expected: str, tmp_path: Path,
                                                         monkeypatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_path = builders.Path
    monkeypatch.setattr(builders, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    builders.cpu_has_native_bf16.cache_clear()
    try:
        assert builders.resolve_precision(torch.device("cpu"), "auto") == expected
        assert builders.resolve_precision(torch.device("cpu"), "fp32") == "fp32"  # an explicit choice stands
        assert builders.resolve_precision(torch.device("cpu"), "bf16") == "bf16"
    finally:
        builders.cpu_has_native_bf16.cache_clear()


def test_a_run_resumed_where_auto_means_bf16_goes_on_in_fp32(tmp_path: Path, shared_cache: Path,
                                                             monkeypatch) -> None:
    run(compose_cfg(TINY + ["trainer.precision=fp32", f"cache_dir={shared_cache}"]), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["precision"] == "fp32"
    monkeypatch.setattr(builders, "cpu_has_native_bf16", lambda: True)  # as on an AMX Xeon
    fresh = Trainer(compose_cfg(TINY + ["trainer.precision=auto", f"cache_dir={shared_cache}"]), tmp_path / "new")
    assert fresh.precision == "bf16"
    resumed = Trainer(compose_cfg(TINY + ["trainer.precision=auto", "trainer.resume=true",
                                          f"cache_dir={shared_cache}"]), tmp_path)
    assert resumed.progress.step == 4 and resumed.precision == "fp32"
