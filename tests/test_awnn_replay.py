"""Replay the first epochs of committed AWNN records through the entry point users run, and match
their metrics.csv: widths exactly, every other number within 1e-4 (float reordering only). Guards
the training step's speed-ups (models/awnn, experiments/regimes/awnn.py) against changing results.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, run_cli

PUBLISHED = ROOT / "results" / "published" / "runs"
EPOCHS = 3
TOL = 1e-4
TIMES = ("time", "epoch_time")
SAME = ("seed", "dataset", "model", "regime", "optimizer")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _identity(run: Path) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    train = {k: v for k, v in cfg["train"].items() if k != "epochs"}
    return {**{k: cfg[k] for k in SAME}, "train": train}


def _agree(a, b) -> bool:
    """Equal on the keys both hold (a record written before a setting existed lacks it)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_agree(a[k], b[k]) for k in a.keys() & b.keys())
    return a == b


def _records_of(run: Path, experiment: str) -> list[Path]:
    """The published records of `experiment` with run's configuration (bar the epochs; any
    profile, stacked or not)."""
    want = _identity(run)
    matches = [d for d in sorted((PUBLISHED / experiment).iterdir())
               if (d / "config.yaml").exists() and _agree(_identity(d), want)]
    assert matches, f"{run.name}: no published record of {experiment} matches"
    return matches


def _assert_replays(run: Path, record: Path) -> None:
    got, want = _rows(run / "metrics.csv"), _rows(record / "metrics.csv")[:EPOCHS]
    assert len(got) == EPOCHS
    for epoch, (g, w) in enumerate(zip(got, want), 1):
        assert set(g) == set(w), f"{run.name} epoch {epoch}: columns differ"
        for key in w:
            if key in TIMES:
                continue
            a, b = float(g[key]), float(w[key])
            if key.startswith("width/"):
                assert a == b, f"{run.name} epoch {epoch} {key}: {a} != record {b}"
            else:
                assert math.isclose(a, b, rel_tol=0, abs_tol=TOL), \
                    f"{run.name} epoch {epoch} {key}: {a} vs record {b} ({record.name})"


def _runs(results: Path, experiment: str) -> list[Path]:
    return sorted(p.parent for p in (results / "runs" / experiment).glob("*/metrics.csv"))


@pytest.mark.skipif(not (PUBLISHED / "awnn_truncation").exists(), reason="no published records")
def test_replays_an_unstacked_awnn_record(tmp_path):
    """awnn_truncation, Spiral, authors' importance, seed 0 (run unstacked)."""
    results = tmp_path / "results"
    run_cli("experiment=awnn_truncation", "profile=paper", "model.importance=authors", "seed=0",
            f"train.epochs={EPOCHS}", f"run.results_dir={results}",
            "run.threads=1", "run.progress=false", "run.stack=false")
    [run] = _runs(results, "awnn_truncation")
    for record in _records_of(run, "awnn_truncation"):
        _assert_replays(run, record)


@pytest.mark.slow
@pytest.mark.skipif(not (PUBLISHED / "awnn_difficulty").exists(), reason="no published records")
def test_replays_stacked_awnn_records(tmp_path):
    """awnn_difficulty's one-hidden-layer grid, seeds 0 and 1 stacked, as the records were run."""
    results = tmp_path / "results"
    run_cli("-m", "experiment=awnn_difficulty", "profile=paper", "hydra.sweeper.only=[awnn]",
            "hydra.sweeper.seeds=2", "run.stack=true", f"train.epochs={EPOCHS}",
            f"run.results_dir={results}", "run.threads=1",
            "run.progress=false")
    runs = _runs(results, "awnn_difficulty")
    assert len(runs) == 6
    for run in runs:
        for record in _records_of(run, "awnn_difficulty"):
            _assert_replays(run, record)
