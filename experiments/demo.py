"""`make demo`: train a small slice of both papers on embedded data, then set each cell beside the
published record of the same configuration and beside the paper.

    python -m experiments.demo [--jobs N] [--no-train] [--profile P] [--only EXP ...] [--results-dir DIR]

Two sweeps through the same entry point users run (experiments.run -m), into your own records
(results/local, never the published ones): the NB regimes on scikit-learn's digits
(experiment demo_digits) and AWNN Table 1's synthetic rows (DoubleMoon, Spiral, SpiralHard) at
the quick profile, stacked over seeds, two processes with one torch thread each. Every run has a
published twin with the same key under results/published, so "published" below is the same
configuration and the same seeds trained by us on a recorded machine.

Judgement per cell: yours is "within the published spread" when |yours - published mean| is at
most 2 published std plus a floor (0.3 points of accuracy, one test sample of digits' 359;
1% of a loss) that absorbs single-sample flips: the same seeds on another machine or code version
follow the published curves to ~1e-7 for the first epochs and then drift apart (float order). Exit 0 whatever the judgement; 1 when a sweep or a run fails.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from data.paths import LOCAL, PUBLISHED
from experiments import plan, records

SYNTHETIC = ["double_moon_fixed", "double_moon_awnn", "spiral_fixed", "spiral_awnn",
             "spiral_hard_fixed", "spiral_hard_awnn"]
# (experiment, the grids it runs or None for all); both at the quick profile
SWEEPS = [("demo_digits", None), ("awnn_table1", SYNTHETIC)]
PROFILE = "quick"
ACC_FLOOR = 0.3          # accuracy points: one test sample of digits (359 images) is 0.28


@dataclass
class Comparison:
    experiment: str
    row: str
    col: str
    metric: str
    yours: tuple[float, float, int]          # mean, std, n
    published: tuple[float, float, int]
    paper: str | None
    config: str


def sweep_overrides(only: list[str] | None, profile: str = PROFILE) -> list[str]:
    """The command-line overrides of a demo sweep (they also name its table's manifest)."""
    overrides = [f"profile={profile}", "run.stack=true"]
    if only:
        overrides.append(f"hydra.sweeper.only=[{','.join(only)}]")
    return overrides


def run_sweep(experiment: str, only: list[str] | None, args) -> int:
    command = [sys.executable, "-m", "experiments.run", "-m", f"experiment={experiment}",
               *sweep_overrides(only, args.profile), "run.threads=1", f"run.results_dir={args.results_dir}"]
    jobs = args.jobs
    if jobs > 1:
        command += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, check=False).returncode


def _tables():
    from experiments.tables import build_cells, load_jobs
    from experiments.tables.render import layout, paper_value

    return build_cells, load_jobs, layout, paper_value


def _label(spec, which: str, key: tuple) -> str:
    text = "/".join(key)
    return str((spec.get(f"{which}_labels") or {}).get(text, text))


def _stats(cell) -> tuple[float, float, int]:
    if cell is None or not cell.n:
        return math.nan, math.nan, 0
    mean, std = cell.mean_std()
    return mean, std, cell.n


def compare(experiment: str, only: list[str] | None, profile: str = PROFILE,
            results_dir: str = LOCAL) -> tuple[list[Comparison], list[str]]:
    """Each cell of the demo sweep's table from your records and from the published records of
    the same run keys; also the keys of your runs that did not finish."""
    build_cells, load_jobs, layout, paper_value = _tables()
    path = plan.manifest_path(results_dir, experiment, profile, sweep_overrides(only, profile))
    manifest = plan.read_manifest(path)
    if only:
        manifest = {**manifest, "jobs": [j for j in manifest["jobs"] if j.get("grid") in only]}
    spec = {**manifest["table"], "experiment": experiment}
    yours_jobs = load_jobs(manifest, results_dir)
    failed = [j.key for j in yours_jobs if j.status not in records.DONE_STATUSES]
    yours, published = build_cells(spec, yours_jobs), build_cells(spec, load_jobs(manifest, PUBLISHED))
    rows, cols = layout(spec, yours)
    out = []
    for r in rows:
        for c in cols:
            cell = yours[r].get(c)
            if cell is None:
                continue
            metric = (spec.get("row_metric") or {}).get("/".join(r), spec["metric"])
            out.append(Comparison(experiment, _label(spec, "row", r), _label(spec, "col", c), metric,
                                  _stats(cell), _stats(published.get(r, {}).get(c)),
                                  paper_value(spec, r, c), cell.config))
    return out, failed


