"""Data set registry: `dataset.name` -> (module, config dataclass, loader).

Loaders are `load(cfg, data_cfg, device) -> DataBundle` (docs/CONTRACTS.md).
"""
from __future__ import annotations

import functools

import importlib

import torch
from omegaconf import DictConfig, OmegaConf

from data.paths import resolve

DATASETS: dict[str, tuple[str, str, str]] = {
    "double_moon": ("data.synthetic", "SyntheticConfig", "load"),
    "spiral": ("data.synthetic", "SyntheticConfig", "load"),
    "spiral_hard": ("data.synthetic", "SyntheticConfig", "load"),
    "circles": ("data.synthetic", "SyntheticConfig", "load"),
    "digits": ("data.vision", "DigitsConfig", "load_digits"),
    "mnist": ("data.vision", "IDXConfig", "load_idx"),
    "fashion_mnist": ("data.vision", "IDXConfig", "load_idx"),
    "cifar10": ("data.cifar", "CIFARConfig", "load"),
    "cifar100": ("data.cifar", "CIFARConfig", "load"),
    "imdb": ("data.imdb", "IMDBConfig", "load"),
    "multi30k": ("data.multi30k", "Multi30kConfig", "load"),
    "nci1": ("data.graphs", "TUConfig", "load"),
    "reddit_binary": ("data.graphs", "TUConfig", "load"),
}



@functools.lru_cache(maxsize=None)
def _schema_node(schema):
    """The schema as a structured config, built once (merge copies it; it is never mutated)."""
    return OmegaConf.structured(schema)

def _entry(name: str):
    if name not in DATASETS:
        raise ValueError(f"dataset.name={name!r} is unknown; allowed: {sorted(DATASETS)}")
    module, schema, loader = DATASETS[name]
    mod = importlib.import_module(module)
    return getattr(mod, schema), getattr(mod, loader)


def dataset_schema(name: str):
    """The config dataclass of data set `name` (its defaults are part of run identity)."""
    return _entry(name)[0]


def validate_dataset_config(cfg: DictConfig) -> DictConfig:
    schema, _ = _entry(cfg.name)
    return OmegaConf.merge(_schema_node(schema), cfg)


def load_data(cfg: DictConfig, data_cfg: DictConfig, device: torch.device):
    """Load a data set. `data.root` and `data.cache` are resolved here, once, against the project
    root (data/paths.py), so every loader sees absolute paths."""
    schema, loader = _entry(cfg.name)
    if data_cfg is not None:
        data_cfg = OmegaConf.merge(data_cfg, {"root": str(resolve(data_cfg.root)),
                                              "cache": str(resolve(data_cfg.cache))})
    return loader(OmegaConf.merge(_schema_node(schema), cfg), data_cfg, device)
