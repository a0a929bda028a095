"""A stacked job: S members (runs differing only by seed) trained as one stacked model in one
process (docs/STACKING.md). The sweeper writes the members' validated configs to a stack file
(experiments/plan.py) and launches one job with `run.stack_file=<path>`.

Each member keeps its own run directory, key, lock, records and checkpoint (model and optimiser
state in the unstacked format), so skip, resume, tables and loggers work as for unstacked runs.
Members already finished are skipped; members at different epochs (a stack resumed after some
members ran alone) train as separate sub-stacks.
"""
from __future__ import annotations

import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from experiments import plan, records
from experiments.devices import pick_device
from experiments.loggers import make_logger
from experiments.regimes import RunContext, build_regime
from experiments.run import in_multirun, load_run_data, report, start_record, summarize
from experiments.schema import validate
from experiments.train import LoopState, Members, build_optimizer, build_scheduler, fit
from models import build_model
from models.stacked import stack_models


@dataclass
class Member:
    cfg: DictConfig
    directory: Path
    choices: dict
    lock: records.RunLock
    saved: dict | None = None                  # its checkpoint, when resuming
    state: LoopState = field(default_factory=LoopState)

    @property
    def epoch(self) -> int:
        return self.saved["loop"]["epoch"] if self.saved else 0


def execute_stack(cfg: DictConfig) -> dict:
    entries = plan.read_stack_file(cfg.run.stack_file)
    members = []
    for entry in entries:
        member_cfg = validate(OmegaConf.create(entry["config"]))
        directory = records.run_dir(member_cfg)
        lock = records.RunLock(directory)
        if not lock.acquire(wait=False):
            print(f"[stack] skip {directory.name}: another job is training it")
            continue
        summary = records.read_summary(directory)
        if summary and summary["status"] in ("finished", "diverged") and not member_cfg.run.force:
            print(f"[stack] skip {directory.name}: already {summary['status']}")
            lock.release()
            continue
        members.append(Member(member_cfg, directory, entry["choices"], lock))
    statuses = []
    try:
        for group in by_epoch(members):
            statuses += train_guarded(group)
    finally:
        for m in members:
            m.lock.release()
    status = "finished" if all(s == "finished" for s in statuses) else ",".join(sorted(set(statuses)))
    return {"status": status or "finished", "stack": len(entries), "trained": len(statuses)}


def by_epoch(members: list[Member]) -> list[list[Member]]:
    """Load each member's checkpoint; members resume together only from the same epoch."""
    groups: dict[int, list[Member]] = defaultdict(list)
    for m in members:
        if m.cfg.run.force:
            records.clear_checkpoints(m.directory)
        if records.has_checkpoint(m.directory):
            m.saved = records.load_checkpoint(m.directory)
        groups[m.epoch].append(m)
    return [groups[e] for e in sorted(groups)]


