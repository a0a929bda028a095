"""A sweep's plan: every job's validated config and run key, computed once, by the sweeper, with
Hydra's own config loader (the config each job will get), and written down as a manifest.

Tables read manifests and run records only: they never compose configs again, so the key a
table looks for is the key the job wrote (one identity path).

    <results_dir>/runs/<experiment>/manifests/<profile>[-<tag>].json     all jobs of that table, merged
    <multirun dir>/manifest.json                                   the jobs this sweep launched

`tag` hashes the command-line overrides that change what a table holds (anything but seeds,
run control, data paths, logging): `seed=0,1` adds seeds to the same table, `train.epochs=5`
makes another one.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from data.paths import resolve
from experiments import identity, records
from experiments.schema import validate

NOT_TABLE_KEYS = ("seed", "experiment", "profile", "run.", "data.", "logger.", "hydra.", "hydra/")
# Models the stacked engine can train (docs/STACKING.md).
STACKABLE_MODELS = ("fcn", "dfa_fcn", "awnn_mlp")


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


def is_group_override(override: str) -> bool:
    """`model=fcn2` picks a config group option; `optimizer.lr=0.1` sets a value."""
    from data.paths import PROJECT_ROOT

    key = override.split("=", 1)[0].lstrip("+~")
    return "=" in override and (PROJECT_ROOT / "conf" / key).is_dir()


def plan_jobs(job_overrides: list[list[str]], compose: Callable[[list[str]], DictConfig],
              grids: list[str] | None = None) -> list[PlannedJob]:
    """Compose and validate every job, exactly as Hydra composes it: the config-group overrides
    select the defaults list (`compose`), then Hydra's own override application sets the value
    overrides (the last step of Hydra's composition). Compositions are shared by jobs with the
    same group choices; validation and identity by jobs differing only by `seed=` (unless some
    value interpolates the seed). `grids`: each job's grid name."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    composed: dict[tuple, tuple[DictConfig, dict]] = {}
    validated: dict[tuple, tuple] = {}
    jobs = []
    for overrides in job_overrides:
        seed = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("seed=")), None)
        rest = tuple(o for o in overrides if not o.startswith("seed="))
        if rest not in validated:
            groups = tuple(o for o in rest if is_group_override(o))
            if groups not in composed:           # the hydra node is large: drop it before copies
                full = compose(list(groups))
                choices = {k: v for k, v in full.hydra.runtime.choices.items()
                           if not k.startswith("hydra/") and v is not None}
                with open_dict(full):
                    del full["hydra"]
                seeded = "${seed" in OmegaConf.to_yaml(full, resolve=False).replace(" ", "")
                composed[groups] = (full, choices, seeded)
            full, choices, seeded = composed[groups]
            cfg, values = full.copy(), [o for o in rest if o not in groups]
            ConfigLoaderImpl._apply_overrides_to_config(parser.parse_overrides(values), cfg)
            uses_seed = seeded or any("${seed" in o.replace(" ", "") for o in values)
            typed = None if uses_seed else validate(cfg)
            shared = None if uses_seed else (identity.identity(typed), identity.meaningful(typed))
            validated[rest] = (cfg, typed, shared, choices)
        cfg, typed, shared, choices = validated[rest]
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
        jobs.append(PlannedJob(list(overrides), base, job_seed, dict(choices), key,
                               identity.runs_root(base) / key, ident, flat,
                               grid=grids[len(jobs)] if grids is not None else ""))
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"two jobs of the sweep share a run key (same meaningful config): {dup[:3]}")
    return jobs


# --------------------------------------------------------------------------- stacks
def stack_signature(cfg: DictConfig, ident: dict) -> str | None:
    """Jobs with the same signature can train as one stack; None: this job cannot be stacked."""
    if not cfg.run.stack or cfg.model.name not in STACKABLE_MODELS or cfg.regime.record_ratios:
        return None
    if cfg.optimizer.scheduler.name == "plateau":   # a plateau schedule is per member
        return None
    if cfg.model.get("feedback_transform", "fixed") != "fixed":   # StackedDFANet keeps B fixed
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
    records.write_json(path, {"members": [
        {"key": j.key, "overrides": j.overrides, "choices": j.choices,
         "config": {**OmegaConf.to_container(j.base, resolve=True), "seed": j.seed}} for j in group]})


def read_stack_file(path: str | Path) -> list[dict]:
    return records.read_json(Path(path))["members"]


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


def finished(directory: Path) -> bool:
    summary = records.read_summary(directory)
    return bool(summary and summary.get("status") in ("finished", "diverged"))


# --------------------------------------------------------------------------- manifests
def table_tag(cli_overrides: list[str]) -> str:
    kept = sorted(o for o in cli_overrides if not o.lstrip("+~").startswith(NOT_TABLE_KEYS))
    return hashlib.sha1(json.dumps(kept).encode()).hexdigest()[:8] if kept else ""


def manifest_path(results_dir: str, experiment: str, profile: str, cli_overrides: list[str]) -> Path:
    tag = table_tag(cli_overrides)
    name = f"{profile}-{tag}" if tag else profile
    return resolve(results_dir) / "runs" / experiment / "manifests" / f"{name}.json"


