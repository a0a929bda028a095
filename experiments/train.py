"""The training loop: read it top to bottom. Everything regime-specific happens in the hooks."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from data.tensors import iterate
from experiments.regimes import RunContext
from models.batchnorm import recalibrate_batchnorm


# --------------------------------------------------------------------------- task: loss, metrics
def task_loss(task: str, outputs: torch.Tensor, target: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    if task == "seq2seq":
        return F.cross_entropy(outputs.flatten(0, 1), target.flatten(), ignore_index=pad_id)
    return F.cross_entropy(outputs, target)


def primary_metric(task: str) -> tuple[str, str]:
    """(metric, direction) the run is judged by: accuracy for classification, loss for seq2seq."""
    return ("loss", "min") if task == "seq2seq" else ("acc", "max")


@torch.no_grad()
def evaluate(model, split, task: str, batch_size: int, pad_id: int = 0) -> dict[str, float]:
    """Mean loss and accuracy (%) over a split. One device sync at the end."""
    model.eval()
    loss_sum = correct = count = 0
    for inputs, target in iterate(split, batch_size, shuffle=False):
        out = model(*inputs)
        if task == "seq2seq":
            mask = target != pad_id
            loss_sum = loss_sum + F.cross_entropy(out.flatten(0, 1), target.flatten(),
                                                  ignore_index=pad_id, reduction="sum")
            correct = correct + ((out.argmax(-1) == target) & mask).sum()
            count = count + mask.sum()
        else:
            loss_sum = loss_sum + F.cross_entropy(out, target, reduction="sum")
            correct = correct + (out.argmax(-1) == target).sum()
            count = count + len(target)
    stats = torch.stack([torch.as_tensor(v, dtype=torch.float64, device="cpu") if not torch.is_tensor(v)
                         else v.double().cpu() for v in (loss_sum, correct, count)]).tolist()
    return {"loss": stats[0] / stats[2], "acc": 100.0 * stats[1] / stats[2]}


# --------------------------------------------------------------------------- optimiser
def build_optimizer(cfg, params):
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer.name={cfg.name!r}; allowed: sgd, adam, adamw")


def build_scheduler(cfg, optimizer):
    s = cfg.scheduler
    if s.name == "none":
        return None
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(s.milestones), gamma=s.gamma)
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=s.factor, patience=s.patience)
    raise ValueError(f"optimizer.scheduler.name={s.name!r}; allowed: none, step, multistep, plateau")


# --------------------------------------------------------------------------- loop
@dataclass
class LoopState:
    """Everything needed to resume a run exactly (saved in checkpoint.pt)."""

    epoch: int = 0                      # epochs completed
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    best_val: float | None = None
    epochs_since_best: int = 0
    status: str = "running"


def fit(ctx: RunContext, regime, scheduler, state: LoopState, generator: torch.Generator,
        on_epoch=None, progress: bool = True) -> LoopState:
    """Train for the remaining epochs. `on_epoch(state)` is called after each epoch's record."""
    cfg, data, device = ctx.cfg, ctx.data, ctx.device
    task, pad_id = data.task, data.info.get("pad_id", 0)
    metric, direction = primary_metric(task)
    has_penalty, has_after_step = regime.has_penalty, regime.has_after_step
    clip = cfg.train.grad_clip
    bar = tqdm(total=cfg.train.epochs, initial=state.epoch, disable=not progress, unit="ep",
               desc=f"{cfg.experiment}/{cfg.dataset.name}/{cfg.model.name}/{cfg.regime.name}/s{cfg.seed}",
               dynamic_ncols=True, leave=False)
    for epoch in range(state.epoch, cfg.train.epochs):
        ctx.epoch = epoch
        ctx.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        steps = 0
        for inputs, target in iterate(data.train, cfg.train.batch_size, generator, shuffle=True, augment=True):
            loss = task_loss(task, ctx.model(*inputs), target, pad_id)
            total = loss
            if has_penalty:
                penalty = regime.penalty(ctx)
                if penalty is not None:
                    total = loss + penalty
                del penalty
            ctx.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), clip)
            ctx.optimizer.step()
            if has_after_step:
                regime.after_step(ctx)
            loss_sum += loss.detach()
            steps += 1
            ctx.step += 1
            # Drop this step's graph now: an AWNN resize may swap parameter storage, and a graph
            # kept alive into the next forward would hand autograd stale shapes.
            del loss, total
        extra = regime.on_epoch_end(ctx, epoch)
        train_loss = (loss_sum / max(steps, 1)).item()  # the epoch's one sync point
        epoch_time = time.perf_counter() - start
        state.elapsed += epoch_time

        row = {"epoch": epoch + 1, "train_loss": train_loss, "time": epoch_time}
        if cfg.train.bn_recalibrate:
            recalibrate_batchnorm(ctx.model, data.train, cfg.train.batch_size,
                                  cfg.train.bn_recalibrate_batches, seed=cfg.seed)
        if cfg.train.eval_train:
            row.update({f"train_{k}": v for k, v in evaluate(ctx.model, data.train, task,
                                                             cfg.train.eval_batch_size, pad_id).items()})
        for name in ("val", "test"):
            split = getattr(data, name)
            if split is not None:
                row.update({f"{name}_{k}": v for k, v in evaluate(ctx.model, split, task,
                                                                  cfg.train.eval_batch_size, pad_id).items()})
        row["lr"] = ctx.optimizer.param_groups[0]["lr"]
        row.update(extra)
        row["epoch_time"] = time.perf_counter() - start  # training + hooks + evaluation
        state.history.append(row)
        state.epoch = epoch + 1

        if not math.isfinite(train_loss) or not math.isfinite(row.get(f"test_{metric}", 0.0)):
            state.status = "diverged"
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(row.get("val_loss", train_loss))
            else:
                scheduler.step()
        if f"val_{metric}" in row:  # early stopping on the validation metric
            value = row[f"val_{metric}"] * (1 if direction == "max" else -1)
            if state.best_val is None or value > state.best_val:
                state.best_val, state.epochs_since_best = value, 0
            else:
                state.epochs_since_best += 1
        if cfg.train.patience and state.epochs_since_best >= cfg.train.patience:
            state.status = "finished"
        if state.status == "running" and state.epoch == cfg.train.epochs:
            state.status = "finished"

        bar.update(1)
        bar.set_postfix({k: f"{row[k]:.4g}" for k in ("train_loss", f"val_{metric}", f"test_{metric}")
                         if k in row})
        if on_epoch is not None:
            on_epoch(state)
        if state.status != "running":
            break
    bar.close()
    return state
