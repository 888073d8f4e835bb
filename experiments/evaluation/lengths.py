"""Length settings chosen on validation: the length penalty and minimum length that decode the test set.

Beam search's length rules decide how long the outputs are, and on
summarization that moves ROUGE as much as the model does: on AESLC both
models wrote 2.6-3.2 words a subject against the references' 4.1
(docs/results.md). A preset lists the values worth trying
(``decoding.length_penalty_choices``, ``decoding.min_len_choices``); after
training, every combination decodes the validation split at
``decoding.beam_size``, and the best by the run's primary metric (ties: the
earlier in the lists' order) decodes the test splits. The test splits never
take part in the choice. Each tried setting's validation outputs are kept
(``hyps/valid-beam<K>-lp<A>-min<M>.txt``), so the choice can be re-scored.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from experiments.core.atomic import write_text
from experiments.data.pipeline import TaskData
from experiments.evaluation.evaluate import decode_split, score

log = logging.getLogger(__name__)


def settings(decoding: Any) -> list[tuple[float, int]]:
    """The (length penalty, minimum length) pairs to try; one pair (the configured values) when nothing is listed."""
    penalties = list(decoding.length_penalty_choices) or [decoding.length_penalty]
    minimums = list(decoding.min_len_choices) or [decoding.min_len]
    return list(itertools.product(penalties, minimums))


def with_lengths(decoding: Any, length_penalty: float, min_len: int) -> Any:
    """``decoding`` with these length settings and no choices left to make."""
    return OmegaConf.merge(decoding, {"length_penalty": length_penalty, "min_len": min_len,
                                      "length_penalty_choices": [], "min_len_choices": []})


def output_name(beam: int, length_penalty: float, min_len: int, suffix: str = "") -> str:
    return f"valid-beam{beam}-lp{length_penalty:g}-min{min_len}{suffix}.txt"


def choose(model: torch.nn.Module, data: TaskData, decoding: Any, device: torch.device, autocast: Any,
           primary: str, hyps_dir: Path, suffix: str = "") -> tuple[Any, dict[str, Any]]:
    """The decoding settings the test splits get, and the record of the choice (empty when there was none).

    ``suffix`` tells apart the outputs of another checkpoint of the same run (``-average``).
    """
    tried_settings = settings(decoding)
    if len(tried_settings) == 1:
        return decoding, {}
    beam = decoding.beam_size
    tried: list[dict[str, Any]] = []
    for n, (length_penalty, min_len) in enumerate(tried_settings, start=1):
        decoded = decode_split(model, data, "valid", with_lengths(decoding, length_penalty, min_len), device,
                               autocast)
        name = output_name(beam, length_penalty, min_len, suffix)
        write_text(hyps_dir / name, "\n".join(decoded.hypotheses) + "\n")
        value = score(data, "valid", decoded.hypotheses)[primary]
        tried.append({"length_penalty": length_penalty, "min_len": min_len, f"valid_{primary}": value,
                      "hyps": name, "decode_seconds": decoded.seconds})
        log.info("length choice %d/%d: beam %d, length_penalty %g, min_len %d: valid %s %.2f", n,
                 len(tried_settings), beam, length_penalty, min_len, primary, value)
    best = max(tried, key=lambda row: row[f"valid_{primary}"])  # max keeps the first of equal scores
    log.info("length choice: length_penalty %g, min_len %d decode the test splits", best["length_penalty"],
             best["min_len"])
    record = {"beam_size": beam, "length_penalty": best["length_penalty"], "min_len": best["min_len"],
              "tried": tried}
    return with_lengths(decoding, best["length_penalty"], best["min_len"]), record
