"""Greedy and beam search: agreement, ordering, scoring, batching and the length rule."""

from __future__ import annotations

import pytest
import torch

from models import beam_search, greedy_search
# one_thread is an autouse fixture of test_models: imported, it applies here too.
from models.interface import log_probs
from tests.test_models import BOS, EOS, PAD, TGT_VOCAB, make_batch, one_thread, tiny_model  # noqa: F401

UNK, A, B = 0, 4, 5


class GardenPathModel:
    """A bigram model (no nn.Module) on which greedy search goes wrong.

    From bos, A (0.6) beats B (0.4), but A continues with A 0.45, B 0.3, eos 0.25
    while B is followed by eos with 0.9. Best sequences: [B] (0.36), then [A, B]
    (0.6 * 0.3 * 0.9 = 0.162). Greedy keeps taking A until its length limit.
    Its cache holds both a tensor and a list, like the real models'.
    """

    pad_id = PAD
    vocab = 6

    def __init__(self) -> None:
        probs = torch.full((self.vocab, self.vocab), 1e-6)
        probs[BOS, A], probs[BOS, B] = 0.6, 0.4
        probs[A, A], probs[A, B], probs[A, EOS] = 0.45, 0.3, 0.25
        probs[B, EOS], probs[B, A], probs[B, B] = 0.9, 0.05, 0.05
        self.log_probs = (probs / probs.sum(dim=1, keepdim=True)).log()

    def encode(self, src, src_mask):
        B = src.size(0)
        cache = {"steps": torch.zeros(B), "history": [src.new_zeros(B, 0)]}
        return src_mask.float().unsqueeze(-1), cache  # memory (B, S, 1)

    def decode_step(self, tokens, memory, src_mask, cache):
        history = torch.cat([cache["history"][0], tokens.unsqueeze(1)], dim=1)
        cache = {"steps": cache["steps"] + 1, "history": [history]}
        attention = src_mask.float() / src_mask.sum(dim=1, keepdim=True)  # uniform over real tokens
        return self.log_probs[tokens], cache, attention


