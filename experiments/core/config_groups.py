"""The conf tree's groups and presets checked before Hydra composes them: a misspelled group or option, a
preset whose tuned recipe is not written yet. Hydra's own answer would be a multi-line error with no suggestion.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from experiments.core.config import Config
from experiments.core.errors import ConfigError


def check_groups(overrides: list[str], conf_dir: Path) -> None:
    """Fail on a misspelled config group (``modle=gru``, ``modle.x=1``) or group option (``model=gruu``).

    Hydra would answer with a multi-line error and no suggestion; this names
    the closest group or option and lists the valid ones.
    """
    groups = sorted(p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra")
    top = [k for k in OmegaConf.structured(Config).keys() if k not in groups]
    for override in overrides:
        if "=" not in override or override[:1] == "~":
            continue
        key, value = override.split("=", 1)
        head = key.lstrip("+").split(".")[0].split("/")[0]
        if head == "hydra":
            continue
        if head not in groups and head not in top:
            hint = difflib.get_close_matches(head, groups + top, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"{override!r}: there is no config group or key {head!r}.{did_you_mean} "
                              f"Groups: {groups}; other top-level keys: {top}")
        if head not in groups or key.lstrip("+") != head or "(" in value:  # a key, or a sweep function
            continue
        options = sorted(p.stem for p in (conf_dir / head).glob("*.yaml"))
        for choice in value.split(","):  # a multirun sweep lists several
            if choice not in options and choice != "null":
                hint = difflib.get_close_matches(choice, options, n=1)
                did_you_mean = f" Did you mean {head}={hint[0]}?" if hint else ""
                raise ConfigError(f"{head}={choice}: conf/{head}/ has no {choice}.yaml.{did_you_mean} "
                                  f"Options: {options}")
            if head == "experiment" and choice != "null":
                check_tuned(choice, conf_dir)


def check_tuned(preset: str, conf_dir: Path) -> None:
    """Fail clearly where ``preset`` (or a preset it builds on) loads a tuned recipe that is not written yet.

    conf/tuned/ holds what ``s2s-tuned`` writes from a finished search, so a
    preset of tuned finals exists before its recipe does; Hydra would say only
    that it cannot find 'tuned/<name>'.
    """
    body = yaml.safe_load((conf_dir / "experiment" / f"{preset}.yaml").read_text()) or {}
    for entry in body.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_" and (conf_dir / "experiment" / f"{entry}.yaml").exists():
            check_tuned(entry, conf_dir)
        for name in tuned_recipes(entry):
            if not (conf_dir / "tuned" / f"{name}.yaml").exists():
                raise ConfigError(
                    f"experiment={preset} trains the tuned recipes of conf/tuned/{name}.yaml, which is not written "
                    f"yet: once the search's trials have finished, write it with `s2s-tuned <the search's runs>` "
                    f"(the header of conf/experiment/{preset}.yaml names the search)")


def tuned_recipes(entry: object) -> list[str]:
    """The conf/tuned/ recipes one entry of a preset's defaults list loads (``- /tuned@tuned: <task>``)."""
    if not isinstance(entry, dict):
        return []
    return [str(name) for group, name in entry.items() if str(group).lstrip("/").split("@")[0] == "tuned"]
