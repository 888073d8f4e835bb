"""s2s-release: a run's best weights in half precision, shaped like a run folder that every command loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.evaluation import checkpoint
from experiments.evaluation.builders import autocast_for
from experiments.evaluation.evaluate import decode_split, evaluate_checkpoint, load_run
from experiments.training.release import main, release
from tests.conftest import REPO

FP32 = ["trainer.precision=fp32", "decoding.beam_size=1"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_a_release_decodes_as_its_run_does_from_a_fraction_of_the_bytes(attention_runs: dict[str, Path],
                                                                        tmp_path: Path, dtype: str) -> None:
    for name, run_dir in attention_runs.items():
        out = tmp_path / f"{name}-{dtype}"
        release(run_dir, out, dtype)
        state = checkpoint.load(out)
        assert set(state) == {"format", "model", "config", "trainer", "release"}  # weights only
        assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {getattr(torch, {
            "fp16": "float16", "bf16": "bfloat16"}[dtype])}
        tied = [state["model"][k] for k in ("src_emb.weight", "tgt_emb.weight", "output.weight")]
        assert len({v.data_ptr() for v in tied}) == 1  # the tied embedding and output matrix, stored once
        full = checkpoint.resolve(run_dir).stat().st_size
        assert (out / "checkpoints" / "best.pt").stat().st_size < 0.5 * full  # no optimizer state, half the bytes
        original, released = load_run(run_dir, FP32), load_run(out, FP32)
        assert released.step == original.step and released.cfg.model == original.cfg.model
        for ours, theirs in zip(original.model.state_dict().values(), released.model.state_dict().values()):
            torch.testing.assert_close(theirs, ours, rtol=1e-2, atol=1e-2)  # rounded to half precision, no more
        hyps = [decode_split(r.model, r.data, "test", r.cfg.decoding, r.device, autocast_for(r.device, "fp32"),
                             beam_size=1).hypotheses
                for r in (original, released)]
        same = sum(a == b for a, b in zip(*hyps)) / len(hyps[0])
        assert same >= 0.9, f"{name} ({dtype}): {same:.0%} of the test outputs unchanged"


def test_s2s_release_refuses_to_write_over_a_folder_and_s2s_eval_loads_it(attention_runs: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "gru"
    result = subprocess.run([sys.executable, "-m", "experiments.training.release", str(attention_runs["gru"]), str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}/")
    again = subprocess.run([sys.executable, "-m", "experiments.training.release", str(attention_runs["gru"]), str(out)],
                           capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and again.stderr.startswith("error:") and "not empty" in again.stderr
    with pytest.raises(SystemExit):
        main([str(tmp_path / "no-run"), str(tmp_path / "x")])
    result = evaluate_checkpoint(str(out), ["split=test", "decoding.beam_size=1"])  # what s2s-eval runs
    assert result["bleu"] >= 0 and (out / "eval" / "test-beam1.json").exists()
