"""Entry point: `python -m experiments.run [overrides]` trains and evaluates one run;
`python -m experiments.run -m experiment=<name>` runs that experiment's whole sweep.

A run owns its directory while it trains (records.RunLock): a finished run is skipped, an
interrupted one resumes from its last readable checkpoint, and a second job with the same key
skips it (or waits, `run.on_locked=wait`).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import experiments  # noqa: F401  (registers the config resolvers)
from data import load_data
from data.tensors import with_dtype
from experiments import records
from experiments.devices import pick_device
from experiments.loggers import make_logger
from experiments.provenance import code_state
from experiments.regimes import RunContext, build_regime
from experiments.schema import ConfigError, validate
from experiments.train import LoopState, Members, build_optimizer, build_scheduler, fit, primary_metric
from models import build_model


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


def execute(cfg: DictConfig) -> dict:
    """Run one configuration to completion (or resume it). Returns its summary."""
    if cfg.get("run", {}).get("stack_file"):
        from experiments.stack_run import execute_stack

        return execute_stack(cfg)
    cfg = validate(cfg)
    directory = records.run_dir(cfg)
    lock = records.RunLock(directory)
    if not lock.acquire(wait=False):
        if cfg.run.on_locked == "skip":
            return skip_locked(directory)
        print(f"[run] wait {directory.name}: another job trains it; waiting for its lock")
        lock.acquire(wait=True)
    with lock:
        summary = records.read_summary(directory)
        if summary and summary["status"] in ("finished", "diverged") and not cfg.run.force:
            print(f"[run] skip {directory.name}: already {summary['status']}{code_note(directory)}")
            return summary
        return train_guarded(cfg, directory)


def skip_locked(directory) -> dict:
    summary = records.read_summary(directory) or {}
    who = f" (host {summary.get('host')}, pid {summary.get('pid')}, since {summary.get('started')})" \
        if summary.get("status") == "running" else ""
    print(f"[run] skip {directory.name}: another job is training it{who}")
    return {**summary, "status": "running", "key": directory.name}


def code_note(directory) -> str:
    """Say so when a finished run was made by other code than the one running now."""
    path = directory / "environment.json"
    then = records.read_json(path).get("code_version") if path.exists() else None
    current = code_state()["code_version"]
    if then == current:
        return ""
    return f" (made by code {then or 'unknown'}, now {current}; run.force=true reruns it)"


def train_guarded(cfg: DictConfig, directory) -> dict:
    """train_run, recording an exception as a `failed` run (and raising it outside a sweep)."""
    try:
        return train_run(cfg, directory)
    except Exception as err:
        summary = {"status": "failed", "key": directory.name, "experiment": cfg.experiment,
                   "seed": cfg.seed, "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc()}
        records.write_json(directory / "summary.json", summary)
        if not in_multirun():
            raise
        print(f"[run] FAILED {directory.name}: {summary['error']} (sweep continues)")
        return summary


def start_record(cfg: DictConfig, directory, device: torch.device) -> None:
    """config, choices, environment and a `running` summary, before any training."""
    if cfg.run.force:
        records.clear_checkpoints(directory)
    records.atomic_write_text(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    records.write_json(directory / "choices.json", hydra_choices())
    records.write_json(directory / "environment.json", records.environment(device))
    records.write_json(directory / "summary.json",
                       records.running_summary(directory.name, cfg.experiment, cfg.seed))


def load_run_data(cfg: DictConfig, device: torch.device):
    """The run's data on its device, floating-point tensors in `train.dtype`."""
    data = load_data(cfg.dataset, cfg.data, device)
    dtype = getattr(torch, cfg.train.dtype)
    return dataclasses.replace(data, train=with_dtype(data.train, dtype),
                               val=with_dtype(data.val, dtype), test=with_dtype(data.test, dtype))


