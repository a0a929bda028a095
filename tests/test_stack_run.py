"""Stacked jobs through the real runner: every member of a stack matches the unstacked run of its
seed (float64, to 1e-9), records stay per member, a killed stack resumes every member, a diverged
member does not stop the others, and a sweep with run.stack=true builds the same table."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments import plan, records
from experiments.run import execute
from experiments.schema import validate
from tests.helpers import compose_config, run_cli, run_killed

RUN = ("train.epochs=3", "train.dtype=float64", "run.progress=false", "run.checkpoint_interval_s=0")
BASE = ("dataset=digits", "model=fcn", "model.widths=[16]", "optimizer.lr=0.05", "train.batch_size=64", *RUN)
SEEDS = (0, 1, 2)


def stack_job(results: Path, *extra, seeds=SEEDS, per_member=None, base=BASE):
    """Write the stack file the sweeper would write; return the launched job's config."""
    per_member = per_member or [()] * len(seeds)
    overrides = [[*base, *extra, *own, f"seed={s}", f"run.results_dir={results}"]
                 for s, own in zip(seeds, per_member)]
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from data.paths import PROJECT_ROOT

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        jobs = plan.plan_jobs(overrides, lambda o: compose("config", overrides=o, return_hydra_config=True))
    GlobalHydra.instance().clear()
    path = results / "stack.json"
    plan.write_stack_file(jobs, path)
    return compose_config(*overrides[0], f"run.stack_file={path}"), jobs


def unstacked(results: Path, *extra, seed: int, base=BASE):
    cfg = compose_config(*base, *extra, f"seed={seed}", f"run.results_dir={results}")
    summary = execute(cfg)
    return summary, records.run_dir(validate(cfg))


def assert_same_run(a: Path, b: Path, tol: float = 1e-9) -> None:
    """Same metrics every epoch and the same final weights (checkpoints in the unstacked format)."""
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    assert len(ma) == len(mb)
    for col in ("train_loss", "val_loss", "test_loss", "test_acc"):
        assert (ma[col] - mb[col]).abs().max() <= tol, col
    wa = records.load_checkpoint(a)["model"]
    wb = records.load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        if k.endswith("_extra_state") and isinstance(wa[k], dict):   # an AWNN layer: its growth
            wa[k].pop("capacity", None)                                # generator; θ's capacity is
            wb[k].pop("capacity", None)                                # storage (a stack has none)
        assert same(wa[k], wb[k], tol), k


def same(a, b, tol: float) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and (
            torch.allclose(a, b, rtol=0, atol=tol) if a.is_floating_point() else torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    return a == b


REGIMES = {
    "plain+momentum": ("regime=plain", "optimizer=momentum"),
    "l1": ("regime=l1",),
    "l2+clip": ("regime=l2", "train.grad_clip=0.5"),
    "nb_l1": ("regime=nb_l1",),
    "nb_l2+adam": ("regime=nb_l2", "optimizer=adam", "optimizer.lr=0.01"),
    "fb_start+l1": ("regime=l1", "regime.fb_start=true", "regime.balance_p=1"),
}


@pytest.mark.parametrize("extra", REGIMES.values(), ids=REGIMES.keys())
def test_every_member_matches_its_unstacked_run(tmp_path, extra):
    cfg, jobs = stack_job(tmp_path / "stacked", *extra)
    out = execute(cfg)
    assert out["status"] == "finished" and out["trained"] == len(SEEDS)
    for seed, job in zip(SEEDS, jobs):
        summary, directory = unstacked(tmp_path / "alone", *extra, seed=seed)
        assert directory.name == job.directory.name               # the same key and directory
        stacked_summary = records.read_summary(job.directory)
        assert stacked_summary["stack"] == {"size": len(SEEDS), "index": seed}
        assert_same_run(directory, job.directory)


def test_members_differing_in_lr_and_penalty_match_their_runs(tmp_path):
    own = [("optimizer.lr=0.05", "regime.coeff=1e-4"), ("optimizer.lr=0.02", "regime.coeff=1e-3"),
           ("optimizer.lr=0.1", "regime.coeff=0.0")]
    extra = ("regime=l1", "optimizer=momentum", "run.stack_over=[optimizer.lr,regime.coeff]")
    cfg, jobs = stack_job(tmp_path / "stacked", *extra, per_member=own)
    assert execute(cfg)["status"] == "finished"
    for seed, job, values in zip(SEEDS, jobs, own):
        _, directory = unstacked(tmp_path / "alone", *extra, *values, seed=seed)
        # the lr enters as b + (lr_i/lr_0)(p − b): equal up to rounding, not bit for bit
        assert_same_run(directory, job.directory, tol=1e-7)
        lr = float(values[0].split("=")[1])
        assert records.load_checkpoint(job.directory)["optimizer"]["param_groups"][0]["lr"] == lr


def test_killed_stack_resumes_every_member(tmp_path, monkeypatch):
    straight_cfg, straight = stack_job(tmp_path / "straight", "regime=nb_l1", "optimizer=momentum")
    execute(straight_cfg)
    cfg, jobs = stack_job(tmp_path / "killed", "regime=nb_l1", "optimizer=momentum")
    import experiments.train as train

    calls = {"n": 0}
    real = train.evaluate_members

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:                 # val + test per epoch: dies in epoch 3
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate_members", crash)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg)
    monkeypatch.setattr(train, "evaluate_members", real)
    assert all(records.read_summary(j.directory)["status"] == "running" for j in jobs)
    assert execute(cfg)["status"] == "finished"
    for a, b in zip(straight, jobs):
        assert_same_run(a.directory, b.directory, tol=0.0)         # bit-identical


def test_kill_9_mid_stack_resumes_every_member_bit_identical(tmp_path):
    """A real SIGKILL (no cleanup) in epoch 3 of a stack; every member resumes to the numbers
    and weights of an uninterrupted stack."""
    straight_cfg, straight = stack_job(tmp_path / "straight", "regime=l1", "optimizer=momentum")
    execute(straight_cfg)
    _, jobs = stack_job(tmp_path / "killed", "regime=l1", "optimizer=momentum")
    overrides = [*BASE, "regime=l1", "optimizer=momentum", "seed=0", f"run.results_dir={tmp_path / 'killed'}",
                 f"run.stack_file={tmp_path / 'killed' / 'stack.json'}"]
    proc = run_killed("evaluate_members", 5, *overrides)
    assert proc.returncode == -9, proc.stderr[-2000:]
    for j in jobs:
        assert records.read_summary(j.directory)["status"] == "running"
        saved = records.load_checkpoint(j.directory)
        assert saved["loop"]["epoch"] == 2 and "cuda_rng" in saved
    assert execute(compose_config(*overrides))["status"] == "finished"
    for a, b in zip(straight, jobs):
        assert_same_run(a.directory, b.directory, tol=0.0)         # bit-identical


def test_a_diverged_member_is_marked_and_the_others_carry_on(tmp_path, monkeypatch):
    cfg, jobs = stack_job(tmp_path / "stacked", "regime=plain")
    import experiments.train as train

    real = train.evaluate_members

    def poison_member_1(model, *args, **kwargs):
        if not getattr(model, "_poisoned", False):
            with torch.no_grad():
                next(model.parameters())[1].fill_(float("nan"))
            model._poisoned = True
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train, "evaluate_members", poison_member_1)
    execute(cfg)
    statuses = [records.read_summary(j.directory)["status"] for j in jobs]
    assert statuses == ["finished", "diverged", "finished"]
    assert len(pd.read_csv(jobs[1].directory / "metrics.csv")) == 1
    for seed in (0, 2):
        _, directory = unstacked(tmp_path / "alone", "regime=plain", seed=seed)
        assert_same_run(directory, jobs[seed].directory)


