"""`hydra/sweeper=grid`: a union of grids, each crossed with the seeds.

Hydra's basic sweeper takes one cartesian product. A paper table often needs several (a fixed
baseline's width x lr x batch grid beside the adaptive model's sigma x activation grid), so an
experiment file lists them:

    hydra:
      sweeper:
        seeds: ${budget:8,3,1}          # seed=0..seeds-1 is crossed with every grid
        grids:
          fcn: {model: "fcn2,fcn3,fcn5", regime: "plain,l1,l2"}
          tuned: {...}

`grids` may also be a mapping name -> grid; `hydra.sweeper.only=[name,...]` then runs a subset.
Command-line sweep arguments replace the same key in every grid (`seed=0` runs one seed).

Before launching, the sweeper composes every job's config with Hydra's own loader, writes the
manifest (experiments/plan.py) that tables read, and, with `run.stack=true`, launches jobs that
differ only by seed as one stacked job. `hydra.sweeper.dry_run=true` stops after the manifest.
"""


import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.grid_sweeper.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    seeds: int = 1
    grids: Any = field(default_factory=dict)
    only: Optional[List[str]] = None
    dry_run: bool = False


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="grid_sweeper")


def select(grids, only=None) -> dict:
    """The grids to run, by name: all of a list (named by position); of a mapping, those named
    in `only` (all when None)."""
    if isinstance(grids, dict):
        unknown = sorted(set(only or []) - set(grids))
        if unknown:
            raise ValueError(f"hydra.sweeper.only={unknown} names no grid; grids: {list(grids)}")
        return {name: g for name, g in grids.items() if only is None or name in only}
    if only is not None:
        raise ValueError("hydra.sweeper.only needs named grids (a mapping) in the experiment file")
    return {str(i): g for i, g in enumerate(grids)}


def expand_named(grids: dict, seeds: int, arguments: list[str], config_loader=None) -> list[tuple[str, list[str]]]:
    """Every job's (grid name, override list): for each grid, the cartesian product of its
    values, the seeds and the command-line arguments (which replace a grid's own value for the
    same key). A job two grids share belongs to the first."""
    parser = OverridesParser.create(config_loader=config_loader)
    cli = parser.parse_overrides(list(arguments))
    cli_keys = {o.get_key_element() for o in cli}
    jobs: list[tuple[str, list[str]]] = []
    seen = set()
    for name, grid in (grids or {"0": {}}).items():
        params = [f"{k}={v}" for k, v in dict(grid).items() if k not in cli_keys]
        if "seed" not in cli_keys and "seed" not in dict(grid):
            params.append(f"seed=range(0,{int(seeds)})")
        overrides = parser.parse_overrides(params) + cli
        for job in BasicSweeper.split_arguments(overrides, None)[0]:
            if tuple(job) not in seen:
                seen.add(tuple(job))
                jobs.append((name, job))
    return jobs


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, seeds: int = 1, grids=None, only=None,
                 dry_run: bool = False):
        super().__init__(max_batch_size=max_batch_size, params=None)
        self.seeds, self.dry_run = seeds, dry_run
        self.only = list(only) if only is not None else None
        if grids is not None and not isinstance(grids, (dict, list)):
            grids = OmegaConf.to_container(grids, resolve=True)
        self.grids = select(grids or [], list(only) if only is not None else None)

    def sweep(self, arguments: list[str]) -> Any:
        from experiments import plan
        from experiments.config_errors import fail_config
        from experiments.schema import ConfigError

        loader = self.hydra_context.config_loader
        tic = time.perf_counter()
        try:
            named = expand_named(self.grids, self.seeds, arguments, loader)
            jobs = plan.plan_jobs([job for _, job in named],
                                  lambda overrides: loader.load_sweep_config(self.config, overrides),
                                  grids=[name for name, _ in named])
        except ConfigError as err:
            fail_config(err)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        reused = plan.reuse_finished(jobs)
        for job in reused:
            print(f"[sweep] reuse {job.directory.parent.name}/{job.key} (finished, same key)")
        launched = self._write_manifests(jobs, arguments, sweep_dir)
        skip = {id(j) for j in reused}
        groups = plan.stack_groups([j for j in jobs if id(j) not in skip])
        batch = []
        for i, group in enumerate(groups):
            if len(group) == 1:
                batch.append(group[0].overrides)
                continue
            # named by its members: a sweep started beside this one never overwrites it
            members = hashlib.sha1(" ".join(j.key for j in group).encode()).hexdigest()[:12]
            path = sweep_dir / "stacks" / f"stack-{i}-{members}.json"
            plan.write_stack_file(group, path)
            batch.append([*group[0].overrides, f"run.stack_file='{path.resolve()}'"])
        stacks = sum(len(g) > 1 for g in groups)
        log.info(f"grid sweeper: {len(jobs)} jobs ({launched} not finished), "
                 f"{len(batch)} launches ({stacks} stacked), planned in {time.perf_counter() - tic:.1f}s")
        if self.dry_run:
            print(f"[sweep] dry run: manifest {sweep_dir / 'manifest.json'}; nothing launched")
            return []
        self.overrides = list(self.split_overrides_to_chunks(batch, self.max_batch_size))
        returns, start = [], 0
        while not self.is_done():
            chunk = self.get_job_batch()
            self.validate_batch_is_legal(chunk)
            results = self.launcher.launch(chunk, initial_job_idx=start)
            for r in results:
                _ = r.return_value  # re-raises a job's exception (the runner records failures itself)
            start += len(chunk)
            returns.append(results)
        return returns

    def _write_manifests(self, jobs, arguments: list[str], sweep_dir: Path) -> int:
        """This sweep's manifest in the multirun directory; merged into the table's manifest.
        Returns how many jobs are not finished yet."""
        from experiments import plan, records

        if not jobs:
            return 0
        first = jobs[0].base
        table = self.config.get("table")
        command = [*arguments, *([f"hydra.sweeper.only=[{','.join(self.only)}]"] if self.only else [])]
        body = plan.manifest(jobs, first.experiment, first.profile.name, table, command,
                             first.run.results_dir)
        records.write_json(sweep_dir / "manifest.json", body)
        plan.merge_manifest(plan.manifest_path(first.run.results_dir, first.experiment,
                                               first.profile.name, arguments), body)
        return sum(not plan.finished(job.directory) for job in jobs)