def train_guarded(group: list[Member]) -> list[str]:
    try:
        return [s["status"] for s in train_stack(group)]
    except Exception as err:
        for m in group:
            records.write_json(m.directory / "summary.json", {
                "status": "failed", "key": m.directory.name, "experiment": m.cfg.experiment,
                "seed": m.cfg.seed, "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(), "stack": len(group)})
        if not in_multirun():
            raise
        print(f"[stack] FAILED {len(group)} members: {type(err).__name__}: {err} (sweep continues)")
        return ["failed"] * len(group)


def stack_values(group: list[Member], ctx: RunContext, regime) -> None:
    """Members may differ in the values `run.stack_over` names: a per-member lr (the optimiser
    holds member 0's) and a per-member penalty coefficient."""
    lrs = torch.tensor([m.cfg.optimizer.lr for m in group], dtype=torch.float64)
    if not torch.all(lrs == lrs[0]):
        ctx.lr_scale = (lrs / lrs[0]).to(ctx.device)
    coeffs = [m.cfg.regime.coeff for m in group]
    if len(set(coeffs)) > 1:
        from experiments.regimes.penalty import Penalty

        for part in regime.parts:
            if isinstance(part, Penalty):
                part.coeff = torch.tensor(coeffs, device=ctx.device)


def train_stack(group: list[Member]) -> list[dict]:
    cfg = group[0].cfg                      # members differ only by seed
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = pick_device(cfg.run.device, cfg.run.jobs_per_gpu)
    data = load_run_data(cfg, device)
    built = []
    for m in group:
        torch.manual_seed(m.cfg.seed)       # each member's own init, as its unstacked run
        built.append(build_model(m.cfg.model, data.info))
    model = stack_models(built, input_shape=tuple(data.info["input_shape"]))
    model = model.to(device=device, dtype=getattr(torch, cfg.train.dtype))
    del built
    for m in group:
        start_record(m.cfg, m.directory, device)
        records.write_json(m.directory / "choices.json", m.choices)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    scheduler = build_scheduler(cfg.optimizer, optimizer)
    regime = build_regime(cfg.regime)
    ctx = RunContext(model=model, optimizer=optimizer, data=data, cfg=cfg, device=device)
    stack_values(group, ctx, regime)
    generators = [torch.Generator().manual_seed(m.cfg.seed + 1) for m in group]

    if group[0].saved is not None:
        for i, m in reversed(list(enumerate(group))):   # member 0 last: its lr is the stack's
            model.load_member_state_dict(i, m.saved["model"])
            model.load_member_optimizer_state(optimizer, i, m.saved["optimizer"])
            generators[i].set_state(m.saved["generator"])
            m.state = LoopState(**m.saved["loop"])
        saved = group[0].saved
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        regime.load_state_dict(saved["regime"])
        torch.set_rng_state(saved["torch_rng"])
        ctx.step = saved.get("step", 0)
        print(f"[stack] resume {len(group)} members from epoch {group[0].epoch}")
        for m in group:
            m.saved = None
    else:
        regime.before_training(ctx)

    loggers = [make_logger(m.cfg, m.directory.name) for m in group]
    last_save = [time.monotonic()]

    def member_optimizer(i: int) -> dict:
        """Member i's optimiser state as its unstacked run holds it (its own lr)."""
        state = model.member_optimizer_state(optimizer, i)
        if ctx.lr_scale is not None:
            scale = ctx.lr_scale[i].item()
            for group_ in state["param_groups"]:
                for key in ("lr", "initial_lr"):
                    if key in group_:
                        group_[key] = group_[key] * scale
        return state

    def save(i: int) -> None:
        m = group[i]
        records.save_checkpoint(m.directory, {
            "model": model.member_state_dict(i),
            "optimizer": member_optimizer(i),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "regime": regime.state_dict(), "generator": generators[i].get_state(),
            "torch_rng": torch.get_rng_state(), "cuda_rng": None,
            "loop": vars(m.state).copy(), "step": ctx.step, "stack": {"size": len(group), "index": i}})
        records.write_metrics_csv(m.directory / "metrics.csv", m.state.history)

    def on_epoch(indices: list[int]) -> None:
        due = time.monotonic() - last_save[0] >= cfg.run.checkpoint_interval_s
        for i in indices:
            loggers[i].log(group[i].state.history[-1])
            if due or group[i].state.status != "running":
                save(i)
        if due:
            last_save[0] = time.monotonic()

    states = [m.state for m in group]
    fit(ctx, regime, scheduler, Members(states, generators, stacked=True), on_epoch=on_epoch,
        progress=cfg.run.progress)
    summaries = []
    for i, m in enumerate(group):
        if m.state.status == "running":      # every member stopped: cannot happen, but be honest
            m.state.status = "failed"
        save(i)
        summary = summarize(m.cfg, m.directory.name, m.state, data.task, data.splits, m.choices)
        summary["stack"] = {"size": len(group), "index": i}
        records.write_json(m.directory / "summary.json", summary)
        loggers[i].finish(summary)
        report(summary, data.task, m.state)
        summaries.append(summary)
    return summaries
