"""`make verify`: re-train the first epochs of published runs and compare them epoch by epoch
with the committed metrics.

    python -m experiments.verify [--data-root DIR] [--epochs K] [--jobs N] [--budget-s S] [--only EXP ...]

One run per experiment file whose data is here (embedded sets always; real ones when
`--data-root` holds their files; the rest are skipped and listed): among a sweep's finished
published runs, a CPU-recorded one (the suite's reference machine) whose k epochs are the
cheapest. It re-trains through the entry point users run (python -m experiments.run with the
run's own sweep overrides, train.epochs=k, into a temporary results folder, unstacked) and
compares every numeric column of metrics.csv (timings aside) on the epochs both evaluated.

Why a k-epoch run equals the first k epochs of the published one: every scheduler the suite
has (none, step, multistep with absolute milestones, plateau) depends on past epochs only;
early stopping only cuts a run short; with `train.eval_every=e` (evaluations also at the last
epoch) k is a multiple of e, so both runs evaluate (and recalibrate BatchNorm, and step a
plateau scheduler) at the same epochs. Stacked and single runs agree to ~1e-7 per epoch.

Tolerance, per value: accuracies (%) within 0.3 points (one test sample of digits' 359);
widths within 1 neuron; everything else (losses, lr, ratios) within 1e-4 + 1e-3 x |published|:
"ok". A run whose code changed the order of float operations since its record (a fused
gradient, another torch) drifts: within 1 point, 2 neurons, 1e-3 + 1e-2 x |published| it is
"ok (float drift)"; beyond, MISMATCH. Exit 1 on a mismatch or a failed run, 0 otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from experiments.verify_runs import (DRIFTED, Outcome, available, candidates, choose,
                                     compare_metrics, retrain)

ACC_TOL, WIDTH_TOL, RTOL, ATOL = 0.3, 1.0, 1e-3, 1e-4
DRIFT = {"acc": 1.0, "width": 2.0, "rtol": 1e-2, "atol": 1e-3}     # "ok (float drift)"


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m experiments.verify",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("BW_DATA_ROOT", "datasets"),
                        help="where real data sets are (default $BW_DATA_ROOT or datasets/)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to re-train per run (default 3)")
    parser.add_argument("--jobs", type=int, default=2, help="runs re-trained at once (default 2)")
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="fewer epochs for a run whose record says k epochs take longer (default 60)")
    parser.add_argument("--only", nargs="+", help="some experiments")
    parser.add_argument("--published", default="results/published", help="the records to check")
    return parser.parse_args(argv)


def plan(args) -> tuple[list, list[tuple[str, str]]]:
    """(chosen runs, [(experiment, why skipped)])."""
    chosen, skipped = [], []
    for experiment, runs in candidates(args.published, args.only):
        here = [r for r in runs if available(r.config, args.data_root)[0]]
        if not here:
            why = available(runs[0].config, args.data_root)[1] if runs else "no finished run"
            skipped.append((experiment, why))
            continue
        chosen.append(choose(here, args.epochs, args.budget_s))
    chosen.sort(key=lambda r: -r.seconds_per_epoch * r.k)      # longest first: the pool packs better
    return chosen, skipped


def tolerance(column: str, reference: float) -> float:
    if "acc" in column:
        return ACC_TOL
    if column.startswith("width"):
        return WIDTH_TOL
    return ATOL + RTOL * abs(reference)


def drift_tolerance(column: str, reference: float) -> float:
    if "acc" in column:
        return DRIFT["acc"]
    if column.startswith("width"):
        return DRIFT["width"]
    return DRIFT["atol"] + DRIFT["rtol"] * abs(reference)


def verify_one(run, args) -> Outcome:
    tic = time.perf_counter()
    print(f"[verify] {run.experiment}: {run.key} ({run.k} of {run.epochs} epochs) ...", flush=True)
    outcome = retrain(run, args.data_root)
    if outcome.error is None:
        compare_metrics(outcome, tolerance, drift_tolerance)
    outcome.seconds = time.perf_counter() - tic
    print(f"[verify] {run.experiment}: {outcome.verdict} ({outcome.seconds:.0f} s)", flush=True)
    return outcome


def print_table(outcomes: list[Outcome], skipped: list[tuple[str, str]]) -> None:
    header = (f"{'experiment':<20} {'run':<42} {'epochs':>7} {'largest difference (tolerance)':<44} "
              f"{'device rec/here':<16} {'code rec/here':<27} {'config':<7} result")
    print("\n" + header + "\n" + "-" * len(header))
    for o in outcomes:
        device = f"{o.run.device}/{o.device or '?'}" + (" =" if o.same_device else " !=")
        code = f"{o.run.code_version[:12]}/{(o.code_version or '?')[:12]}" + (" =" if o.same_code else " !=")
        print(f"{o.run.experiment:<20} {o.run.key:<42} {f'{o.run.k}/{o.run.epochs}':>7} "
              f"{o.largest_text():<44} {device:<16} {code:<27} {o.config_text():<7} {o.verdict}")
    for o in outcomes:
        if o.verdict != "ok":
            print(f"\n{o.run.experiment} {o.run.key}: {o.error or ''}")
            for line in o.epoch_lines():
                print("   " + line)
    print("\nnot sampled (known drift since the record, see DRIFTED in experiments/verify_runs.py):")
    for key, why in DRIFTED.items():
        print(f"  {key}: {why}")
    if skipped:
        print("\nskipped (data not here; --data-root DIR or make verify DATA_ROOT=DIR):")
        for experiment, why in skipped:
            print(f"  {experiment:<20} {why}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    chosen, skipped = plan(args)
    print(f"[verify] re-training {len(chosen)} published runs ({args.jobs} at a time); "
          f"{len(skipped)} experiments skipped", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda r: verify_one(r, args), chosen))
    print_table(outcomes, skipped)
    bad = [o for o in outcomes if not o.passed]
    drifted = sum(o.verdict == "ok (float drift)" for o in outcomes)
    print(f"\n[verify] {len(outcomes) - len(bad)}/{len(outcomes)} runs match their published metrics: "
          f"{len(outcomes) - len(bad) - drifted} within tolerance (acc {ACC_TOL} points, width {WIDTH_TOL}, "
          f"other {ATOL} + {RTOL} x |value|), {drifted} within float drift (acc {DRIFT['acc']}, width "
          f"{DRIFT['width']}, other {DRIFT['atol']} + {DRIFT['rtol']} x |value|); "
          f"{len(skipped)} skipped; {time.perf_counter() - start:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
