"""Weights & Biases logging that can never stop a training run.

``offline`` (the default) keeps the run under ``<run dir>/wandb/`` for a later
``wandb sync``; ``online`` streams to the W&B servers when the user is logged
in, and when they cannot be reached within ``ONLINE_TIMEOUT`` seconds logs the
same run (same id) offline instead; ``disabled`` turns W&B off. The standard
``WANDB_MODE`` environment variable wins over ``logger.mode`` (``disabled``
from either side always wins). Any W&B failure after start-up is logged once
and then ignored.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from experiments.core.errors import ConfigError

log = logging.getLogger(__name__)

ONLINE_TIMEOUT = 15  # seconds wandb.init may wait for the servers before the run goes offline
ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def resolve_mode(configured: str) -> str:
    """The W&B mode to use: ``WANDB_MODE`` (or ``WANDB_DISABLED``) from the environment over ``logger.mode``."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        env = "disabled"
    if not env or configured == "disabled":
        return configured
    if env not in ENV_MODES:
        raise ConfigError(f"WANDB_MODE={env!r} is not a W&B mode: use online, offline or disabled (or unset it)")
    if ENV_MODES[env] != configured:
        log.info("W&B mode %s from WANDB_MODE (logger.mode=%s set aside)", ENV_MODES[env], configured)
    return ENV_MODES[env]


class Tracker:
    def __init__(self, cfg: Any, run_dir: Path, config: dict[str, Any], name: str) -> None:
        self.run = None
        self.mode = resolve_mode(str(getattr(cfg.mode, "value", cfg.mode)))
        if self.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        id_file = run_dir / "wandb_run_id"
        try:
            import wandb

            self._wandb = wandb
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id)
            kwargs = dict(dir=str(run_dir), project=cfg.project, entity=cfg.entity, group=cfg.group,
                          tags=list(cfg.tags), config=config, name=name, id=run_id, resume="allow")
            try:
                self.run = wandb.init(mode=self.mode, settings=wandb.Settings(init_timeout=ONLINE_TIMEOUT), **kwargs)
            except Exception as e:  # noqa: BLE001 - W&B unreachable or not logged in
                if self.mode != "online":
                    raise
                log.warning("W&B online start failed (%s); logging run %s offline under %s/wandb instead "
                            "(upload it later with `wandb sync`)", str(e).splitlines()[0], run_id, run_dir)
                wandb.teardown()  # the failed online attempt still holds the run id
                self.mode = "offline"
                self.run = wandb.init(mode="offline", **kwargs)
        except Exception as e:  # noqa: BLE001 - never let W&B stop training
            log.warning("W&B disabled for this run: %s", e)
            self.run = None

    def _call(self, what: str, fn: Any) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            log.warning("W&B %s failed (%s); W&B logging stops here", what, e)
            self.run = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._call("log", lambda: self.run.log(metrics, step=step))

    def summary(self, metrics: dict[str, Any]) -> None:
        self._call("summary", lambda: self.run.summary.update(metrics))

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self._call("table", lambda: self.run.log({key: self._wandb.Table(columns=columns, data=rows)}, step=step))

    def images(self, key: str, paths: list[Path], step: int | None = None) -> None:
        self._call("images", lambda: self.run.log({key: [self._wandb.Image(str(p), caption=p.stem) for p in paths]},
                                                   step=step))

    def finish(self) -> None:
        self._call("finish", lambda: self.run.finish())
        self.run = None
