"""A run's life, the same for one model and for a stack of members (the training step,
experiments/steps.py, is the only difference):

    claim       take the run's lock; skip it when finished or when another job trains it
    start       config, choices, environment and a `running` summary (provenance), before training
    resume      from the run's checkpoint (one format: each member's state as its unstacked run
                holds it, plus scheduler, regime, batch order, CPU and CUDA RNG, loop state)
    checkpoint  every run.checkpoint_interval_s and when a member stops
    summary     status, final and best metrics; a failure is recorded as a `failed` summary
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from data import load_data
from data.tensors import with_dtype
from experiments import records
from experiments.devices import pick_device
from experiments.loggers import make_logger
from experiments.provenance import code_state
from experiments.regimes import RunContext, build_regime
from experiments.steps import OneModel
from experiments.train import LoopState, build_optimizer, build_scheduler, fit, primary_metric


@dataclass
class Member:
    """One run of a job: a job trains one member, or S stacked members differing only by seed."""

    cfg: DictConfig
    directory: Path
    choices: dict
    saved: dict | None = None                  # its checkpoint, when resuming
    state: LoopState = field(default_factory=LoopState)

    @property
    def epoch(self) -> int:
        return self.saved["loop"]["epoch"] if self.saved else 0


# --------------------------------------------------------------------------- Hydra's runtime
def hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items()
            if not k.startswith("hydra/") and v is not None}


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# --------------------------------------------------------------------------- claim
def claim(cfg: DictConfig, directory: Path, label: str, may_wait: bool) -> tuple[records.RunLock | None, dict]:
    """(the run's lock, {}) or (None, the summary to return) when the run is skipped."""
    lock = records.RunLock(directory)
    if not lock.acquire(wait=False):
        if not may_wait or cfg.run.on_locked == "skip":
            return None, skip_locked(directory, label)
        print(f"[{label}] wait {directory.name}: another job trains it; waiting for its lock")
        lock.acquire(wait=True)
    summary = records.read_summary(directory)
    if records.is_done(summary) and not cfg.run.force:
        print(f"[{label}] skip {directory.name}: already {summary['status']}{code_note(directory)}")
        lock.release()
        return None, summary
    return lock, {}


def skip_locked(directory: Path, label: str) -> dict:
    summary = records.read_summary(directory) or {}
    who = f" (host {summary.get('host')}, pid {summary.get('pid')}, since {summary.get('started')})" \
        if summary.get("status") == "running" else ""
    print(f"[{label}] skip {directory.name}: another job is training it{who}")
    return {**summary, "status": "running", "key": directory.name}


def code_note(directory: Path) -> str:
    """Say so when a finished run was made by other code than the one running now."""
    path = directory / "environment.json"
    then = records.read_json(path).get("code_version") if path.exists() else None
    current = code_state()["code_version"]
    if then == current:
        return ""
    return f" (made by code {then or 'unknown'}, now {current}; run.force=true reruns it)"


# --------------------------------------------------------------------------- train
def train_members(members: list[Member], step: OneModel) -> list[dict]:
    """Train claimed members (the caller holds their locks); one summary each. Members at
    different epochs (a stack resumed after some members ran alone) train as separate groups."""
    summaries = []
    for group in by_epoch(members, step):
        summaries += guarded(group, step, lambda: train_group(group, step))
    return summaries


def by_epoch(members: list[Member], step) -> list[list[Member]]:
    """Load each member's checkpoint; group members by epoch. A member whose checkpoints are all
    unreadable fails like any run (CheckpointError names run.force=true)."""
    groups: dict[int, list[Member]] = defaultdict(list)
    for m in members:
        if not guarded([m], step, lambda m=m: load_saved(m)):
            groups[m.epoch].append(m)
    return [groups[e] for e in sorted(groups)]


def load_saved(m: Member) -> list:
    """m.saved = its newest readable checkpoint (none with run.force: it starts over)."""
    if m.cfg.run.force:
        records.clear_checkpoints(m.directory)
    if records.has_checkpoint(m.directory):
        m.saved = records.load_checkpoint(m.directory)
    return []


def guarded(group: list[Member], step, body) -> list[dict]:
    """body(), recording an exception as a `failed` run of every member (and raising it outside
    a sweep: a sweep carries on with its other jobs)."""
    try:
        return body()
    except Exception as err:
        failed = [failure_record(m, i, len(group), step, err) for i, m in enumerate(group)]
        if not in_multirun():
            raise
        print(f"[{step.label}] FAILED {who(group)}: {failed[0]['error']} (sweep continues)")
        return failed


def failure_record(m: Member, index: int, size: int, step, err: Exception) -> dict:
    summary = {"status": "failed", "key": m.directory.name, "experiment": m.cfg.experiment,
               "seed": m.cfg.seed, "error": f"{type(err).__name__}: {err}",
               "traceback": traceback.format_exc(), **stack_note(step, index, size)}
    records.write_json(m.directory / "summary.json", summary)
    return summary


def stack_note(step, index: int, size: int) -> dict:
    return {"stack": {"size": size, "index": index}} if step.stacked else {}


def who(group: list[Member]) -> str:
    return group[0].directory.name if len(group) == 1 else f"{len(group)} members"


def train_group(group: list[Member], step) -> list[dict]:
    cfg = group[0].cfg                      # members differ only by seed (and run.stack_over)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = pick_device(cfg.run.device, cfg.run.jobs_per_gpu)
    data = load_run_data(cfg, device)
    model = step.build([m.cfg for m in group], data, device)
    for m in group:
        start_record(m, device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    scheduler = build_scheduler(cfg.optimizer, optimizer)
    regime = build_regime(cfg.regime)
    ctx = RunContext(model=model, optimizer=optimizer, data=data, cfg=cfg, device=device)
    step.configure([m.cfg for m in group], ctx, regime)
    generators = [torch.Generator().manual_seed(m.cfg.seed + 1) for m in group]  # batch order
    if group[0].saved is not None:
        resume(group, step, ctx, scheduler, regime, generators)
    else:
        regime.before_training(ctx)
    keeper = RecordKeeper(group, step, ctx, scheduler, regime, generators)
    fit(ctx, regime, scheduler, step.members([m.state for m in group], generators),
        on_epoch=keeper.on_epoch, progress=cfg.run.progress)
    return [keeper.finish(i) for i in range(len(group))]


def load_run_data(cfg: DictConfig, device: torch.device):
    """The run's data on its device, floating-point tensors in `train.dtype`."""
    data = load_data(cfg.dataset, cfg.data, device)
    dtype = getattr(torch, cfg.train.dtype)
    return dataclasses.replace(data, train=with_dtype(data.train, dtype),
                               val=with_dtype(data.val, dtype), test=with_dtype(data.test, dtype))


def start_record(m: Member, device: torch.device) -> None:
    """config, choices, environment and a `running` summary, before any training."""
    records.atomic_write_text(m.directory / "config.yaml", OmegaConf.to_yaml(m.cfg, resolve=True))
    records.write_json(m.directory / "choices.json", m.choices)
    records.write_json(m.directory / "environment.json", records.environment(device))
    records.write_json(m.directory / "summary.json",
                       records.running_summary(m.directory.name, m.cfg.experiment, m.cfg.seed))


def resume(group: list[Member], step, ctx: RunContext, scheduler, regime, generators) -> None:
    for i in step.load_order(len(group)):
        m = group[i]
        step.load_member_state(ctx, i, m.saved)
        generators[i].set_state(m.saved["generator"])
        m.state = LoopState(**m.saved["loop"])
    saved = group[0].saved
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    regime.load_state_dict(saved["regime"])
    torch.set_rng_state(saved["torch_rng"])
    if ctx.device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], ctx.device)
    ctx.step = saved.get("step", 0)
    print(f"[{step.label}] resume {who(group)} from epoch {group[0].epoch}")
    for m in group:
        m.saved = None


