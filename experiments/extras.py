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
the override that fixes it (the ``tune_*`` presets set it).
"""

from __future__ import annotations

import importlib.util

from experiments.errors import ConfigError, UserError

SWEEPER = "hydra_plugins.hydra_optuna_sweeper"
LAUNCHER = "hydra_plugins.hydra_submitit_launcher"


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


def check_sweep(overrides: list[str]) -> None:
    """s2s-train's overrides: the Optuna sweeper and the submitit launchers need the sweep extra; Optuna maximises."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    preset = values.get("experiment", "")
    optuna = values.get("hydra/sweeper") == "optuna" or preset.startswith("tune_")
    if optuna:
        asked = f"experiment={preset}" if preset.startswith("tune_") else "hydra/sweeper=optuna"
        require((SWEEPER,), "sweep", f"{asked} (Hydra's Optuna sweeper)")
    if values.get("hydra/launcher") in ("slurm", "local"):
        require((LAUNCHER,), "sweep", f"hydra/launcher={values['hydra/launcher']} (Hydra's submitit launcher)")
    if values.get("hydra/sweeper") == "optuna" and not preset.startswith("tune_") \
            and "hydra.sweeper.direction" not in values:
        raise ConfigError("hydra/sweeper=optuna minimises by default, but s2s-train returns the validation metric "
                          "(BLEU or mean ROUGE), which is to be maximised: add hydra.sweeper.direction=maximize, or "
                          "start from experiment=tune_gru or experiment=tune_transformer, which set it")
