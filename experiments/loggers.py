"""Metric loggers. The CSV record (metrics.csv in the run directory) is always written by the
runner; `logger=wandb` additionally streams the same rows to Weights & Biases (imported lazily).
`logger.mode=auto` logs online when W&B has credentials (WANDB_API_KEY, `wandb login`, or its
settings) and says so when it falls back to offline (`wandb sync` uploads those runs later)."""
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
        mode = wandb_mode(cfg.logger.mode)
        self.run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, name=key,
                              group=cfg.experiment, mode=mode, reinit=True,
                              dir=str(resolve(cfg.run.results_dir)),
                              config=OmegaConf.to_container(cfg, resolve=True))

    def log(self, row: dict) -> None:
        self.run.log(row, step=int(row["epoch"]))

    def finish(self, summary: dict) -> None:
        self.run.summary.update({"status": summary["status"]})
        self.run.finish()


def wandb_mode(mode: str) -> str:
    """online / offline / disabled; `auto` resolves as W&B itself would, without prompting."""
    import wandb

    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    try:
        logged_in = wandb.login(prompt=False, verify=False)
    except Exception:  # no usable settings: treat as not logged in, and say so below
        logged_in = False
    if not logged_in:
        print("[wandb] no credentials (WANDB_API_KEY or `wandb login`): logging offline; "
              "`wandb sync <run dir>` uploads later", flush=True)
    return "online" if logged_in else "offline"


def make_logger(cfg, key: str):
    return WandbLogger(cfg, key) if cfg.logger.name == "wandb" else CSVLogger()
