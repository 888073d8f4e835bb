"""``s2s-train``: compose the Hydra config, validate it, train, test.

    s2s-train task=multi30k_de_en model=gru
    s2s-train -m model=gru,transformer seed=1,2,3
    torchrun --nproc-per-node 4 -m experiments.train task=wmt14_de_en trainer=gpu
    s2s-train -m hydra/launcher=slurm hydra.launcher.nodes=2 task=wmt14_de_en trainer=gpu
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments import distributed
from experiments.config import check_override_keys, validate
from experiments.errors import UserError
from experiments.trainer import Trainer

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and test one configuration in ``run_dir``; returns the results summary.

    Every process of a distributed job calls this; they join one process group
    and work in rank 0's ``run_dir``.
    """
    cfg = validate(cfg)
    if distributed.launched_by_submitit():
        # The launcher requeues a preempted or timed-out job into the same folder: go on from its last.pt.
        cfg.trainer.resume = True
    with distributed.process_group() as launch:
        if launch.rank:
            logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports for the job
        run_dir = Path(distributed.broadcast(str(run_dir)))
        return Trainer(cfg, run_dir).fit()


# An absolute path: the repo is installed in editable mode, so conf/ sits beside this package.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> float:
    try:
        results = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except UserError as e:
        log.error("error: %s", e)
        if HydraConfig.get().mode.name == "MULTIRUN":
            raise  # let the sweep record this job as failed and go on with the others
        sys.exit(2)
    primary = next(k for k in results if k.startswith("valid_"))
    log.info("best validation %s: %.2f", primary.removeprefix("valid_"), results[primary])
    for split, values in results["test"].items():
        main_metric = values.get("bleu", values.get("rouge_mean"))
        log.info("%s: %s %.2f", split, "BLEU" if "bleu" in values else "ROUGE mean", main_metric)
    return results[primary]  # the objective Optuna maximises


def main() -> None:
    try:
        check_override_keys([a for a in sys.argv[1:] if not a.startswith("-")])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if distributed.torchrun_rank() > 0:
        sys.argv += distributed.QUIET_HYDRA
    hydra_entry()


if __name__ == "__main__":
    main()
