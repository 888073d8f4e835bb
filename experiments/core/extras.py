"""The optional extras (pyproject's ``sweep`` and ``analysis``), and one line that says how to add a missing one.

``make run`` installs only what the demo needs, so that a first run takes
minutes; ``make install`` adds the tests, the sweeps and the analysis extras
(eflomal compiles from source). A command that needs an extra it does not find
fails before any work with the command that adds it, instead of Hydra's
"Could not find 'hydra/sweeper/optuna'" or a compare-mt traceback after the
decoding.

Hydra's Optuna sweeper minimises unless told otherwise, and ``s2s-train``
returns the validation metric (BLEU or mean ROUGE), so a bare
``hydra/sweeper=optuna`` would search for the worst model: it is refused with
the override that fixes it (the Optuna presets, ``tune_gru`` and ``tune_transformer``, set it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from experiments.core.errors import ConfigError, UserError

SWEEPER = "hydra_plugins.hydra_optuna_sweeper"
LAUNCHER = "hydra_plugins.hydra_submitit_launcher"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def install(extra: str) -> str:
    return f'make install (or .venv/bin/pip install -e ".[{extra}]")'


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def require(modules: tuple[str, ...], extra: str, what: str) -> None:
    """Fail with the install command when any of ``modules`` (of extra ``extra``) is missing."""
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise UserError(f"{what} needs the {extra!r} extra ({', '.join(missing)} not installed): {install(extra)}")


def uses_optuna(preset: str) -> bool:
    """Whether conf/experiment/<preset>.yaml selects the Optuna sweeper (the tune_gru and tune_transformer presets,
    which also set direction: maximize)."""
    path = CONF_DIR / "experiment" / f"{preset}.yaml"
    return bool(preset) and path.is_file() and "override /hydra/sweeper: optuna" in path.read_text()


def check_sweep(overrides: list[str]) -> None:
    """s2s-train's overrides: the Optuna sweeper and the submitit launchers need the sweep extra; Optuna maximises."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    preset = values.get("experiment", "")
    optuna_preset = uses_optuna(preset)
    if values.get("hydra/sweeper") == "optuna" or optuna_preset:
        asked = f"experiment={preset}" if optuna_preset else "hydra/sweeper=optuna"
        require((SWEEPER,), "sweep", f"{asked} (Hydra's Optuna sweeper)")
    if values.get("hydra/launcher") in ("slurm", "local"):
        require((LAUNCHER,), "sweep", f"hydra/launcher={values['hydra/launcher']} (Hydra's submitit launcher)")
    if values.get("hydra/sweeper") == "optuna" and not optuna_preset and "hydra.sweeper.direction" not in values:
        raise ConfigError("hydra/sweeper=optuna minimises by default, but s2s-train returns the validation metric "
                          "(BLEU or mean ROUGE), which is to be maximised: add hydra.sweeper.direction=maximize, or "
                          "start from experiment=tune_gru or experiment=tune_transformer, which set it")
