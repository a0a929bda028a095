"""Table builder on fabricated run directories, read through the sweep's manifest: missing,
diverged, running and stale runs are shown; the paper convention (max over epochs of the
seed-mean curve) and the final-epoch mean are both right; environments and code versions are
listed, never collapsed into one."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from experiments import plan, records
from experiments import stats
from experiments.tables import build

OVERRIDES = ["profile=quick"]


def planned(results, experiment="demo_digits", extra=()):
    overrides = [*OVERRIDES, f"run.results_dir={results}", *extra]
    base, jobs = plan.plan_experiment(experiment, overrides)
    body = plan.manifest(jobs, experiment, "quick", base.table, [f"experiment={experiment}", *overrides],
                         str(results))
    plan.merge_manifest(plan.manifest_path(str(results), experiment, "quick", overrides), body)
    return overrides, jobs


def fabricate(results, skip_missing=("nb_l2", 2), diverge=("l1", 1), code=lambda job: "abc"):
    overrides, jobs = planned(results)
    for job in jobs:
        regime, seed = job.choices["regime"], job.cfg.seed
        if (regime, seed) == skip_missing:
            continue
        base = {"plain": 80.0, "l1": 82.0, "nb_l1": 90.0, "nb_l2": 85.0}[regime] + seed
        curve = np.array([base - 10, base + 1, base])  # peak at epoch 2, final = base
        status = "diverged" if (regime, seed) == diverge else "finished"
        history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.4], "test_acc": curve,
                                "val_acc": curve - 1})
        job.directory.mkdir(parents=True)
        history.to_csv(job.directory / "metrics.csv", index=False)
        records.write_json(job.directory / "summary.json", {"status": status, "key": job.key})
        records.write_json(job.directory / "environment.json",
                           {"processor": "x86_64", "torch_threads": 1, "torch": "2.x",
                            "code_version": code(job)})
    return overrides, jobs


def test_table_shows_missing_and_diverged_and_both_conventions(results):
    overrides, _ = fabricate(results)
    path = build("demo_digits", overrides)
    text = path.read_text()
    frame = pd.read_csv(results / "tables" / "demo_digits.csv").set_index("col")
    # plain: seeds 0,1,2 -> finals 80, 81, 82; seed-mean curve peaks at epoch 2: 81 + 1
    assert frame.loc["plain", "mean_final"] == pytest.approx(81.0)
    assert frame.loc["plain", "std_final"] == pytest.approx(1.0)
    assert frame.loc["plain", "best_epoch_mean_curve"] == pytest.approx(82.0)
    assert frame.loc["nb_l2", "n"] == 2 and frame.loc["nb_l2", "n_missing"] == 1
    assert frame.loc["l1", "n"] == 2 and frame.loc["l1", "n_diverged"] == 1
    assert "[2/3; 1 missing]" in text and "[2/3; 1 diverged]" in text
    assert "Claim check" in text and (results / "figures" / "demo_digits.png").exists()
    assert "_Environment (10 runs): x86_64 CPU x1 threads, torch 2.x, code abc._" in text


def test_mixed_code_versions_are_flagged_and_each_environment_listed(results):
    overrides, _ = fabricate(results, code=lambda job: "abc" if job.cfg.seed < 2 else "def+dirty.1")
    text = build("demo_digits", overrides).read_text()
    assert text.count("⚠ runs from 2 code versions") == 3   # nb_l2 has no seed 2
    assert "- x86_64 CPU x1 threads, torch 2.x, code abc: 7 runs" in text
    assert "code def+dirty.1: 3 runs" in text


def test_running_and_stale_runs_are_told_apart(results):
    overrides, jobs = planned(results)
    alive, killed = jobs[0], jobs[1]
    lock = records.RunLock(alive.directory)
    assert lock.acquire()
    for job in (alive, killed):
        records.write_json(job.directory / "summary.json",
                           records.running_summary(job.key, "demo_digits", job.cfg.seed))
    killed.directory.mkdir(parents=True, exist_ok=True)
    try:
        text = build("demo_digits", overrides).read_text()
    finally:
        lock.release()
    assert "1 running" in text and "1 stale" in text


def test_a_single_replicate_has_no_std(results):
    overrides, jobs = planned(results, extra=["seed=0"])
    for job in jobs:
        job.directory.mkdir(parents=True)
        pd.DataFrame({"epoch": [1], "test_acc": [70.0], "val_acc": [69.0]}).to_csv(
            job.directory / "metrics.csv", index=False)
        records.write_json(job.directory / "summary.json", {"status": "finished"})
    text = build("demo_digits", overrides).read_text()
    assert "70.00 (n=1) [1/1]" in text and "± 0.00" not in text
    assert "[no interval: n < 2]" in text


def test_sweep_typed_on_the_command_line_builds_its_table(results):
    """Issue 9: `-m ... seed=0,1` used to finish its runs and build no table (exit 0)."""
    from tests.helpers import run_cli

    proc = run_cli("-m", "experiment=demo_digits", "profile=smoke", "seed=0,1",
                   f"run.results_dir={results}", "run.progress=false")
    assert "(8/8 runs finished)" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    manifest = json.loads((results / "runs" / "demo_digits" / "manifests" / "smoke.json").read_text())
    summaries = {json.loads(p.read_text())["key"] for p in results.glob("runs/demo_digits/*/summary.json")}
    assert {j["key"] for j in manifest["jobs"]} == summaries   # the keys the jobs wrote
    table = (results / "tables" / "demo_digits.smoke.md").read_text()
    regenerate = next(line for line in table.splitlines() if line.startswith("_Regenerate"))
    assert "seed=0,1" in regenerate and str(results) not in regenerate     # no machine paths


def test_welch_interval_against_known_numbers():
    c = stats.welch([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    diff, lo, hi = c.effect, c.ci_low, c.ci_high
    assert diff == pytest.approx(2.0)
    # se = 1/sqrt(3), dof = 2, t_0.975(2) = 4.3027
    assert hi - diff == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert diff - lo == pytest.approx(hi - diff)


def test_bootstrap_interval_covers_the_difference_and_stays_in_range():
    rng = np.random.default_rng(0)
    a, b = 99.0 + rng.random(12), 98.0 + rng.random(12)
    c = stats.bootstrap(a, b)
    assert c.ci_low < c.effect < c.ci_high and -2 < c.ci_low and c.ci_high < 2


def test_tables_cli_names_the_missing_manifest(results, tmp_path):
    from tests.helpers import ROOT
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "experiments.tables", "nb_table1", "profile=paper",
                           f"run.results_dir={results}"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "no manifest" in proc.stderr and "run the sweep first" in proc.stderr


def test_refresh_spec_brings_the_config_table_spec_into_the_manifest(results):
    """Notes edited in the experiment file reach the table through --refresh-spec, without a
    re-sweep; a plain rebuild keeps the spec the sweep stored."""
    from experiments.tables import main

    overrides, jobs = fabricate(results)
    path = plan.manifest_path(str(results), "demo_digits", "quick", overrides)
    body = records.read_json(path)
    body["table"]["title"] = "an old title"
    records.write_json(path, body)
    main(["demo_digits", *overrides])
    assert "an old title" in (results / "tables" / "demo_digits.md").read_text()
    main(["demo_digits", *overrides, "--refresh-spec"])
    table = (results / "tables" / "demo_digits.md").read_text()
    assert "an old title" not in table and str(jobs[0].cfg.table.title) in table
    assert len(records.read_json(path)["jobs"]) == len(jobs)


def test_a_table_fed_by_two_sweeps_names_both_commands(tmp_path):
    path = tmp_path / "manifests" / "quick.json"
    first = ["profile=quick", "hydra.sweeper.only=[spiral_fixed]"]
    second = ["profile=quick", "hydra.sweeper.only=[spiral_awnn]"]
    for overrides in (first, second, first):
        plan.merge_manifest(path, plan.manifest([], "awnn_table1", "quick", None, overrides, str(tmp_path)))
    assert records.read_json(path)["commands"] == [first, second]


def test_resweeping_a_changed_grid_replaces_its_old_jobs_in_the_manifest(tmp_path):
    """A grid whose config changed (more epochs, say) and is swept again leaves no stale runs in
    the table; the other grids' jobs stay."""
    import dataclasses

    path = tmp_path / "manifests" / "smoke.json"
    overrides = ["profile=smoke", f"run.results_dir={tmp_path}"]
    _, jobs = plan.plan_experiment("nb_table1", [*overrides, "hydra.sweeper.only=[fcn23,fcn5]"])
    assert {j.grid for j in jobs} == {"fcn23", "fcn5"}
    plan.merge_manifest(path, plan.manifest(jobs, "nb_table1", "smoke", None, overrides, str(tmp_path)))
    changed = [dataclasses.replace(j, key=j.key + "x", flat={**j.flat, "train.epochs": 99})
               for j in jobs if j.grid == "fcn5"]
    merged = plan.merge_manifest(path, plan.manifest(changed, "nb_table1", "smoke", None, overrides, str(tmp_path)))
    assert {e["key"] for e in merged["jobs"]} == {j.key for j in jobs if j.grid == "fcn23"} | {j.key for j in changed}
    assert all(plan.job_config(merged["base"], e["delta"])["train.epochs"] == 99
               for e in merged["jobs"] if e["grid"] == "fcn5")
    # more seeds of an unchanged grid add to the old ones
    more = [dataclasses.replace(j, key=j.key + "s9", flat={**j.flat, "seed": 9}) for j in changed]
    merged = plan.merge_manifest(path, plan.manifest(more, "nb_table1", "smoke", None, overrides, str(tmp_path)))
    assert {e["key"] for e in merged["jobs"] if e["grid"] == "fcn5"} == {j.key for j in changed + more}
    # the regenerate line keeps one command per grid: a re-sweep supersedes the older command
    again = [*overrides, "hydra.sweeper.only=[fcn5]", "run.device=cuda"]
    merged = plan.merge_manifest(path, plan.manifest(changed, "nb_table1", "smoke", None, again, str(tmp_path)))
    assert merged["commands"] == [overrides, again]
    later = [*overrides, "hydra.sweeper.only=[fcn23,fcn5]"]
    merged = plan.merge_manifest(path, plan.manifest(jobs, "nb_table1", "smoke", None, later, str(tmp_path)))
    assert merged["commands"] == [overrides, later]
    other_seeds = [*later, "seed=5,6"]                  # adds runs: both commands stay
    merged = plan.merge_manifest(path, plan.manifest(jobs, "nb_table1", "smoke", None, other_seeds, str(tmp_path)))
    assert merged["commands"] == [overrides, later, other_seeds]


