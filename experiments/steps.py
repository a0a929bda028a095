"""The training step behind one small interface: one model (`OneModel`) or S members of one
config trained as one stacked model (`StackedModels`, docs/STACKING.md). The lifecycle
(experiments/lifecycle.py) is the same for both; only these four things differ:

    build(cfgs, data, device)           the model (each member's init from its own seed)
    configure(cfgs, ctx, regime)         per-member values a stack may hold (lr, penalty coeff)
    member_state(ctx, i) / load_member_state(ctx, i, saved)
                                         member i's model and optimiser state, always in the
                                         unstacked format: a member resumes alone or in a stack
    members(states, generators)          what the loop (train.fit) iterates over
"""
from __future__ import annotations

import torch
from torch import nn

from experiments.regimes.penalty import Penalty
from experiments.train import Members
from models import build_model, stack_built
from models.awnn import flat_optimizer_state


def dtype_of(cfg) -> torch.dtype:
    return getattr(torch, cfg.train.dtype)


class OneModel:
    stacked = False
    label = "run"

    def build(self, cfgs: list, data, device: torch.device) -> nn.Module:
        cfg = cfgs[0]
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, data.info).to(device=device, dtype=dtype_of(cfg))
        if device.type == "cpu" and not cfg.run.threads and sum(p.numel() for p in model.parameters()) < 50_000:
            torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save
        return model

    def configure(self, cfgs: list, ctx, regime) -> None:
        pass

    def member_state(self, ctx, i: int) -> dict:
        return {"model": ctx.model.state_dict(), "optimizer": ctx.optimizer.state_dict()}

    def load_member_state(self, ctx, i: int, saved: dict) -> None:
        ctx.model.load_state_dict(saved["model"])
        ctx.optimizer.load_state_dict(flat_optimizer_state(ctx.model, ctx.optimizer,
                                                           saved["optimizer"]))

    def load_order(self, size: int) -> list[int]:
        return list(range(size))

    def members(self, states: list, generators: list) -> Members:
        return Members(states, generators, stacked=self.stacked)


class StackedModels(OneModel):
    stacked = True
    label = "stack"

    def build(self, cfgs: list, data, device: torch.device) -> nn.Module:
        built = []
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)       # each member's own init, as its unstacked run
            built.append(build_model(cfg.model, data.info))
        model = stack_built(cfgs[0].model, built, tuple(data.info["input_shape"]))
        return model.to(device=device, dtype=dtype_of(cfgs[0]))

    def configure(self, cfgs: list, ctx, regime) -> None:
        """Members may differ in the values `run.stack_over` names: a per-member lr (the optimiser
        holds member 0's) and a per-member penalty coefficient."""
        lrs = torch.tensor([c.optimizer.lr for c in cfgs], dtype=torch.float64)
        if not torch.all(lrs == lrs[0]):
            ctx.lr_scale = (lrs / lrs[0]).to(ctx.device)
        coeffs = [c.regime.coeff for c in cfgs]
        if len(set(coeffs)) > 1:
            for part in regime.parts:
                if isinstance(part, Penalty):
                    part.coeff = torch.tensor(coeffs, device=ctx.device)

    def member_state(self, ctx, i: int) -> dict:
        return {"model": ctx.model.member_state_dict(i), "optimizer": self.member_optimizer(ctx, i)}

    def member_optimizer(self, ctx, i: int) -> dict:
        """Member i's optimiser state as its unstacked run holds it (its own lr)."""
        state = ctx.model.member_optimizer_state(ctx.optimizer, i)
        if ctx.lr_scale is not None:
            scale = ctx.lr_scale[i].item()
            for group in state["param_groups"]:
                for key in ("lr", "initial_lr"):
                    if key in group:
                        group[key] = group[key] * scale
        return state

    def load_member_state(self, ctx, i: int, saved: dict) -> None:
        ctx.model.load_member_state_dict(i, saved["model"])
        ctx.model.load_member_optimizer_state(
            ctx.optimizer, i, flat_optimizer_state(ctx.model, ctx.optimizer, saved["optimizer"]))

    def load_order(self, size: int) -> list[int]:
        return list(reversed(range(size)))   # member 0 last: its lr is the stack's


def training_step(stacked: bool) -> OneModel:
    return StackedModels() if stacked else OneModel()
