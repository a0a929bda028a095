"""Model registry: `model.name` -> (module, config dataclass, builder).

Each entry's config dataclass is the schema of the `model:` node: unknown keys and wrong types
fail before training. Modules are imported lazily so that, e.g., a run without graphs never
imports torch_geometric.
"""
from __future__ import annotations

import functools

import importlib

from omegaconf import DictConfig, OmegaConf
from torch import nn

# name: (module, config class, builder function)
MODELS: dict[str, tuple[str, str, str]] = {
    "fcn": ("models.fcn", "FCNConfig", "build"),
    "dfa_fcn": ("models.dfa", "DFAConfig", "build"),
    "rnn": ("models.rnn", "RNNConfig", "build"),
    "lstm": ("models.rnn", "LSTMConfig", "build_lstm"),
    "transformer_cls": ("models.text_classifier", "TransformerClassifierConfig", "build"),
    "awnn_mlp": ("models.awnn", "AdaptiveMLPConfig", "build"),
    "resnet20": ("models.resnet", "ResNet20Config", "build"),
    "gin": ("models.gin", "GINConfig", "build"),
    "seq2seq": ("models.seq2seq", "Seq2SeqConfig", "build"),
}



@functools.lru_cache(maxsize=None)
def _schema_node(schema):
    """The schema as a structured config, built once (merge copies it; it is never mutated)."""
    return OmegaConf.structured(schema)

def _entry(name: str):
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; allowed: {sorted(MODELS)}")
    module, schema, builder = MODELS[name]
    mod = importlib.import_module(module)
    return getattr(mod, schema), getattr(mod, builder)


def model_schema(name: str):
    """The config dataclass of model `name` (its defaults are part of run identity)."""
    return _entry(name)[0]


def validate_model_config(cfg: DictConfig) -> DictConfig:
    """Merge `cfg` onto its schema: raises with the offending key/value on a mismatch."""
    schema, _ = _entry(cfg.name)
    return OmegaConf.merge(_schema_node(schema), cfg)


def build_model(cfg: DictConfig, info: dict) -> nn.Module:
    schema, builder = _entry(cfg.name)
    return builder(OmegaConf.merge(_schema_node(schema), cfg), info)
