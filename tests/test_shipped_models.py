"""The trained models committed under results/models/ decode the test split as their committed outputs say.

A shipped model is a release (``s2s-release``: the run's best weights in fp16)
with the outputs it decoded, written by the command its README gives:
``s2s-eval results/models/NAME split=test decoding.beam_size=5
trainer.precision=fp32`` (``eval/test-beam5.txt`` and ``.json``). fp32, so the
outputs do not depend on a CPU's bf16 kernels; measured on the parity GRU,
its fp16 release decoded 998 of 1000 test sentences as its fp32 checkpoint
did. Different CPUs may still round the last bits of a matmul differently and
flip a near-tie in beam search, so a few changed sentences are allowed, not a
changed score. With nothing shipped yet, the test is skipped and says why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.evaluation.builders import autocast_for
from experiments.evaluation.evaluate import decode_split, load_run, score
from tests.conftest import REPO, data_root

SHIPPED = sorted((p, out) for p in (REPO / "results" / "models").glob("*") for out in p.glob("eval/*-beam*.txt"))


NOTHING_SHIPPED = pytest.param(None, None, id="none", marks=pytest.mark.skip(
    reason="no model is shipped under results/models/ yet (s2s-release, then s2s-eval as the docstring says)"))


@pytest.mark.parametrize("release, outputs", [pytest.param(p, o, id=f"{p.name}/{o.stem}") for p, o in SHIPPED]
                         or [NOTHING_SHIPPED])
def test_a_shipped_model_reproduces_its_committed_test_outputs(release: Path, outputs: Path) -> None:
    data_root()
    split, beam = re.fullmatch(r"(.+)-beam(\d+)", outputs.stem).groups()
    run = load_run(release, ["trainer.precision=fp32", f"decoding.beam_size={beam}", "trainer.num_threads=0"])
    decoded = decode_split(run.model, run.data, split, run.cfg.decoding, run.device,
                           autocast_for(run.device, "fp32")).hypotheses
    committed = outputs.read_text().splitlines()
    assert len(decoded) == len(committed), f"{outputs}: {len(committed)} lines for {len(decoded)} sentences"
    same = sum(a == b for a, b in zip(decoded, committed))
    assert same >= 0.99 * len(committed), f"{release.name} {split}: {same} of {len(committed)} outputs as committed"
    scores = json.loads(outputs.with_suffix(".json").read_text())
    metric = "bleu" if "bleu" in scores else "rouge_mean"
    ours = score(run.data, split, decoded)[metric]
    assert ours == pytest.approx(scores[metric], abs=0.1)
