"""Adding a model is one file plus its YAML: the model module declares its name, whether and how
it stacks, and (through the model) what balancing may scale; nothing elsewhere lists models."""
from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

import models
from data.paths import PROJECT_ROOT
from data.registry import Registry, discover


def test_a_new_model_module_is_found_without_being_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "zoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(
        "from dataclasses import dataclass\nimport not_installed_anywhere  # imported on first use only\n"
        "@dataclass\nclass TinyConfig:\n    name: str = 'tiny'\n"
        "def build(cfg, info):\n    return None\n"
        "REGISTERED = {'tiny': ('TinyConfig', 'build')}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("zoo")
    assert found == {"tiny": ("zoo.tiny", "TinyConfig", "build")}
    assert "zoo.tiny" not in sys.modules
    with pytest.raises(ValueError, match="model.name='huge' is unknown; allowed: \\['tiny'\\]"):
        Registry("model.name", found).entry("huge")


def test_every_model_has_its_yaml_and_declares_itself():
    yaml_names = {OmegaConf.load(p).get("name") for p in (PROJECT_ROOT / "conf" / "model").glob("*.yaml")}
    assert set(models.MODELS) <= yaml_names | {None}
    assert set(models.MODELS) >= {"fcn", "dfa_fcn", "rnn", "lstm", "awnn_mlp", "resnet20", "gin", "seq2seq"}


@pytest.mark.parametrize("cfg, expected", [
    ({"name": "fcn"}, True), ({"name": "dfa_fcn"}, True), ({"name": "awnn_mlp"}, True),
    ({"name": "dfa_fcn", "feedback_transform": "covariant"}, False),
    ({"name": "rnn"}, False), ({"name": "resnet20"}, False)])
def test_stackable_is_what_the_model_module_declares(cfg, expected):
    assert models.stackable(OmegaConf.create(cfg)) is expected
