"""AWNN training regime: ELBO priors as a penalty, width update after each step (Algorithm 1).

The loop minimises CE_mean + penalty with penalty = −(log p(θ) + log p(ν)) / N (AWNN eq. 13
divided by N). N defaults to the training-set size (info["n_train"], the paper); the authors'
configs hand-set smaller values, which `n_train` reproduces.

Per step: the weight prior −log p(θ)/N = Σθ²/(2σθ²N) has the gradient θ/(σθ²N) of (coupled) L2
weight decay; it is added to the gradients in the optimiser step (a step pre-hook: one fused
multiply and add over all weights, the same floats as the loss term's backward) instead of being a
loss term, so the loss carries only the prior on ν. The recorded train_loss is the task loss
either way. The width update reads the raw ν of every adaptive layer in one transfer.

Stacks (models/awnn/stacked.py): the priors are sums over members (`sigma_theta` may then be one
value per member), widths are updated per member, and the per-layer width and ν metrics are lists
of length S.

Resume: widths live in the model's state_dict (parameter shapes) and the growth generator in its
`_extra_state`, so loading it into a freshly built model restores them; this regime's own state is
only the resolved N.
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import torch

from experiments.regimes.base import Regime, RunContext
from models.awnn import (StackedAdaptiveMLP, adaptive_modules, add_theta_prior_grad, log_prior_nu,
                         theta_parameters, theta_penalty, update_widths)

COMPRESS_KEYS = ("mu", "sigma", "start", "end", "factor")
# The regime whose weight prior an optimiser's step applies, and the hook's handle: one per
# optimiser, a later regime replaces it.
STEP_PRIORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
STEP_HANDLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class AWNNRegime(Regime):
    """sigma_theta: std of the Gaussian prior on weights (a stack may take one per member).
    nu_prior: None (uninformative) or (mu, sigma). compress (AWNN §5.3, online compression):
    mapping with mu, sigma, start, end, factor: from epoch `start` a N(mu, sigma) prior on ν is switched on (replacing nu_prior) and
    its σ annealed geometrically to factor·sigma at epoch `end` (paper, SpiralHard: 0.05, 1, 1000,
    2500, 0.1)."""

    name = "awnn"

    def __init__(self, sigma_theta: float | Sequence[float], nu_prior=None,
                 n_train: int | None = None, compress: Mapping | None = None):
        if isinstance(sigma_theta, Sequence) and not isinstance(sigma_theta, str):
            sigma_theta = [float(s) for s in sigma_theta]
        sigmas = sigma_theta if isinstance(sigma_theta, list) else [sigma_theta]
        if not sigmas or not all(s > 0 for s in sigmas):
            raise ValueError(f"regime awnn: sigma_theta={sigma_theta} must be > 0 (one value, or "
                             f"one per stacked member)")
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
        self._model = self._mods = self._coef = None
        self._theta, self._theta_key = None, None
        self._hooked = None                 # the optimiser whose step applies the weight prior

    def before_training(self, ctx: RunContext) -> None:
        self._modules(ctx.model)
        self.n = self.n_train if self.n_train is not None else int(ctx.data.info["n_train"])

    def _modules(self, model) -> list:
        if self._model is not model:
            mods = adaptive_modules(model)
            if not mods:
                raise ValueError("regime awnn needs a model with adaptive layers, e.g. model=awnn_mlp")
            self._model, self._mods, self._coef, self._theta_key = model, mods, None, None
        return self._mods

    def _theta_parameters(self, model, mods) -> list[torch.Tensor]:
        """θ (every parameter but ν) in model order, listed again only after a capacity change
        replaced a module's θ Parameter (rare: models/awnn/capacity.py)."""
        key = tuple(m.storage_version for m in mods)
        if key != self._theta_key:
            self._theta, self._theta_key = theta_parameters(model, mods), key
        return self._theta

    def _theta_coef(self, mods, like: torch.Tensor) -> float | torch.Tensor:
        """1/(2σθ²N): a float, or a [S] tensor when σθ is given per stacked member."""
        if not isinstance(self.sigma_theta, list):
            return 0.5 / (self.sigma_theta ** 2 * self.n)
        if self._coef is None:
            sizes = {m.members for m in mods if isinstance(m, StackedAdaptiveMLP)}
            if sizes != {len(self.sigma_theta)} or len(sizes) != 1:
                raise ValueError(f"regime awnn: sigma_theta={list(self.sigma_theta)} gives one value "
                                 f"per member; the model's stacks have {sorted(sizes) or 'no'} members")
            self._coef = torch.tensor([0.5 / (s ** 2 * self.n) for s in self.sigma_theta],
                                      dtype=like.dtype, device=like.device)
        return self._coef

    def nu_prior_at(self, epoch: int) -> tuple[float, float] | None:
        """(mu, sigma) of the prior on ν at `epoch`, None for the uninformative prior."""
        c = self.compress
        if c is None or epoch < c["start"]:
            return self.nu_prior
        progress = min(1.0, (epoch - c["start"]) / (c["end"] - c["start"]))
        return c["mu"], c["sigma"] * c["factor"] ** progress

    def penalty(self, ctx: RunContext) -> torch.Tensor | None:
        """What of −(log p(θ) + log p(ν)) / N goes through the loss: −log p(ν)/N (None with the
        uninformative prior on ν). The weight prior's gradient θ/(σθ²N) is added to the gradients
        in the optimiser step instead (a step pre-hook, exactly the loss term's gradient), unless
        gradients are clipped (the clip must see it): then the whole prior is a loss term."""
        if (ctx.optimizer is not self._hooked or ctx.model is not self._model
                or STEP_PRIORS.get(ctx.optimizer) is not self):
            self._hooked = ctx.optimizer if self._prior_in_step(ctx) else None
        if self._hooked is None:
            return self.prior_penalty(ctx)
        if self.nu_prior is None and self.compress is None:
            return None
        return self._nu_penalty(ctx, self._mods)

    def prior_penalty(self, ctx: RunContext) -> torch.Tensor:
        """−(log p(θ) + log p(ν)) / N (AWNN eq. 13 over N) as one differentiable loss term; a sum
        over members on a stack."""
        if self.n is None:
            self.n = int(ctx.data.info["n_train"])
        mods = self._modules(ctx.model)
        theta = self._theta_parameters(ctx.model, mods)
        penalty = theta_penalty(theta, self._theta_coef(mods, theta[0]))
        nu = self._nu_penalty(ctx, mods)
        return penalty if nu is None else penalty + nu

    def _nu_penalty(self, ctx: RunContext, mods) -> torch.Tensor | None:
        prior = self.nu_prior_at(ctx.epoch)
        if prior is None:
            return None
        return -log_prior_nu(ctx.model, *prior, modules=mods) / self.n

    def _prior_in_step(self, ctx: RunContext) -> bool:
        """Hook the weight prior into ctx.optimizer's step (once per optimiser); False when
        gradients are clipped."""
        self._modules(ctx.model)
        if self.n is None:
            self.n = int(ctx.data.info["n_train"])
        train = getattr(ctx.cfg, "train", None)
        if train is not None and train.grad_clip > 0:
            return False
        if STEP_PRIORS.get(ctx.optimizer) is not self:
            handle = STEP_HANDLES.pop(ctx.optimizer, None)
            if handle is not None:
                handle.remove()
            STEP_HANDLES[ctx.optimizer] = ctx.optimizer.register_step_pre_hook(self._step_prior)
            STEP_PRIORS[ctx.optimizer] = self
        return True

    def _step_prior(self, optimizer, args, kwargs) -> None:
        mods = self._mods
        theta = self._theta_parameters(self._model, mods)
        add_theta_prior_grad(theta, self._theta_coef(mods, theta[0]))

    def after_step(self, ctx: RunContext) -> None:
        # Resized parameters are replaced in the optimiser too, so ctx.optimizer stays valid.
        update_widths(ctx.model, ctx.optimizer, self._modules(ctx.model))

    def on_epoch_end(self, ctx: RunContext, epoch: int) -> dict[str, float | list[float]]:
        mods = self._modules(ctx.model)
        stacked = isinstance(mods[0], StackedAdaptiveMLP)
        members = mods[0].members if stacked else 1
        nus = torch.cat([m.nus().detach().reshape(members, -1) for m in mods], dim=1).tolist()
        widths = ([[w for m in mods for w in m.widths[i]] for i in range(members)]
                  if stacked else [[w for m in mods for w in m.widths]])
        out: dict[str, float | list[float]] = {}

        def put(key: str, values: list[float]) -> None:
            out[key] = values if stacked else values[0]

        put("width/total", [float(sum(w)) for w in widths])
        for layer in range(len(widths[0])):
            put(f"width/l{layer}", [float(w[layer]) for w in widths])
            put(f"nu/l{layer}", [nu[layer] for nu in nus])
        prior = self.nu_prior_at(epoch)
        if prior is not None:
            out["nu_prior/sigma"] = prior[1]
        return out

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n") is not None:
            self.n = int(state["n"])