def train_run(cfg: DictConfig, directory) -> dict:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = pick_device(cfg.run.device, cfg.run.jobs_per_gpu)
    data = load_run_data(cfg, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.info).to(device=device, dtype=getattr(torch, cfg.train.dtype))
    if device.type == "cpu" and not cfg.run.threads and sum(p.numel() for p in model.parameters()) < 50_000:
        torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save
    start_record(cfg, directory, device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    scheduler = build_scheduler(cfg.optimizer, optimizer)
    regime = build_regime(cfg.regime)
    ctx = RunContext(model=model, optimizer=optimizer, data=data, cfg=cfg, device=device)
    generator = torch.Generator().manual_seed(cfg.seed + 1)  # batch order, independent of init
    state = LoopState()

    if records.has_checkpoint(directory):
        saved = records.load_checkpoint(directory)
        model.load_state_dict(saved["model"])
        ctx.optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        regime.load_state_dict(saved["regime"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        state = LoopState(**saved["loop"])
        ctx.step = saved.get("step", 0)
        print(f"[run] resume {directory.name} from epoch {state.epoch}")
    else:
        regime.before_training(ctx)

    logger = make_logger(cfg, directory.name)
    last_save = [time.monotonic()]

    def save(st: LoopState, force: bool = False) -> None:
        due = time.monotonic() - last_save[0] >= cfg.run.checkpoint_interval_s
        if not (force or due or st.status != "running"):
            return
        records.save_checkpoint(directory, {
            "model": model.state_dict(), "optimizer": ctx.optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "regime": regime.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "loop": vars(st).copy(), "step": ctx.step})
        records.write_metrics_csv(directory / "metrics.csv", st.history)
        last_save[0] = time.monotonic()

    def on_epoch(_) -> None:
        logger.log(state.history[-1])
        save(state)

    fit(ctx, regime, scheduler, Members([state], [generator], stacked=False), on_epoch=on_epoch,
        progress=cfg.run.progress)
    save(state, force=True)
    summary = summarize(cfg, directory.name, state, data.task, data.splits)
    records.write_json(directory / "summary.json", summary)
    logger.finish(summary)
    report(summary, data.task, state)
    return summary


def report(summary: dict, task: str, state: LoopState) -> None:
    metric = primary_metric(task)[0]
    value = summary["final"].get(f"test_{metric}", float("nan"))
    why = f" ({summary['diverged_because']})" if summary.get("diverged_because") else ""
    print(f"[run] {summary['status']} {summary['key']}: epochs={state.epoch} "
          f"test_{metric}={value:.4f} ({state.elapsed:.1f}s){why}")


def summarize(cfg, key: str, state: LoopState, task: str, splits: dict, choices: dict | None = None) -> dict:
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
        "splits": splits, "choices": hydra_choices() if choices is None else choices,
        "code_version": code_state()["code_version"], "finished": records.now(),
    }


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    try:
        return execute(cfg)["status"]
    except ConfigError as err:
        fail_config(err)


def fail_config(err: Exception) -> None:
    """One line, no traceback, exit code 2 (HYDRA_FULL_ERROR=1 keeps the traceback)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"config error: {err}", file=sys.stderr)
    sys.exit(2)


def check_group_options(argv: list[str]) -> None:
    """`dataset=imagenet`: name the choices in one line before Hydra composes anything."""
    from data.paths import PROJECT_ROOT

    conf = PROJECT_ROOT / "conf"
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if arg.startswith("-") or not sep or key.startswith("hydra") or not (conf / key).is_dir():
            continue
        if any(c in value for c in "()[]{}$") or value in ("null", ""):
            continue  # sweep functions, interpolations: Hydra's own checks apply
        allowed = sorted(p.stem for p in (conf / key).glob("*.yaml"))
        bad = [v for v in value.split(",") if v not in allowed]
        if bad:
            fail_config(ConfigError(f"{key}={','.join(bad)} is not a config option; allowed: {allowed}"))


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
