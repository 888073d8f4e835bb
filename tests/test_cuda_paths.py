"""The models, the decoder and the trainer on a CUDA GPU, held to what the CPU tests assert.

On a GPU other kernels run: cuDNN's nn.GRU for the encoder (``recurrence=auto``),
the autograd decoder loop, SDPA's GPU attention, fused AdamW, bf16 autocast and
torch.compile (``trainer=gpu``). Each is checked here against the fp32 model or
the CPU. Skipped without a GPU (CI has none); a lent GPU runs this file first
(``python -m experiments.training.lease``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments.evaluation.evaluate import decode_split, load_run
from experiments.evaluation.builders import autocast_for
from experiments.training.train import run
from models import beam_search, greedy_search
from tests.conftest import compose_cfg
from tests.test_models import BOS, EOS, PAD, build, config_ids, decode_incrementally, make_batch, pad_right

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 products in fp32 (no TF32), so that the GPU is held to the CPU's tolerances."""
    kept = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = kept


def on_gpu(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(CUDA) for t in tensors]


@config_ids
def test_the_gpu_computes_what_the_cpu_computes(config):
    model = build(config)
    src, src_mask, tgt_in = make_batch()
    cpu_logits, cpu_attention = model(src, src_mask, tgt_in)
    logits, attention = model.to(CUDA)(*on_gpu(src, src_mask, tgt_in))
    torch.testing.assert_close(logits.cpu(), cpu_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(attention.cpu(), cpu_attention, atol=1e-4, rtol=1e-4)


@config_ids
def test_padding_invariance_on_the_gpu(config):
    model = build(config).to(CUDA)
    src, src_mask, tgt_in = on_gpu(*make_batch())
    S, T = src.size(1), tgt_in.size(1)
    logits, attention = model(src, src_mask, tgt_in)
    padded_logits, padded_attention = model(pad_right(src, 3, PAD), pad_right(src_mask, 3, False),
                                            pad_right(tgt_in, 2, PAD))
    torch.testing.assert_close(padded_logits[:, :T], logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(padded_attention[..., :T, :S], attention, atol=1e-4, rtol=0)
    assert (padded_attention[..., S:] == 0).all()


@config_ids
def test_incremental_decoding_matches_forward_on_the_gpu(config):
    model = build(config).to(CUDA)
    src, src_mask, tgt_in = on_gpu(*make_batch(tgt_len=6))
    logits, attention = model(src, src_mask, tgt_in)
    step_logits, step_attention = decode_incrementally(model, src, src_mask, tgt_in)
    torch.testing.assert_close(step_logits, logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(step_attention, attention, atol=1e-4, rtol=0)


@config_ids
def test_beam_size_one_is_greedy_on_the_gpu(config):
    model = build(config).to(CUDA)
    src, src_mask, _ = on_gpu(*make_batch([7, 4, 1, 6, 3]))
    greedy = greedy_search(model, src, src_mask, bos_id=BOS, eos_id=EOS)
    beam = beam_search(model, src, src_mask, bos_id=BOS, eos_id=EOS, beam_size=1, length_penalty=0.0)
    assert beam.tokens == greedy.tokens
    torch.testing.assert_close(beam.scores, greedy.scores)


TOY = ["task=toy_reverse", "task.toy.train_size=2000", "task.toy.eval_size=100", "trainer.max_steps=40",
       "trainer.eval_every=20", "trainer.warmup_steps=10", "trainer.lr=3e-3", "trainer.batch_tokens=1024",
       "trainer.log_every=10", "decoding.beam_size=2", "logger.mode=disabled"]


@pytest.mark.parametrize("model, compile_", [("transformer", False), ("gru", False), ("transformer", True)])
def test_trainer_gpu_trains_and_its_checkpoint_decodes_on_a_cpu(model: str, compile_: bool, tmp_path: Path,
                                                                 shared_cache: Path) -> None:
    """trainer=gpu (bf16 autocast, fused AdamW; torch.compile where asked): the loss falls, and the best
    checkpoint, loaded on a CPU, decodes the whole test split there."""
    overrides = [*TOY, f"model={model}_tiny", "trainer=gpu", f"trainer.compile={str(compile_).lower()}",
                 "trainer.batch_tokens=1024", f"cache_dir={shared_cache}"]
    results = run(compose_cfg(overrides), tmp_path)
    assert results["precision"] == "bf16" and results["hardware"]["device"] == "cuda"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("event") == "train"]
    assert losses[-1] < losses[0]
    cpu = load_run(tmp_path, ["trainer.device=cpu", "trainer.precision=fp32"])
    assert cpu.device.type == "cpu"
    decoded = decode_split(cpu.model, cpu.data, "test", cpu.cfg.decoding, cpu.device, autocast_for(cpu.device, "fp32"))
    assert len(decoded.hypotheses) == len(cpu.data.split("test").sources())
