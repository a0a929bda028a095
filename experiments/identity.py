"""Run identity: a run is keyed by its meaningful config, taken as a difference from the schema.

Meaningful = everything that can change the numbers (dataset, model, regime, optimiser, training
budget, seed); run control, logging, data paths, the profile's name and the table spec are not.
The key hashes only the values that differ from the schema defaults (experiments/schema.py and
the per-name dataset/model schemas), so adding a field with a default keeps every old key (the
dora convention, STYLE.md).
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from data.paths import resolve

NOT_MEANINGFUL = ("run", "logger", "data", "table", "profile", "experiment", "hydra")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are values, not flattened."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def schema_defaults(cfg: DictConfig) -> dict:
    """The flattened defaults of the schemas `cfg` is checked against (dataset/model by name)."""
    from data import dataset_schema
    from experiments import schema
    from models import model_schema

    return _defaults(schema.Config, dataset_schema(cfg.dataset.name), model_schema(cfg.model.name))


def defaults_for(dataset: str, model: str) -> dict:
    """The flattened schema defaults of a dataset/model pair (by name)."""
    from data import dataset_schema
    from experiments import schema
    from models import model_schema

    return _defaults(schema.Config, dataset_schema(dataset), model_schema(model))


@functools.lru_cache(maxsize=64)
def _defaults(config_cls, dataset_cls, model_cls) -> dict:
    tree = OmegaConf.to_container(OmegaConf.structured(config_cls), resolve=True)
    tree["dataset"] = OmegaConf.to_container(OmegaConf.structured(dataset_cls))
    tree["model"] = OmegaConf.to_container(OmegaConf.structured(model_cls))
    return flatten({k: v for k, v in tree.items() if k not in NOT_MEANINGFUL})


def meaningful(cfg: DictConfig) -> dict:
    """The flattened meaningful config (resolved)."""
    full = OmegaConf.to_container(cfg, resolve=True)
    return flatten({k: v for k, v in full.items() if k not in NOT_MEANINGFUL})


def identity(cfg: DictConfig) -> dict:
    """What the key hashes: the meaningful values that differ from the schema defaults."""
    defaults = schema_defaults(cfg)
    return {k: v for k, v in sorted(meaningful(cfg).items())
            if k not in defaults or defaults[k] != v}


def with_seed(ident: dict, seed: int) -> dict:
    """`ident` of the same config with another seed (the seed is a difference unless default)."""
    from experiments.schema import Config

    out = {k: v for k, v in ident.items() if k != "seed"}
    if seed != Config.seed:
        out["seed"] = seed
    return dict(sorted(out.items()))


def key_of(cfg: DictConfig, ident: dict, seed: int | None = None) -> str:
    """<dataset>-<model>-<regime>-s<seed>-<hash of ident>; `seed` overrides cfg.seed."""
    blob = json.dumps(ident, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    seed = cfg.seed if seed is None else seed
    return f"{cfg.dataset.name}-{cfg.model.name}-{cfg.regime.name}-s{seed}-{digest}"


def run_key(cfg: DictConfig) -> str:
    return key_of(cfg, identity(cfg))


def runs_root(cfg: DictConfig) -> Path:
    return resolve(cfg.run.results_dir) / "runs" / cfg.experiment


def run_dir(cfg: DictConfig) -> Path:
    return runs_root(cfg) / run_key(cfg)
