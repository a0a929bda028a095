"""The training loop: read it top to bottom. Everything regime-specific happens in the hooks."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from data.tensors import iterate, iterate_members
from experiments.regimes import RunContext
from models.batchnorm import recalibrate_batchnorm
from models.stacked import clip_grad_norm_per_member, evaluate_members, member_losses


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


def python_number(value):
    """A metric as a Python number (checkpoints load with weights_only=True: no numpy scalars)."""
    if torch.is_tensor(value):
        return value.item()
    return value.item() if hasattr(value, "item") and not isinstance(value, (int, float)) else value


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
    diverged_because: str = ""          # the value that was not finite, or the runaway width


class Members:
    """The runs one loop trains: one ordinary run, or S stacked members (docs/STACKING.md) whose
    batches, losses, clipping and evaluation are per member. Stacked losses are [S] and the loss
    backpropagated is their sum: member i's gradient is its own."""

    def __init__(self, states: list[LoopState], generators: list[torch.Generator], stacked: bool):
        self.states, self.generators, self.stacked = states, generators, stacked

    def batches(self, split, batch_size: int):
        if self.stacked:
            return iterate_members(split, batch_size, self.generators)
        return iterate(split, batch_size, self.generators[0], shuffle=True, augment=True)

    def losses(self, task: str, outputs, target, pad_id: int) -> torch.Tensor:
        return member_losses(outputs, target) if self.stacked else task_loss(task, outputs, target, pad_id)

    def clip(self, model, max_norm: float) -> None:
        if self.stacked:
            clip_grad_norm_per_member(model.parameters(), max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def evaluate(self, model, split, task: str, batch_size: int, pad_id: int) -> list[dict]:
        """Per member: {"loss": ..., "acc": ...} over the split."""
        if not self.stacked:
            return [evaluate(model, split, task, batch_size, pad_id)]
        stats = evaluate_members(model, split, batch_size)
        return [{k: v[i] for k, v in stats.items()} for i in range(len(self.states))]


@torch.no_grad()
def step_with_member_lr(optimizer, lr_scale: torch.Tensor) -> None:
    """An optimiser step where member i moves lr_scale[i] times as far: exact for SGD (with
    momentum / weight decay) and Adam(W), whose update is linear in lr for a given state."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    before = [p.detach().clone() for p in params]
    optimizer.step()
    for p, b in zip(params, before):
        scale = lr_scale.to(p).view(-1, *([1] * (p.ndim - 1)))
        p.copy_(b + scale * (p - b))


def member_value(value, i: int, stacked: bool):
    """A hook's metric for member i: a per-member list holds one value per member."""
    if stacked and isinstance(value, (list, tuple)):
        return python_number(value[i])
    return python_number(value)


def fit(ctx: RunContext, regime, scheduler, members: Members, on_epoch=None,
        progress: bool = True) -> list[LoopState]:
    """Train every member for its remaining epochs. `on_epoch(indices)` is called after each
    epoch with the members that got a new record (all that were still running)."""
    cfg, states = ctx.cfg, members.states
    metric, direction = primary_metric(ctx.data.task)
    seeds = f"s{cfg.seed}" if not members.stacked else f"{len(states)} seeds"
    bar = tqdm(total=cfg.train.epochs, initial=states[0].epoch, disable=not progress, unit="ep",
               desc=f"{cfg.experiment}/{cfg.dataset.name}/{cfg.model.name}/{cfg.regime.name}/{seeds}",
               dynamic_ncols=True, leave=False)
    for epoch in range(states[0].epoch, cfg.train.epochs):
        running = [i for i, st in enumerate(states) if st.status == "running"]
        if not running:
            break
        ctx.epoch = epoch
        start = time.perf_counter()
        train_losses = train_epoch(ctx, regime, members)
        extra = regime.on_epoch_end(ctx, epoch)
        train_losses = train_losses.reshape(-1).tolist()  # the epoch's one sync point
        epoch_time = time.perf_counter() - start
        rows = epoch_rows(ctx, members, epoch, train_losses, epoch_time, extra, start)
        for i in running:
            record_epoch(cfg, states[i], rows[i], epoch_time, metric, direction)
            if members.stacked and states[i].status == "diverged":
                ctx.model.zero_member(i, ctx.optimizer)   # its NaNs stop here; the others carry on
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(rows[0].get("val_loss", rows[0]["train_loss"]))
            else:
                scheduler.step()
        bar.update(1)
        bar.set_postfix({k: f"{rows[running[0]][k]:.4g}" for k in
                         ("train_loss", f"val_{metric}", f"test_{metric}") if k in rows[running[0]]})
        if on_epoch is not None:
            on_epoch(running)
    bar.close()
    return states


def train_epoch(ctx: RunContext, regime, members: Members) -> torch.Tensor:
    """One pass over the training data; the members' mean training loss (on the device)."""
    cfg, data, stacked = ctx.cfg, ctx.data, members.stacked
    task, pad_id, clip = data.task, data.info.get("pad_id", 0), cfg.train.grad_clip
    has_penalty, has_after_step = regime.has_penalty, regime.has_after_step
    ctx.model.train()
    loss_sum = torch.zeros(len(members.states) if stacked else (), device=ctx.device)
    steps = 0
    for inputs, target in members.batches(data.train, cfg.train.batch_size):
        loss = members.losses(task, ctx.model(*inputs), target, pad_id)
        total = loss.sum() if stacked else loss
        if has_penalty:
            penalty = regime.penalty(ctx)
            if penalty is not None:
                total = total + penalty
            del penalty
        ctx.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if clip > 0:
            members.clip(ctx.model, clip)
        if ctx.lr_scale is None:
            ctx.optimizer.step()
        else:
            step_with_member_lr(ctx.optimizer, ctx.lr_scale)
        if has_after_step:
            regime.after_step(ctx)
        loss_sum += loss.detach()
        steps += 1
        ctx.step += 1
        # Drop this step's graph now: an AWNN resize may swap parameter storage, and a graph
        # kept alive into the next forward would hand autograd stale shapes.
        del loss, total
    return loss_sum / max(steps, 1)


def epoch_rows(ctx: RunContext, members: Members, epoch: int, train_losses: list[float],
               epoch_time: float, extra: dict, start: float) -> list[dict]:
    """Each member's metrics row of the epoch: training loss, evaluation (every eval_every
    epochs and the last), lr, the regime's metrics."""
    cfg, data, stacked = ctx.cfg, ctx.data, members.stacked
    rows = [{"epoch": epoch + 1, "train_loss": train_losses[i], "time": epoch_time}
            for i in range(len(members.states))]
    evaluating = (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs
    if evaluating and cfg.train.bn_recalibrate:  # honest eval-mode numbers after few steps (issue 8)
        recalibrate_batchnorm(ctx.model, data.train, cfg.train.batch_size,
                              cfg.train.bn_recalibrate_batches, seed=cfg.seed)
    splits = [] if not evaluating else (["train"] if cfg.train.eval_train else []) + [
        n for n in ("val", "test") if getattr(data, n) is not None]
    for name in splits:
        for row, stats in zip(rows, members.evaluate(ctx.model, getattr(data, name), data.task,
                                                     cfg.train.eval_batch_size, data.info.get("pad_id", 0))):
            row.update({f"{name}_{k}": v for k, v in stats.items()})
    for i, row in enumerate(rows):
        row["lr"] = ctx.optimizer.param_groups[0]["lr"] * (1.0 if ctx.lr_scale is None else ctx.lr_scale[i].item())
        row.update({k: member_value(v, i, stacked) for k, v in extra.items()})
        row["epoch_time"] = time.perf_counter() - start  # training + hooks + evaluation
    return rows


def record_epoch(cfg, state: LoopState, row: dict, epoch_time: float, metric: str, direction: str) -> None:
    """Append the epoch's row; update divergence, early stopping and completion."""
    state.elapsed += epoch_time
    state.history.append(row)
    state.epoch = row["epoch"]
    bad = [k for k, v in row.items() if (k.endswith("loss") or k == f"test_{metric}") and not math.isfinite(v)]
    runaway = cfg.regime.awnn.runaway_width or math.inf
    wide = [k for k, v in row.items() if k.startswith("width/l") and v > runaway]
    if bad or wide:
        state.status = "diverged"
        state.diverged_because = (f"{bad[0]}={row[bad[0]]}" if bad else
                                  f"{wide[0]}={row[wide[0]]:.0f} > regime.awnn.runaway_width={runaway}")
    if f"val_{metric}" in row:  # early stopping on the validation metric
        value = row[f"val_{metric}"] * (1 if direction == "max" else -1)
        if state.best_val is None or value > state.best_val:
            state.best_val, state.epochs_since_best = value, 0
        else:
            state.epochs_since_best += 1
    if cfg.train.patience and state.epochs_since_best >= cfg.train.patience and state.status == "running":
        state.status = "finished"
    if state.status == "running" and state.epoch == cfg.train.epochs:
        state.status = "finished"
