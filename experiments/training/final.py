"""After the last update: the best checkpoint and the checkpoint average tested, results.json written.

Rank 0 alone runs this part (the other ranks are done). Hypotheses go to
``hyps/<split>-beamK.txt`` (best checkpoint) and ``hyps/<split>-beamK-average.txt``
(the average of the kept snapshots, ``trainer.average_checkpoints``); every
score is a metrics.jsonl row too, and ``results.json`` is what s2s-tables reads.
Where the preset lists length settings to try, each checkpoint first chooses
its own on validation (evaluate.choose_lengths), recorded under
``length_choice``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from experiments.training import averaging
from experiments.evaluation import checkpoint
from experiments.core.atomic import write_text
from experiments.evaluation.evaluate import choose_lengths, decode_split, score
from experiments.training.preflight import evaluation_splits
from experiments.core.runtime import hardware

if TYPE_CHECKING:  # for the annotations only: the trainer imports this module
    from experiments.training.trainer import Trainer

log = logging.getLogger(__name__)


def finish(t: Trainer) -> dict[str, Any]:
    """Test (rank 0 alone), write results.json, close W&B; the results as written."""
    p = t.progress
    tests, choice = test_best(t) if t.is_main else ({}, {})
    averaged = test_average(t) if t.is_main and t.tc.average_checkpoints else {}
    results = {
        "task": t.cfg.task.name,
        "kind": t.kind,
        "model": t.cfg.model.name,
        "experiment": t.cfg.experiment,
        "seed": t.cfg.seed,
        "params": t.n_params,
        "steps": p.step,
        "epochs": p.epoch,
        "best_step": p.best_step,
        "stopped_early": p.stopped_early,
        f"valid_{t.primary}": p.best,
        "train_seconds": p.train_seconds,
        "train_cpu_seconds": p.train_cpu_seconds,
        "train_tokens_per_s": p.tokens / p.train_seconds if p.train_seconds else 0.0,
        "test": tests,
        **({"length_choice": choice} if choice else {}),
        **({"averaged": averaged} if averaged else {}),
        "beam_size": t.cfg.decoding.beam_size,
        "truncated": {name: {"src": s.truncated_src, "tgt": s.truncated_tgt} for name, s in t.data._splits.items()},
        "hardware": hardware(t.device),
        "precision": t.precision,
        "world_size": t.world_size,
        "commit": "+".join(p.commits),  # read at start (and at each resume under other code), not now
        "run_dir": str(t.run_dir),
    }
    if t.is_main:
        write_text(t.run_dir / "results.json", json.dumps(results, indent=2) + "\n")
        log.info("wrote %s/: results.json, metrics.jsonl, hyps/, checkpoints/", t.run_dir)
    t.tracker.summary({f"test/{split}/{k}": v for split, vals in tests.items() for k, v in vals.items()}
                      | {"best_step": p.best_step, f"valid/best_{t.primary}": p.best})
    t.tracker.finish()
    return results


def test_best(t: Trainer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the best checkpoint and decode the test splits with it (when ``test_after_training``): the scores, and
    the length choice that decoded them (empty where the preset lists none)."""
    best = checkpoint.load(t.ckpt_dir / "best.pt", map_location=t.device)
    t.model.load_state_dict(best["model"])
    return decode_tests(t, "") if t.tc.test_after_training else ({}, {})


def decode_tests(t: Trainer, suffix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode and score every test split with the current weights; hypotheses to hyps/<split>-beamK<suffix>.txt.

    The length settings are chosen on validation first, where the preset lists some; the choice is returned.
    """
    tests: dict[str, Any] = {}
    which = "the average of the kept snapshots" if suffix else "the best checkpoint"
    decoding, choice = choose_lengths(t.model, t.data, t.cfg.decoding, t.device, t.autocast, t.primary,
                                      t.run_dir / "hyps", suffix)
    for row in choice.get("tried", []):
        t.record("valid_length" + suffix.replace("-", "_"), row)
    splits = evaluation_splits(t.cfg)
    for n, split in enumerate(splits, start=1):
        log.info("test %d/%d: decoding %s (%d sentences, beam %d) with %s ...", n, len(splits), split,
                 len(t.data.split(split)), t.cfg.decoding.beam_size, which)
        decoded = decode_split(t.model, t.data, split, decoding, t.device, t.autocast)
        tests[split] = {**score(t.data, split, decoded.hypotheses), "decode_seconds": decoded.seconds}
        log.info("test %d/%d: %s %s %.2f in %.0f s", n, len(splits), split, t.primary,
                 tests[split].get(t.primary, float("nan")), decoded.seconds)
        write_text(t.run_dir / "hyps" / f"{split}-beam{t.cfg.decoding.beam_size}{suffix}.txt",
                   "\n".join(decoded.hypotheses) + "\n")
        t.record(split + suffix.replace("-", "_"), tests[split])
        if split == "test" and not suffix:
            log_samples(t, split, decoded.hypotheses)
    return tests, choice


def test_average(t: Trainer) -> dict[str, Any]:
    """Average the kept snapshots (``trainer.average_checkpoints``), validate and test the average.

    A run that stopped before it had that many snapshots averages the ones it has.
    """
    tc = t.tc
    kept = len(averaging.valid_scores(t.run_dir).keys() & checkpoint.snapshots(t.ckpt_dir).keys())
    n = min(tc.average_checkpoints, kept)
    if not n:
        return {}
    by = str(tc.average_by.value)
    path, state = averaging.average_run(t.run_dir, n, by)
    t.model.load_state_dict(state["model"])
    values, hypotheses = t.evaluate_valid()
    write_text(t.run_dir / "hyps" / "valid-average.txt", "\n".join(hypotheses) + "\n")
    t.record("valid_average", values)
    log.info("average of the %s %d snapshots (steps %s): valid %s %.2f", by, n, state["averaged"]["steps"],
             t.primary, values[t.primary])
    tests, choice = decode_tests(t, "-average") if tc.test_after_training else ({}, {})
    return {"by": by, "n": n, "steps": state["averaged"]["steps"], "checkpoint": str(path.name),
            f"valid_{t.primary}": values[t.primary], "test": tests, **({"length_choice": choice} if choice else {})}


def log_samples(t: Trainer, split: str, hypotheses: list[str]) -> None:
    """The first ``logger.samples`` sources, references and hypotheses of ``split`` as a W&B table."""
    n = min(t.cfg.logger.samples, len(hypotheses))
    if not n:
        return
    data = t.data.split(split).dataset.select(range(n))
    rows = [[src, tgt, hyp] for src, tgt, hyp in zip(data["src"], data["tgt"], hypotheses[:n])]
    t.tracker.table(f"{split}/samples", ["source", "reference", "hypothesis"], rows, step=t.progress.step)
