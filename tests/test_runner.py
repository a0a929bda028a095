"""The runner: identity of runs, skip, resume, divergence, clear errors on bad config."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments import records
from experiments.run import execute
from experiments.schema import validate
from tests.helpers import compose_config, run_cli

BASE = ("dataset=digits", "model=fcn", "optimizer.lr=0.05", "train.batch_size=64",
        "run.progress=false", "run.checkpoint_interval_s=0")


def cfg_for(results, *extra):
    return compose_config(*BASE, "model.widths=[32]", f"run.results_dir={results}", *extra)


def test_key_depends_on_meaningful_config_only(results):
    a = validate(cfg_for(results, "seed=1"))
    assert records.run_key(a) == records.run_key(validate(cfg_for(results, "seed=1", "run.progress=true",
                                                                   "logger=wandb", "data.root=/elsewhere")))
    assert records.run_key(a) != records.run_key(validate(cfg_for(results, "seed=2")))
    assert records.run_key(a) != records.run_key(validate(cfg_for(results, "seed=1", "regime=l1")))


def test_finished_run_is_skipped(results, capsys):
    cfg = cfg_for(results, "train.epochs=2")
    first = execute(cfg)
    assert first["status"] == "finished" and first["epochs"] == 2
    summary_path = records.run_dir(validate(cfg)) / "summary.json"
    before = summary_path.stat().st_mtime_ns
    again = execute(cfg)
    assert "skip" in capsys.readouterr().out
    assert summary_path.stat().st_mtime_ns == before and again == first


@pytest.mark.parametrize("extra", [
    # penalty + partial balancing + momentum: regime, optimiser and RNG state must all survive
    ("train.epochs=5", "regime=nb_l1", "regime.penalty=l1", "optimizer=momentum", "optimizer.lr=0.02"),
    # AWNN: widths, capacities and Adam moments of a resized layer must survive too
    ("train.epochs=5", "model=awnn_mlp", "model.nu0=0.05", "regime=awnn", "optimizer=adam",
     "optimizer.lr=0.01"),
], ids=["nb_l1+l1", "awnn"])
def test_killed_run_resumes_to_the_same_numbers(results, tmp_path, monkeypatch, extra):
    straight = execute(compose_config(*BASE, f"run.results_dir={tmp_path / 'a'}", *extra))

    import experiments.train as train

    calls = {"n": 0}
    real = train.evaluate

    def crash_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:  # 2 splits (val, test) per epoch: dies while evaluating epoch 3
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    cfg = compose_config(*BASE, f"run.results_dir={tmp_path / 'b'}", *extra)
    monkeypatch.setattr(train, "evaluate", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg)
    directory = records.run_dir(validate(cfg))
    assert (directory / "checkpoint.pt").exists() and not (directory / "summary.json").exists()
    assert len(pd.read_csv(directory / "metrics.csv")) == 2
    monkeypatch.setattr(train, "evaluate", real)
    resumed = execute(cfg)
    assert resumed["status"] == "finished" and resumed["epochs"] == 5
    for k in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert resumed["final"][k] == straight["final"][k], k  # bit-identical on the CPU


def test_nan_marks_the_run_diverged_and_the_sweep_carries_on(results):
    base = [o for o in BASE if not o.startswith("optimizer.lr")]
    proc = run_cli("-m", *base, f"run.results_dir={results}", "optimizer.lr=1e9,0.05", "train.epochs=3")
    statuses = sorted(json.loads(p.read_text())["status"] for p in results.glob("runs/adhoc/*/summary.json"))
    assert statuses == ["diverged", "finished"], proc.stdout


@pytest.mark.parametrize("override, message", [
    ("regime.penalty=l3", "allowed: ['none', 'l1', 'l2']"),
    ("optimizer.name=rmsprop", "allowed: ['sgd', 'adam', 'adamw']"),
    ("model.activation=swish", "allowed:"),
    ("train.epochs=0", "train.epochs=0 must be > 0"),
    ("dataset.fraction=1.5", "dataset.fraction=1.5"),
    ("+model.depth=3", "depth"),
    ("profile.name=huge", "allowed: ['paper', 'quick', 'smoke']"),
])
def test_bad_values_fail_before_training_with_the_allowed_ones(results, override, message):
    with pytest.raises(Exception) as err:
        cfg = cfg_for(results, override)
        execute(cfg)
    assert message in str(err.value)
    assert not list(results.glob("runs/*/*/metrics.csv"))


def test_unknown_group_option_names_the_choices(results):
    proc = run_cli("dataset=imagenet", f"run.results_dir={results}", check=False)
    assert proc.returncode != 0
    assert "dataset/imagenet" in proc.stderr and "mnist" in proc.stderr


def test_run_record_contents(results):
    summary = execute(cfg_for(results, "train.epochs=2", "regime=l2"))
    directory = results / "runs" / "adhoc" / summary["key"]
    for name in ("config.yaml", "metrics.csv", "summary.json", "environment.json", "checkpoint.pt"):
        assert (directory / name).exists(), name
    env = json.loads((directory / "environment.json").read_text())
    assert {"git", "torch", "python", "device"} <= set(env)
    metrics = pd.read_csv(directory / "metrics.csv")
    assert list(metrics.epoch) == [1, 2]
    assert {"train_loss", "val_acc", "test_acc", "time"} <= set(metrics.columns)
    assert summary["final"]["test_acc"] == pytest.approx(metrics.test_acc.iloc[-1])


def test_wandb_logger_offline_logs_the_same_rows(results, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary = execute(cfg_for(results, "train.epochs=2", "logger=wandb"))
    assert summary["status"] == "finished"
    runs = list((results / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
