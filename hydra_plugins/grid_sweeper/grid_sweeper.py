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
manifest (experiments/plan/) that tables read, and, with `run.stack=true`, launches jobs that
differ only by seed as one stacked job. `hydra.sweeper.dry_run=true` stops after the manifest.
"""
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from experiments import plan
from experiments.config_errors import fail_config
from experiments.schema import ConfigError

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


class GridSweeper(BasicSweeper):
    """Asks planning (experiments/plan/) for the launches, then runs them with Hydra's launcher."""

    def __init__(self, max_batch_size: Optional[int] = None, seeds: int = 1, grids=None, only=None,
                 dry_run: bool = False):
        super().__init__(max_batch_size=max_batch_size, params=None)
        self.seeds, self.dry_run = seeds, dry_run
        self.only = list(only) if only is not None else None
        self.grids = plan.select(grids if grids is not None else [], self.only)

    def sweep(self, arguments: list[str]) -> Any:
        tic = time.perf_counter()
        jobs = self.planned_jobs(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        reused = plan.reuse_finished(jobs)
        for job in reused:
            print(f"[sweep] reuse {job.directory.parent.name}/{job.key} (finished, same key)")
        command = [*arguments, *([f"hydra.sweeper.only=[{','.join(self.only)}]"] if self.only else [])]
        open_jobs = plan.write_manifests(jobs, command, arguments, self.config.get("table"), sweep_dir)
        skip = {id(j) for j in reused}
        batch, stacks = plan.launches([j for j in jobs if id(j) not in skip], sweep_dir)
        log.info(f"grid sweeper: {len(jobs)} jobs ({open_jobs} not finished), "
                 f"{len(batch)} launches ({stacks} stacked), planned in {time.perf_counter() - tic:.1f}s")
        if self.dry_run:
            print(f"[sweep] dry run: manifest {sweep_dir / 'manifest.json'}; nothing launched")
            return []
        return self.launch(batch)

    def planned_jobs(self, arguments: list[str]) -> list:
        loader = self.hydra_context.config_loader
        try:
            named = plan.expand_named(self.grids, self.seeds, arguments, loader)
            return plan.plan_jobs([job for _, job in named],
                                  lambda overrides: loader.load_sweep_config(self.config, overrides),
                                  grids=[name for name, _ in named])
        except ConfigError as err:
            fail_config(err)

    def launch(self, batch: list[list[str]]) -> list:
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
