"""The hand-written decoder loop (models/decoder_loop.py) against GRUSeq2Seq._step under autograd."""

from __future__ import annotations

import pytest
import torch

from models.gru import GRUSeq2Seq, runs_handwritten_loop
from tests.test_models import one_thread  # noqa: F401  (autouse)

CONFIGS = {
    "bahdanau": {},
    "luong_dot, no input feeding": {"attention": "luong_dot", "input_feeding": False},
    "luong_general, 3 layers": {"attention": "luong_general", "dec_layers": 3},
    "bahdanau, 2 layers, untied": {"dec_layers": 2, "tie_embeddings": False, "share_embeddings": False},
    # the loss reads the attention weights too: their gradient enters the hand-written backward
    "luong_general, copy": {"attention": "luong_general", "copy": True},
    "bahdanau, 2 layers, copy": {"dec_layers": 2, "copy": True},
}


def model_pair(overrides: dict, dropout: float, masks: str = "auto") -> tuple[GRUSeq2Seq, GRUSeq2Seq]:
    kwargs = {"src_vocab_size": 23, "tgt_vocab_size": 23, "pad_id": 1, "emb_dim": 6, "hidden_size": 8,
              "enc_layers": 2, "dropout": dropout, "tie_embeddings": True, "share_embeddings": True,
              "dropout_masks": masks, **overrides}
    torch.manual_seed(0)
    autograd = GRUSeq2Seq(**kwargs, decoder_loop="autograd").double()
    handwritten = GRUSeq2Seq(**kwargs, decoder_loop="handwritten").double()
    handwritten.load_state_dict(autograd.state_dict())
    return autograd, handwritten


