"""Bad inputs through the entry point users run: one line on stderr, exit 2, no traceback, no run
record (issue 20). The values are accepted by the types, so each needs its own check."""
from __future__ import annotations

import pytest

from tests.helpers import run_cli

TINY = ("train.epochs=1", "run.progress=false")


def fails_in_one_line(results, *overrides) -> str:
    proc = run_cli(*TINY, f"run.results_dir={results}", *overrides, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("config error:"), proc.stderr
    assert not (results / "runs").exists()      # no run record, no lock, no checkpoint
    assert not [p for p in results.rglob("*") if p.is_file()]   # nor Hydra's log folder
    return lines[0]


def test_missing_data_root_names_the_files_and_where(results, tmp_path):
    line = fails_in_one_line(results, "dataset=mnist", f"data.root={tmp_path / 'nowhere'}", "data.download=false")
    assert "train-images-idx3-ubyte" in line and "t10k-labels-idx1-ubyte" in line
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in line


def test_tu_set_without_files_offline_names_them(results, tmp_path):
    root = tmp_path / "data"
    (root / "TUDataset" / "MUTAG" / "raw").mkdir(parents=True)
    (root / "TUDataset" / "MUTAG" / "raw" / "MUTAG_A.txt").write_text("1,2\n2,1\n")
    line = fails_in_one_line(results, "dataset=tu", "dataset.tu_name=MUTAG", "model=gin",
                             f"data.root={root}", "data.download=false")
    assert "MUTAG_graph_indicator.txt, MUTAG_graph_labels.txt missing in" in line
    assert "MUTAG_A.txt missing" not in line and str(root / "TUDataset" / "MUTAG" / "raw") in line
    assert "nothing was fetched" in line


def test_tu_set_needs_a_name(results):
    assert "set dataset.tu_name=<NAME>" in fails_in_one_line(results, "dataset=tu", "model=gin")


@pytest.mark.parametrize("fold", ["10", "-1"])
def test_fold_out_of_range_is_caught_before_any_download(results, tmp_path, fold):
    # data.download=true and no files: a download would be tried (and fail slowly) if the fold
    # were checked after it
    line = fails_in_one_line(results, "dataset=tu", "dataset.tu_name=NO-SUCH-SET", "model=gin",
                             f"dataset.fold={fold}", f"data.root={tmp_path / 'empty'}", "data.download=true")
    assert line == f"config error: dataset.fold={fold}: allowed 0..9"
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("overrides, message", [
    (("model.activation=tanh", "regime=nb_l1"), "model.activation=tanh is not positively homogeneous"),
    (("model.activation=sigmoid", "regime.fb_start=true"), "model.activation=sigmoid is not positively homogeneous"),
    (("model=awnn_mlp", "regime=awnn", "model.importance=prior"),
     "model.importance='prior' is not allowed; allowed: ['paper', 'authors']"),
    (("train.grad_clip=-1",), "train.grad_clip=-1.0 must be >= 0"),
    (("regime=l1", "regime.coeff=-1e-4"), "regime.coeff=-0.0001 must be a finite number >= 0"),
    (("regime=l2", "regime.coeff=nan"), "regime.coeff=nan must be a finite number >= 0"),
])
def test_values_that_cannot_run_are_one_line(results, overrides, message):
    assert message in fails_in_one_line(results, "dataset=digits", *overrides)


def test_homogeneous_activations_still_balance(results):
    proc = run_cli(*TINY, f"run.results_dir={results}", "dataset=digits", "model.activation=leaky_relu",
                   "regime=nb_l1", "model.widths=[8]")
    assert "[run] finished" in proc.stdout
