"""Which jobs train together: jobs differing only by seed (and the values `run.stack_over`
names) launch as one stacked job (docs/STACKING.md) when their model says it can be stacked."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.plan.jobs import PlannedJob
from experiments.stack_run import write_stack_file as write_members
from models import stackable


def stack_signature(cfg: DictConfig, ident: dict) -> str | None:
    """Jobs with the same signature can train as one stack; None: this job cannot be stacked."""
    if not cfg.run.stack or not stackable(cfg.model) or cfg.regime.record_ratios:
        return None
    if cfg.optimizer.scheduler.name == "plateau":   # a plateau schedule is per member
        return None
    ident = dict(ident)
    for key in ("seed", *cfg.run.stack_over):
        ident.pop(key, None)
    return json.dumps(ident, sort_keys=True, default=str)


def stack_groups(jobs: list[PlannedJob]) -> list[list[PlannedJob]]:
    """Jobs in launch order, grouped: stackable jobs with one signature share a group (at most
    run.stack_max members); every other job is a group of one."""
    groups: list[list[PlannedJob]] = []
    open_groups: dict[str, list[PlannedJob]] = {}
    for job in jobs:
        sig = stack_signature(job.base, job.ident)
        if sig is not None and sig in open_groups and len(open_groups[sig]) < job.base.run.stack_max:
            open_groups[sig].append(job)
            continue
        groups.append([job])
        if sig is not None:
            open_groups[sig] = groups[-1]
    return groups


def write_stack_file(group: list[PlannedJob], path: Path) -> None:
    write_members([(j.key, j.overrides, j.choices,
                    {**OmegaConf.to_container(j.base, resolve=True), "seed": j.seed}) for j in group], path)


def launches(jobs: list[PlannedJob], sweep_dir: Path) -> tuple[list[list[str]], int]:
    """(each launch's overrides, how many are stacks): a stack launches once, with the stack
    file of its members' configs (named by its members: a sweep started beside this one never
    overwrites it)."""
    batch, stacks = [], 0
    for i, group in enumerate(stack_groups(jobs)):
        if len(group) == 1:
            batch.append(group[0].overrides)
            continue
        members = hashlib.sha1(" ".join(j.key for j in group).encode()).hexdigest()[:12]
        path = sweep_dir / "stacks" / f"stack-{i}-{members}.json"
        write_stack_file(group, path)
        batch.append([*group[0].overrides, f"run.stack_file='{path.resolve()}'"])
        stacks += 1
    return batch, stacks