def batch(lengths: list[int], tgt_len: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
    src = torch.randint(4, 23, mask.shape, generator=g).masked_fill(~mask, 1)
    tgt = torch.randint(4, 23, (len(lengths), tgt_len + 1), generator=g)
    return src, mask, tgt[:, :-1], tgt[:, 1:]


def fp64_log_probs(model: GRUSeq2Seq, outputs: torch.Tensor) -> torch.Tensor:
    """models.interface.log_probs without its cast to fp32: these tests compare in fp64."""
    return outputs if model.outputs_log_probs else outputs.log_softmax(dim=-1)


def loss_and_grads(model: GRUSeq2Seq, src, mask, tgt_in, gold, seed: int):
    torch.manual_seed(seed)  # the same dropout masks, if both loops draw them alike
    model.zero_grad()
    logits, weights = model(src, mask, tgt_in)
    loss = torch.nn.functional.nll_loss(fp64_log_probs(model, logits).flatten(0, 1), gold.flatten(), reduction="sum")
    loss.backward()
    return logits, weights, {name: p.grad.clone() for name, p in model.named_parameters()}


def graph_nodes(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``t``."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [n for n, _ in node.next_functions]
    return {type(n).__name__ for n in seen}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dropout, masks", [(0.0, "auto"), (0.3, "auto"), (0.3, "torch")])
def test_handwritten_loop_equals_autograd_in_outputs_and_every_gradient(overrides, dropout, masks):
    """In training mode too: both loops draw the same dropout masks, either way of drawing them."""
    autograd, handwritten = model_pair(overrides, dropout, masks)
    src, mask, tgt_in, gold = batch([7, 3, 1, 5])  # unsorted, one of length 1, padding in the middle rows
    for model in (autograd, handwritten):
        model.train()
    expected = loss_and_grads(autograd, src, mask, tgt_in, gold, seed=5)
    got = loss_and_grads(handwritten, src, mask, tgt_in, gold, seed=5)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-10)  # logits
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-10)  # attention weights
    assert got[2].keys() == expected[2].keys()
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], rtol=0, atol=1e-9, msg=name)


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_with_a_target_mask_the_loop_stops_each_sentence_at_its_end_and_agrees_on_the_real_positions(
        overrides, dropout):
    """Training passes tgt_mask: the loop runs no step past a sentence's last target position (the batch is
    sorted by target length inside, then put back), the logits are the real positions' only, and they, the
    attention there and every gradient of the loss over them equal the autograd loop's over the padded batch."""
    autograd, handwritten = model_pair(overrides, dropout)
    src, mask, tgt_in, gold = batch([7, 3, 1, 5, 4])
    tgt_mask = torch.arange(6) < torch.tensor([2, 6, 1, 4, 2])[:, None]  # unsorted, one of length 1
    tgt_in, gold = tgt_in.masked_fill(~tgt_mask, 1), gold.masked_fill(~tgt_mask, 1)
    for model in (autograd, handwritten):
        model.train()

    def run(model, selected: bool):
        torch.manual_seed(5)
        model.zero_grad()
        logits, weights = model(src, mask, tgt_in, tgt_mask if selected else None)
        if not selected:
            logits = logits[tgt_mask]
        torch.nn.functional.nll_loss(fp64_log_probs(model, logits), gold[tgt_mask], reduction="sum").backward()
        return logits, weights, {name: p.grad.clone() for name, p in model.named_parameters()}

    expected, got = run(autograd, selected=False), run(handwritten, selected=True)
    assert got[0].shape == (int(tgt_mask.sum()), 23)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(got[1][tgt_mask], expected[1][tgt_mask], rtol=0, atol=1e-10)
    assert not got[1][~tgt_mask].any()  # the steps past a sentence's end were not run
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], rtol=0, atol=1e-9, msg=name)
    torch.testing.assert_close(run(autograd, selected=True)[0], expected[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", ["gap", "empty", "not bool"])
def test_a_target_mask_that_is_not_a_prefix_of_each_row_is_refused(bad):
    _, handwritten = model_pair({}, 0.0)
    src, mask, tgt_in, _ = batch([4, 2], tgt_len=3)
    tgt_mask = {"gap": torch.tensor([[True, False, True], [True, True, False]]),
                "empty": torch.tensor([[True, True, True], [False, False, False]]),
                "not bool": torch.ones(2, 3, dtype=torch.long)}[bad]
    with pytest.raises(ValueError, match="tgt_mask must be a bool"):
        handwritten(src, mask, tgt_in, tgt_mask)


def test_the_loop_is_what_training_runs_on_a_cpu_and_only_with_gradients():
    autograd, handwritten = model_pair({}, 0.0)
    assert runs_handwritten_loop("auto", "cpu") and not runs_handwritten_loop("auto", "cuda")
    assert runs_handwritten_loop("handwritten", "cuda") and not runs_handwritten_loop("autograd", "cpu")
    src, mask, tgt_in, _ = batch([4, 2])
    logits, _ = handwritten(src, mask, tgt_in)
    nodes, reference = graph_nodes(logits), graph_nodes(autograd(src, mask, tgt_in)[0])
    assert "_DecoderLoopBackward" in nodes and "_DecoderLoopBackward" not in reference
    assert "SoftmaxBackward0" in reference and "SoftmaxBackward0" not in nodes  # no step recorded one by one
    with torch.no_grad():  # evaluation: the plain steps (nothing to keep for a backward)
        torch.testing.assert_close(handwritten(src, mask, tgt_in)[0], autograd(src, mask, tgt_in)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="decoder_loop"):
        GRUSeq2Seq(src_vocab_size=9, tgt_vocab_size=9, pad_id=1, decoder_loop="fused")


def test_under_bf16_autocast_the_loop_is_as_close_to_fp32_as_autograd_is():
    """Both loops round the same matmuls to bf16: the hand-written one may not drift further from fp32."""
    kwargs = dict(src_vocab_size=23, tgt_vocab_size=23, pad_id=1, emb_dim=16, hidden_size=32, dropout=0.0)
    src, mask, tgt_in, gold = batch([7, 3, 5])
    errors = {}
    for loop in ("autograd", "handwritten"):
        torch.manual_seed(0)
        model = GRUSeq2Seq(**kwargs, decoder_loop=loop).train()
        fp32 = loss_and_grads(model, src, mask, tgt_in, gold, seed=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = loss_and_grads(model, src, mask, tgt_in, gold, seed=0)
        errors[loop] = {"logits": ((bf16[0].float() - fp32[0]).abs().max().item(), fp32[0].abs().max().item())}
        errors[loop] |= {name: ((bf16[2][name] - g).abs().max().item(), g.abs().max().item())
                         for name, g in fp32[2].items()}
    assert errors["handwritten"]["logits"][0] <= 0.05
    for name, (err, scale) in errors["handwritten"].items():
        assert err <= 2 * errors["autograd"][name][0] + 0.01 * scale, (name, err, errors["autograd"][name][0])
