"""Data set registry: `dataset.name` -> (module, config dataclass, loader) (data/registry.py).

Loaders are `load(cfg, data_cfg, device) -> DataBundle` (docs/CONTRACTS.md).
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from data.paths import resolve
from data.registry import Registry, schema_node

DATASETS: dict[str, tuple[str, str, str]] = {  # name: (module, config class, loader)
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
    "tu": ("data.graphs", "TUConfig", "load"),
}
REGISTRY = Registry("dataset.name", DATASETS)


def dataset_schema(name: str):
    """The config dataclass of data set `name` (its defaults are part of run identity)."""
    return REGISTRY.schema(name)


def validate_dataset_config(cfg: DictConfig) -> DictConfig:
    return REGISTRY.validate(cfg)


def load_data(cfg: DictConfig, data_cfg: DictConfig, device: torch.device):
    """Load a data set. `data.root` and `data.cache` are resolved here, once, against the project
    root (data/paths.py), so every loader sees absolute paths."""
    schema, loader = REGISTRY.entry(cfg.name)
    if data_cfg is not None:
        data_cfg = OmegaConf.merge(data_cfg, {"root": str(resolve(data_cfg.root)),
                                              "cache": str(resolve(data_cfg.cache))})
    return loader(OmegaConf.merge(schema_node(schema), cfg), data_cfg, device)
