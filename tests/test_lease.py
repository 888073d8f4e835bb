"""python -m experiments.training.lease: the checks it makes before a GPU trains, and its archive's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.training import lease
from experiments.training.train import run
from tests.conftest import compose_cfg

TOY = ["task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=20", "model=gru_tiny", "trainer=debug",
       "trainer.max_steps=4", "trainer.eval_every=2", "trainer.num_threads=1", "logger.mode=disabled"]


def test_a_missing_or_old_package_is_named_before_anything_trains(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lease, "IMPORTED", ("numpy", "no_such_package_here"))
    found = lease.environment()
    assert "numpy" in found and found["problem"].startswith("import no_such_package_here failed")
    monkeypatch.setattr(lease, "IMPORTED", ("numpy",))
    monkeypatch.setattr(lease, "MIN_VERSIONS", {"numpy": 999})
    assert "is older than 999" in lease.environment()["problem"]
    with pytest.raises(SystemExit) as exit_:
        lease.main(["smoke", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "lease.json").read_text())
    assert exit_.value.code == 3 and "older than 999" in report["environment"]["problem"] and "grid" not in report


def test_finished_runs_travel_in_one_archive_and_land_beside_the_exported_ones(tmp_path: Path,
                                                                               shared_cache: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (1, 2):
        run(compose_cfg([*TOY, f"seed={seed}", f"cache_dir={shared_cache}"]), runs / "toy" / "gru" / f"seed{seed}")
    (runs / "toy" / "gru" / "seed3").mkdir()  # unfinished: no results.json, not packed
    names = lease.pack(runs, tmp_path / "runs.tgz")
    task = json.loads((runs / "toy" / "gru" / "seed1" / "results.json").read_text())["task"]
    assert names == [f"{task}/gru/seed1", f"{task}/gru/seed2"]
    committed = tmp_path / "results" / "runs"
    (committed / task / "gru" / "seed2").mkdir(parents=True)  # exported already: kept as it is
    added, kept = lease.unpack(tmp_path / "runs.tgz", committed)
    assert added == [f"{task}/gru/seed1"] and kept == [f"{task}/gru/seed2"]
    assert not list((committed / task / "gru" / "seed2").iterdir())
    unpacked = json.loads((committed / task / "gru" / "seed1" / "results.json").read_text())
    assert unpacked["seed"] == 1 and (committed / task / "gru" / "seed1" / "hyps").is_dir()
    assert lease.pack(tmp_path / "nothing", tmp_path / "none.tgz") == [] and not (tmp_path / "none.tgz").exists()
