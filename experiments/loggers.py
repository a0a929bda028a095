"""Metric loggers. The CSV record (metrics.csv in the run directory) is always written by the
runner; `logger=wandb` additionally streams the same rows to Weights & Biases (imported lazily;
offline mode when no API key is configured)."""
from __future__ import annotations

import os

from omegaconf import OmegaConf

from data.paths import resolve


class CSVLogger:
    def log(self, row: dict) -> None:
        pass  # rows are kept in the loop state and written atomically with each checkpoint

    def finish(self, summary: dict) -> None:
        pass


class WandbLogger:
    def __init__(self, cfg, key: str):
        try:
            import wandb
        except ImportError as err:
            raise ImportError("logger=wandb needs the wandb package: pip install -e '.[wandb]'") from err
        mode = cfg.logger.mode
        if mode == "auto":
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        self.run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, name=key,
                              group=cfg.experiment, mode=mode, reinit=True,
                              dir=str(resolve(cfg.run.results_dir)),
                              config=OmegaConf.to_container(cfg, resolve=True))

    def log(self, row: dict) -> None:
        self.run.log(row, step=int(row["epoch"]))

    def finish(self, summary: dict) -> None:
        self.run.summary.update({"status": summary["status"]})
        self.run.finish()


def make_logger(cfg, key: str):
    return WandbLogger(cfg, key) if cfg.logger.name == "wandb" else CSVLogger()
