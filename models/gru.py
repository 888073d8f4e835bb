"""GRU encoder-decoder with attention (Bahdanau et al., 2015; Luong et al., 2015).

Encoder: bidirectional multi-layer GRU over packed sequences, so padding never
enters the recurrence. Each direction has ``hidden_size // 2`` units, making the
memory ``hidden_size`` wide, the same as the decoder state; that keeps Luong's
``dot`` score well defined.

Decoder, per step t (Luong's "attentional" decoder, whatever the score function):

    x_t = [emb(y_{t-1}); a_{t-1}]                 input feeding (a_{t-1} dropped without it)
    h_t = GRU stack(x_t, h_{t-1})
    c_t, alpha_t = attention(h_t, memory)
    a_t = tanh(W_c [c_t; h_t])                    attentional vector
    logits_t = W_out a_t

With ``copy`` (a pointer-generator, See et al., 2017) the output is the
mixture of models/copy.py, log-probabilities: the copy distribution is
alpha_t, the very attention that builds c_t, and p_gen = sigmoid(w_g a_t + b_g)
reads the vector the output layer reads (as OpenNMT-py's copy generator does;
See et al. read c_t, h_t and x_t, which a_t is made of but for x_t). Both need
only what every decoder path below returns, (a_t, alpha_t).

``forward`` and ``decode_step`` run the very same ``_step``; ``forward`` only
embeds the whole target and applies the output layer once at the end. Training
on a CPU runs the same steps in models/decoder_loop.py, whose backward is
written by hand (``decoder_loop``; tests hold the two equal) and which, given
``tgt_mask``, runs no step past a sentence's last target position.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.attention import build_attention
from models.copy import copy_log_probs, teacher_forced_copy
from models.interface import Cache, check_joint_vocabulary, target_lengths
from models.decoder_loop import teacher_forced_loop
from models.dropout import Dropout
from models.recurrence import bidirectional_gru

RECURRENCES = ("auto", "packed", "batched")
DECODER_LOOPS = ("auto", "autograd", "handwritten")


def runs_packed(recurrence: str, device_type: str) -> bool:
    """Whether the encoder runs nn.GRU over packed sequences (else models/recurrence.py's batched steps)."""
    return recurrence == "packed" or (recurrence == "auto" and device_type == "cuda")


def runs_handwritten_loop(decoder_loop: str, device_type: str) -> bool:
    """Whether training's decoder runs models/decoder_loop.py (else ``_step`` per position under autograd)."""
    return decoder_loop == "handwritten" or (decoder_loop == "auto" and device_type == "cpu")


class GRUSeq2Seq(nn.Module):
    def __init__(
        self,
        *,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_id: int,
        emb_dim: int = 256,
        hidden_size: int = 512,
        enc_layers: int = 1,
        dec_layers: int = 1,
        attention: str = "bahdanau",
        dropout: float = 0.3,
        input_feeding: bool = True,
        tie_embeddings: bool = False,
        share_embeddings: bool = False,
        recurrence: str = "auto",
        decoder_loop: str = "auto",
        dropout_masks: str = "auto",
        copy: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (two encoder directions): {hidden_size}")
        check_joint_vocabulary(src_vocab_size, tgt_vocab_size, copy, share_embeddings)
        if recurrence not in RECURRENCES:
            raise ValueError(f"unknown recurrence {recurrence!r}; expected one of {RECURRENCES}")
        if decoder_loop not in DECODER_LOOPS:
            raise ValueError(f"unknown decoder_loop {decoder_loop!r}; expected one of {DECODER_LOOPS}")
        self.pad_id = pad_id
        self.input_feeding = input_feeding
        # The encoder's recurrence: nn.GRU over packed sequences (cuDNN on a GPU) or models/recurrence.py's
        # batched steps (faster on a CPU: results/benchmarks_samsum.md); auto picks by the batch's device.
        self.recurrence = recurrence
        # Training's decoder loop: under autograd, or with models/decoder_loop.py's hand-written backward
        # (faster on a CPU); the same parameters and the same numbers either way.
        self.decoder_loop = decoder_loop
        self.copy = copy
        self.outputs_log_probs = copy  # the copy mixture has no logits (models/interface.py)

        self.src_emb = nn.Embedding(src_vocab_size, emb_dim, padding_idx=pad_id)
        self.tgt_emb = (
            self.src_emb
            if share_embeddings
            else nn.Embedding(tgt_vocab_size, emb_dim, padding_idx=pad_id)
        )
        self.dropout = Dropout(dropout, dropout_masks)  # its masks: models/dropout.py

        self.encoder = nn.GRU(
            emb_dim,
            hidden_size // 2,
            num_layers=enc_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if enc_layers > 1 else 0.0,
        )
        # All final encoder states (every layer, both directions) -> every decoder layer's h_0.
        self.bridge = nn.Linear(enc_layers * hidden_size, dec_layers * hidden_size)

        dec_input = emb_dim + (hidden_size if input_feeding else 0)
        self.decoder = nn.ModuleList(
            nn.GRUCell(dec_input if i == 0 else hidden_size, hidden_size) for i in range(dec_layers)
        )
        self.attention = build_attention(attention, query_dim=hidden_size, memory_dim=hidden_size)
        self.combine = nn.Linear(2 * hidden_size, hidden_size)  # W_c: [c_t; h_t] -> a_t

        # A tied output layer reuses the (V, emb_dim) target embedding, so a_t is first
        # projected down to emb_dim.
        tie_proj = tie_embeddings and emb_dim != hidden_size
        self.pre_output = nn.Linear(hidden_size, emb_dim, bias=False) if tie_proj else nn.Identity()
        self.output = nn.Linear(emb_dim if tie_embeddings else hidden_size, tgt_vocab_size)
        if tie_embeddings:
            self.output.weight = self.tgt_emb.weight
        self.copy_gate = nn.Linear(hidden_size, 1) if copy else None  # a_t -> the pre-sigmoid p_gen

        self._init_weights()

    def _init_weights(self) -> None:
        """Uniform(-0.1, 0.1) everywhere, the usual recipe for attentional GRU/LSTM NMT."""
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        with torch.no_grad():
            self.src_emb.weight[self.pad_id].zero_()
            self.tgt_emb.weight[self.pad_id].zero_()

    @property
    def source_cache_keys(self) -> tuple[str, ...]:
        """The cache entries computed once per source: the attention's projected memory, and with copy the
        source ids the copy distribution scatters to."""
        return ("keys", "src") if self.copy else ("keys",)

    def encode(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Cache]:
        B, S = src.shape
        emb = self.dropout(self.src_emb(src))  # (B, S, E)
        lengths = src_mask.sum(dim=1)
        if runs_packed(self.recurrence, src.device.type):
            packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, h_n = self.encoder(packed)  # h_n: (enc_layers * 2, B, H/2), layer-major
            memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, H)
        else:
            memory, h_n = bidirectional_gru(self.encoder, emb, lengths, self.dropout.masks)  # the same, CPU's way
        final = h_n.transpose(0, 1).reshape(B, -1)  # (B, enc_layers * H)
        h0 = torch.tanh(self.bridge(final)).chunk(len(self.decoder), dim=-1)  # dec_layers x (B, H)
        cache: Cache = {"hidden": list(h0), "keys": self.attention.project_keys(memory)}
        if self.input_feeding:
            cache["feed"] = memory.new_zeros(B, memory.size(-1))  # a_0 = 0
        if self.copy:
            cache["src"] = src
        return memory, cache

    def _step(
        self, emb: Tensor, memory: Tensor, src_mask: Tensor, cache: Cache
    ) -> tuple[Tensor, Cache, Tensor]:
        """One decoder step from the embedded previous token (B, E).

        Returns the (dropped-out) attentional vector a_t (B, H), the new cache and
        the attention weights (B, S).
        """
        x = torch.cat([emb, cache["feed"]], dim=-1) if self.input_feeding else emb
        hidden = []
        for i, cell in enumerate(self.decoder):
            h = cell(self.dropout(x) if i > 0 else x, cache["hidden"][i])  # (B, H)
            hidden.append(h)
            x = h
        context, weights = self.attention(x, cache["keys"], memory, src_mask)  # (B, H), (B, S)
        attn_vec = self.dropout(torch.tanh(self.combine(torch.cat([context, x], dim=-1))))
        new_cache: Cache = {**cache, "hidden": hidden}
        if self.input_feeding:
            new_cache["feed"] = attn_vec
        return attn_vec, new_cache, weights

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache: Cache
    ) -> tuple[Tensor, Cache, Tensor]:
        emb = self.dropout(self.tgt_emb(tokens))  # (B, E)
        attn_vec, cache, weights = self._step(emb, memory, src_mask, cache)
        out = self.output(self.pre_output(attn_vec))  # (B, V) logits
        if self.copy:  # log-probabilities instead
            out = copy_log_probs(out, self.copy_gate(attn_vec), weights, cache["src"])
        return out, cache, weights  # (B, V), _, (B, S)

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, tgt_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        memory, cache = self.encode(src, src_mask)
        emb = self.dropout(self.tgt_emb(tgt_in))  # (B, T, E)
        if torch.is_grad_enabled() and runs_handwritten_loop(self.decoder_loop, src.device.type):
            attn_vecs, weights = teacher_forced_loop(
                self.decoder, self.attention, self.combine, emb, memory, cache["keys"], src_mask, cache["hidden"],
                self.input_feeding, self.dropout.p if self.training else 0.0,
                None if tgt_mask is None else target_lengths(tgt_mask), self.dropout.masks)  # (B, T, H), (B, T, S)
        else:
            steps = []
            for t in range(tgt_in.size(1)):
                attn_vec, cache, w = self._step(emb[:, t], memory, src_mask, cache)
                steps.append((attn_vec, w))
            attn_vecs, weights = (torch.stack(x, dim=1) for x in zip(*steps))
        if tgt_mask is not None:
            attn_vecs = attn_vecs[tgt_mask]  # (N, H): only the positions asked for reach the output layer
        out = self.output(self.pre_output(attn_vecs))  # logits
        if self.copy:  # log-probabilities instead
            out = teacher_forced_copy(out, self.copy_gate(attn_vecs), weights, src, tgt_mask)
        return out, weights  # (B, T, V) or (N, V), (B, T, S)
