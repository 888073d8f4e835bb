"""Extractive reference rows for the summarization tables, scored by the same metric code as the models.

A model that does not beat copying a few sentences of its input has not
learned to summarise; the tables show these rows so that the comparison says so.

- SAMSum (dialogues, one utterance a line): LEAD-3, the first three utterances,
  and LONGEST-3, the three longest utterances (in words) in dialogue order,
  as Gliwa et al. (2019) report them.
- AESLC (email body -> subject): the body's first sentence, and its first n
  words with n the mean subject length of the training split (the "subject-
  length prefix"; AESLC subjects are a few words long).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def utterances(dialogue: str) -> list[str]:
    return [u.strip() for u in dialogue.split("\n") if u.strip()]


def lead(k: int) -> Callable[[str], str]:
    def first(dialogue: str) -> str:
        return "\n".join(utterances(dialogue)[:k])
    return first


def longest(k: int) -> Callable[[str], str]:
    def pick(dialogue: str) -> str:
        turns = utterances(dialogue)
        chosen = sorted(sorted(range(len(turns)), key=lambda i: -len(turns[i].split()))[:k])  # ties: earlier first
        return "\n".join(turns[i] for i in chosen)
    return pick


def first_sentence(text: str) -> str:
    return next((s.strip() for s in _SENTENCE.split(text) if s.strip()), "")


def prefix(words: int) -> Callable[[str], str]:
    return lambda text: " ".join(text.split()[:words])


def baselines(task_name: str, train_targets: list[str]) -> dict[str, Callable[[str], str]]:
    """Name -> source-to-summary function for the task; empty for tasks without extractive rows."""
    if task_name == "samsum":
        return {"LEAD-3": lead(3), "LONGEST-3": longest(3)}
    if task_name == "aeslc":
        n = round(statistics.fmean(len(t.split()) for t in train_targets))
        return {"first sentence": first_sentence, f"first {n} words": prefix(n)}
    return {}



def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.reporting.baselines samsum``: the extractive rows' scores, computed as the tables do."""
    import argparse

    from hydra import compose, initialize_config_dir

    from experiments.evaluation import metrics
    from experiments.core.config import validate
    from experiments.training.runs import texts
    from experiments.training.train import CONF_DIR

    parser = argparse.ArgumentParser(prog="python -m experiments.reporting.baselines", description=main.__doc__)
    parser.add_argument("task", choices=["samsum", "aeslc"])
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        task = validate(compose("config", overrides=[f"task={args.task}"])).task
    _, train_refs = texts(task, "train")
    sources, refs = texts(task, args.split)
    for name, summarise in baselines(task.name, [r[0] for r in train_refs]).items():
        scores = metrics.task_metrics("summarization", [summarise(s) for s in sources], refs)
        print(f"{task.name} {args.split} {name}: " + " / ".join(f"{scores[m]:.2f}" for m in metrics.ROUGE_TYPES)
              + f"  (ROUGE-1 / 2 / Lsum F1, {metrics.ROUGE_SIGNATURE})")


if __name__ == "__main__":
    main()