class RecordKeeper:
    """After every epoch: log each member's new row; checkpoint it when due
    (run.checkpoint_interval_s) or when it stops. At the end: its summary."""

    def __init__(self, group: list[Member], step, ctx: RunContext, scheduler, regime, generators):
        self.group, self.step, self.ctx = group, step, ctx
        self.scheduler, self.regime, self.generators = scheduler, regime, generators
        self.loggers = [make_logger(m.cfg, m.directory.name) for m in group]
        self.interval = group[0].cfg.run.checkpoint_interval_s
        self.last_save = time.monotonic()

    def on_epoch(self, indices: list[int]) -> None:
        due = time.monotonic() - self.last_save >= self.interval
        for i in indices:
            self.loggers[i].log(self.group[i].state.history[-1])
            if due or self.group[i].state.status != "running":
                self.save(i)
        if due:
            self.last_save = time.monotonic()

    def checkpoint(self, i: int) -> dict:
        ctx, device = self.ctx, self.ctx.device
        return {**self.step.member_state(ctx, i),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "regime": self.regime.state_dict(), "generator": self.generators[i].get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "loop": vars(self.group[i].state).copy(), "step": ctx.step,
                **stack_note(self.step, i, len(self.group))}

    def save(self, i: int) -> None:
        m = self.group[i]
        records.save_checkpoint(m.directory, self.checkpoint(i))
        records.write_metrics_csv(m.directory / "metrics.csv", m.state.history)

    def finish(self, i: int) -> dict:
        m, data = self.group[i], self.ctx.data
        if m.state.status == "running":      # every member stopped: cannot happen, but be honest
            m.state.status = "failed"
        self.save(i)
        summary = {**summarize(m.cfg, m.directory.name, m.state, data.task, data.splits, m.choices),
                   **stack_note(self.step, i, len(self.group))}
        records.write_json(m.directory / "summary.json", summary)
        self.loggers[i].finish(summary)
        report(summary, data.task, m.state)
        return summary


# --------------------------------------------------------------------------- summary
def report(summary: dict, task: str, state: LoopState) -> None:
    metric = primary_metric(task)[0]
    value = summary["final"].get(f"test_{metric}", float("nan"))
    why = f" ({summary['diverged_because']})" if summary.get("diverged_because") else ""
    print(f"[run] {summary['status']} {summary['key']}: epochs={state.epoch} "
          f"test_{metric}={value:.4f} ({state.elapsed:.1f}s){why}")


def summarize(cfg, key: str, state: LoopState, task: str, splits: dict, choices: dict) -> dict:
    metric, direction = primary_metric(task)
    history = state.history
    pick = max if direction == "max" else min

    def best_by(column: str):
        rows = [r for r in history if column in r and r[column] == r[column]]  # skip NaN
        return pick(rows, key=lambda r: r[column]) if rows else None

    return {
        "status": state.status, "key": key, "experiment": cfg.experiment, "seed": cfg.seed,
        "metric": metric, "direction": direction, "epochs": state.epoch,
        "train_seconds": state.elapsed, "final": history[-1] if history else {},
        **({"diverged_because": state.diverged_because} if state.status == "diverged" else {}),
        "best_val": best_by(f"val_{metric}"), "best_test": best_by(f"test_{metric}"),
        "splits": splits, "choices": choices,
        "code_version": code_state()["code_version"], "finished": records.now(),
    }
