"""Which jobs a sweep runs: every job's override list (the grids crossed with the seeds), its
validated config and run key, and whether a finished run with that key exists already."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from data.paths import PROJECT_ROOT
from experiments import identity, records
from experiments.schema import validate


@dataclass
class PlannedJob:
    overrides: list[str]
    base: DictConfig                 # validated, resolved; shared by jobs differing only by seed
    seed: int
    choices: dict
    key: str
    directory: Path
    ident: dict                      # what the key hashes (identity.identity)
    flat: dict                       # the flattened meaningful config (identity.meaningful)
    grid: str = ""                   # the experiment grid it comes from (manifests replace by grid)
    _cfg: DictConfig | None = None

    @property
    def cfg(self) -> DictConfig:
        """This job's own config (`base` with its seed), copied on first use: a sweep of
        thousands of jobs plans without a config copy per seed."""
        if self._cfg is None:
            if self.base.seed == self.seed:
                self._cfg = self.base
            else:
                self._cfg = self.base.copy()
                self._cfg.seed = self.seed
        return self._cfg


# --------------------------------------------------------------------------- grids -> overrides
def select(grids, only=None) -> dict:
    """The grids to run, by name: all of a list (named by position); of a mapping, those named
    in `only` (all when None). Only the chosen grids are resolved: a grid left out never needs
    what its interpolations read (e.g. another sweep's learned widths)."""
    def plain(grid):
        return OmegaConf.to_container(grid, resolve=True) if OmegaConf.is_config(grid) else grid

    if isinstance(grids, dict) or OmegaConf.is_dict(grids):
        unknown = sorted(set(only or []) - set(grids))
        if unknown:
            raise ValueError(f"hydra.sweeper.only={unknown} names no grid; grids: {list(grids)}")
        return {str(name): plain(grids[name]) for name in grids if only is None or name in only}
    if only is not None:
        raise ValueError("hydra.sweeper.only needs named grids (a mapping) in the experiment file")
    return {str(i): plain(g) for i, g in enumerate(grids)}


def expand_named(grids: dict, seeds: int, arguments: list[str], config_loader=None) -> list[tuple[str, list[str]]]:
    """Every job's (grid name, override list): for each grid, the cartesian product of its
    values, the seeds and the command-line arguments (which replace a grid's own value for the
    same key). A job two grids share belongs to the first."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

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


# --------------------------------------------------------------------------- overrides -> jobs
def is_group_override(override: str) -> bool:
    """`model=fcn2` picks a config group option; `optimizer.lr=0.1` sets a value."""
    key = override.split("=", 1)[0].lstrip("+~")
    return "=" in override and (PROJECT_ROOT / "conf" / key).is_dir()


def uses_seed(text: str) -> bool:
    return "${seed" in text.replace(" ", "")


class JobPlanner:
    """Composes and validates jobs exactly as Hydra composes them: the config-group overrides
    select the defaults list (`compose`), then Hydra's own override application sets the value
    overrides (the last step of Hydra's composition). Compositions are shared by jobs with the
    same group choices; validation and identity by jobs differing only by `seed=` (unless some
    value interpolates the seed)."""

    def __init__(self, compose: Callable[[list[str]], DictConfig]):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.compose, self.parser = compose, OverridesParser.create()
        self.composed: dict[tuple, tuple[DictConfig, dict, bool]] = {}
        self.validated: dict[tuple, tuple] = {}

    def composition(self, groups: tuple) -> tuple[DictConfig, dict, bool]:
        """(config without its hydra node, group choices, whether some value uses the seed)."""
        if groups not in self.composed:          # the hydra node is large: drop it before copies
            full = self.compose(list(groups))
            choices = {k: v for k, v in full.hydra.runtime.choices.items()
                       if not k.startswith("hydra/") and v is not None}
            with open_dict(full):
                del full["hydra"]
            self.composed[groups] = (full, choices, uses_seed(OmegaConf.to_yaml(full, resolve=False)))
        return self.composed[groups]

    def seedless(self, rest: tuple) -> tuple:
        """(config, validated config or None when the seed reaches other values, its
        (identity, meaningful config) or None, choices) of the overrides without `seed=`."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        if rest not in self.validated:
            groups = tuple(o for o in rest if is_group_override(o))
            full, choices, seeded = self.composition(groups)
            cfg, values = full.copy(), [o for o in rest if o not in groups]
            ConfigLoaderImpl._apply_overrides_to_config(self.parser.parse_overrides(values), cfg)
            per_seed = seeded or any(uses_seed(o) for o in values)
            typed = None if per_seed else validate(cfg)
            shared = None if per_seed else (identity.identity(typed), identity.meaningful(typed))
            self.validated[rest] = (cfg, typed, shared, choices)
        return self.validated[rest]

    def job(self, overrides: list[str], grid: str) -> PlannedJob:
        seed = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("seed=")), None)
        cfg, typed, shared, choices = self.seedless(tuple(o for o in overrides if not o.startswith("seed=")))
        if typed is None:                       # the seed reaches other values: validate each
            job_cfg = cfg.copy()
            if seed is not None:
                job_cfg.seed = seed
            base = validate(job_cfg)
            job_seed = base.seed
            ident, flat = identity.identity(base), identity.meaningful(base)
        else:
            base, job_seed = typed, typed.seed if seed is None else seed
            ident, flat = identity.with_seed(shared[0], job_seed), {**shared[1], "seed": job_seed}
        key = identity.key_of(base, ident, seed=job_seed)
        return PlannedJob(list(overrides), base, job_seed, dict(choices), key,
                          identity.runs_root(base) / key, ident, flat, grid=grid)


