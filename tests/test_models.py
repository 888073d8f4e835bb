"""Behaviour of GRUSeq2Seq and TransformerSeq2Seq: shapes, masking, causality, caching, learning."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F

from models import MODELS, GRUSeq2Seq, TransformerSeq2Seq, count_parameters, greedy_search
from models.attention import AdditiveAttention, cpu_tanh_

PAD, BOS, EOS = 1, 2, 3
SRC_VOCAB, TGT_VOCAB = 20, 23

# (model name, constructor overrides): every GRU attention kind, both Transformer norms
# and position kinds, and the less common switches.
CONFIGS = {
    "gru-bahdanau": ("gru", {"attention": "bahdanau"}),
    "gru-luong_dot": ("gru", {"attention": "luong_dot"}),
    "gru-luong_general": ("gru", {"attention": "luong_general"}),
    "gru-deep-nofeed-tied": (
        "gru",
        {"enc_layers": 2, "dec_layers": 3, "input_feeding": False, "tie_embeddings": True},
    ),
    "gru-packed-deep": ("gru", {"recurrence": "packed", "enc_layers": 3}),  # nn.GRU, what a GPU runs
    "transformer-pre-sinusoidal": ("transformer", {"norm": "pre", "positions": "sinusoidal"}),
    "transformer-post-learned": ("transformer", {"norm": "post", "positions": "learned"}),
    "transformer-pre-learned-untied": (
        "transformer",
        {"norm": "pre", "positions": "learned", "tie_embeddings": False},
    ),
    "transformer-post-sinusoidal": ("transformer", {"norm": "post", "positions": "sinusoidal"}),
    # the pointer-generator (models/copy.py): log-probabilities out, over the joint vocabulary it needs
    "gru-copy": ("gru", {"copy": True, "src_vocab_size": TGT_VOCAB}),
    "transformer-copy": ("transformer", {"copy": True, "src_vocab_size": TGT_VOCAB}),
}

TINY = {
    "gru": {"emb_dim": 16, "hidden_size": 24, "dropout": 0.1},
    "transformer": {
        "d_model": 16,
        "heads": 2,
        "ff_size": 32,
        "enc_layers": 2,
        "dec_layers": 2,
        "dropout": 0.1,
        "max_positions": 64,
    },
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; several spin-waiting threads on shared cores crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A small model of kind ``name`` in eval mode, deterministic given ``seed``."""
    torch.manual_seed(seed)
    kwargs = {"src_vocab_size": SRC_VOCAB, "tgt_vocab_size": TGT_VOCAB, "pad_id": PAD}
    return MODELS[name](**{**kwargs, **TINY[name], **overrides}).eval()


