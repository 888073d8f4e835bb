"""The pointer-generator (``copy=True``, models/copy.py) in both models: a distribution, the model without copy at
p_gen = 1, source pieces copied to their own ids, unseen pieces copied after training, and its config rules.

Decoding with copy (incremental = full pass, beam 1 = greedy, padding invariance, rescoring under ``forward``)
is tested with the other configurations in tests/test_models.py and tests/test_decoding.py, the hand-written
GRU loop's gradients in tests/test_decoder_loop.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from experiments.core.config import validate
from experiments.core.errors import ConfigError
from experiments.evaluation.evaluate import evaluate_checkpoint
from experiments.evaluation.loss import sequence_loss
from experiments.training.train import run
from models import MODELS, greedy_search
from models.copy import copy_log_probs, copy_terms, recording_copy
from tests.conftest import compose_cfg
from tests.test_models import BOS, EOS, PAD, TGT_VOCAB, TINY, decode_incrementally, make_batch, one_thread  # noqa: F401

KINDS = pytest.mark.parametrize("name", ["gru", "transformer"])


def copy_model(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny model with copy over the joint vocabulary (source ids are target ids), in eval mode."""
    torch.manual_seed(seed)
    return MODELS[name](src_vocab_size=TGT_VOCAB, tgt_vocab_size=TGT_VOCAB, pad_id=PAD,
                        **{**TINY[name], "copy": True, **overrides}).eval()


def test_the_mixture_by_hand() -> None:
    """p_gen of the vocabulary distribution plus 1 - p_gen of the attention, each position's share on its id."""
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 0.3, 0.0]])  # (1, V=8)
    gate = torch.tensor([[math.log(0.25 / 0.75)]])  # p_gen = 0.25
    src = torch.tensor([[5, 7, 5, PAD]])  # piece 5 twice, then padding
    attention = torch.tensor([[0.2, 0.3, 0.5, 0.0]])
    expected = 0.25 * logits.softmax(-1)
    expected[0, 5] += 0.75 * 0.7
    expected[0, 7] += 0.75 * 0.3
    got = copy_log_probs(logits, gate, attention, src)
    torch.testing.assert_close(got.exp(), expected, rtol=1e-6, atol=1e-7)
    assert got.dtype == torch.float32


def test_value_and_gradients_are_the_textbook_formulas() -> None:
    """Against log(p_gen softmax + (1 - p_gen) scatter_add(attention)) in fp64, with pieces repeated in the source
    (their copy term must count once) and padding: the same values and the same gradient for every input."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 12, generator=g, dtype=torch.float64) * 3  # (B, T, V)
    gate = torch.randn(3, 4, 1, generator=g, dtype=torch.float64)
    src = torch.tensor([[5, 7, 5, 5, PAD], [4, 11, 9, PAD, PAD], [6, 6, 6, 6, 6]])[:, None].expand(3, 4, 5)
    scores = torch.randn(3, 4, 5, generator=g, dtype=torch.float64).masked_fill(src == PAD, -math.inf)
    inputs = [t.clone().requires_grad_() for t in (logits, gate, scores)]
    upstream = torch.randn(3, 4, 12, generator=g, dtype=torch.float64)

    def textbook(logits, gate, scores):
        p_gen, attention = torch.sigmoid(gate), scores.softmax(-1)
        return torch.log(p_gen * logits.softmax(-1) + (1 - p_gen) * torch.zeros_like(logits).scatter_add(-1, src,
                                                                                                         attention))

    ours_out, ref_out = copy_log_probs(inputs[0], inputs[1], inputs[2].softmax(-1), src), textbook(*inputs)
    torch.testing.assert_close(ours_out, ref_out, rtol=0, atol=1e-12)
    ours = torch.autograd.grad((ours_out * upstream).sum(), inputs)
    ref = torch.autograd.grad((ref_out * upstream).sum(), inputs)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_confident_logits_keep_every_log_probability_finite() -> None:
    """In log space: a vocabulary probability that underflows in fp32 stays finite (the smoothed loss averages
    log P over the whole vocabulary), and under bf16 inputs the result is fp32."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 50, generator=g) * 1000).bfloat16()
    src = torch.randint(4, 50, (4, 6), generator=g)
    attention = torch.rand(4, 6, generator=g).softmax(-1)
    out = copy_log_probs(logits, torch.zeros(4, 1, dtype=torch.bfloat16), attention, src)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # the copy term is added to log G ~ -3000 here: a few ulps of 3000 (2.4e-4 each) are lost
    torch.testing.assert_close(out.logsumexp(-1), torch.zeros(4), atol=1e-4, rtol=0)


