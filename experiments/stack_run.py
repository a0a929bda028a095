"""A stacked job: S members (runs differing only by seed) trained as one stacked model in one
process (docs/STACKING.md). The sweeper writes the members' validated configs to a stack file
(experiments/plan/stacks.py) and launches one job with `run.stack_file=<path>`.

Each member keeps its own run directory, key, lock, records and checkpoint (model and optimiser
state in the unstacked format), so skip, resume, tables and loggers work as for unstacked runs
(experiments/lifecycle.py: the same lifecycle, with the stacked training step). Members already
finished are skipped; members at different epochs train as separate sub-stacks.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments import records
from experiments.lifecycle import Member, claim, train_members
from experiments.schema import validate
from experiments.steps import StackedModels


def write_stack_file(members: list[tuple[str, list[str], dict, dict]], path: Path) -> None:
    """members: (key, overrides, choices, resolved config) per member."""
    records.write_json(path, {"members": [
        {"key": key, "overrides": overrides, "choices": choices, "config": config}
        for key, overrides, choices, config in members]})


def read_stack_file(path: str | Path) -> list[dict]:
    return records.read_json(Path(path))["members"]


def execute_stack(cfg: DictConfig) -> dict:
    entries = read_stack_file(cfg.run.stack_file)
    members, locks = [], []
    for entry in entries:
        member_cfg = validate(OmegaConf.create(entry["config"]))
        directory = records.run_dir(member_cfg)
        lock, _ = claim(member_cfg, directory, "stack", may_wait=False)
        if lock is not None:
            locks.append(lock)
            members.append(Member(member_cfg, directory, entry["choices"]))
    try:
        statuses = [s["status"] for s in train_members(members, StackedModels())]
    finally:
        for lock in locks:
            lock.release()
    status = "finished" if all(s == "finished" for s in statuses) else ",".join(sorted(set(statuses)))
    return {"status": status or "finished", "stack": len(entries), "trained": len(statuses)}
