"""models.Ensemble: one member is that model; members of two architectures decode with their own caches."""

from __future__ import annotations

import pytest
import torch

from models import beam_search, greedy_search
from models.ensemble import Ensemble
# one_thread is an autouse fixture.
from models.interface import log_probs
from tests.test_models import BOS, EOS, TGT_VOCAB, make_batch, one_thread, tiny_model  # noqa: F401

SEARCH = dict(bos_id=BOS, eos_id=EOS, max_len_a=1.0, max_len_b=6)


@pytest.mark.parametrize("name", ["gru", "transformer"])
@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("copy", [False, True])
def test_ensemble_of_one_is_the_model(name: str, beam: int, copy: bool) -> None:
    model = tiny_model(name, seed=3, **({"copy": True, "src_vocab_size": TGT_VOCAB} if copy else {}))
    ensemble = Ensemble([model])
    src, src_mask, _ = make_batch()
    if beam == 1:
        alone, together = (greedy_search(m, src, src_mask, **SEARCH) for m in (model, ensemble))
    else:
        alone, together = (beam_search(m, src, src_mask, beam_size=beam, n_best=beam, **SEARCH)
                           for m in (model, ensemble))
    assert together.tokens == alone.tokens
    torch.testing.assert_close(together.scores, alone.scores, atol=1e-5, rtol=0)
    for a, e in zip(alone.attention, together.attention):
        torch.testing.assert_close(ensemble.split_attention(e)["member1"], a.float())


def forced_ensemble_score(members: list[torch.nn.Module], src: torch.Tensor, src_mask: torch.Tensor,
                          tokens: list[int]) -> float:
    """Score of ``tokens`` + eos under the mean of the members' log-probabilities, each member teacher-forced
    with its own ``forward``: independent of the ensemble's cache handling."""
    tgt_in = torch.tensor([[BOS] + tokens])
    tgt_out = torch.tensor(tokens + [EOS])
    with torch.inference_mode():
        mean = torch.stack([log_probs(m, m(src, src_mask, tgt_in)[0][0]) for m in members]).mean(0)
    return float(torch.log_softmax(mean, dim=-1).gather(1, tgt_out.unsqueeze(1)).sum())


@pytest.mark.parametrize("beam", [1, 4])
@pytest.mark.parametrize("copy", ["neither", "gru"])
def test_gru_plus_transformer_scores_are_the_members_mean(beam: int, copy: str) -> None:
    """Every hypothesis's score equals the teacher-forced ensemble score: each member's cache was
    expanded and reordered with the beams (a mixed-up cache would score other prefixes). A member with copy
    gives log-probabilities, the other logits."""
    gru = {"copy": True, "src_vocab_size": TGT_VOCAB} if copy == "gru" else {}
    members = [tiny_model("gru", seed=1, **gru), tiny_model("transformer", seed=2)]
    ensemble = Ensemble(members, ["gru", "transformer"])
    src, src_mask, _ = make_batch([6, 3, 5])
    if beam == 1:
        hyps = greedy_search(ensemble, src, src_mask, **SEARCH)
        n = 1
    else:
        hyps = beam_search(ensemble, src, src_mask, beam_size=beam, n_best=beam, length_penalty=0.0, **SEARCH)
        n = beam
    assert any(len(t) > 1 for t in hyps.tokens)
    for k, tokens in enumerate(hyps.tokens):
        row = k // n
        expected = forced_ensemble_score(members, src[row:row + 1], src_mask[row:row + 1], tokens)
        assert hyps.scores[k].item() == pytest.approx(expected, abs=1e-4)


def test_a_target_mask_selects_the_ensembles_real_positions() -> None:
    ensemble = Ensemble([tiny_model("gru", seed=1), tiny_model("transformer", seed=2)])
    src, src_mask, tgt_in = make_batch()
    tgt_mask = torch.arange(tgt_in.size(1)) < torch.tensor([5, 2, 1, 4])[:, None]
    with torch.inference_mode():
        full, _ = ensemble(src, src_mask, tgt_in)
        selected, _ = ensemble(src, src_mask, tgt_in, tgt_mask)
    torch.testing.assert_close(selected, full[tgt_mask], rtol=0, atol=0)


def test_attention_is_each_members_own_labelled() -> None:
    members = [tiny_model("gru", seed=1), tiny_model("transformer", seed=2)]
    ensemble = Ensemble(members, ["gru run", "transformer run"])
    src, src_mask, _ = make_batch([5])
    hyps = beam_search(ensemble, src, src_mask, beam_size=3, **SEARCH)
    parts = ensemble.split_attention(hyps.attention[0])
    assert list(parts) == ["gru run", "transformer run"]
    tgt_in = torch.tensor([[BOS] + hyps.tokens[0]])
    for member, weights in zip(members, parts.values()):
        with torch.inference_mode():
            _, forced = member(src, src_mask, tgt_in)  # GRU (1, T, S), Transformer (1, L, H, T, S)
        assert weights.shape == forced[0].shape
        torch.testing.assert_close(weights, forced[0].float(), atol=1e-5, rtol=0)


def test_the_ensemble_differs_from_its_members() -> None:
    members = [tiny_model("gru", seed=1), tiny_model("transformer", seed=2)]
    src, src_mask, _ = make_batch()
    ensemble = greedy_search(Ensemble(members), src, src_mask, **SEARCH).scores
    for member in members:
        assert not torch.allclose(greedy_search(member, src, src_mask, **SEARCH).scores, ensemble)


def test_members_must_share_the_pad_id() -> None:
    other = tiny_model("gru", seed=1)
    other.pad_id = 0
    with pytest.raises(ValueError, match="pad ids"):
        Ensemble([tiny_model("transformer"), other])


@pytest.mark.parametrize("name", ["gru", "transformer"])
def test_n_best_first_is_the_one_best(name: str) -> None:
    model = tiny_model(name, seed=4)
    src, src_mask, _ = make_batch()
    one = beam_search(model, src, src_mask, beam_size=4, n_best=1, **SEARCH)
    four = beam_search(model, src, src_mask, beam_size=4, n_best=4, **SEARCH)
    assert four.tokens[::4] == one.tokens
    torch.testing.assert_close(four.scores[::4], one.scores)
    assert all((four.scores.view(-1, 4).diff(dim=1) <= 0).flatten())