@KINDS
@pytest.mark.parametrize("bias", [0.0, -30.0, 30.0])  # p_gen learnt, ~0 (all copy), ~1 (all vocabulary)
def test_the_output_is_a_distribution_over_the_vocabulary(name: str, bias: float) -> None:
    model = copy_model(name)
    with torch.no_grad():
        model.copy_gate.bias.fill_(bias)
    src, src_mask, tgt_in = make_batch()
    full, _ = model(src, src_mask, tgt_in)
    steps, _ = decode_incrementally(model, src, src_mask, tgt_in)
    for out in (full, steps):
        assert out.shape[-1] == TGT_VOCAB and (out <= 0).all()
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(out.shape[:-1]), atol=1e-5, rtol=0)


@KINDS
def test_all_copy_puts_the_mass_on_the_source_ids_and_none_on_padding(name: str) -> None:
    """p_gen ~ 0 (1e-13): the probability of a piece is the attention on the positions that hold it (the GRU's own
    attention; the Transformer's copy attention is its own, so only where the mass goes is checked there)."""
    model = copy_model(name)
    with torch.no_grad():
        model.copy_gate.weight.zero_()
        model.copy_gate.bias.fill_(-30.0)
    src, src_mask, tgt_in = make_batch()
    out, attention = model(src, src_mask, tgt_in)
    probs = out.exp()  # (B, T, V)
    in_source = torch.zeros(src.size(0), TGT_VOCAB, dtype=torch.bool).scatter_(1, src.masked_fill(~src_mask, 0), True)
    in_source[:, 0] = (src == 0).any(dim=1)  # 0 stood in for padding above
    assert probs[~in_source[:, None].expand_as(probs)].max() < 1e-12  # the generation share only
    assert probs[..., PAD].max() < 1e-12
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
    if name == "gru":
        expected = torch.zeros_like(probs).scatter_add_(-1, src[:, None].expand_as(attention), attention)
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)


@KINDS
def test_p_gen_one_is_the_model_without_copy_exactly(name: str) -> None:
    """The same weights without the copy layers, and the gate held at 1: the same log-probabilities, bit for bit,
    in the teacher-forced pass, step by step, and in what greedy search finds."""
    model = copy_model(name)
    with torch.no_grad():
        model.copy_gate.weight.zero_()
        model.copy_gate.bias.fill_(math.inf)
    plain = MODELS[name](src_vocab_size=TGT_VOCAB, tgt_vocab_size=TGT_VOCAB, pad_id=PAD, **TINY[name]).eval()
    copy_only = {k for k in model.state_dict() if k.startswith(("copy_gate.", "copy_keys."))}
    assert copy_only
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in copy_only})
    src, src_mask, tgt_in = make_batch()
    with torch.no_grad():
        for run in (lambda m: m(src, src_mask, tgt_in)[0], lambda m: decode_incrementally(m, src, src_mask, tgt_in)[0]):
            assert torch.equal(run(model), torch.log_softmax(run(plain), dim=-1))
    with_copy, without = (greedy_search(m, src, src_mask, bos_id=BOS, eos_id=EOS) for m in (model, plain))
    assert with_copy.tokens == without.tokens and torch.equal(with_copy.scores, without.scores)