def make_batch(
    src_lengths: Sequence[int] = (7, 4, 1, 6), tgt_len: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded random sources of the given lengths and a full random tgt_in."""
    g = torch.Generator().manual_seed(seed)
    B, S = len(src_lengths), max(src_lengths)
    src_mask = torch.arange(S) < torch.tensor(src_lengths).unsqueeze(1)  # (B, S)
    src = torch.randint(4, SRC_VOCAB, (B, S), generator=g).masked_fill(~src_mask, PAD)
    tgt_in = torch.randint(4, TGT_VOCAB, (B, tgt_len), generator=g)
    tgt_in[:, 0] = BOS
    return src, src_mask, tgt_in


def pad_right(x: torch.Tensor, n: int, value) -> torch.Tensor:
    return torch.cat([x, x.new_full((x.size(0), n), value)], dim=1)


def decode_incrementally(model, src, src_mask, tgt_in) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing through encode + decode_step; stacked like forward's outputs."""
    memory, cache = model.encode(src, src_mask)
    logits, attention = [], []
    for t in range(tgt_in.size(1)):
        step_logits, cache, step_attn = model.decode_step(tgt_in[:, t], memory, src_mask, cache)
        logits.append(step_logits)
        attention.append(step_attn)
    return torch.stack(logits, dim=1), torch.stack(attention, dim=-2)


config_ids = pytest.mark.parametrize("config", list(CONFIGS))


def build(config: str) -> torch.nn.Module:
    name, overrides = CONFIGS[config]
    return tiny_model(name, **overrides)


@config_ids
def test_output_shapes(config):
    model = build(config)
    src, src_mask, tgt_in = make_batch()
    (B, S), T = src.shape, tgt_in.size(1)
    attn_prefix = (B,) if isinstance(model, GRUSeq2Seq) else (B, 2, 2)  # (B,) or (B, L, heads)

    logits, attention = model(src, src_mask, tgt_in)
    assert logits.shape == (B, T, TGT_VOCAB)
    assert attention.shape == (*attn_prefix, T, S)

    memory, cache = model.encode(src, src_mask)
    assert memory.shape[:2] == (B, S)
    step_logits, cache, step_attention = model.decode_step(tgt_in[:, 0], memory, src_mask, cache)
    assert step_logits.shape == (B, TGT_VOCAB)
    assert step_attention.shape == (*attn_prefix, S)
    for value in cache.values():
        for tensor in value if isinstance(value, list) else [value]:
            assert tensor.size(0) == B


@config_ids
def test_a_target_mask_selects_the_real_positions_logits(config):
    """What training asks for: the logits of the real target positions only, in row-major order."""
    model = build(config)
    src, src_mask, tgt_in = make_batch()
    tgt_mask = torch.arange(tgt_in.size(1)) < torch.tensor([5, 2, 1, 4])[:, None]
    full, attention = model(src, src_mask, tgt_in)
    for grad in (False, True):  # with gradients the GRU's CPU loop runs, and stops each sentence at its end
        with torch.set_grad_enabled(grad):
            selected, selected_attention = model(src, src_mask, tgt_in, tgt_mask)
        assert selected.shape == (int(tgt_mask.sum()), TGT_VOCAB)
        torch.testing.assert_close(selected, full[tgt_mask], atol=1e-5, rtol=0)
        at_real = [a.movedim(-2, 1)[tgt_mask] for a in (selected_attention, attention)]  # (N, [L, h,] S)
        torch.testing.assert_close(*at_real, atol=1e-5, rtol=0)


@config_ids
def test_padding_invariance(config):
    model = build(config)
    src, src_mask, tgt_in = make_batch()
    S, T = src.size(1), tgt_in.size(1)
    logits, attention = model(src, src_mask, tgt_in)

    padded_logits, padded_attention = model(
        pad_right(src, 3, PAD), pad_right(src_mask, 3, False), pad_right(tgt_in, 2, PAD)
    )
    torch.testing.assert_close(padded_logits[:, :T], logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded_attention[..., :T, :S], attention, atol=1e-5, rtol=0)
    assert (padded_attention[..., S:] == 0).all()


@config_ids
def test_no_peeking_at_future_targets(config):
    model = build(config)
    src, src_mask, tgt_in = make_batch(tgt_len=6)
    logits, attention = model(src, src_mask, tgt_in)
    for t in range(tgt_in.size(1) - 1):
        changed = tgt_in.clone()
        changed[:, t + 1] = (changed[:, t + 1] - 4 + 1) % (TGT_VOCAB - 4) + 4  # another real token
        new_logits, new_attention = model(src, src_mask, changed)
        # Same shapes, same kernels: positions <= t must come out bit for bit the same.
        assert torch.equal(new_logits[:, : t + 1], logits[:, : t + 1])
        assert torch.equal(new_attention[..., : t + 1, :], attention[..., : t + 1, :])
        # The changed token does matter from its own position on.
        assert not torch.equal(new_logits[:, t + 1], logits[:, t + 1])


@config_ids
def test_incremental_decoding_matches_forward(config):
    model = build(config)
    src, src_mask, tgt_in = make_batch(tgt_len=6)
    logits, attention = model(src, src_mask, tgt_in)
    step_logits, step_attention = decode_incrementally(model, src, src_mask, tgt_in)
    torch.testing.assert_close(step_logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(step_attention, attention, atol=1e-5, rtol=0)


@config_ids
def test_attention_is_a_distribution_over_real_source(config):
    model = build(config)
    src, src_mask, tgt_in = make_batch()
    _, attention = model(src, src_mask, tgt_in)
    _, step_attention = decode_incrementally(model, src, src_mask, tgt_in)
    for attn in (attention, step_attention):
        # Bring the source axis next to the batch: (B, S, ...).
        attn = attn.movedim(-1, 1)
        mask = src_mask.view(*src_mask.shape, *[1] * (attn.dim() - 2)).expand_as(attn)
        torch.testing.assert_close(attn.sum(dim=1), torch.ones_like(attn.sum(dim=1)))
        assert (attn[~mask] == 0).all()
        assert (attn[mask] > 0).all()


def test_gru_feeds_back_the_attentional_vector_behind_the_logits():
    model = tiny_model("gru", input_feeding=True)
    src, src_mask, tgt_in = make_batch()
    memory, cache = model.encode(src, src_mask)
    assert (cache["feed"] == 0).all()
    for t in range(tgt_in.size(1)):
        logits, cache, _ = model.decode_step(tgt_in[:, t], memory, src_mask, cache)
        torch.testing.assert_close(model.output(model.pre_output(cache["feed"])), logits)
    # And the fed vector matters: the next step's output changes without it.
    zeroed = {**cache, "feed": torch.zeros_like(cache["feed"])}
    assert not torch.equal(
        model.decode_step(tgt_in[:, 0], memory, src_mask, cache)[0],
        model.decode_step(tgt_in[:, 0], memory, src_mask, zeroed)[0],
    )


def test_additive_scores_are_tanhs_when_decoding_on_a_cpu_too():
    """Decoding on a CPU (no gradients) computes the additive score's tanh as 2 sigmoid(2x) - 1, in fp32."""
    x = torch.cat([torch.linspace(-30, 30, 601), torch.tensor([0.0, 1e-6, -1e-4])])
    torch.testing.assert_close(cpu_tanh_(x.clone()), torch.tanh(x), atol=2e-7, rtol=0)
    torch.manual_seed(0)
    attention = AdditiveAttention(query_dim=8, memory_dim=8, attn_dim=8)
    query, keys = torch.randn(3, 8) * 3, torch.randn(3, 5, 8) * 3
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                decoding = attention.score(query, keys)
            training = attention.score(query, keys)  # torch.tanh, as autograd needs it
        assert decoding.dtype == training.dtype
        torch.testing.assert_close(decoding.float(), training.float(), atol=0.05 if autocast else 1e-5, rtol=0)


def test_dropout_is_active_in_training_only():
    for name in MODELS:
        model = tiny_model(name, dropout=0.5)
        src, src_mask, tgt_in = make_batch()
        assert torch.equal(model(src, src_mask, tgt_in)[0], model(src, src_mask, tgt_in)[0])
        model.train()
        assert not torch.equal(model(src, src_mask, tgt_in)[0], model(src, src_mask, tgt_in)[0])


@pytest.mark.parametrize("where", ["attention_dropout", "activation_dropout", "embedding_dropout"])
def test_each_transformer_dropout_acts_in_training_and_alone(where):
    """With the residual dropout off, each of the other three dropouts alone makes training passes differ."""
    others = {"attention_dropout": 0.0, "activation_dropout": 0.0, "embedding_dropout": 0.0}
    model = tiny_model("transformer", **{**others, "dropout": 0.0, where: 0.5})
    src, src_mask, tgt_in = make_batch()
    model.train()
    assert not torch.equal(model(src, src_mask, tgt_in)[0], model(src, src_mask, tgt_in)[0])
    quiet = tiny_model("transformer", **{**others, "dropout": 0.0}).train()
    assert torch.equal(quiet(src, src_mask, tgt_in)[0], quiet(src, src_mask, tgt_in)[0])


def test_feed_forward_dropout_keeps_checkpoint_parameter_names():
    """Checkpoints saved before activation_dropout existed name the feed-forward's linears ff.0 and ff.2."""
    names = set(tiny_model("transformer", activation_dropout=0.1).state_dict())
    assert {"encoder.0.ff.0.weight", "encoder.0.ff.2.weight", "decoder.1.ff.0.bias", "decoder.1.ff.2.bias"} <= names
    assert names == set(tiny_model("transformer").state_dict())


@pytest.mark.parametrize(
    "name, overrides, steps, lr",
    [
        ("gru", {"emb_dim": 32, "hidden_size": 64}, 200, 1e-2),
        ("transformer", {"d_model": 32, "ff_size": 64, "heads": 4}, 200, 3e-3),
    ],
)
def test_overfits_a_tiny_batch_and_greedy_recovers_it(name, overrides, steps, lr):
    g = torch.Generator().manual_seed(1)
    B = 8
    src_lengths = torch.randint(5, 9, (B,), generator=g)
    tgt_lengths = torch.randint(5, 9, (B,), generator=g)
    src_mask = torch.arange(8) < src_lengths.unsqueeze(1)
    src = torch.randint(4, SRC_VOCAB, (B, 8), generator=g).masked_fill(~src_mask, PAD)
    targets = [torch.randint(4, TGT_VOCAB, (int(n),), generator=g).tolist() for n in tgt_lengths]
    tgt_in = torch.tensor([[BOS] + t + [PAD] * (8 - len(t)) for t in targets])
    labels = torch.tensor([t + [EOS] + [PAD] * (8 - len(t)) for t in targets])

    model = tiny_model(name, **{**overrides, "dropout": 0.0}).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        logits, _ = model(src, src_mask, tgt_in)
        loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05

    model.eval()
    hyps = greedy_search(model, src, src_mask, bos_id=BOS, eos_id=EOS)
    assert hyps.tokens == targets


def test_count_parameters_counts_tied_weights_once():
    V, E, H = 30, 16, 24
    common = {"src_vocab_size": V, "tgt_vocab_size": V, "pad_id": PAD}

    def count(cls, **kwargs) -> int:
        torch.manual_seed(0)
        return count_parameters(cls(**common, **kwargs))

    gru = {"emb_dim": E, "hidden_size": H}
    untied = count(GRUSeq2Seq, **gru)
    # Tying swaps the (V, H) output matrix for an (E, H) projection onto the embedding.
    assert count(GRUSeq2Seq, **gru, tie_embeddings=True) == untied - V * H + E * H
    assert count(GRUSeq2Seq, **gru, share_embeddings=True) == untied - V * E
    assert count(GRUSeq2Seq, emb_dim=H, hidden_size=H, tie_embeddings=True) == (
        count(GRUSeq2Seq, emb_dim=H, hidden_size=H) - V * H
    )

    tf = {"d_model": 16, "heads": 2, "ff_size": 32, "enc_layers": 1, "dec_layers": 1}
    separate = count(TransformerSeq2Seq, **tf, tie_embeddings=False)
    assert count(TransformerSeq2Seq, **tf, tie_embeddings=True) == separate - V * 16
    assert count(TransformerSeq2Seq, **tf, share_embeddings=True, tie_embeddings=True) == (
        separate - 2 * V * 16
    )
    # Learned positions are parameters, sinusoids are not.
    assert count(TransformerSeq2Seq, **tf, positions="learned", max_positions=50) == (
        count(TransformerSeq2Seq, **tf, max_positions=50) + 50 * 16
    )


def test_tied_weights_train_as_one():
    model = tiny_model("transformer", share_embeddings=False, tie_embeddings=True)
    assert model.output.weight is model.tgt_emb.weight
    model = tiny_model("gru", emb_dim=24, hidden_size=24, tie_embeddings=True)
    assert model.output.weight is model.tgt_emb.weight


@pytest.mark.parametrize("name", list(MODELS))
def test_shared_embeddings_need_a_joint_vocabulary(name):
    with pytest.raises(ValueError, match="share_embeddings needs one joint vocabulary"):
        tiny_model(name, share_embeddings=True)  # SRC_VOCAB != TGT_VOCAB
    model = MODELS[name](
        src_vocab_size=TGT_VOCAB, tgt_vocab_size=TGT_VOCAB, pad_id=PAD, share_embeddings=True,
        **TINY[name],
    )
    assert model.src_emb is model.tgt_emb


def test_padding_embedding_is_zero():
    for name in MODELS:
        model = tiny_model(name)
        assert (model.src_emb.weight[PAD] == 0).all()
        assert (model.tgt_emb.weight[PAD] == 0).all()


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError):
        tiny_model("gru", attention="concat")
    with pytest.raises(ValueError):
        tiny_model("gru", hidden_size=25)
    with pytest.raises(ValueError):
        tiny_model("transformer", norm="sandwich")
    with pytest.raises(ValueError):
        tiny_model("transformer", positions="rotary")
    with pytest.raises(ValueError):
        tiny_model("transformer", heads=3)
    with pytest.raises(ValueError):
        tiny_model("transformer", embed_init="uniform")


def test_xavier_embed_init_is_joeynmts_scale_and_reaches_the_tied_output():
    """JoeyNMT's xavier-uniform over (8000, 256): std sqrt(2 / 8256) ~ 0.0156, 4x below N(0, 256^-1/2)."""
    stds = {}
    for init in ("normal", "xavier"):
        torch.manual_seed(0)
        model = TransformerSeq2Seq(src_vocab_size=8000, tgt_vocab_size=8000, pad_id=PAD, d_model=256, heads=8,
                                   enc_layers=1, dec_layers=1, share_embeddings=True, embed_init=init)
        weight = model.src_emb.weight
        assert model.output.weight is weight and (weight[PAD] == 0).all()
        stds[init] = weight.std().item()
    assert stds["normal"] == pytest.approx(256**-0.5, rel=0.02)
    assert stds["xavier"] == pytest.approx((2 / (8000 + 256)) ** 0.5, rel=0.02)


def test_transformer_rejects_positions_beyond_the_table():
    model = tiny_model("transformer", max_positions=8)
    src, src_mask, _ = make_batch(src_lengths=[8, 3])
    model(src, src_mask, torch.full((2, 8), BOS))
    with pytest.raises(ValueError, match="max_positions"):
        model(src, src_mask, torch.full((2, 9), BOS))


def test_cpu_bf16_attention_runs_in_fp32_and_returns_bf16() -> None:
    """Under CPU bf16 autocast, attention is computed from the fp32 values of its bf16 inputs."""
    from models.transformer import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, generator=g).bfloat16().requires_grad_() for _ in range(3))
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q, k, v, mask, 0.0, False)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected.bfloat16(), rtol=0, atol=0)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (q, k, v))


