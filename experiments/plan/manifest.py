"""Which manifest: the jobs of a table, written by the sweep that planned them and merged into
the table's manifest, which tables read (they never compose configs again).

`tag` hashes the command-line overrides that change what a table holds (anything but seeds,
run control, data paths, logging): `seed=0,1` adds seeds to the same table, `train.epochs=5`
makes another one.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from data.paths import resolve
from experiments import identity, records
from experiments.plan.jobs import PlannedJob, finished

NOT_TABLE_KEYS = ("seed", "experiment", "profile", "run.", "data.", "logger.", "hydra.", "hydra/")


def override_value(overrides: list[str], key: str, default: str) -> str:
    """The value a command line gives `key` (`key=value` or `+key=value`), else `default`."""
    return next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key), default)


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
            "commands": [list(cli_overrides)], "table": plain_table(table), "base": base, "jobs": entries,
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
            points = {grid_point(job_config(new["base"], e["delta"])) for e in new["jobs"]}
            configs = {e["key"]: (e, flat) for e in old["jobs"]
                       for flat in [job_config(old["base"], e["delta"])]
                       if e.get("grid", "") not in swept or grid_point(flat) in points}
            configs.update({e["key"]: (e, job_config(new["base"], e["delta"])) for e in new["jobs"]})
            commands = [c for c in old.get("commands", [old["overrides"]])   # every sweep that fed
                        if not superseded(c, new["overrides"], swept)]          # the table and still does
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
        body["table"] = plain_table(table)
        records.write_json(path, body)


def plain_table(table):
    """A table spec as stored in a manifest: plain, resolved containers."""
    return OmegaConf.to_container(table, resolve=True) if OmegaConf.is_config(table) else table


def grid_point(flat: dict) -> str:
    """A job's grid point: its meaningful config without the seed, as a difference from the
    schema defaults (as the run key is): a record planned before a field existed is at the same
    point as one planned after, at the field's default."""
    try:
        defaults = identity.defaults_for(flat["dataset.name"], flat["model.name"])
    except (KeyError, ValueError):
        defaults = {}
    return json.dumps({k: v for k, v in flat.items() if k != "seed" and (k not in defaults or defaults[k] != v)},
                      sort_keys=True, default=str)


def swept_grids(command: list[str]) -> set[str] | None:
    """The grids a sweep command named with `hydra.sweeper.only=[...]`; None: every grid."""
    for o in command:
        if o.startswith("hydra.sweeper.only="):
            return {g.strip() for g in o.split("=", 1)[1].strip("[]").split(",") if g.strip()}
    return None


def superseded(old: list[str], new: list[str], swept: set[str]) -> bool:
    """Whether every grid an older sweep command ran was swept again with the same seeds."""
    def seeds(command):
        return [o for o in command if o.startswith("seed=")]

    grids = swept_grids(old)
    return seeds(old) == seeds(new) and (swept_grids(new) is None if grids is None else grids <= swept)


def read_manifest(path: Path) -> dict:
    if not path.exists():
        others = sorted(p.name for p in path.parent.glob("*.json")) if path.parent.exists() else []
        raise FileNotFoundError(f"no manifest {path}: run the sweep first "
                                f"(python -m experiments.run -m experiment=...); "
                                f"manifests there: {others or 'none'}")
    return records.read_json(path)



def write_manifests(jobs: list[PlannedJob], command: list[str], arguments: list[str], table,
                    sweep_dir: Path) -> int:
    """This sweep's manifest in the multirun directory, merged into the table's manifest
    (`command`: the sweep's arguments as a table names them). Returns how many jobs are not
    finished yet."""
    if not jobs:
        return 0
    first = jobs[0].base
    body = manifest(jobs, first.experiment, first.profile.name, table, command, first.run.results_dir)
    records.write_json(sweep_dir / "manifest.json", body)
    merge_manifest(manifest_path(first.run.results_dir, first.experiment, first.profile.name, arguments), body)
    return sum(not finished(job.directory) for job in jobs)
