"""Neural balancing regimes (NB §2-3): full balance before training, partial balance per epoch."""
from __future__ import annotations

from torch import nn

from experiments.regimes.base import Regime, RunContext
from models import balancing, lstm_balance


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


def uses_lstm_balance(model: nn.Module, allow_non_homogeneous: bool) -> bool:
    """True for a model with an nn.LSTM, balanced by the authors' operation (models.lstm_balance),
    which is NOT function-preserving (SPEC A.2.5): only if the user allows it."""
    if not lstm_balance.find_lstms(model):
        return False
    if not allow_non_homogeneous:
        raise ValueError(f"{type(model).__name__} is an LSTM: its only 'balancing' is the "
                         f"authors' W_ih-vs-W_hh row scaling, which is NOT function-preserving "
                         f"(SPEC A.2.5); set regime.allow_non_homogeneous=true to use it")
    return True


class _Balancing(Regime):
    def __init__(self, p: float, include_bias: bool, record_ratios: bool,
                 allow_non_homogeneous: bool = False):
        if not p > 0:
            raise ValueError(f"regime balancing p={p}: must be > 0 (1 = l1, 2 = l2)")
        self.p, self.include_bias, self.record_ratios = p, include_bias, record_ratios
        self.allow_non_homogeneous = allow_non_homogeneous

    def _lstm(self, ctx: RunContext) -> bool:
        return uses_lstm_balance(ctx.model, self.allow_non_homogeneous)

    def _check_model(self, ctx: RunContext) -> None:
        if self._lstm(ctx):
            if self.record_ratios:
                raise ValueError("regime.record_ratios is not defined for the authors' LSTM "
                                 "balancing (it has no neurons with in/out weights)")
            return
        balancing.unit_groups(ctx.model, self.include_bias)   # raises for unsupported models

    def _apply(self, ctx: RunContext, result) -> dict[str, float]:
        balancing.rescale_optimizer_state(ctx.optimizer, result.param_scales())
        hook = getattr(ctx.model, "after_balancing", None)   # e.g. DFANet's feedback matrices
        if hook is not None and isinstance(result, balancing.BalanceResult):
            hook(result.log_scales)
        # 0 marks a run whose "balancing" changed the network function (tables flag it).
        preserving = self.include_bias and not isinstance(result, lstm_balance.LSTMBalanceResult)
        return {"balance/cost_before": result.cost_before, "balance/cost": result.cost_after,
                "balance/max_log_imbalance": result.max_log_imbalance,
                "balance/function_preserving": float(preserving)}


class FullBalanceAtStart(_Balancing):
    """Full balance once, before training (NB Fig. 1, Table 2 'NB at start')."""

    def __init__(self, p: float = 1, include_bias: bool = True, tol: float = 1e-6,
                 max_sweeps: int = 10_000, method: str = "direct", record_ratios: bool = False,
                 allow_non_homogeneous: bool = False):
        super().__init__(p, include_bias, record_ratios, allow_non_homogeneous)
        self.tol, self.max_sweeps, self.method = tol, max_sweeps, method
        self.name = f"fb{p}"
        self.start_metrics: dict[str, float] = {}

    def before_training(self, ctx: RunContext) -> None:
        self._check_model(ctx)
        if self._lstm(ctx):   # one pass is exact (models/lstm_balance.py)
            self.start_metrics = self._apply(ctx, lstm_balance.balance_lstm(ctx.model, self.p))
        else:
            result = balancing.full_balance(ctx.model, self.p, tol=self.tol,
                                            max_sweeps=self.max_sweeps,
                                            include_bias=self.include_bias, method=self.method)
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
                 include_bias: bool = True, record_ratios: bool = False, full: bool = False,
                 allow_non_homogeneous: bool = False):
        super().__init__(p, include_bias, record_ratios, allow_non_homogeneous)
        if every < 0:
            raise ValueError(f"regime.balance_every={every}: must be >= 0")
        if order not in ("forward", "reverse", "random"):
            raise ValueError(f"regime.balance_order={order!r}: allowed 'forward', 'reverse', 'random'")
        self.every, self.order, self.full = every, order, full
        self.name = f"{'fb' if full else 'nb'}{p}"

    def before_training(self, ctx: RunContext) -> None:
        self._check_model(ctx)

    def on_epoch_end(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        out = {}
        if self.every and epoch % self.every == 0:
            if self._lstm(ctx):
                result = lstm_balance.balance_lstm(ctx.model, self.p)
            elif self.full:
                result = balancing.full_balance(ctx.model, self.p, order=self.order,
                                                include_bias=self.include_bias)
            else:
                result = balancing.partial_balance(ctx.model, self.p, self.order, self.include_bias,
                                                   seed=epoch)
            out = self._apply(ctx, result)
        if self.record_ratios:
            out.update(ratio_metrics(ctx.model, self.p, self.include_bias))
        return out
