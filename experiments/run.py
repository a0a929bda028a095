"""Entry point: `python -m experiments.run [overrides]` trains and evaluates one run;
`python -m experiments.run -m experiment=<name>` runs that experiment's whole sweep.

A run owns its directory while it trains (records.RunLock): a finished run is skipped, an
interrupted one resumes from its last readable checkpoint, and a second job with the same key
skips it (or waits, `run.on_locked=wait`). The run's life is experiments/lifecycle.py.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import experiments  # noqa: F401  (registers the config resolvers)
from experiments import records
from experiments.config_errors import check_group_options, fail_config
from experiments.lifecycle import Member, claim, hydra_choices, train_members
from experiments.schema import ConfigError, validate
from experiments.stack_run import execute_stack
from experiments.steps import OneModel


def execute(cfg: DictConfig) -> dict:
    """Run one configuration to completion (or resume it). Returns its summary."""
    if cfg.get("run", {}).get("stack_file"):
        return execute_stack(cfg)
    cfg = validate(cfg)
    directory = records.run_dir(cfg)
    lock, skipped = claim(cfg, directory, "run", may_wait=True)
    if lock is None:
        return skipped
    with lock:
        return train_members([Member(cfg, directory, hydra_choices())], OneModel())[0]


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    try:
        return execute(cfg)["status"]
    except ConfigError as err:
        fail_config(err)


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
