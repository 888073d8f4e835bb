"""Sequence-to-sequence models behind one interface (see models/interface.py)."""

from models.decoding import Hypotheses, beam_search, greedy_search
from models.gru import GRUSeq2Seq
from models.interface import count_parameters
from models.transformer import TransformerSeq2Seq

MODELS = {"gru": GRUSeq2Seq, "transformer": TransformerSeq2Seq}

__all__ = [
    "MODELS",
    "GRUSeq2Seq",
    "Hypotheses",
    "TransformerSeq2Seq",
    "beam_search",
    "count_parameters",
    "greedy_search",
]
