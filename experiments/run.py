"""Entry point: `python -m experiments.run [overrides]` trains and evaluates one run;
`python -m experiments.run -m experiment=<name>` runs that experiment's whole sweep.
"""
from __future__ import annotations

import time
import traceback

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import experiments  # noqa: F401  (registers the config resolvers)
from data import load_data
from experiments import records
from experiments.devices import pick_device
from experiments.loggers import make_logger
from experiments.regimes import RunContext, build_regime
from experiments.schema import validate
from experiments.train import LoopState, build_optimizer, build_scheduler, fit, primary_metric
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
    cfg = validate(cfg)
    directory = records.run_dir(cfg)
    summary = records.read_summary(directory)
    if summary and summary["status"] in ("finished", "diverged") and not cfg.run.force:
        print(f"[run] skip {directory.name}: already {summary['status']}")
        return summary
    try:
        return train_run(cfg, directory)
    except Exception as err:
        summary = {"status": "failed", "key": directory.name, "experiment": cfg.experiment,
                   "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        records.write_json(directory / "summary.json", summary)
        if not in_multirun():
            raise
        print(f"[run] FAILED {directory.name}: {summary['error']} (sweep continues)")
        return summary


def train_run(cfg: DictConfig, directory) -> dict:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = pick_device(cfg.run.device)
    directory.mkdir(parents=True, exist_ok=True)
    records.atomic_write_text(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    records.write_json(directory / "choices.json", hydra_choices())

    data = load_data(cfg.dataset, cfg.data, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.info).to(device)
    if device.type == "cpu" and not cfg.run.threads and sum(p.numel() for p in model.parameters()) < 50_000:
        torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save
    records.write_json(directory / "environment.json", records.environment(device))
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    scheduler = build_scheduler(cfg.optimizer, optimizer)
    regime = build_regime(cfg.regime)
    ctx = RunContext(model=model, optimizer=optimizer, data=data, cfg=cfg, device=device)
    generator = torch.Generator().manual_seed(cfg.seed + 1)  # batch order, independent of init
    state = LoopState()

    checkpoint = directory / "checkpoint.pt"
    if cfg.run.force:
        checkpoint.unlink(missing_ok=True)
    if checkpoint.exists():
        saved = records.load_checkpoint(checkpoint)
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
        records.save_checkpoint(checkpoint, {
            "model": model.state_dict(), "optimizer": ctx.optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "regime": regime.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "loop": vars(st).copy(), "step": ctx.step})
        records.write_metrics_csv(directory / "metrics.csv", st.history)
        last_save[0] = time.monotonic()

    def on_epoch(st: LoopState) -> None:
        logger.log(st.history[-1])
        save(st)

    state = fit(ctx, regime, scheduler, state, generator, on_epoch=on_epoch, progress=cfg.run.progress)
    save(state, force=True)
    summary = summarize(cfg, directory.name, state, data.task, data.splits)
    records.write_json(directory / "summary.json", summary)
    logger.finish(summary)
    final = summary["final"]
    metric = primary_metric(data.task)[0]
    print(f"[run] {summary['status']} {directory.name}: epochs={state.epoch} "
          f"test_{metric}={final.get(f'test_{metric}', float('nan')):.4f} ({state.elapsed:.1f}s)")
    return summary


def summarize(cfg, key: str, state: LoopState, task: str, splits: dict) -> dict:
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
        "best_val": best_by(f"val_{metric}"), "best_test": best_by(f"test_{metric}"),
        "splits": splits, "choices": hydra_choices(),
    }


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    return execute(cfg)["status"]


if __name__ == "__main__":
    main()
