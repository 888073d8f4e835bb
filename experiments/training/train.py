"""``s2s-train``: compose the Hydra config, validate it, train, test.

    s2s-train task=multi30k_de_en model=gru
    s2s-train -m model=gru,transformer seed=1,2,3
    torchrun --nproc-per-node 4 -m experiments.training.train task=wmt14_de_en trainer=gpu
    s2s-train -m hydra/launcher=slurm hydra.launcher.nodes=2 task=wmt14_de_en trainer=gpu
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig

from experiments.training import distributed, runfolder
from experiments.core.config import check_override_keys
from experiments.core.config_groups import check_groups
from experiments.core.errors import UserError
from experiments.core.extras import check_sweep
from experiments.training.search import as_trained, given_keys
from experiments.training.trainer import Trainer

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path, given: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Train and test one configuration in ``run_dir``; returns the results summary.

    Every process of a distributed job calls this; they join one process group
    and work in rank 0's ``run_dir``, which rank 0 holds for the run (``experiments/training/runfolder.py``).
    ``given``: the keys set on the command line, which a tuned recipe leaves as they are.
    """
    # a search trial's drawn settings, or a tuned recipe's, first, so config.yaml records them
    cfg = as_trained(cfg, given)
    requeued = distributed.launched_by_submitit()  # a preempted or timed-out job, requeued into its own folder
    if requeued and (run_dir / "checkpoints" / "last.pt").exists():
        cfg.trainer.resume = True  # go on from its last.pt
    with distributed.process_group() as launch:
        if launch.rank:
            logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports for the job
        run_dir = Path(distributed.broadcast(str(run_dir)))
        with runfolder.owned(run_dir, not (cfg.trainer.resume or requeued), cfg.trainer.overwrite) as note:
            if note:
                log.warning(note)
            return Trainer(cfg, run_dir).fit()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, like Ctrl-C's KeyboardInterrupt: atomic writes drop their temporaries and
    the last checkpoint stays what resume reads."""


def terminated(signum: int, frame: object) -> None:
    raise Terminated()


# An absolute path: the repo is installed in editable mode, so conf/ sits beside this package.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    given = given_keys(list(HydraConfig.get().overrides.task))
    signal.signal(signal.SIGTERM, terminated)  # a scheduler's or the grid's stop: say how to go on, as Ctrl-C does
    try:
        results = run(cfg, run_dir, given)
    except UserError as e:
        log.error("error: %s", e)
        if HydraConfig.get().mode.name == "MULTIRUN":
            raise  # let the sweep record this job as failed and go on with the others
        sys.exit(2)
    except KeyboardInterrupt as e:
        if HydraConfig.get().mode.name == "MULTIRUN":
            raise
        log.error("%s: add trainer.resume=true hydra.run.dir=%s to the same command to go on from the last "
                  "checkpoint", "ended by SIGTERM" if isinstance(e, Terminated) else "interrupted", run_dir)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    primary = next(k for k in results if k.startswith("valid_"))
    log.info("best validation %s: %.2f", primary.removeprefix("valid_"), results[primary])
    for split, values in results["test"].items():
        main_metric = values.get("bleu", values.get("rouge_mean"))
        log.info("%s: %s %.2f", split, "BLEU" if "bleu" in values else "ROUGE mean", main_metric)
    return results[primary]  # the objective Optuna maximises


# Noise in Hydra's multi-line messages: OmegaConf's key details and the config search path.
HYDRA_NOISE = ("full_key:", "object_type=", "reference_type=", "provider=", "Config search path:")


def one_line(error: BaseException) -> str:
    """A Hydra error (and the OmegaConf error under it) as one line; indented option lists become ``a, b, c``."""
    text = str(error)
    if getattr(error, "override", None):  # a parse error: say which override
        text = f"cannot parse the override {error.override!r}: {text}"
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += f": {error.__cause__}"
    chunks: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(HYDRA_NOISE):
            continue
        if raw.startswith("\t") and chunks:
            chunks[-1][1].append(line)
        else:
            chunks.append((line, []))
    return " ".join(head + (" " + ", ".join(items) if items else "") for head, items in chunks)


def main() -> None:
    """Every user error, ours or Hydra's, ends the command with one line and exit status 2.

    Hydra is asked to raise its errors (``HYDRA_FULL_ERROR``) instead of
    printing a trace and exiting 1; one who set that variable gets the trace.
    """
    setting = os.environ.get("HYDRA_FULL_ERROR")
    try:
        overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
        check_sweep(overrides)  # before Hydra looks for a plugin that is not installed
        check_groups(overrides, Path(CONF_DIR))
        check_override_keys(overrides)
        if not {"-m", "--multirun"} & set(sys.argv[1:]):
            runfolder.check_run_dir(overrides)
        if distributed.torchrun_rank() > 0:
            sys.argv += distributed.QUIET_HYDRA
        os.environ["HYDRA_FULL_ERROR"] = "1"
        hydra_entry()
    except (UserError, HydraException) as e:
        if setting == "1":
            raise
        print(f"error: {e if isinstance(e, UserError) else one_line(e)}", file=sys.stderr)
        sys.exit(2)
    finally:
        if setting is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = setting


if __name__ == "__main__":
    main()
