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
The same expansion (`expand`) tells the table builder which runs a table expects.
"""


import logging
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


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="grid_sweeper")


def select(grids, only=None) -> list:
    """The grids to run: all of a list; of a mapping, those named in `only` (all when None)."""
    if isinstance(grids, dict):
        unknown = sorted(set(only or []) - set(grids))
        if unknown:
            raise ValueError(f"hydra.sweeper.only={unknown} names no grid; grids: {list(grids)}")
        return [g for name, g in grids.items() if only is None or name in only]
    if only is not None:
        raise ValueError("hydra.sweeper.only needs named grids (a mapping) in the experiment file")
    return list(grids)


def expand(grids, seeds: int, arguments: list[str], config_loader=None) -> list[list[str]]:
    """Every job's override list: for each grid, the cartesian product of its values, the
    seeds and the command-line arguments (which replace a grid's own value for the same key)."""
    parser = OverridesParser.create(config_loader=config_loader)
    cli = parser.parse_overrides(list(arguments))
    cli_keys = {o.get_key_element() for o in cli}
    jobs: list[list[str]] = []
    seen = set()
    for grid in grids or [{}]:
        params = [f"{k}={v}" for k, v in dict(grid).items() if k not in cli_keys]
        if "seed" not in cli_keys and "seed" not in dict(grid):
            params.append(f"seed=range(0,{int(seeds)})")
        overrides = parser.parse_overrides(params) + cli
        for job in BasicSweeper.split_arguments(overrides, None)[0]:
            if tuple(job) not in seen:
                seen.add(tuple(job))
                jobs.append(job)
    return jobs


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, seeds: int = 1, grids=None, only=None):
        super().__init__(max_batch_size=max_batch_size, params=None)
        self.seeds = seeds
        if grids is not None and not isinstance(grids, (dict, list)):
            grids = OmegaConf.to_container(grids, resolve=True)
        self.grids = select(grids or [], list(only) if only is not None else None)

    def sweep(self, arguments: list[str]) -> Any:
        jobs = expand(self.grids, self.seeds, arguments, self.hydra_context.config_loader)
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"grid sweeper: {len(jobs)} jobs in {len(self.overrides)} batch(es)")
        returns, start = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            tic = time.perf_counter()
            self.validate_batch_is_legal(batch)
            log.debug(f"validated {len(batch)} jobs in {time.perf_counter() - tic:.2f}s")
            results = self.launcher.launch(batch, initial_job_idx=start)
            for r in results:
                _ = r.return_value  # re-raises a job's exception (the runner records failures itself)
            start += len(batch)
            returns.append(results)
        return returns