def within_spread(item: Comparison) -> bool | None:
    mean, std, n = item.published
    if not n or math.isnan(item.yours[0]):
        return None
    floor = ACC_FLOOR if item.metric.endswith("acc") else 0.01 * abs(mean)
    return abs(item.yours[0] - mean) <= 2 * (0.0 if math.isnan(std) else std) + floor + 1e-9


def _paper_number(text: str | None) -> str:
    return "n/a" if not text else str(text).split(",")[0].strip()


def line(item: Comparison) -> str:
    mean, std, n = item.published
    yours = f"{item.yours[0]:.2f}" if item.yours[2] else "no result"
    published = "none" if not n else f"{mean:.2f} ± {0.0 if math.isnan(std) else std:.2f} (n={n})"
    verdict = within_spread(item)
    judgement = {True: "within the published spread", False: "OUTSIDE the published spread",
                 None: "no published twin to compare with"}[verdict]
    if verdict is False:
        judgement += f" (differs by {item.yours[0] - mean:+.2f})"
    return (f"  {item.row:<11} {item.col:<6} yours {yours:>6} | published {published:<22} | "
            f"paper {_paper_number(item.paper):<11} -> {judgement}")


def print_comparisons(items: list[Comparison], results_dir: str = LOCAL) -> None:
    experiment = None
    for item in items:
        if item.experiment != experiment:
            experiment = item.experiment
            print(f"\n{experiment} ({item.metric}; your runs: {results_dir}/runs/{experiment}, "
                  f"published: {PUBLISHED}/runs/{experiment}, same run keys"
                  + ("; paper n/a: not a data set of the papers" if not item.paper else "") + "):")
        print(line(item))
    inside = sum(bool(within_spread(i)) for i in items)
    print(f"\n{inside}/{len(items)} cells within the published spread "
          f"(|yours - mean| <= 2 std + {ACC_FLOOR} points). Your tables: "
          f"{results_dir}/tables/<experiment>.md; all results in one page: make report")


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="processes per sweep (default 2)")
    parser.add_argument("--no-train", action="store_true", help="only compare the records you have")
    parser.add_argument("--profile", default=PROFILE, help=f"budget profile (default {PROFILE})")
    parser.add_argument("--only", nargs="+", choices=[e for e, _ in SWEEPS], help="some of the sweeps")
    parser.add_argument("--results-dir", default=LOCAL, help=f"where your runs go (default {LOCAL})")
    args = parser.parse_args(argv)
    args.sweeps = [(e, only) for e, only in SWEEPS if not args.only or e in args.only]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    for i, (experiment, only) in enumerate(args.sweeps, 1):
        if args.no_train:
            break
        print(f"[demo] {i}/{len(args.sweeps)}: {experiment} ({args.profile}) -> "
              f"{args.results_dir}/runs/{experiment}", flush=True)
        if run_sweep(experiment, only, args) != 0:
            print(f"[demo] the {experiment} sweep failed (see above)", file=sys.stderr)
            return 1
    items, failed = [], []
    for experiment, only in args.sweeps:
        try:
            cells, bad = compare(experiment, only, args.profile, args.results_dir)
        except FileNotFoundError as err:
            print(f"[demo] no records of {experiment} to compare: {err}", file=sys.stderr)
            return 1
        items += cells
        failed += bad
    print_comparisons(items, args.results_dir)
    print(f"[demo] {time.perf_counter() - start:.0f} s")
    if failed:
        print(f"[demo] {len(failed)} runs did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
