"""``python -m experiments.reporting.params task=multi30k_de_en``: parameter counts of both models on a task.

Builds the task's tokenizer (cached) and each model from ``conf/model/<name>.yaml``
with any extra overrides, and prints the trainable parameter count, so sizes
can be matched before anything is trained.
"""

from __future__ import annotations

import sys

from experiments.core.config import validate
from experiments.data.pipeline import TaskData
from experiments.core.errors import UserError
from experiments.evaluation.builders import build_model
from models import count_parameters


def main(argv: list[str] | None = None) -> None:
    from hydra import compose, initialize_config_dir

    from experiments.training.train import CONF_DIR

    overrides = sys.argv[1:] if argv is None else argv
    models = [o.split("=", 1)[1] for o in overrides if o.startswith("models=")] or ["gru,transformer"]
    rest = [o for o in overrides if not o.startswith("models=")]
    try:
        data = None
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            for model in models[0].split(","):
                cfg = validate(compose(config_name="config", overrides=[*rest, f"model={model}"]))
                data = data or TaskData(cfg.task, cfg.cache_dir)
                print(f"{cfg.task.name}  {model:<18} {count_parameters(build_model(cfg.model, data)):>12,}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
