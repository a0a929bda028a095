"""Metric loggers. The CSV record (metrics.csv in the run directory) is always written by the
runner; `logger=wandb` additionally streams the same rows to Weights & Biases (imported lazily).
`logger.mode=auto` logs online when W&B has credentials (WANDB_API_KEY, `wandb login`, or its
settings) and says so when it falls back to offline (`wandb sync` uploads those runs later).
A sweep's table and figure go to the sweep's group too (`log_table`, called by the tables callback)."""
from __future__ import annotations

import html
import os
import sys
from pathlib import Path

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


def log_table(config, md_path) -> None:
    """A sweep's table (and its figure) to the sweep's W&B group as a wandb.Table, when the sweep
    logs to W&B (`logger=wandb`). Called by the tables callback after it builds the table; the
    CSV beside the markdown is the table logged. Offline mode (no account) writes it under
    <results_dir>/wandb for `wandb sync`. A W&B failure is one line on stderr: the table files
    are already written."""
    if md_path is None or config.logger.name != "wandb":
        return
    try:
        run = table_run(config, md_path)
    except Exception as err:  # e.g. wandb not installed, no service: the files are what count
        print(f"[wandb] table {md_path.stem} not logged: {type(err).__name__}: {err}", file=sys.stderr)
        return
    print(f"[wandb] table {md_path.stem} logged to group {config.experiment} ({run})", flush=True)


def table_run(config, md_path: Path) -> str:
    """One W&B run of job_type `table` in the sweep's group: the table, its figure and markdown."""
    import pandas as pd
    import wandb

    frame = pd.read_csv(md_path.with_suffix(".csv"))
    figure = md_path.parent.parent / "figures" / f"{md_path.stem}.png"
    run = wandb.init(project=config.logger.project, entity=config.logger.entity,
                     group=config.experiment, job_type="table", name=f"table-{md_path.stem}",
                     mode=wandb_mode(config.logger.mode), reinit=True,
                     dir=str(resolve(config.run.results_dir)),
                     config={"experiment": config.experiment, "profile": config.profile.name})
    logged = {"table": wandb.Table(dataframe=frame, allow_mixed_types=True),
              "table_markdown": wandb.Html(f"<pre>{html.escape(md_path.read_text())}</pre>")}
    if figure.is_file():
        logged["figure"] = wandb.Image(str(figure))
    run.log(logged)
    where = run.dir if run.settings.mode == "offline" else run.url
    run.finish()
    return str(where)
