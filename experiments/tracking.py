"""Weights & Biases logging that can never stop a training run.

``offline`` (the default) keeps the run under ``<run dir>/wandb/`` for a later
``wandb sync``; ``online`` streams to the W&B servers when the user is logged
in and falls back to offline when they cannot be reached; ``disabled`` turns
W&B off. Any W&B failure after start-up is logged once and then ignored.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, cfg: Any, run_dir: Path, config: dict[str, Any], name: str) -> None:
        self.run = None
        if cfg.mode == "disabled":
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
                self.run = wandb.init(mode=cfg.mode, settings=wandb.Settings(init_timeout=30), **kwargs)
            except Exception as e:  # noqa: BLE001 - W&B unreachable or not logged in
                if cfg.mode != "online":
                    raise
                log.warning("W&B online init failed (%s); logging offline instead", e)
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
