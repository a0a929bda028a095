"""The runner: identity of runs, skip, resume, divergence, clear errors on bad config."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from experiments import records
from experiments.run import execute
from experiments.schema import validate
from tests.helpers import compose_config, run_cli, run_killed

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
    assert (directory / "checkpoint.pt").exists()
    assert records.read_summary(directory)["status"] == "running"   # killed, not finished
    assert len(pd.read_csv(directory / "metrics.csv")) == 2
    monkeypatch.setattr(train, "evaluate", real)
    resumed = execute(cfg)
    assert resumed["status"] == "finished" and resumed["epochs"] == 5
    for k in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert resumed["final"][k] == straight["final"][k], k  # bit-identical on the CPU


def test_kill_9_mid_run_resumes_bit_identical(tmp_path):
    """A real SIGKILL (no cleanup) in epoch 3; the resumed run matches an uninterrupted one."""
    extra = ("train.epochs=4", "regime=l1", "optimizer=momentum", "optimizer.lr=0.02", "model.widths=[16]")
    straight = execute(compose_config(*BASE, f"run.results_dir={tmp_path / 'a'}", *extra))
    overrides = (*BASE, f"run.results_dir={tmp_path / 'b'}", *extra)
    proc = run_killed("evaluate", 5, *overrides)
    assert proc.returncode == -9, proc.stderr[-2000:]
    directory = records.run_dir(validate(compose_config(*overrides)))
    assert records.read_summary(directory)["status"] == "running"
    assert records.load_checkpoint(directory)["loop"]["epoch"] == 2
    resumed = execute(compose_config(*overrides))
    assert resumed["status"] == "finished" and resumed["epochs"] == 4
    assert resumed["final"] == {**straight["final"], "time": resumed["final"]["time"],
                                "epoch_time": resumed["final"]["epoch_time"]}
    ckpt_a = records.load_checkpoint(records.run_dir(validate(compose_config(*BASE, f"run.results_dir={tmp_path / 'a'}", *extra))))
    ckpt_b = records.load_checkpoint(directory)
    assert all(torch.equal(ckpt_a["model"][k], ckpt_b["model"][k]) for k in ckpt_a["model"])


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
    ("train.eval_every=0", "train.eval_every=0 must be > 0"),
    ("regime.awnn.runaway_width=0", "regime.awnn.runaway_width=0 must be > 0"),
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
    assert proc.returncode == 2
    assert "dataset=imagenet is not a config option" in proc.stderr and "'mnist'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("override, message", [     # the messages are tested in-process above
    pytest.param("regime.penalty=l3", "regime.penalty='l3' is not allowed; allowed: ['none', 'l1', 'l2']",
                 marks=pytest.mark.slow),
    ("model.widths=[0]", "model.widths=[0]: every size must be >= 1"),
    pytest.param("+model.depth=3", "depth", marks=pytest.mark.slow),
])
def test_config_errors_are_one_line_exit_2(results, override, message):
    args = [*BASE, f"run.results_dir={results}", override]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        line for line in proc.stderr.splitlines() if line.startswith("config error:")]
    sweep = run_cli("-m", *args, check=False)          # a sweep fails before launching anything
    assert sweep.returncode == 2 and message in sweep.stderr and "Traceback" not in sweep.stderr
    assert not list(results.glob("runs/*/*/summary.json"))


def test_hydra_full_error_keeps_the_traceback(results, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    proc = run_cli(*BASE, f"run.results_dir={results}", "regime.penalty=l3", check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_wandb_auto_mode_follows_wandb_login(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    from experiments.loggers import wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert wandb_mode("auto") == "offline"
    assert "logging offline" in capsys.readouterr().out
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'a' * 40}\n")
    netrc.chmod(0o600)
    assert wandb_mode("auto") == "online"          # `wandb login` wrote this file; no env key
    assert wandb_mode("offline") == "offline"


def test_gpu_claim_never_doubles_up(tmp_path, monkeypatch):
    import fcntl

    from experiments import devices

    monkeypatch.setenv("BW_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(devices, "_claimed", [])
    held = []
    for index in range(2):                                     # two other jobs hold both GPUs
        handle = open(tmp_path / f"bw-gpu-{index}.lock", "w")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(handle)
    with pytest.raises(TimeoutError):
        devices.claim_gpu(2, poll_s=0.05, timeout_s=0.2)
    held[1].close()                                            # GPU 1 frees up
    assert devices.claim_gpu(2, poll_s=0.05, timeout_s=1.0) == 1
    assert devices.claim_gpu(2) == 1                           # a worker keeps its GPU
    held[0].close()
    devices._claimed[0][1].close()


def test_jobs_per_gpu_shares_each_gpu_evenly(tmp_path, monkeypatch):
    from experiments import devices

    monkeypatch.setenv("BW_GPU_LOCK_DIR", str(tmp_path))
    got = []
    for _ in range(4):                                         # four workers, two GPUs, two slots each
        monkeypatch.setattr(devices, "_claimed", [])
        got.append(devices.claim_gpu(2, jobs_per_gpu=2, poll_s=0.05, timeout_s=0.2))
        keep = devices._claimed[0]
    assert got == [0, 1, 0, 1]
    monkeypatch.setattr(devices, "_claimed", [])
    with pytest.raises(TimeoutError, match="2 slots"):
        devices.claim_gpu(2, jobs_per_gpu=2, poll_s=0.05, timeout_s=0.2)


def test_relative_data_paths_resolve_against_the_project_root(tmp_path, monkeypatch):
    import data
    from data.paths import PROJECT_ROOT

    seen = {}
    cfg = validate(cfg_for(tmp_path / "r", "data.root=some/data", "data.cache=some/cache"))
    schema = data.dataset_schema("digits")
    monkeypatch.setattr(data.REGISTRY, "entry", lambda name: (schema, lambda c, dcfg, dev: seen.update(dcfg)))
    monkeypatch.chdir(tmp_path)
    data.load_data(cfg.dataset, cfg.data, None)
    assert seen["root"] == str(PROJECT_ROOT / "some" / "data")
    assert seen["cache"] == str(PROJECT_ROOT / "some" / "cache")


def test_run_record_contents(results):
    summary = execute(cfg_for(results, "train.epochs=2", "regime=l2"))
    directory = results / "runs" / "adhoc" / summary["key"]
    for name in ("config.yaml", "metrics.csv", "summary.json", "environment.json", "checkpoint.pt"):
        assert (directory / name).exists(), name
    env = json.loads((directory / "environment.json").read_text())
    assert {"git_revision", "git_dirty", "diff_sha256", "code_version", "torch", "python", "device", "host"} <= set(env)
    metrics = pd.read_csv(directory / "metrics.csv")
    assert list(metrics.epoch) == [1, 2]
    assert {"train_loss", "val_acc", "test_acc", "time"} <= set(metrics.columns)
    assert summary["final"]["test_acc"] == pytest.approx(metrics.test_acc.iloc[-1])


def test_eval_every_evaluates_every_kth_epoch_and_always_the_last(results):
    summary = execute(cfg_for(results, "train.epochs=5", "train.eval_every=2"))
    metrics = pd.read_csv(results / "runs" / "adhoc" / summary["key"] / "metrics.csv")
    assert list(metrics.epoch) == [1, 2, 3, 4, 5]
    assert list(metrics.test_acc.notna()) == [False, True, False, True, True]
    assert metrics.train_loss.notna().all()
    assert summary["final"]["test_acc"] == pytest.approx(metrics.test_acc.iloc[-1])


def test_wandb_logger_offline_logs_the_same_rows(results, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary = execute(cfg_for(results, "train.epochs=2", "logger=wandb"))
    assert summary["status"] == "finished"
    runs = list((results / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_a_runaway_awnn_width_is_recorded_as_diverged_and_the_sweep_carries_on(results):
    """ν collapsing to 0 grows a layer without bound (authors' importance, no ν prior): past
    regime.awnn.runaway_width the run stops as diverged and says why."""
    proc = run_cli("-m", "experiment=awnn_table1", "profile=smoke", "hydra.sweeper.only=[spiral_awnn]",
                   f"run.results_dir={results}", "run.progress=false", "regime.awnn.runaway_width=100,100000")
    summaries = sorted((json.loads(p.read_text()) for p in results.glob("runs/awnn_table1/*/summary.json")),
                       key=lambda s: s["status"])
    assert [s["status"] for s in summaries] == ["diverged", "finished"], proc.stdout
    because = summaries[0]["diverged_because"]
    assert re.fullmatch(r"width/l0=\d+ > regime.awnn.runaway_width=100", because), because
    assert because in proc.stdout
