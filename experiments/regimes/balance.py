"""Neural balancing regimes (NB §2-3): full balance before training, partial balance per epoch."""
from __future__ import annotations

from torch import nn

from experiments.regimes.base import Regime, RunContext
from models import balancing


def ratio_metrics(model: nn.Module, p: float, include_bias: bool) -> dict[str, float]:
    """Per-neuron ‖in‖_p / ‖out‖_p as `ratio/<layer>/<neuron>` (toy plot, NB App. A.2)."""
    out = {}
    for k, (a, b) in enumerate(balancing.neuron_costs(model, p, include_bias)):
        ratio = (a / b.clamp_min(balancing.ZERO_COST)).pow(1.0 / p)
        out.update({f"ratio/{k}/{i}": r for i, r in enumerate(ratio.tolist())})
    return out


def per_member(value):
    """A result field as metrics: a float, or a list of floats for a stack (one per member)."""
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


class _Balancing(Regime):
    def __init__(self, p: float, include_bias: bool, record_ratios: bool):
        if not p > 0:
            raise ValueError(f"regime balancing p={p}: must be > 0 (1 = l1, 2 = l2)")
        self.p, self.include_bias, self.record_ratios = p, include_bias, record_ratios

    def _check_model(self, model: nn.Module) -> None:
        balancing.unit_groups(model, self.include_bias)   # raises for unsupported models

    def _apply(self, ctx: RunContext, result: balancing.BalanceResult) -> dict[str, float]:
        balancing.rescale_optimizer_state(ctx.optimizer, result.param_scales())
        return {"balance/cost_before": result.cost_before, "balance/cost": result.cost_after,
                "balance/max_log_imbalance": result.max_log_imbalance}


class FullBalanceAtStart(_Balancing):
    """Full balance once, before training (NB Fig. 1, Table 2 'NB at start')."""

    def __init__(self, p: float = 1, include_bias: bool = True, tol: float = 1e-6,
                 max_sweeps: int = 10_000, method: str = "direct", record_ratios: bool = False):
        super().__init__(p, include_bias, record_ratios)
        self.tol, self.max_sweeps, self.method = tol, max_sweeps, method
        self.name = f"fb{p}"
        self.start_metrics: dict[str, float] = {}

    def before_training(self, ctx: RunContext) -> None:
        self._check_model(ctx.model)
        result = balancing.full_balance(ctx.model, self.p, tol=self.tol,
                                        max_sweeps=self.max_sweeps, include_bias=self.include_bias,
                                        method=self.method)
        self.start_metrics = self._apply(ctx, result)
        self.start_metrics.update({"balance/sweeps": per_member(result.sweeps),
                                   "balance/newton_steps": per_member(result.newton_steps)})
        ctx.extra["full_balance_at_start"] = dict(self.start_metrics)

    def on_epoch_end(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        out = {f"start/{k}": v for k, v in self.start_metrics.items()} if epoch == 0 else {}
        if self.record_ratios:
            out.update(ratio_metrics(ctx.model, self.p, self.include_bias))
        return out

    def state_dict(self) -> dict:
        return {"start_metrics": self.start_metrics}

    def load_state_dict(self, state: dict) -> None:
        self.start_metrics = dict(state.get("start_metrics", {}))


class PartialBalancing(_Balancing):
    """Every `every` epochs, epoch 0 included: one layer-wise sweep (NB Table 1; authors' code),
    or with `full=True` a full balance (NB App. A.2, Fig. 4). `every=0` only records ratios."""

    def __init__(self, p: float = 1, every: int = 1, order: str = "forward",
                 include_bias: bool = True, record_ratios: bool = False, full: bool = False):
        super().__init__(p, include_bias, record_ratios)
        if every < 0:
            raise ValueError(f"regime.balance_every={every}: must be >= 0")
        if order not in ("forward", "reverse", "random"):
            raise ValueError(f"regime.balance_order={order!r}: allowed 'forward', 'reverse', 'random'")
        self.every, self.order, self.full = every, order, full
        self.name = f"{'fb' if full else 'nb'}{p}"

    def before_training(self, ctx: RunContext) -> None:
        self._check_model(ctx.model)

    def on_epoch_end(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        out = {}
        if self.every and epoch % self.every == 0:
            if self.full:
                result = balancing.full_balance(ctx.model, self.p, order=self.order,
                                                include_bias=self.include_bias)
            else:
                result = balancing.partial_balance(ctx.model, self.p, self.order, self.include_bias,
                                                   seed=epoch)
            out = self._apply(ctx, result)
        if self.record_ratios:
            out.update(ratio_metrics(ctx.model, self.p, self.include_bias))
        return out
