"""One training loop for both models and every task.

Label-smoothed cross-entropy over token-budget batches, AdamW, a warmup /
inverse-sqrt / plateau schedule, gradient clipping and accumulation, bf16
autocast and ``torch.compile`` as switches; validation (loss, perplexity and
the task metric on decoded text) every ``eval_every`` updates, early stopping
and best-checkpoint selection on that metric; checkpoints that let a killed
run resume exactly; the final test decode with the best checkpoint.

Under ``torchrun`` or the submitit launcher the same loop runs data-parallel
(``experiments/training/distributed.py``): each rank trains on its shard of every
epoch's batches through DistributedDataParallel, and rank 0 alone validates,
tests and writes the run folder.

Run folder (Hydra's output directory)::

    config.yaml          the resolved config
    metrics.jsonl        one JSON object per log / validation / test event
    hyps/                validation hypotheses per validation, test hypotheses
    checkpoints/         best.pt and last.pt
    tokenizer/           the SentencePiece models the run used
    results.json         the summary that s2s-tables collects
    wandb/               the W&B run (offline unless logged in)
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from experiments.training import averaging, distributed, final, resume
from experiments.evaluation import checkpoint, metrics
from experiments.evaluation.builders import autocast_for, build_model, resolve_precision
from experiments.core.atomic import remove_stale, storage_error, write_text
from experiments.data.pipeline import TaskData
from experiments.core.errors import CheckpointError, ConfigError
from experiments.evaluation.evaluate import decode_split, score, split_loss
from experiments.training.optim import make_optimizer, make_schedules
from experiments.training.preflight import check_limits, run_splits
from experiments.evaluation.loss import sequence_loss
from experiments.core.runtime import (FreeCores, git_commit, pick_device, seed_everything, set_threads,
                                     start_on_cpu)
from experiments.data.tokenizer import save as save_tokenizer
from experiments.training.tracking import Tracker
from models import count_parameters

log = logging.getLogger(__name__)

# trainer.num_threads=0 re-counts the free cores every this many updates: soon enough that a job started
# beside this one is not oversubscribed for long, seldom enough that reading /proc costs nothing
THREAD_CHECK_EVERY = 10


@dataclass
class Progress:
    """Counters that, with the RNG state and the seed, fix the rest of a run."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = -math.inf
    best_step: int = 0
    bad_evals: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    # Process CPU seconds of the same updates, which no pause (SIGSTOP) or wait for a busy core adds to.
    train_cpu_seconds: float | None = 0.0  # None: resumed from a checkpoint that did not count them yet
    stopped_early: bool = False
    # The train-log window so far (loss x tokens, tokens, seconds): a resumed run's first row averages the whole window.
    window_loss: float = 0.0
    window_tokens: int = 0
    window_seconds: float = 0.0
    # The code each start and resume ran (git commit), read when it began: code that changes under a running job
    # (a checkout moved for the next one) is not the code it ran.
    commits: list[str] = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, data: TaskData | None = None) -> None:
        self.cfg = cfg
        self.tc = cfg.trainer
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        if self.tc.resume and not (self.ckpt_dir / "last.pt").exists():
            raise ConfigError(f"trainer.resume=true but there is no {self.ckpt_dir / 'last.pt'} to resume from: point "
                              "hydra.run.dir at the folder of the run to resume, or set trainer.resume=false to start "
                              "afresh")
        self.device = distributed.local_device(pick_device(self.tc.device))
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        if self.is_main:  # once the settings are known to work, before the data is read: where to look while it trains
            log.info("run folder: %s", self.run_dir)
        # trainer.num_threads=0 (auto): the cores other processes leave free, checked again every few updates
        self.cores = FreeCores(distributed.local_world_size()) if self.device.type == "cpu" and not self.tc.num_threads \
            else None
        self.threads = self.set_threads(self.first_threads() if self.cores else self.tc.num_threads)
        if self.device.type == "cpu":
            start_on_cpu(say=self.is_main)  # before the model's first matmul: oneDNN reads its cache size once
        seed_everything(cfg.seed)
        with distributed.main_first():  # rank 0 builds the Arrow, tokenizer and token-id caches; the others read them
            # A resumed run goes on with its own tokenizer; a fresh start's comes from its settings (the cache),
            # never from a tokenizer/ an earlier start left here
            self.data = data or TaskData(cfg.task, cfg.cache_dir,
                                         tokenizer_dir=self.run_dir / "tokenizer" if self.tc.resume else None)
            for name in run_splits(cfg):  # read and validated (or found cached)
                self.data.split(name)  # before the first update
            check_limits(cfg, self.data)
            if self.is_main:
                save_tokenizer(self.data.tokenizer, self.run_dir / "tokenizer")
        self.kind = str(cfg.task.kind.value)
        self.primary = metrics.PRIMARY[self.kind]
        self.model = build_model(cfg.model, self.data).to(self.device)
        self.n_params = count_parameters(self.model)
        if self.world_size > 1:
            torch.manual_seed(cfg.seed + self.rank)  # own dropout masks per rank; DDP copies rank 0's weights
        self.ddp = distributed.wrap(self.model, self.device)  # the model itself in a single process
        self.forward = torch.compile(self.ddp) if self.tc.compile else self.ddp
        self.precision = resolve_precision(self.device, self.tc.precision)
        self.autocast = autocast_for(self.device, self.precision)
        self.optimizer = make_optimizer(self.model, self.tc, self.device)
        self.warmup, self.plateau = make_schedules(self.optimizer, self.tc)
        self.progress = Progress()
        self.metrics_file = self.run_dir / "metrics.jsonl"
        if self.is_main:
            stale = remove_stale(self.run_dir, recursive=True)
            if stale:
                log.info("removed %d unfinished writes a killed run left: %s", len(stale), [str(p) for p in stale])
        if self.tc.resume:
            self.restore(self.ckpt_dir / "last.pt")  # first: it refuses settings the run was not trained with
        elif self.is_main and self.metrics_file.exists():
            self.metrics_file.unlink()
        commit = git_commit()
        if self.progress.commits[-1:] != [commit]:
            self.progress.commits.append(commit)
        if self.is_main:
            write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        logger = cfg.logger if self.is_main else OmegaConf.create({"mode": "disabled"})  # W&B from rank 0 only
        self.tracker = Tracker(logger, self.run_dir, OmegaConf.to_container(cfg, resolve=True),
                               name=f"{cfg.task.name}-{cfg.model.name}-s{cfg.seed}")
        self.tracker.summary({"params": self.n_params})
        auto = f", auto: {self.cores.others:.1f} of {len(self.cores.cpus)} cores busy elsewhere" if self.cores else ""
        log.info("%s: %s parameters on %s (%d threads%s; %s%s)", cfg.model.name, f"{self.n_params:,}", self.device,
                 self.threads, auto, self.precision,
                 " chosen by precision=auto" if self.tc.precision.value == "auto" else "")

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "warmup": self.warmup.state_dict(),
            "plateau": self.plateau.state_dict(),
            # The window's loss as the ranks' mean, so every rank resumes it from the same (right) value.
            "trainer": {**asdict(self.progress), "window_loss": distributed.mean(self.progress.window_loss)},
            "rng": distributed.all_gather(rng),  # one entry per rank: each resumes its own streams
            "world_size": self.world_size,
            "config": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
            "params": self.n_params,
            "precision": self.precision,
        }

    def restore(self, path: Path) -> None:
        state = checkpoint.load(path, map_location=self.device)
        checkpoint.load_model(self.model, state, self.cfg.model, path)  # first: says so if it is another model
        changed = resume.check(state["config"], OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
                               self.tc.change_budget, str(path))
        if state.get("world_size", 1) != self.world_size:
            raise CheckpointError(
                f"{path} was written by {state['world_size']} ranks and this run has {self.world_size}: their data "
                f"shards differ, so resume it with {state['world_size']} processes"
            )
        started_in = state.get("precision") or str(state["config"]["trainer"]["precision"])  # older: the config's
        if str(self.tc.precision.value) == "auto" and started_in in ("fp32", "bf16") and started_in != self.precision:
            # A run goes on in the precision it started in, also on a machine where auto chooses otherwise.
            log.info("precision=auto: going on in %s, the precision this run started in", started_in)
            self.precision = started_in
            self.autocast = autocast_for(self.device, self.precision)
        self.optimizer.load_state_dict(state["optimizer"])
        self.warmup.load_state_dict(state["warmup"])
        self.plateau.load_state_dict(state["plateau"])
        self.progress = Progress(**{"train_cpu_seconds": None, **state["trainer"]})
        rng = state["rng"]
        rng = rng[self.rank] if isinstance(rng, list) else rng  # older checkpoints hold one state
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if self.is_main:
            resume.keep_rows_until(self.metrics_file, self.progress.step, changed)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.progress.step,
                 self.progress.epoch, self.progress.batch_in_epoch)

    def record(self, event: str, values: dict[str, Any]) -> None:
        if not self.is_main:
            return
        row = {"event": event, "step": self.progress.step, **values}
        try:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise storage_error(self.metrics_file, e, "resume with trainer.resume=true (it drops a cut row)") from None
        self.tracker.log({f"{event}/{k}": v for k, v in values.items() if isinstance(v, (int, float))},
                         step=self.progress.step)

    # ------------------------------------------------------------------ training

    def batch_stream(self):
        """(epoch, batch_in_epoch, batch) from where the progress counters point, epoch after epoch."""
        p = self.progress
        while p.epoch < self.tc.max_epochs:
            plan = self.data.plan("train", self.tc.batch_tokens, shuffle=True, seed=self.cfg.seed, epoch=p.epoch,
                                  rank=self.rank, world_size=self.world_size, pool_size=self.tc.pool_size,
                                  sort=self.tc.batching == "sorted")
            start = p.batch_in_epoch
            for offset, batch in enumerate(self.data.batches("train", plan[start:])):
                yield start + offset + 1, batch
            p.epoch += 1
            p.batch_in_epoch = 0

    def train_step(self, group: list) -> tuple[float, int]:
        """One update from ``group`` (accumulated micro-batches): this rank's loss share and the update's tokens.

        Each rank divides its summed loss by the update's target tokens over all
        ranks, times the number of ranks; DDP averages the ranks' gradients, so
        the update follows sum(loss) / global tokens, as one process taking every
        rank's batches would. The ranks' mean of the returned loss is the
        update's loss per target token (in one process: the loss itself).
        """
        self.model.train()
        tokens = int(distributed.all_sum(sum(b.n_tgt_tokens for b in group)))
        tokens_per_rank = tokens / self.world_size
        total = 0.0
        for i, batch in enumerate(group):
            batch = batch.to(self.device)
            with distributed.no_sync(self.ddp, skip=i < len(group) - 1):  # all-reduce once, on the last backward
                with self.autocast():
                    # logits (or log-probs) of the real target positions only (N, V): the output layer skips padding
                    tgt_mask = batch.tgt_mask if self.tc.skip_target_padding else None
                    outputs, _ = self.forward(batch.src, batch.src_mask, batch.tgt_in, tgt_mask)
                target = batch.tgt_out if tgt_mask is None else batch.tgt_out[tgt_mask]
                loss = sequence_loss(outputs, target, self.data.pad_id, self.tc.label_smoothing,
                                     log_probs=self.model.outputs_log_probs) / tokens_per_rank
                loss.backward()
            total += float(loss.detach())
        if self.tc.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.tc.schedule != "plateau" or self.progress.step < self.tc.warmup_steps:
            self.warmup.step()
        return total, tokens

    def fit(self) -> dict[str, Any]:
        p, tc = self.progress, self.tc
        show = tc.progress and self.is_main and sys.stderr.isatty() and not os.environ.get("CI")
        bar = tqdm(total=tc.max_steps, initial=p.step, disable=not show, dynamic_ncols=True, desc="train")
        with bar, logging_redirect_tqdm() if show else nullcontext():  # log lines above the bar, not through it
            validated = self.train_loop(bar, show)
        if p.step != validated:
            self.validate()  # the epoch limit ended training between validations
        return final.finish(self)

    def train_loop(self, bar: tqdm, show: bool) -> int:
        """Updates until the step or epoch limit or early stopping, validating every ``eval_every``; the step of
        the last validation (-1: none)."""
        p, tc = self.progress, self.tc
        stream = self.batch_stream()
        validated = p.step if tc.resume else -1  # a resumed run's last.pt was written by its last validation
        segment_start = time.perf_counter()  # the window's time since it (or the last validation) began
        while not self.budget_spent() and not p.stopped_early:
            group = []
            for position, batch in stream:
                group.append(batch)
                p.batch_in_epoch = position
                if len(group) == tc.accum_steps:
                    break
            if not group:
                break  # max_epochs reached
            started, cpu_started = time.perf_counter(), time.process_time()
            loss, tokens = self.train_step(group)
            p.train_seconds += time.perf_counter() - started
            if p.train_cpu_seconds is not None:
                p.train_cpu_seconds += time.process_time() - cpu_started
            p.step += 1
            p.tokens += tokens
            p.window_loss += loss * tokens
            p.window_tokens += tokens
            bar.update(1)
            if self.cores and p.step % THREAD_CHECK_EVERY == 0:
                self.adapt_threads()
            if p.step % tc.log_every == 0 or self.budget_spent():
                elapsed = p.window_seconds + time.perf_counter() - segment_start
                values = {"loss": distributed.mean(p.window_loss) / p.window_tokens,
                          "lr": self.optimizer.param_groups[0]["lr"], "tokens_per_s": p.window_tokens / elapsed,
                          "epoch": p.epoch, "threads": self.threads}
                self.record("train", values)
                bar.set_postfix(loss=f"{values['loss']:.3f}", tok_s=f"{values['tokens_per_s']:.0f}")
                if not show:
                    log.info("step %d  loss %.4f  lr %.2e  %.0f tok/s", p.step, values["loss"], values["lr"],
                             values["tokens_per_s"])
                p.window_loss, p.window_tokens, p.window_seconds = 0.0, 0, 0.0
                segment_start = time.perf_counter()
            if p.step % tc.eval_every == 0 or self.budget_spent():
                p.window_seconds += time.perf_counter() - segment_start
                self.validate()
                validated = p.step
                segment_start = time.perf_counter()
        return validated

    def budget_spent(self) -> bool:
        """Whether the update limit, or the real-target-token limit (trainer.max_tokens), is reached."""
        p, tc = self.progress, self.tc
        return p.step >= tc.max_steps or 0 < tc.max_tokens <= p.tokens

    def set_threads(self, threads: int) -> int:
        """torch's intra-op threads on a CPU (a count: auto is resolved before); on a GPU, whatever torch has."""
        return set_threads(threads) if self.device.type == "cpu" else torch.get_num_threads()

    def first_threads(self) -> int:
        """num_threads=0: the free cores now, at most this job's share where a launcher starts several at once
        (``S2S_JOBS_SIDE_BY_SIDE``, set by s2s-grid): jobs that start together would all see idle cores."""
        threads = self.cores.threads(settle=0.25)
        jobs = int(os.environ.get("S2S_JOBS_SIDE_BY_SIDE") or 1)
        return min(threads, max(1, len(self.cores.cpus) // jobs))

    def adapt_threads(self) -> None:
        """num_threads=0: follow the cores other processes left free since the last check."""
        threads = self.cores.threads()
        if threads != self.threads:
            log.info("threads %d -> %d: other processes kept %.1f of %d cores busy", self.threads, threads,
                     self.cores.others, len(self.cores.cpus))
            self.threads = self.set_threads(threads)

    def evaluate_valid(self) -> tuple[dict[str, Any], list[str]]:
        """Loss, perplexity and the task metrics on the validation split, and the hypotheses scored."""
        tc = self.tc
        values = split_loss(self.model, self.data, "valid", tc.batch_tokens, self.device, self.autocast)
        decoded = decode_split(self.model, self.data, "valid", self.cfg.decoding, self.device, self.autocast,
                               beam_size=tc.val_beam_size, limit=tc.eval_max_sentences)
        values.update(score(self.data, "valid", decoded.hypotheses))
        return values, decoded.hypotheses

    def validate(self) -> None:
        """Rank 0 evaluates; every rank applies its metric, so schedule, best and early stopping stay in step."""
        p, tc = self.progress, self.tc
        values, hypotheses = self.evaluate_valid() if self.is_main else ({}, [])
        value = distributed.broadcast(values.get(self.primary))
        improved = value > p.best
        if improved:
            p.best, p.best_step, p.bad_evals = value, p.step, 0
        else:
            p.bad_evals += 1
        if tc.schedule == "plateau" and p.step >= tc.warmup_steps:
            self.plateau.step(value)
        if tc.early_stopping_patience and p.bad_evals >= tc.early_stopping_patience:
            p.stopped_early = True
        if self.is_main:
            write_text(self.run_dir / "hyps" / f"valid-step{p.step}.txt", "\n".join(hypotheses) + "\n")
            # Compute so far beside the step, for curves at equal tokens or seconds (s2s-tables).
            self.record("valid", {**values, "tokens": p.tokens, "train_seconds": p.train_seconds})
            log.info("valid step %d  loss %.4f  ppl %.2f  %s %.2f%s", p.step, values["loss"], values["ppl"],
                     self.primary, value, "  (best)" if improved else "")
        self.save_checkpoints(improved)

    def save_checkpoints(self, improved: bool) -> None:
        state = self.state()  # every rank takes part: it gathers their RNG states
        if self.is_main:
            if improved:
                checkpoint.save(state, self.ckpt_dir / "best.pt")
            if self.tc.keep_checkpoints:
                self.save_snapshot(state)
            checkpoint.save(state, self.ckpt_dir / "last.pt")
        distributed.barrier()  # no rank runs ahead of a checkpoint that is not on disk yet

    def save_snapshot(self, state: dict[str, Any]) -> None:
        """This validation's weights (no optimizer state) as checkpoints/stepN.pt, for checkpoint averaging.

        Written before last.pt, so a run killed in between resumes from the
        previous last.pt and writes this snapshot again.
        """
        snapshot = {k: state[k] for k in ("model", "trainer", "config", "params", "world_size")}
        checkpoint.save(snapshot, checkpoint.snapshot_path(self.ckpt_dir, self.progress.step))
        checkpoint.prune_snapshots(self.ckpt_dir, averaging.valid_scores(self.run_dir), self.tc.keep_checkpoints)