@pytest.mark.parametrize("copy", [False, True])
def test_transformer_compiles_without_graph_breaks_under_dynamic_shapes(copy: bool) -> None:
    """Token-budget batches change (B, S, T) every step: a graph break would send part of every step to eager."""
    model = TransformerSeq2Seq(src_vocab_size=50, tgt_vocab_size=50, pad_id=1, d_model=32, heads=4, ff_size=64,
                               enc_layers=1, dec_layers=2, share_embeddings=True, copy=copy)
    src, tgt = torch.randint(2, 50, (3, 7)), torch.randint(2, 50, (3, 5))
    src_mask = torch.ones(3, 7, dtype=torch.bool)
    for t in (src, src_mask, tgt):
        torch._dynamo.mark_dynamic(t, 0)
        torch._dynamo.mark_dynamic(t, 1)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(src, src_mask, tgt)
    assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in explained.break_reasons]
    # training's tgt_mask selects the positions for the output layer: a data-dependent shape, the one break
    torch._dynamo.reset()
    tgt_mask = torch.arange(5) < torch.tensor([[5], [3], [1]])
    explained = torch._dynamo.explain(model)(src.clone(), src_mask.clone(), tgt.clone(), tgt_mask)
    assert {str(b.reason).splitlines()[0] for b in explained.break_reasons} == {"Dynamic shape operator"}