def test_fixed_plus_reads_the_widths_learned_at_its_own_profile(results):
    """`${learned_widths:...}` takes the AWNN runs of the planning profile only: paper-budget
    widths in the same results directory leave the quick Fixed+ sweep (and its run keys) alone."""
    from omegaconf import OmegaConf

    for profile, grids, width in (("quick", "spiral_awnn,spiral_hard_awnn", 41),
                                  ("paper", "spiral_awnn_cpu,spiral_hard_awnn_cpu", 77)):
        _, jobs = plan.plan_experiment("awnn_table1", [f"profile={profile}", f"run.results_dir={results}",
                                                       f"hydra.sweeper.only=[{grids}]", "seed=0"])
        for job in jobs:
            job.directory.mkdir(parents=True)
            OmegaConf.save(job.cfg, job.directory / "config.yaml")
            records.write_json(job.directory / "summary.json", {
                "status": "finished", "metric": "acc", "direction": "max",
                "best_val": {"val_acc": 99.0}, "final": {"width/l0": width}})
    for profile, width in (("quick", 41), ("paper", 77)):
        _, fixed = plan.plan_experiment("awnn_fixed_plus", [f"profile={profile}", f"run.results_dir={results}",
                                                            "hydra.sweeper.only=[spiral]"])
        assert {tuple(j.cfg.model.widths) for j in fixed if j.cfg.dataset.name == "spiral"} == {(width,)}
