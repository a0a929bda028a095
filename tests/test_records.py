"""Run records: identity as a difference from the schema, provenance, the run lock, the running
status, and checkpoints that survive a truncated file."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import pytest

from experiments import identity, provenance, records, schema
from experiments.run import execute
from experiments.schema import validate
from tests.helpers import compose_config, run_cli

BASE = ("dataset=digits", "model=fcn", "model.widths=[32]", "optimizer.lr=0.05",
        "train.batch_size=64", "run.progress=false", "run.checkpoint_interval_s=0")


def cfg_for(results, *extra):
    return compose_config(*BASE, f"run.results_dir={results}", *extra)


# --------------------------------------------------------------------------- identity
@dataclass
class TrainPlus(schema.TrainConfig):
    warmup_epochs: int = 0            # a new field with a default


@dataclass
class ConfigPlus(schema.Config):
    train: TrainPlus = field(default_factory=TrainPlus)


def test_adding_a_field_with_a_default_keeps_every_key(results, monkeypatch):
    cfgs = [cfg_for(results), cfg_for(results, "regime=nb_l1", "seed=3"),
            compose_config("dataset=spiral", "model=awnn_mlp", "regime=awnn", f"run.results_dir={results}")]
    before = [records.run_key(validate(c)) for c in cfgs]
    monkeypatch.setattr(schema, "Config", ConfigPlus)
    assert "warmup_epochs" in validate(cfgs[0]).train
    assert [records.run_key(validate(c)) for c in cfgs] == before
    changed = cfg_for(results, "+train.warmup_epochs=5")
    assert records.run_key(validate(changed)) not in before


def test_identity_holds_only_what_differs_from_the_schema(results):
    ident = identity.identity(validate(cfg_for(results, "seed=4", "regime=l1")))
    assert ident["seed"] == 4 and ident["regime.penalty"] == "l1" and ident["model.widths"] == [32]
    assert "train.eval_batch_size" not in ident and not any(k.startswith("run.") for k in ident)


def test_a_finished_run_from_other_code_is_reused_but_said(results, capsys, monkeypatch):
    cfg = cfg_for(results, "train.epochs=1")
    execute(cfg)
    capsys.readouterr()
    monkeypatch.setattr(provenance, "code_state", lambda: {"code_version": "0000new"})
    monkeypatch.setattr("experiments.lifecycle.code_state", lambda: {"code_version": "0000new"})
    execute(cfg)
    out = capsys.readouterr().out
    assert "skip" in out and "made by code" in out and "now 0000new" in out and "run.force=true" in out


# --------------------------------------------------------------------------- provenance
def test_code_state_sees_untracked_files_and_hashes_the_diff(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "a.py").write_text("x = 1\n")
    (repo / "results").mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    monkeypatch.setattr(provenance, "PROJECT_ROOT", repo)

    def state():
        provenance.code_state.cache_clear()
        return provenance.code_state()

    clean = state()
    assert len(clean["git_revision"]) == 40 and clean["git_dirty"] is False
    assert clean["code_version"] == clean["git_revision"][:12]
    (repo / "results" / "run.csv").write_text("a\n")          # results never make code dirty
    assert state()["git_dirty"] is False
    (repo / "models" / "b.py").write_text("y = 2\n")          # untracked source does
    one = state()
    assert one["git_dirty"] and one["code_version"].startswith(clean["code_version"] + "+dirty.")
    (repo / "models" / "b.py").write_text("y = 3\n")
    assert state()["diff_sha256"] != one["diff_sha256"]
    provenance.code_state.cache_clear()


def test_a_stamped_copy_without_git_keeps_its_revision(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "a.py").write_text("x = 1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    monkeypatch.setattr(provenance, "PROJECT_ROOT", repo)
    provenance.code_state.cache_clear()
    stamp = provenance.write_stamp()
    shutil.rmtree(repo / ".git")                               # shipped to a node without git
    provenance.code_state.cache_clear()
    assert provenance.code_state()["code_version"] == stamp["git_revision"][:12]
    (repo / "models" / "a.py").write_text("x = 2\n")          # edited after stamping
    provenance.code_state.cache_clear()
    assert provenance.code_state()["code_version"].startswith("nogit.")
    provenance.code_state.cache_clear()


# --------------------------------------------------------------------------- lock
def test_a_second_job_with_the_same_key_skips_while_the_first_trains(results, capsys):
    cfg = cfg_for(results, "train.epochs=2")
    directory = records.run_dir(validate(cfg))
    other = records.RunLock(directory)
    assert other.acquire()
    try:
        summary = execute(cfg)
    finally:
        other.release()
    assert summary["status"] == "running"
    assert "another job is training it" in capsys.readouterr().out
    assert not (directory / "metrics.csv").exists()
    assert execute(cfg)["status"] == "finished"


def test_on_locked_wait_trains_after_the_other_job(results):
    cfg = cfg_for(results, "train.epochs=1", "run.on_locked=wait")
    other = records.RunLock(records.run_dir(validate(cfg)))
    assert other.acquire()
    threading.Timer(0.5, other.release).start()
    tic = time.monotonic()
    assert execute(cfg)["status"] == "finished" and time.monotonic() - tic >= 0.4


def test_two_identical_jobs_started_together_train_once(results):
    args = [*BASE, f"run.results_dir={results}", "train.epochs=3"]
    env_procs = [subprocess.Popen(p.args, cwd=p.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for p in (_cli(args), _cli(args))]
    outs = [p.communicate(timeout=300)[0] for p in env_procs]
    trained = sum("[run] finished" in o for o in outs)
    skipped = sum(("another job is training it" in o) or ("already finished" in o) for o in outs)
    assert (trained, skipped) == (1, 1), outs
    (summary,) = [json.loads(p.read_text()) for p in results.glob("runs/adhoc/*/summary.json")]
    assert summary["status"] == "finished" and summary["epochs"] == 3


def _cli(args):
    import sys

    from tests.helpers import ROOT

    class P:  # the command run_cli would run
        pass
    p = P()
    p.args, p.cwd = [sys.executable, "-m", "experiments.run", *args], ROOT
    return p


def test_a_running_summary_names_host_pid_and_start(results, monkeypatch):
    cfg = cfg_for(results, "train.epochs=1")
    seen = {}
    import experiments.train as train
    real = train.fit

    def spy(ctx, *a, **k):
        seen.update(records.read_summary(records.run_dir(ctx.cfg)))
        return real(ctx, *a, **k)

    monkeypatch.setattr("experiments.lifecycle.fit", spy)
    execute(cfg)
    assert seen["status"] == "running" and {"host", "pid", "started"} <= set(seen)


# --------------------------------------------------------------------------- checkpoints
def _interrupted_run(results, monkeypatch, epochs=4, crash_after_evals=5):
    import experiments.train as train

    calls = {"n": 0}
    real = train.evaluate

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > crash_after_evals:  # 2 evals (val, test) per epoch: dies in epoch 3
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    cfg = cfg_for(results, f"train.epochs={epochs}")
    monkeypatch.setattr(train, "evaluate", crash)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg)
    monkeypatch.setattr(train, "evaluate", real)
    return cfg, records.run_dir(validate(cfg))


def test_truncated_checkpoint_resumes_from_the_previous_one(results, tmp_path, monkeypatch, capsys):
    straight = execute(cfg_for(tmp_path / "straight", "train.epochs=4"))
    cfg, directory = _interrupted_run(results, monkeypatch)
    assert records.read_summary(directory)["status"] == "running"     # killed: stays "running"
    newest = directory / records.CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:100])                      # truncated by hand
    resumed = execute(cfg)
    out = capsys.readouterr().out
    assert "checkpoint.pt is unreadable" in out and "resuming from the previous checkpoint" in out
    assert "resume" in out and "from epoch 1" in out
    assert resumed["status"] == "finished" and resumed["epochs"] == 4
    for k in ("train_loss", "val_acc", "test_acc"):
        assert resumed["final"][k] == straight["final"][k], k           # bit-identical on the CPU
    assert len(pd.read_csv(directory / "metrics.csv")) == 4


def test_unreadable_checkpoints_fail_naming_run_force(results, monkeypatch):
    cfg, directory = _interrupted_run(results, monkeypatch)
    for name in (records.CHECKPOINT, records.PREVIOUS):
        (directory / name).write_bytes(b"not a checkpoint")
    with pytest.raises(records.CheckpointError, match="run.force=true"):
        execute(cfg)
    assert records.read_summary(directory)["status"] == "failed"
    assert execute(cfg_for(results, "train.epochs=4", "run.force=true"))["status"] == "finished"
