"""Every experiment file composes at every profile, and smoke-runs through the real entry point
(`python -m experiments.run -m experiment=<name> profile=smoke`) on tiny files written in the
real formats, ending with its table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.plan import plan_experiment
from tests.helpers import ROOT, run_cli, write_mnist_like
from tests.test_data_cifar import write_cifar10, write_cifar100
from tests.test_data_graphs import two_fold_splits, write_tu
from tests.test_data_text import imdb_files, write_multi30k, write_tree

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
NEEDS_RESULTS = {"awnn_fixed_plus": "awnn_table1"}  # reads the widths another experiment learned


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, "MNIST")
    write_mnist_like(root, "FashionMNIST", seed=1)
    write_tree(root / "imdb", imdb_files())
    write_multi30k(root)
    write_cifar10(root)
    write_cifar100(root)
    write_tu(root / "TUDataset" / "NCI1" / "raw", "NCI1")
    two_fold_splits(root / "TUDataset" / "splits" / "NCI1_splits.json")
    write_tu(root / "TUDataset" / "REDDIT-BINARY" / "raw", "REDDIT-BINARY", node_labels=False)
    return root


def test_every_experiment_has_a_table_header():
    for name in EXPERIMENTS:
        text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n#"), f"{name}: header comment missing"
        assert f"experiment: {name}\n" in text


# The default run composes every experiment at quick and NB Table 1 at every profile; the rest
# (awnn_table1 alone plans ~2000 jobs in ~80 s at paper) compose under `-m slow`.
# One smoke run per code path in the default run (MLP/balancing, AWNN, text, truncation); the
# rest, and the experiments whose smoke sweep takes over ~20 s, run under `-m slow`.
SMOKE_DEFAULT = {"nb_toy", "awnn_truncation", "awnn_stability", "nb_transformer_imdb"}


def _composes(name: str, profile: str):
    slow = profile != "quick" and name != "nb_table1"
    return pytest.param(name, profile, marks=pytest.mark.slow) if slow else (name, profile)


@pytest.mark.parametrize("name,profile", [_composes(e, p) for e in EXPERIMENTS if e not in NEEDS_RESULTS
                                          for p in ("smoke", "quick", "paper")])
def test_experiment_composes(name, profile, tmp_path):
    base, jobs = plan_experiment(name, [f"profile={profile}", f"run.results_dir={tmp_path}"])
    assert jobs and base.table is not None
    assert len({j.directory for j in jobs}) == len(jobs), "two jobs share a run directory"


@pytest.mark.parametrize("name", [e if e in SMOKE_DEFAULT else pytest.param(e, marks=pytest.mark.slow)
                                  for e in EXPERIMENTS])
def test_experiment_smoke_runs(name, tiny_root, tmp_path):
    common = ["profile=smoke", f"data.root={tiny_root}", f"data.cache={tmp_path / 'cache'}",
              f"run.results_dir={tmp_path / 'results'}", "run.progress=false", "data.download=false"]
    if name in NEEDS_RESULTS:
        run_cli("-m", f"experiment={NEEDS_RESULTS[name]}", *common,
                "hydra.sweeper.only=[spiral_awnn,spiral_hard_awnn]")
    proc = run_cli("-m", f"experiment={name}", *common)
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / name).glob("*/summary.json")]
    _, jobs = plan_experiment(name, common)
    assert len(summaries) == len(jobs), proc.stdout[-3000:]
    failed = [s for s in summaries if s["status"] != "finished"]
    assert not failed, "\n".join(f"{s['key']}: {s.get('error')}\n{s.get('traceback', '')}" for s in failed)
    table = tmp_path / "results" / "tables" / f"{name}.smoke.md"
    assert table.exists(), proc.stdout[-3000:]
    assert f"({len(jobs)}/{len(jobs)} runs finished)" in proc.stdout


@pytest.mark.slow
def test_a_run_shared_by_two_experiments_trains_once(tiny_root, tmp_path):
    """nb_fb_start's no-FB columns are nb_table1's plain/l1/l2 runs (same key): reused, not rerun."""
    common = ["profile=smoke", f"data.root={tiny_root}", f"data.cache={tmp_path / 'cache'}",
              f"run.results_dir={tmp_path / 'results'}", "run.progress=false", "hydra.sweeper.only=[fcn23]"]
    run_cli("-m", "experiment=nb_table1", *common)
    proc = run_cli("-m", "experiment=nb_fb_start", *common)
    assert proc.stdout.count("[sweep] reuse nb_table1/") == 6, proc.stdout[-2000:]
    assert proc.stdout.count("[run] finished") == 6
    assert "(12/12 runs finished)" in proc.stdout


def test_truncation_curve_regenerates_from_records_without_checkpoints(tiny_root, tmp_path):
    """AWNN Fig. 6: each run keeps its truncation curve in its record, so a clone without
    checkpoints rebuilds the same curve table."""
    results = tmp_path / "results"
    common = ["profile=smoke", f"data.root={tiny_root}", f"data.cache={tmp_path / 'cache'}",
              f"run.results_dir={results}", "run.progress=false", "data.download=false"]
    run_cli("-m", "experiment=awnn_truncation", *common)
    curve_file = results / "tables" / "awnn_truncation.smoke_curve.csv"
    first = pd.read_csv(curve_file)
    assert set(first.importance) == {"paper", "authors"}
    assert first.groupby("run").keep.apply(list).map(lambda k: k[-1] == 1.0).all()
    for checkpoint in results.glob("runs/awnn_truncation/*/checkpoint*.pt"):
        checkpoint.unlink()
    curve_file.unlink()
    proc = subprocess.run([sys.executable, "-m", "experiments.tables", "awnn_truncation", "profile=smoke",
                           f"run.results_dir={results}"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_csv(curve_file), first)