ABSENT = "<absent>"   # a key of the manifest's base that this job's config does not have


def delta_from(base: dict, flat: dict) -> dict:
    delta = {k: v for k, v in flat.items() if k not in base or base[k] != v}
    delta.update({k: ABSENT for k in base if k not in flat})
    return delta


def job_config(base: dict, delta: dict) -> dict:
    """A manifest entry's flattened meaningful config."""
    return {k: v for k, v in {**base, **delta}.items() if v != ABSENT}


def manifest(jobs: list[PlannedJob], experiment: str, profile: str, table, cli_overrides: list[str],
             results_dir: str) -> dict:
    """Jobs as (key, directory, overrides, choices, config delta against a shared base)."""
    base = jobs[0].flat if jobs else {}
    root = resolve(results_dir)
    entries = [{"key": j.key, "grid": j.grid, "dir": str(j.directory.relative_to(root)),
                "overrides": j.overrides, "choices": j.choices, "delta": delta_from(base, j.flat)} for j in jobs]
    return {"experiment": experiment, "profile": profile, "overrides": list(cli_overrides),
            "commands": [list(cli_overrides)], "table": _plain(table), "base": base, "jobs": entries,
            "updated": records.now()}


def merge_manifest(path: Path, new: dict) -> dict:
    """Add `new`'s jobs to the manifest at `path` (same table), under a lock; returns the merge.
    A grid the new sweep ran replaces that grid's old jobs (a changed grid, e.g. more epochs,
    leaves no stale runs in the table) except other seeds of an unchanged grid point (a sweep of
    seeds 3-9 adds to seeds 0-2); other grids' jobs stay; the newest table spec wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            old = records.read_json(path)
            swept = {e.get("grid", "") for e in new["jobs"]}
            points = {_point(job_config(new["base"], e["delta"])) for e in new["jobs"]}
            configs = {e["key"]: (e, flat) for e in old["jobs"]
                       for flat in [job_config(old["base"], e["delta"])]
                       if e.get("grid", "") not in swept or _point(flat) in points}
            configs.update({e["key"]: (e, job_config(new["base"], e["delta"])) for e in new["jobs"]})
            commands = [c for c in old.get("commands", [old["overrides"]])   # every sweep that fed
                        if not _superseded(c, new["overrides"], swept)]          # the table and still does
            new = {**new, "jobs": [{**e, "delta": delta_from(new["base"], flat)}
                                   for e, flat in configs.values()],
                   "commands": commands + [c for c in new["commands"] if c not in commands]}
        records.write_json(path, new)
    return new


def replace_table_spec(path: Path, table) -> None:
    """Replace the table spec stored in the manifest at `path`, under its lock."""
    if not path.exists():
        raise FileNotFoundError(f"no manifest {path}: run the sweep first")
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        body = records.read_json(path)
        body["table"] = _plain(table)
        records.write_json(path, body)


def _plain(table):
    """A table spec as stored in a manifest: plain, resolved containers."""
    return OmegaConf.to_container(table, resolve=True) if OmegaConf.is_config(table) else table


def _point(flat: dict) -> str:
    """A job's grid point: its meaningful config without the seed."""
    return json.dumps({k: v for k, v in flat.items() if k != "seed"}, sort_keys=True, default=str)


def _swept_grids(command: list[str]) -> set[str] | None:
    """The grids a sweep command named with `hydra.sweeper.only=[...]`; None: every grid."""
    for o in command:
        if o.startswith("hydra.sweeper.only="):
            return {g.strip() for g in o.split("=", 1)[1].strip("[]").split(",") if g.strip()}
    return None


def _superseded(old: list[str], new: list[str], swept: set[str]) -> bool:
    """Whether every grid an older sweep command ran was swept again with the same seeds."""
    def seeds(command):
        return [o for o in command if o.startswith("seed=")]

    grids = _swept_grids(old)
    return seeds(old) == seeds(new) and (_swept_grids(new) is None if grids is None else grids <= swept)


def read_manifest(path: Path) -> dict:
    if not path.exists():
        others = sorted(p.name for p in path.parent.glob("*.json")) if path.parent.exists() else []
        raise FileNotFoundError(f"no manifest {path}: run the sweep first "
                                f"(python -m experiments.run -m experiment=...); "
                                f"manifests there: {others or 'none'}")
    return records.read_json(path)


# --------------------------------------------------------------------------- without a sweep
def plan_experiment(experiment: str, overrides: list[str]) -> tuple[DictConfig, list[PlannedJob]]:
    """The plan the grid sweeper would make for `-m experiment=<name> <overrides>`, composed
    with Hydra's compose API (tests, dry runs). Returns (the experiment's config, jobs)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from data.paths import PROJECT_ROOT
    from hydra_plugins.grid_sweeper.grid_sweeper import expand_named, select

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            from hydra.core.override_parser.overrides_parser import OverridesParser

            parser = OverridesParser.create()
            fixed = [o for o in overrides if not parser.parse_override(o).is_sweep_override()]
            base = compose("config", overrides=[f"experiment={experiment}", *fixed],
                           return_hydra_config=True)
            sweeper = base.hydra.sweeper
            grids = OmegaConf.to_container(sweeper.grids, resolve=True) if "grids" in sweeper else []
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