def mixture_parts(model: torch.nn.Module, src: torch.Tensor, src_mask: torch.Tensor,
                  tgt_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p_gen (B, T) and the copy probability of every piece (B, T, V), solved from the log-probabilities the
    model's own ``decode_step`` returns (the searches' path) and the logits its output layer computed (caught by
    a hook), by the mixture identity P = p_gen softmax(logits) + (1 - p_gen) C: on the pieces not in the
    source C is 0, so there P = p_gen softmax(logits)."""
    caught: list[torch.Tensor] = []
    hook = model.output.register_forward_hook(lambda module, inputs, output: caught.append(output))
    try:
        with torch.inference_mode():
            log_p, _ = decode_incrementally(model, src, src_mask, tgt_in)  # (B, T, V)
    finally:
        hook.remove()
    B, T, V = log_p.shape
    probs, vocab = log_p.double().exp(), torch.cat([c.reshape(B, 1, V) for c in caught], dim=1).double().softmax(-1)
    outside = torch.ones(B, V, dtype=torch.bool).scatter_(1, src, False)[:, None]  # (B, 1, V)
    p_gen = (probs * outside).sum(-1) / (vocab * outside).sum(-1)  # (B, T)
    copied = (probs - p_gen[..., None] * vocab) / (1 - p_gen[..., None])
    return p_gen.float(), copied.float()


@KINDS
def test_copy_terms_are_the_gate_and_copy_distribution_the_searches_mix(name: str) -> None:
    """``copy_terms`` (the attention page's p_gen and copy distribution, from a teacher-forced pass) are what
    decode_step mixed, solved from its log-probabilities: one p_gen per target position, in (0, 1); a copy
    distribution that sums to 1 over the real source positions and is 0 on padding. Recording leaves the
    outputs as they were."""
    model = copy_model(name)
    src, src_mask, tgt_in = make_batch()  # sources of 7, 4, 1 and 6 pieces: padding in three rows
    with torch.inference_mode():
        plain, _ = model(src, src_mask, tgt_in)
        with recording_copy():
            recorded, _ = model(src, src_mask, tgt_in)
        terms = copy_terms(model, src, src_mask, tgt_in)
    assert torch.equal(plain, recorded)
    (B, T), S = tgt_in.shape, src.size(1)
    assert terms.p_gen.shape == (B, T) and bool(((terms.p_gen > 0) & (terms.p_gen < 1)).all())
    assert terms.attention.shape == (B, T, S)
    torch.testing.assert_close(terms.attention.sum(-1), torch.ones(B, T), atol=1e-6, rtol=0)
    assert bool((terms.attention.masked_select(~src_mask[:, None].expand(B, T, S)) == 0).all())
    p_gen, copied = mixture_parts(model, src, src_mask, tgt_in)
    torch.testing.assert_close(terms.p_gen, p_gen, atol=1e-5, rtol=0)
    expected = torch.zeros(B, T, TGT_VOCAB).scatter_add_(-1, src[:, None].expand(B, T, S), terms.attention)
    torch.testing.assert_close(copied, expected, atol=1e-4, rtol=0)


# A copy task: the target is the source. Training pieces are 4..15; the test sources hold one piece of 16..23,
# never seen in training, as source or target.
SEEN_END, VOCAB = 16, 24


def copy_task_batch(n: int, g: torch.Generator, unseen: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sources (n, S) of 3 to 6 seen pieces, padded, and their lengths; with ``unseen`` one piece is replaced
    by an unseen one."""
    lengths = torch.randint(3, 7, (n,), generator=g)
    mask = torch.arange(int(lengths.max())) < lengths[:, None]
    src = torch.randint(4, SEEN_END, mask.shape, generator=g)
    if unseen:
        at = (torch.rand(n, generator=g) * lengths).long()
        src[torch.arange(n), at] = torch.randint(SEEN_END, VOCAB, (n,), generator=g)
    return src.masked_fill(~mask, PAD), mask, lengths


def train_on_the_copy_task(name: str, copy: bool, steps: int = 150) -> torch.nn.Module:
    kwargs = {"gru": {"emb_dim": 16, "hidden_size": 32}, "transformer": {**TINY["transformer"], "d_model": 32,
                                                                          "enc_layers": 1, "dec_layers": 1}}[name]
    torch.manual_seed(0)
    model = MODELS[name](src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, pad_id=PAD, copy=copy,
                         **{**kwargs, "dropout": 0.0}).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2 if name == "gru" else 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        src, src_mask, lengths = copy_task_batch(32, g, unseen=False)
        tgt_in = torch.cat([torch.full((32, 1), BOS), src], dim=1)
        tgt_out = torch.cat([src, torch.full((32, 1), PAD)], dim=1)
        tgt_out[torch.arange(32), lengths] = EOS
        tgt_mask = tgt_out != PAD
        out, _ = model(src, src_mask, tgt_in, tgt_mask)
        loss = sequence_loss(out, tgt_out[tgt_mask], PAD, 0.0, log_probs=model.outputs_log_probs)
        optimizer.zero_grad()
        (loss / tgt_mask.sum()).backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("name, at_least", [("gru", 0.75), ("transformer", 0.3)])
def test_a_model_trained_to_copy_copies_pieces_it_never_saw(name: str, at_least: float) -> None:
    """Without copy no unseen piece comes out (the output layer never predicted one); with copy most do. The
    Transformer's copy attention learns to match content more than positions here, and an unseen piece's
    untrained embedding misleads it: about half (0.62 measured; 0.42-0.62 over three seeds), against the GRU's 0.98."""
    src, src_mask, lengths = copy_task_batch(50, torch.Generator().manual_seed(1), unseen=True)
    unseen = src >= SEEN_END  # (50, S), one per row
    copied = {}
    for copy in (False, True):
        hyps = greedy_search(train_on_the_copy_task(name, copy), src, src_mask, bos_id=BOS, eos_id=EOS,
                             max_len_a=1.0, max_len_b=3)
        out = torch.tensor([(t + [PAD] * src.size(1))[:src.size(1)] for t in hyps.tokens])  # (50, S)
        copied[copy] = float((out == src)[unseen].float().mean())
    assert copied[False] == 0.0
    assert copied[True] >= at_least, copied


def test_copy_needs_one_joint_vocabulary() -> None:
    for name in MODELS:
        with pytest.raises(ValueError, match="copy puts a source piece's probability on its own id"):
            MODELS[name](src_vocab_size=20, tgt_vocab_size=23, pad_id=PAD, copy=True)
    separate = ["task=toy_reverse", "model=gru_tiny", "task.tokenizer.joint=false"]
    with pytest.raises(ConfigError, match="task.tokenizer.joint"):
        validate(compose_cfg([*separate, "model.copy=true"]))
    validate(compose_cfg(separate))  # without copy, separate vocabularies are fine


def test_copy_is_off_by_default_and_old_checkpoints_have_no_copy_weights() -> None:
    for name in ("gru", "transformer"):
        cfg = validate(compose_cfg([f"model={name}"]))
        assert cfg.model["copy"] is False  # not .copy: DictConfig's method
        model = MODELS[name](src_vocab_size=30, tgt_vocab_size=30, pad_id=PAD)
        assert not model.outputs_log_probs and not any(k.startswith("copy_") for k in model.state_dict())


@KINDS
def test_a_run_with_copy_trains_on_every_fast_path_and_its_checkpoint_decodes(name: str, tmp_path: Path,
                                                                              shared_cache: Path) -> None:
    """s2s-train with copy under bf16 autocast, the real target positions only (skip_target_padding), the GRU's
    hand-written CPU loop and the Transformer's KV cache while validating; s2s-eval then decodes the best
    checkpoint with beam search to the same output."""
    run_dir = tmp_path / "run"
    run(compose_cfg(["task=toy_reverse", "task.toy.train_size=200", "task.toy.eval_size=10", f"model={name}_tiny",
                     "model.copy=true", "trainer=debug", "trainer.max_steps=4", "trainer.eval_every=4",
                     "trainer.precision=bf16", "trainer.skip_target_padding=true", "trainer.test_after_training=true",
                     "decoding.beam_size=2", "logger.mode=disabled", f"cache_dir={shared_cache}"]), run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["precision"] == "bf16"
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] in ("train", "valid")]
    assert len(losses) == 2 and all(0 < loss < math.log(100) for loss in losses), events  # toy vocabulary < 100
    again = evaluate_checkpoint(str(run_dir), ["split=test"])
    assert again["bleu"] == pytest.approx(results["test"]["test"]["bleu"])
