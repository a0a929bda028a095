"""Model registry: `model.name` -> the module that declares it (data/registry.py).

A model module declares `REGISTERED = {name: (config class, builder)}`; the config dataclass is
the schema of the `model:` node (unknown keys and wrong types fail before training). It may also
declare what stacking needs (docs/STACKING.md):

    stack_members(members, input_shape) -> nn.Module    its stacked form (absent: not stackable)
    stackable(cfg) -> bool                               optional: which configs can stack

and balancing reads the model itself (`unit_groups(include_bias, allow_non_homogeneous)`).
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn

from data.registry import Registry, discover, schema_node

MODELS = discover("models")     # name: (module, config class, builder)
REGISTRY = Registry("model.name", MODELS)


def model_schema(name: str):
    """The config dataclass of model `name` (its defaults are part of run identity)."""
    return REGISTRY.schema(name)


def validate_model_config(cfg: DictConfig) -> DictConfig:
    return REGISTRY.validate(cfg)


def build_model(cfg: DictConfig, info: dict) -> nn.Module:
    schema, builder = REGISTRY.entry(cfg.name)
    return builder(OmegaConf.merge(schema_node(schema), cfg), info)


def stackable(cfg: DictConfig) -> bool:
    """Whether runs of this model config can train as one stack (the module says so)."""
    module = REGISTRY.module(cfg.name)
    check = getattr(module, "stackable", None)
    return hasattr(module, "stack_members") and (check is None or check(cfg))


def stack_built(cfg: DictConfig, members: list[nn.Module], input_shape: tuple[int, ...]) -> nn.Module:
    """S built members of model config `cfg` as its stacked form."""
    return REGISTRY.module(cfg.name).stack_members(members, input_shape)
