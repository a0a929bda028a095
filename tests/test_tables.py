"""Table builder on fabricated run directories: missing and diverged seeds are shown, the
paper convention (max over epochs of the seed-mean curve) and the final-epoch mean are both right."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import records
from experiments.tables import build, expected_jobs, welch_interval

OVERRIDES = ["profile=quick"]


def fabricate(results, skip_missing=("nb_l2", 2), diverge=("l1", 1)):
    _, jobs = expected_jobs("demo_digits", [*OVERRIDES, f"run.results_dir={results}"])
    truth = {}
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
        records.write_json(job.directory / "summary.json", {"status": status, "key": job.directory.name})
        truth.setdefault(regime, []).append((seed, base, status))
    return jobs, truth


def test_expected_runs_follow_the_sweep(results):
    _, jobs = expected_jobs("demo_digits", [*OVERRIDES, f"run.results_dir={results}"])
    assert len(jobs) == 4 * 3
    assert len({j.directory for j in jobs}) == 12
    assert {j.choices["regime"] for j in jobs} == {"plain", "l1", "nb_l1", "nb_l2"}


def test_table_shows_missing_and_diverged_and_both_conventions(results):
    fabricate(results)
    path = build("demo_digits", [*OVERRIDES, f"run.results_dir={results}"])
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


def test_welch_interval_against_known_numbers():
    diff, lo, hi = welch_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert diff == pytest.approx(2.0)
    # se = 1/sqrt(3), dof = 2, t_0.975(2) = 4.3027
    assert hi - diff == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert diff - lo == pytest.approx(hi - diff)
