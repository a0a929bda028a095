"""The hooks a training regime offers the loop. The loop calls them at fixed points, in order:

    before_training(ctx)                 once, after the model and optimiser exist (not on resume)
    penalty(ctx) -> Tensor | None        every step, added to the task loss before backward
    after_step(ctx)                      every step, after optimizer.step()
    on_epoch_end(ctx, epoch) -> dict     every epoch, before evaluation; returns extra metrics

A run's regime is a `Composite` of parts (a penalty, balancing, AWNN, ...), each a `Regime`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class RunContext:
    """What hooks may look at or change. `optimizer` may be replaced (e.g. after a resize)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Any                      # data.tensors.DataBundle
    cfg: Any                       # the run's resolved DictConfig
    device: torch.device
    epoch: int = 0
    step: int = 0
    extra: dict = field(default_factory=dict)
    lr_scale: torch.Tensor | None = None   # a stack's per-member lr / the optimiser's lr, [S]


class Regime:
    name = "plain"

    def before_training(self, ctx: RunContext) -> None:
        pass

    def penalty(self, ctx: RunContext) -> torch.Tensor | None:
        return None

    def after_step(self, ctx: RunContext) -> None:
        pass

    def on_epoch_end(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Composite(Regime):
    """Calls every part's hook in order; penalties add up, metric dicts merge."""

    def __init__(self, parts: list[Regime]):
        self.parts = parts
        self.has_penalty = any(type(p).penalty is not Regime.penalty for p in parts)
        self.has_after_step = any(type(p).after_step is not Regime.after_step for p in parts)

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts) or "plain"

    def before_training(self, ctx):
        for p in self.parts:
            p.before_training(ctx)

    def penalty(self, ctx):
        total = None
        for p in self.parts:
            term = p.penalty(ctx)
            if term is not None:
                total = term if total is None else total + term
        return total

    def after_step(self, ctx):
        for p in self.parts:
            p.after_step(ctx)

    def on_epoch_end(self, ctx, epoch):
        out: dict[str, float] = {}
        for p in self.parts:
            out.update(p.on_epoch_end(ctx, epoch))
        return out

    def state_dict(self):
        return {i: p.state_dict() for i, p in enumerate(self.parts)}

    def load_state_dict(self, state):
        for i, p in enumerate(self.parts):
            p.load_state_dict(state.get(i, {}))
