"""make verify (experiments/verify.py): re-train a published run's first epochs through the entry
point and compare them with its committed metrics.csv."""
from __future__ import annotations

import shutil

import pytest

from data.paths import resolve
from experiments import verify, verify_runs
from tests.helpers import write_mnist_like

DIGITS = resolve("results/published/runs/demo_digits")
RUN = "digits-fcn-plain-s0-17e604f896"


def _published_copy(tmp_path, perturb: float = 0.0):
    """A published folder holding one demo_digits run (and the sweep's manifest)."""
    root = tmp_path / "published"
    target = root / "runs" / "demo_digits"
    shutil.copytree(DIGITS / "manifests", target / "manifests")
    shutil.copytree(DIGITS / RUN, target / RUN, ignore=shutil.ignore_patterns("checkpoint*", ".lock"))
    if perturb:
        metrics = target / RUN / "metrics.csv"
        lines = metrics.read_text().splitlines()
        header = lines[0].split(",")
        row = lines[2].split(",")                                  # epoch 2
        column = header.index("train_loss")
        row[column] = str(float(row[column]) + perturb)
        lines[2] = ",".join(row)
        metrics.write_text("\n".join(lines) + "\n")
    return root


def test_plan_picks_a_cpu_run_per_experiment_and_lists_missing_data(tmp_path):
    args = verify.parse(["--only", "demo_digits", "nb_table1", "--data-root", str(tmp_path)])
    chosen, skipped = verify.plan(args)
    assert [r.experiment for r in chosen] == ["demo_digits"]
    assert chosen[0].device == "cpu" and chosen[0].k == 3
    assert skipped == [("nb_table1", "mnist: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz) missing in "
                        f"{tmp_path}/MNIST/raw")]
    write_mnist_like(tmp_path)                          # the loaders' files: now it can run
    chosen, skipped = verify.plan(args)
    assert sorted(r.experiment for r in chosen) == ["demo_digits", "nb_table1"] and not skipped


def test_eval_every_rounds_k_up_to_an_evaluated_epoch():
    run = verify_runs.PublishedRun("e", "k", resolve("."), [], {"train": {"eval_every": 10}},
                                   epochs=500, seconds_per_epoch=0.01, device="cpu", code_version="x")
    assert verify_runs.epochs_to_run(run, 3, 60.0) == 10
    run.seconds_per_epoch = 20.0                                     # 10 epochs would take 200 s
    assert verify_runs.epochs_to_run(run, 3, 60.0) == 3


def test_tolerance_by_column():
    assert verify.tolerance("test_acc", 95.0) == verify.ACC_TOL
    assert verify.tolerance("width/total", 300.0) == verify.WIDTH_TOL
    assert verify.tolerance("train_loss", 2.0) == pytest.approx(verify.ATOL + verify.RTOL * 2.0)


def test_a_faithful_record_passes(tmp_path, capsys):
    published = _published_copy(tmp_path)
    assert verify.main(["--published", str(published), "--epochs", "2", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("demo_digits"))
    assert RUN in row and "2/30" in row and "cpu/cpu =" in row and row.endswith(" ok")


def test_a_record_off_by_a_tenth_fails(tmp_path, capsys):
    published = _published_copy(tmp_path, perturb=0.1)
    assert verify.main(["--published", str(published), "--epochs", "2", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "train_loss@2 0.1" in out


def test_float_drift_passes_and_is_labelled():
    """Beyond the tolerance, within the float-drift one: passes as 'ok (float drift)'."""
    import pandas as pd

    run = verify_runs.PublishedRun("demo_digits", RUN, DIGITS / RUN, [], {"train": {}}, 30, 0.1, "cpu", "x", k=2)
    published = pd.read_csv(DIGITS / RUN / "metrics.csv")
    for shift, verdict in ((0.0, "ok"), (0.005, "ok (float drift)"), (0.05, "MISMATCH")):
        here = published.head(2).copy()
        here.loc[1, "train_loss"] += shift                      # 1.27: tolerance 0.0014, drift 0.014
        outcome = verify_runs.Outcome(run, history=here)
        verify_runs.compare_metrics(outcome, verify.tolerance, verify.drift_tolerance)
        assert outcome.verdict == verdict and outcome.passed == (verdict != "MISMATCH")
