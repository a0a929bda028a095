"""Build a run's regime (a `Composite` of parts) from the `regime:` config node.

Order matters and is fixed: full balance at start, then the loss penalty, partial balancing,
AWNN. Balancing and AWNN parts are imported only when used.
"""
from __future__ import annotations

from experiments.regimes.base import Composite, Regime, RunContext
from experiments.regimes.penalty import Penalty

__all__ = ["Composite", "Regime", "RunContext", "build_regime"]


def build_regime(cfg) -> Composite:
    parts: list[Regime] = []
    if cfg.fb_start:
        from experiments.regimes.balance import FullBalanceAtStart

        parts.append(FullBalanceAtStart(p=cfg.balance_p, include_bias=cfg.include_bias,
                                        tol=cfg.fb_tol, max_sweeps=cfg.fb_max_sweeps,
                                        allow_non_homogeneous=cfg.allow_non_homogeneous))
    if cfg.penalty != "none":
        parts.append(Penalty(p=int(cfg.penalty[1]), coeff=cfg.coeff))
    if cfg.balance_every > 0 or cfg.record_ratios:
        from experiments.regimes.balance import PartialBalancing

        parts.append(PartialBalancing(p=cfg.balance_p, every=cfg.balance_every,
                                      order=cfg.balance_order, include_bias=cfg.include_bias,
                                      record_ratios=cfg.record_ratios, full=cfg.balance_full,
                                      allow_non_homogeneous=cfg.allow_non_homogeneous))
    if cfg.awnn.enabled:
        from experiments.regimes.awnn import AWNNRegime

        a = cfg.awnn
        nu_prior = None if a.nu_prior_mu is None else (a.nu_prior_mu, a.nu_prior_sigma)
        compress = None if a.compress_start is None else {
            "start": a.compress_start, "end": a.compress_end, "mu": a.compress_mu,
            "sigma": a.compress_sigma, "factor": a.compress_factor}
        parts.append(AWNNRegime(sigma_theta=a.sigma_theta, nu_prior=nu_prior,
                                n_train=a.n_train, compress=compress))
    composite = Composite(parts)
    composite.label = cfg.name
    return composite