def test_a_failure_is_recorded_as_for_an_unstacked_run(tmp_path, monkeypatch):
    import experiments.lifecycle as lifecycle

    def broken(cfg):
        raise RuntimeError("regime exploded")

    monkeypatch.setattr(lifecycle, "build_regime", broken)
    cfg, jobs = stack_job(tmp_path / "stacked", "regime=l2")
    with pytest.raises(RuntimeError, match="regime exploded"):      # outside a sweep: raised
        execute(cfg)
    alone = compose_config(*BASE, "regime=l2", "seed=0", f"run.results_dir={tmp_path / 'alone'}")
    with pytest.raises(RuntimeError, match="regime exploded"):
        execute(alone)
    single = records.read_summary(records.run_dir(validate(alone)))
    for i, job in enumerate(jobs):
        member = records.read_summary(job.directory)
        assert member["status"] == single["status"] == "failed"
        assert member["error"] == single["error"] == "RuntimeError: regime exploded"
        assert set(member) - set(single) == {"stack"} and member["stack"] == {"size": 3, "index": i}


def test_finished_members_are_skipped(tmp_path, capsys):
    unstacked(tmp_path / "r", "regime=l2", seed=1)
    cfg, jobs = stack_job(tmp_path / "r", "regime=l2")
    out = execute(cfg)
    assert out["trained"] == 2 and "skip" in capsys.readouterr().out
    assert records.read_summary(jobs[1].directory).get("stack") is None   # trained alone


@pytest.mark.slow     # also in scripts/check_device.py
def test_sweep_with_run_stack_gives_the_unstacked_table(tmp_path):
    common = ["-m", "experiment=demo_digits", "profile=smoke", "seed=0,1,2", "run.progress=false"]
    stacked = run_cli(*common, "run.stack=true", f"run.results_dir={tmp_path / 's'}")
    assert "(12/12 runs finished)" in stacked.stdout, stacked.stdout[-2000:]
    assert "4 stacked" in stacked.stderr + stacked.stdout
    alone = run_cli(*common, f"run.results_dir={tmp_path / 'u'}")
    a = pd.read_csv(tmp_path / "s" / "tables" / "demo_digits.smoke.csv").set_index("col")
    b = pd.read_csv(tmp_path / "u" / "tables" / "demo_digits.smoke.csv").set_index("col")
    assert (a["mean_final"] - b["mean_final"]).abs().max() < 1e-3, alone.stdout[-1000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "s").glob("runs/demo_digits/*/summary.json")]
    assert all(s["stack"]["size"] == 3 for s in summaries)


AWNN = ("dataset=spiral", "model=awnn_mlp", "model.nu0=0.05", "regime=awnn",
        "regime.awnn.sigma_theta=10", "optimizer=adam", "optimizer.lr=0.01", "train.batch_size=128")


def test_awnn_members_match_their_runs_through_width_changes(tmp_path):
    cfg, jobs = stack_job(tmp_path / "stacked", *AWNN, base=RUN)
    assert execute(cfg)["status"] == "finished"
    for seed, job in zip(SEEDS, jobs):
        _, directory = unstacked(tmp_path / "alone", *AWNN, seed=seed, base=RUN)
        assert_same_run(directory, job.directory)
        widths = pd.read_csv(job.directory / "metrics.csv")["width/total"]
        assert widths.iloc[-1] != 48            # nu0=0.05 starts at width 48: it changed
