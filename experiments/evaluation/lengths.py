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
The choice itself is ``evaluate.choose_lengths``: it decodes and scores.
"""

from __future__ import annotations

import itertools
from typing import Any

from omegaconf import OmegaConf


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


def choice_text(runs: list[dict[str, Any]], primary: str) -> str:
    """A table's line: the length settings each run's checkpoints chose on validation, and the lists they chose from."""
    chosen = []
    for r in sorted(runs, key=lambda r: (r["model"], r["seed"])):
        for label, choice in (("", r.get("length_choice")), (" average", (r.get("averaged") or {}).get("length_choice"))):
            if choice:
                chosen.append(f"{r['model']} seed {r['seed']}{label} {choice['length_penalty']:g}, {choice['min_len']}")
    tried = next(r["length_choice"]["tried"] for r in runs if r.get("length_choice"))
    penalties = sorted({t["length_penalty"] for t in tried})
    minimums = sorted({t["min_len"] for t in tried})
    return (f"Length settings (length penalty, minimum length) chosen per checkpoint on the best validation {primary} "
            f"of beam search over length_penalty {{{', '.join(f'{p:g}' for p in penalties)}}} x min_len "
            f"{{{', '.join(map(str, minimums))}}}, the test set taking no part: {'; '.join(chosen)}"
            + ("; the other runs decode with their preset's" if not all(r.get("length_choice") for r in runs) else "")
            + ".\n")