def plan_jobs(job_overrides: list[list[str]], compose: Callable[[list[str]], DictConfig],
              grids: list[str] | None = None) -> list[PlannedJob]:
    """Every job's validated config and key (JobPlanner); `grids`: each job's grid name."""
    planner = JobPlanner(compose)
    jobs = [planner.job(overrides, grids[i] if grids is not None else "")
            for i, overrides in enumerate(job_overrides)]
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"two jobs of the sweep share a run key (same meaningful config): {dup[:3]}")
    return jobs


# --------------------------------------------------------------------------- done already
def finished(directory: Path) -> bool:
    return records.is_done(records.read_summary(directory))


def reuse_finished(jobs: list[PlannedJob]) -> list[PlannedJob]:
    """Point jobs at a finished run with the same key in another experiment's folder (identity
    leaves the experiment out: nb_fb_start's no-FB columns are nb_table1's plain/l1/l2 runs).
    Returns the jobs reused; they are not launched."""
    reused = []
    for job in jobs:
        if job.base.run.force or finished(job.directory):
            continue
        for other in sorted(job.directory.parent.parent.glob(f"*/{job.key}")):
            if other != job.directory and finished(other):
                job.directory = other
                reused.append(job)
                break
    return reused


# --------------------------------------------------------------------------- without a sweep
def plan_experiment(experiment: str, overrides: list[str]) -> tuple[DictConfig, list[PlannedJob]]:
    """The plan the grid sweeper would make for `-m experiment=<name> <overrides>`, composed
    with Hydra's compose API (tests, dry runs). Returns (the experiment's config, jobs)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            parser = OverridesParser.create()
            fixed = [o for o in overrides if not parser.parse_override(o).is_sweep_override()]
            base = compose("config", overrides=[f"experiment={experiment}", *fixed],
                           return_hydra_config=True)
            sweeper = base.hydra.sweeper
            grids = sweeper.grids if "grids" in sweeper else []
            only = sweeper.get("only")
            grids = select(grids, list(only) if only is not None else None)
            task = [f"experiment={experiment}", *(o for o in overrides if not o.startswith("hydra."))]
            hydra_overrides = [o for o in overrides if o.startswith("hydra.")]
            named = expand_named(grids, sweeper.get("seeds", 1), task)
            jobs = plan_jobs([job for _, job in named],
                             lambda o: compose("config", overrides=[*o, *hydra_overrides],
                                               return_hydra_config=True),
                             grids=[name for name, _ in named])
    finally:
        GlobalHydra.instance().clear()
    return base, jobs
