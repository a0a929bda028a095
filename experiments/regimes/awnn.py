"""AWNN training regime: ELBO priors as a penalty, width update after each step (Algorithm 1).

The loop minimises CE_mean + penalty with penalty = −(log p(θ) + log p(ν)) / N (AWNN eq. 13
divided by N). N defaults to the training-set size (info["n_train"], the paper); the authors'
configs hand-set smaller values, which `n_train` reproduces.

Resume: widths and capacities live in the model's state_dict (`width_state` buffer and
capacity-sized tensors), so loading it into a freshly built model restores them; this regime's
own state is only the resolved N.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from experiments.regimes.base import Regime, RunContext
from models.awnn import adaptive_modules, layer_nus, log_prior_nu, log_prior_theta, update_widths

COMPRESS_KEYS = ("mu", "sigma", "start", "end", "factor")


class AWNNRegime(Regime):
    """sigma_theta: std of the Gaussian prior on weights. nu_prior: None (uninformative) or
    (mu, sigma). compress (AWNN §5.3, online compression): mapping with mu, sigma, start, end,
    factor: from epoch `start` a N(mu, sigma) prior on ν is switched on (replacing nu_prior) and
    its σ annealed geometrically to factor·sigma at epoch `end` (paper, SpiralHard: 0.05, 1, 1000,
    2500, 0.1)."""

    name = "awnn"

    def __init__(self, sigma_theta: float, nu_prior=None, n_train: int | None = None,
                 compress: Mapping | None = None):
        if not sigma_theta > 0:
            raise ValueError(f"regime awnn: sigma_theta={sigma_theta} must be > 0")
        if nu_prior is not None:
            nu_prior = tuple(float(v) for v in nu_prior)
            if len(nu_prior) != 2 or not nu_prior[1] > 0:
                raise ValueError(f"regime awnn: nu_prior={nu_prior} must be None or (mu, sigma>0)")
        if n_train is not None and n_train < 1:
            raise ValueError(f"regime awnn: n_train={n_train} must be >= 1 or None (= data size)")
        if compress is not None:
            compress = dict(compress)
            if sorted(compress) != sorted(COMPRESS_KEYS):
                raise ValueError(f"regime awnn: compress keys {sorted(compress)}; "
                                 f"expected exactly {list(COMPRESS_KEYS)}")
            if not (compress["sigma"] > 0 and compress["factor"] > 0
                    and compress["end"] > compress["start"]):
                raise ValueError(f"regime awnn: compress={compress} needs sigma > 0, factor > 0, "
                                 f"end > start")
        self.sigma_theta, self.nu_prior, self.compress = sigma_theta, nu_prior, compress
        self.n_train = n_train
        self.n: int | None = n_train

    def before_training(self, ctx: RunContext) -> None:
        if not adaptive_modules(ctx.model):
            raise ValueError("regime awnn needs a model with adaptive layers, e.g. model=awnn_mlp")
        self.n = self.n_train if self.n_train is not None else int(ctx.data.info["n_train"])

    def nu_prior_at(self, epoch: int) -> tuple[float, float] | None:
        """(mu, sigma) of the prior on ν at `epoch`, None for the uninformative prior."""
        c = self.compress
        if c is None or epoch < c["start"]:
            return self.nu_prior
        progress = min(1.0, (epoch - c["start"]) / (c["end"] - c["start"]))
        return c["mu"], c["sigma"] * c["factor"] ** progress

    def penalty(self, ctx: RunContext) -> torch.Tensor:
        if self.n is None:
            self.n = int(ctx.data.info["n_train"])
        log_p = log_prior_theta(ctx.model, self.sigma_theta)
        prior = self.nu_prior_at(ctx.epoch)
        if prior is not None:
            log_p = log_p + log_prior_nu(ctx.model, *prior)
        return -log_p / self.n

    def after_step(self, ctx: RunContext) -> None:
        # Parameters are resized in place (same objects), so ctx.optimizer stays valid.
        update_widths(ctx.model, ctx.optimizer)

    def on_epoch_end(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        widths = [w for m in adaptive_modules(ctx.model) for w in m.widths]
        out: dict[str, float] = {"width/total": float(sum(widths))}
        for i, (w, nu) in enumerate(zip(widths, layer_nus(ctx.model))):
            out[f"width/l{i}"] = float(w)
            out[f"nu/l{i}"] = nu
        prior = self.nu_prior_at(epoch)
        if prior is not None:
            out["nu_prior/sigma"] = prior[1]
        return out

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n") is not None:
            self.n = int(state["n"])