def garden_path_batch(src_lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    src_mask = torch.arange(max(src_lengths)) < torch.tensor(src_lengths).unsqueeze(1)
    return torch.full(src_mask.shape, 7).masked_fill(~src_mask, PAD), src_mask


def test_beam_search_finds_what_greedy_misses():
    model = GardenPathModel()
    src, src_mask = garden_path_batch([3])
    greedy = greedy_search(model, src, src_mask, bos_id=BOS, eos_id=EOS, max_len_a=1.0, max_len_b=2)
    assert greedy.tokens == [[A] * 5]

    beam = beam_search(
        model, src, src_mask, bos_id=BOS, eos_id=EOS, beam_size=2, length_penalty=0.0, n_best=2
    )
    assert beam.tokens == [[B], [A, B]]
    torch.testing.assert_close(beam.scores, torch.tensor([0.36, 0.162]).log())
    assert beam.scores[0] > greedy.scores[0]


def test_length_limit_is_a_times_real_source_length_plus_b_then_eos():
    model = GardenPathModel()
    src, src_mask = garden_path_batch([1, 4, 10])
    hyps = greedy_search(model, src, src_mask, bos_id=BOS, eos_id=EOS, max_len_a=0.5, max_len_b=2)
    assert [len(t) for t in hyps.tokens] == [2, 4, 7]  # floor(0.5 * n + 2)
    lp = model.log_probs
    expected = [lp[BOS, A] + (n - 1) * lp[A, A] + lp[A, EOS] for n in (2, 4, 7)]
    torch.testing.assert_close(hyps.scores, torch.tensor(expected))  # forced eos scored too

    capped = greedy_search(
        model, src, src_mask, bos_id=BOS, eos_id=EOS, max_len_a=0.5, max_len_b=2, max_len_cap=3
    )
    assert [len(t) for t in capped.tokens] == [2, 3, 3]


def test_min_len_keeps_eos_out_of_the_first_tokens():
    """The best sequence [B] is one token long: with min_len 2 the best becomes [A, B] (0.162)."""
    model = GardenPathModel()
    src, src_mask = garden_path_batch([3, 5])
    common = dict(bos_id=BOS, eos_id=EOS, max_len_a=1.0, max_len_b=2)
    beam = beam_search(model, src, src_mask, beam_size=3, length_penalty=0.0, n_best=3, min_len=2, **common)
    assert beam.tokens[0] == [A, B] and beam.tokens[3] == [A, B]
    assert min(len(t) for t in beam.tokens) >= 2
    assert beam_search(model, src, src_mask, beam_size=3, length_penalty=0.0, **common).tokens[0] == [B]
    greedy = greedy_search(model, src, src_mask, min_len=2, **common)
    assert all(len(t) >= 2 for t in greedy.tokens)
    # min_len beyond the length limit: the limit wins (eos at max length, as without min_len)
    capped = greedy_search(model, src, src_mask, max_len_a=0.0, max_len_b=1, min_len=5, bos_id=BOS, eos_id=EOS)
    assert [len(t) for t in capped.tokens] == [1, 1]


class RowCounting(GardenPathModel):
    """Records how many rows every decode_step is given."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def decode_step(self, tokens, memory, src_mask, cache):
        assert memory.size(0) == src_mask.size(0) == tokens.size(0) == cache["steps"].size(0)
        self.rows.append(tokens.numel())
        return super().decode_step(tokens, memory, src_mask, cache)


def test_finished_sentences_leave_the_batch():
    src, src_mask = garden_path_batch([1, 4, 10])
    common = dict(bos_id=BOS, eos_id=EOS, max_len_a=0.5, max_len_b=2)
    model = RowCounting()
    greedy = greedy_search(model, src, src_mask, **common)
    assert [len(t) for t in greedy.tokens] == [2, 4, 7]  # eos at steps 2, 4 and 7
    assert model.rows == [3] * 3 + [2] * 2 + [1] * 3
    model = RowCounting()
    assert greedy_search(model, src, src_mask, drop_finished=False, **common).tokens == greedy.tokens
    assert model.rows == [3] * 8

    model = RowCounting()
    beam = beam_search(model, src, src_mask, beam_size=3, length_penalty=0.0, n_best=3, **common)
    # step 0 runs once per sentence (its K beams are identical); sentence 0 is done at its length limit
    # (step 2), the others at step 3
    assert model.rows == [3, 9, 9, 6]
    for j, n in enumerate([1, 4, 10]):  # what each sentence gets when it is decoded alone
        alone = beam_search(GardenPathModel(), src[j:j + 1, :n], src_mask[j:j + 1, :n], beam_size=3,
                            length_penalty=0.0, n_best=3, **common)
        assert beam.tokens[3 * j:3 * j + 3] == alone.tokens
        torch.testing.assert_close(beam.scores[3 * j:3 * j + 3], alone.scores, rtol=0, atol=0)


# A GRU and a Transformer configuration, without and with copy; tests/test_models.py covers the others.
MODEL_KINDS = pytest.mark.parametrize(
    "name, overrides",
    [("gru", {"attention": "bahdanau"}), ("transformer", {"norm": "pre"}),
     ("gru", {"copy": True, "src_vocab_size": TGT_VOCAB}),  # copy: log-probabilities out, a joint vocabulary
     ("transformer", {"copy": True, "src_vocab_size": TGT_VOCAB})],
    ids=["gru", "transformer", "gru-copy", "transformer-copy"],
)


@MODEL_KINDS
@pytest.mark.parametrize("min_len", [0, 4])
def test_beam_size_one_is_greedy(name, overrides, min_len):
    model = tiny_model(name, **overrides)
    src, src_mask, _ = make_batch([7, 4, 1, 6, 3])
    greedy = greedy_search(model, src, src_mask, bos_id=BOS, eos_id=EOS, min_len=min_len)
    beam = beam_search(
        model, src, src_mask, bos_id=BOS, eos_id=EOS, beam_size=1, length_penalty=0.0, min_len=min_len
    )
    assert min(len(t) for t in greedy.tokens) >= min_len
    assert beam.tokens == greedy.tokens
    torch.testing.assert_close(beam.scores, greedy.scores)
    for b, g in zip(beam.attention, greedy.attention):
        torch.testing.assert_close(b, g)


@MODEL_KINDS
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_hypotheses_are_sorted_and_rescore_under_forward(name, overrides, length_penalty):
    """Every returned hypothesis's score and attention are what teacher forcing gives for it."""
    model = tiny_model(name, **overrides)
    src, src_mask, _ = make_batch([7, 4, 1])
    K = 4
    hyps = beam_search(
        model, src, src_mask, bos_id=BOS, eos_id=EOS, beam_size=K, n_best=K,
        length_penalty=length_penalty, max_len_a=0.0, max_len_b=6,
    )
    assert len(hyps.tokens) == len(hyps.attention) == hyps.scores.numel() == 3 * K
    for i, tokens in enumerate(hyps.tokens):
        j = i // K  # sentence
        n_src = int(src_mask[j].sum())
        alone, alone_mask = src[j : j + 1, :n_src], src_mask[j : j + 1, :n_src]
        logits, attention = model(alone, alone_mask, torch.tensor([[BOS] + tokens]))
        logp = log_probs(model, logits)[0].gather(1, torch.tensor([tokens + [EOS]]).T).sum()
        lp = ((5 + len(tokens) + 1) / 6) ** length_penalty
        torch.testing.assert_close(hyps.scores[i], logp / lp, atol=1e-4, rtol=0)
        torch.testing.assert_close(hyps.attention[i], attention[0], atol=1e-5, rtol=0)
    for j in range(3):
        scores = hyps.scores[j * K : (j + 1) * K]
        assert (scores[:-1] >= scores[1:]).all()
        assert len({tuple(t) for t in hyps.tokens[j * K : (j + 1) * K]}) == K


@MODEL_KINDS
def test_decoding_a_sentence_does_not_depend_on_its_batch(name, overrides):
    model = tiny_model(name, **overrides)
    src, src_mask, _ = make_batch([7, 2, 5, 3], seed=3)
    for search, kwargs in [(greedy_search, {}), (beam_search, {"beam_size": 3})]:
        batched = search(model, src, src_mask, bos_id=BOS, eos_id=EOS, **kwargs)
        for j in range(src.size(0)):
            n_src = int(src_mask[j].sum())
            alone = search(
                model, src[j : j + 1, :n_src], src_mask[j : j + 1, :n_src],
                bos_id=BOS, eos_id=EOS, **kwargs,
            )
            assert alone.tokens[0] == batched.tokens[j]
            torch.testing.assert_close(alone.scores[0], batched.scores[j], atol=1e-4, rtol=0)
            torch.testing.assert_close(alone.attention[0], batched.attention[j], atol=1e-5, rtol=0)


@MODEL_KINDS
def test_dropping_finished_sentences_changes_no_output(name, overrides):
    model = tiny_model(name, **overrides)
    src, src_mask, _ = make_batch([7, 2, 5, 3, 1, 6], seed=4)
    for search, kwargs in [(greedy_search, {}), (beam_search, {"beam_size": 3, "n_best": 2})]:
        dropped = search(model, src, src_mask, bos_id=BOS, eos_id=EOS, **kwargs)
        kept = search(model, src, src_mask, bos_id=BOS, eos_id=EOS, drop_finished=False, **kwargs)
        assert len({len(t) for t in dropped.tokens}) > 1  # sentences did finish at different steps
        assert dropped.tokens == kept.tokens
        torch.testing.assert_close(dropped.scores, kept.scores, atol=1e-5, rtol=0)
        for a, b in zip(dropped.attention, kept.attention):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@MODEL_KINDS
def test_attention_can_be_left_out(name, overrides):
    model = tiny_model(name, **overrides)
    src, src_mask, _ = make_batch()
    for search in (greedy_search, beam_search):
        full = search(model, src, src_mask, bos_id=BOS, eos_id=EOS)
        bare = search(model, src, src_mask, bos_id=BOS, eos_id=EOS, return_attention=False)
        assert bare.attention == []
        assert bare.tokens == full.tokens


def test_n_best_cannot_exceed_beam_size():
    src, src_mask = garden_path_batch([2])
    with pytest.raises(ValueError, match="n_best"):
        beam_search(GardenPathModel(), src, src_mask, bos_id=BOS, eos_id=EOS, beam_size=2, n_best=3)


@MODEL_KINDS
def test_source_cache_entries_are_what_decode_step_leaves_unchanged(name, overrides):
    """The promise that lets beam search skip copying them: decode_step hands them back as they were."""
    model = tiny_model(name, **overrides)
    src, src_mask, _ = make_batch([5, 3])
    memory, cache = model.encode(src, src_mask)
    keys = set(model.source_cache_keys)
    assert keys and keys <= set(cache)
    _, new_cache, _ = model.decode_step(torch.full((2,), BOS), memory, src_mask, cache)
    for key in keys:
        assert new_cache[key] is cache[key] or all(a is b for a, b in zip(new_cache[key], cache[key])), key
    moving = set(cache) - keys  # the rest is the decoder's state: it must change, or it would not be state
    assert moving and all(new_cache[k] is not cache[k] for k in moving)


@MODEL_KINDS
def test_beam_search_is_the_same_when_it_copies_the_source_cache_too(name, overrides, monkeypatch):
    model = tiny_model(name, **overrides)
    src, src_mask, _ = make_batch([7, 4, 1, 6], seed=5)
    kwargs = {"bos_id": BOS, "eos_id": EOS, "beam_size": 4, "n_best": 2}
    skipping = beam_search(model, src, src_mask, **kwargs)
    monkeypatch.setattr(type(model), "source_cache_keys", ())
    copying = beam_search(model, src, src_mask, **kwargs)
    assert skipping.tokens == copying.tokens
    torch.testing.assert_close(skipping.scores, copying.scores, rtol=0, atol=0)
    for a, b in zip(skipping.attention, copying.attention):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
