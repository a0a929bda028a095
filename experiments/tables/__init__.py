"""Paper-shaped tables and figures, built from a sweep's manifest and its run records only.

    python -m experiments.tables <experiment> [profile=quick] [--local | run.results_dir=DIR] [overrides] [--refresh-spec]
    python -m experiments.tables --all [--local]          every table with a manifest (make tables-all)

Reads the published records (results/published) by default; `--local` reads your own runs
(results/local), `run.results_dir=DIR` any other folder. The table is written beside its records.

--refresh-spec first replaces the table spec stored in the manifest (title, notes, labels, rows,
paper numbers) by the experiment file's current `table:` node; the runs the table expects stay.

The overrides name the table the way the sweep's command line did (experiments/plan.py): the
manifest lists every run the table expects, so a missing, failed, running or stale run is shown
in its cell, never dropped. Written to <results_dir>/tables/<experiment>.md (quick profile) or
<experiment>.<profile>[-<tag>].md, with a .csv beside it and the curves in <results_dir>/figures/.

Table spec (the `table:` node of an experiment file):
    title, metric (e.g. test_acc), rows / cols (lists of group names or dotted config keys),
    row_labels / col_labels, row_order / col_order, paper: {row: {col: number}},
    select_by (validation metric used to pick one configuration per cell when a cell holds
    several, e.g. an lr grid; default val_<metric>), report: final | best_val,
    extra: [metric, ...] (e.g. width/total, shown as mean ± std), claim: {col, baseline},
    plots: [{y: test_acc}, {y: "ratio/*", seeds: 1}], post: module.function (extra analysis)
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from data.paths import LOCAL, PUBLISHED, resolve
from experiments import plan, records
from experiments.loggers import log_table
from experiments.tables.cells import Cell, build_cells
from experiments.tables.figures import plot_curves
from experiments.tables.jobs import Job, load_jobs
from experiments.tables.render import render

__all__ = ["BuildTablesCallback", "Cell", "Job", "build", "build_cells", "load_jobs"]


# Where this machine keeps things and how it logs: left out of a table's regenerate line, which
# then reads the same on every clone (the reader adds data.root=... for their own data).
MACHINE_KEYS = ("data.root", "run.results_dir", "run.threads", "run.progress")


def portable(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in MACHINE_KEYS]


def output_stem(experiment: str, profile: str, overrides: list[str]) -> str:
    tag = plan.table_tag(overrides)
    if profile == "quick" and not tag:
        return experiment
    return f"{experiment}.{profile}" + (f"-{tag}" if tag else "")


def refresh_spec(experiment: str, overrides: list[str]) -> None:
    """Store the experiment file's current table spec in the sweep's manifest (edited notes or
    labels reach the table without a re-sweep)."""
    overrides = [o for o in overrides if not o.startswith("experiment=")]
    base, _ = plan.plan_experiment(experiment, overrides)
    path = plan.manifest_path(plan.override_value(overrides, "run.results_dir", PUBLISHED), experiment,
                              plan.override_value(overrides, "profile", "quick"), overrides)
    plan.replace_table_spec(path, base.table)


def build(experiment: str, overrides: list[str] | None = None) -> Path | None:
    """Rebuild the table of `experiment` for the sweep named by `overrides`."""
    overrides = [o for o in (overrides or []) if not o.startswith("experiment=")]
    profile = plan.override_value(overrides, "profile", "quick")
    results_dir = plan.override_value(overrides, "run.results_dir", PUBLISHED)
    manifest = plan.read_manifest(plan.manifest_path(results_dir, experiment, profile, overrides))
    spec = manifest.get("table")
    if spec is None:
        print(f"[tables] experiment {experiment} has no table spec")
        return None
    spec = {**spec, "experiment": experiment}
    jobs = load_jobs(manifest, results_dir)
    table = build_cells(spec, jobs)
    commands = []
    for sweep in manifest.get("commands", [manifest["overrides"]]):   # one per sweep
        line = " ".join(["python -m experiments.run -m", f"experiment={experiment}", *portable(sweep)])
        commands.append(line.replace(f"experiment={experiment} experiment={experiment}", f"experiment={experiment}"))
    command = "`; `".join(commands)
    markdown, frame = render(spec, table, profile, jobs, command)
    out = resolve(results_dir)
    stem = output_stem(experiment, profile, overrides)
    md_path = out / "tables" / f"{stem}.md"
    records.atomic_write_text(md_path, markdown)
    records.atomic_write_text(out / "tables" / f"{stem}.csv", frame.to_csv(index=False))
    if any(j.history is not None for j in jobs):
        plot_curves(spec, table, out / "figures" / f"{stem}.png")
    if spec.get("post"):
        module, _, func = spec["post"].rpartition(".")
        getattr(importlib.import_module(module), func)(spec, jobs, out, stem)
    done = sum(j.status == "finished" for j in jobs)
    print(f"[tables] {md_path} ({done}/{len(jobs)} runs finished)")
    return md_path


def build_all(results_dir: str = PUBLISHED) -> list[Path]:
    """Every table whose manifest is under `results_dir` (`--all`: `make tables-all`)."""
    built = []
    for path in sorted(resolve(results_dir).glob("runs/*/manifests/*.json")):
        manifest = records.read_json(path)
        overrides = [o for o in manifest["overrides"] if not o.startswith("run.results_dir=")]
        out = build(manifest["experiment"], [*overrides, f"run.results_dir={results_dir}"])
        if out is not None:
            built.append(out)
    return built


class BuildTablesCallback(Callback):
    """After a multirun, rebuild the experiment's table (Hydra callback, conf/config.yaml)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.get("table") is None or config.experiment == "adhoc" or config.hydra.sweeper.get("dry_run"):
            return
        overrides = list(config.hydra.overrides.task)
        if not any(o.startswith("run.results_dir=") for o in overrides):
            overrides.append(f"run.results_dir={config.run.results_dir}")
        try:
            log_table(config, build(config.experiment, overrides))
        except Exception as err:  # a table problem must not hide the sweep's own results
            print(f"[tables] could not build {config.experiment}: {type(err).__name__}: {err}",
                  file=sys.stderr)
            raise SystemExit(1) from err


def main(argv: list[str]) -> None:
    if argv[:1] == ["--all"] or argv[:2] in (["--all", "--local"], ["--local", "--all"]):
        build_all(LOCAL if "--local" in argv else PUBLISHED)
        return
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        raise SystemExit(2)
    refresh, rest = "--refresh-spec" in argv, [a for a in argv[1:] if a not in ("--refresh-spec", "--local")]
    if "--local" in argv:
        rest.append(f"run.results_dir={LOCAL}")
    try:
        if refresh:
            refresh_spec(argv[0], rest)
        build(argv[0], rest)
    except FileNotFoundError as err:
        print(f"[tables] {err}", file=sys.stderr)
        raise SystemExit(2) from err
