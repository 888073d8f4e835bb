"""The bench's profiles: bf16 profiled beside fp32 where bf16 is native, and how an update's time splits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from experiments.bench import cli, plan
from experiments.bench.measure import op_classes
from experiments.bench.profile_report import bf16_bound, bf16_split, profiles
from experiments.evaluation import builders


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_profiled_beside_fp32_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(builders, "cpu_has_native_bf16", lambda: native)
    specs, _ = plan.build_specs(cli.parse_args(["--tiny", "--profile", "traces"]), torch.device("cpu"))
    profiled = {(s.preset, s.name): s.overrides for s in specs if s.kind == "profile"}
    expected = {(m, "base") for m in ("transformer_tiny", "gru_tiny")}
    if native:
        expected |= {(m, "bf16") for m in ("transformer_tiny", "gru_tiny")}
    assert set(profiled) == expected
    for (preset, name), overrides in profiled.items():
        precision = builders.resolve_precision(torch.device("cpu"), plan.compose(overrides).trainer.precision)
        assert precision == ("bf16" if name == "bf16" else "fp32")


def test_op_classes_split_every_operator_once_per_update() -> None:
    ops = [SimpleNamespace(key=k, self_cpu_time_total=us) for k, us in [
        ("aten::mm", 3e6), ("aten::bmm", 1e6), ("aten::addmm", 2e6), ("aten::copy_", 1.5e6), ("aten::add", 0.5e6),
        ("train_step", 1e6), ("ProfilerStep#3", 9e6), ("aten::empty", 0.0)]]
    classes = op_classes(ops, steps=2)
    assert classes == pytest.approx({"matmul": 3.0, "copies": 0.75, "rest": 0.75})


def test_the_bf16_bound_is_amdahls_law_on_the_matrix_products() -> None:
    fp32 = {"matmul": 2.0, "copies": 0.2, "rest": 1.8}
    bf16 = {"matmul": 0.5, "copies": 0.6, "rest": 2.0}
    assert bf16_bound(fp32, bf16) == pytest.approx(4.0 / 2.5)
    report = {"profiles": [
        {"model": "gru", "config": "base", "trace": "t1", "steps": 2, "top_ops": [], "op_classes": fp32},
        {"model": "gru", "config": "bf16", "trace": "t2", "steps": 2, "top_ops": [], "op_classes": bf16},
        {"model": "transformer", "config": "base", "trace": "t3", "steps": 2, "top_ops": [], "op_classes": fp32}]}
    md = "\n".join(bf16_split(report, ""))
    assert "| gru: operators | fp32 | bf16 | fp32 / bf16 |" in md and "gru: bf16 at most 1.60x faster" in md
    assert "| all | 4.000 | 3.100 | 1.29x |" in md
    assert "transformer:" not in md  # no bf16 profile of it: no comparison
    assert bf16_split({"profiles": report["profiles"][:1]}, "") == []
    assert "## Profiles" in "\n".join(profiles(report, ""))
