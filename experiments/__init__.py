"""Runner, records, tables. Importing the package registers the config resolvers:

`${budget:PAPER,QUICK,SMOKE}` picks the value for the run's profile (profile.name), so an
experiment file states its budget for each profile in one line: `epochs: ${budget:500,15,1}`.
"""
from omegaconf import OmegaConf

from experiments.schema import PROFILES


def _budget(paper, quick, smoke, *, _root_):
    name = _root_.profile.name
    if name not in PROFILES:
        raise ValueError(f"profile.name={name!r}; allowed: {list(PROFILES)}")
    return {"paper": paper, "quick": quick, "smoke": smoke}[name]


if not OmegaConf.has_resolver("budget"):
    OmegaConf.register_new_resolver("budget", _budget)


def _learned_widths(experiment, dataset, results_dir="results/local", epochs=None, *, _root_):
    """`${learned_widths:EXPERIMENT,DATASET[,RESULTS_DIR[,EPOCHS]]}`: the widths AWNN learned in
    the runs of the same profile (a quick Fixed+ never reads paper-budget widths, nor the
    reverse), of EPOCHS epochs when given."""
    from experiments.analysis import learned_widths  # heavy imports only when used

    return learned_widths(experiment, dataset, results_dir, profile=_root_.profile.name,
                          epochs=None if epochs is None else int(epochs))


if not OmegaConf.has_resolver("learned_widths"):
    OmegaConf.register_new_resolver("learned_widths", _learned_widths)


def _gpu_count():
    import torch

    return max(1, torch.cuda.device_count())


if not OmegaConf.has_resolver("gpu_count"):
    OmegaConf.register_new_resolver("gpu_count", _gpu_count)
