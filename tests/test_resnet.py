"""ResNet20 (He et al. 2016) with linear / fixed / adaptive heads."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from models import build_model
from models.awnn import adaptive_modules, update_widths
from models.resnet import ResNet20, ShortcutA
from tests.helpers import ROOT

MNIST = {"input_shape": (1, 28, 28), "num_classes": 10}
CIFAR = {"input_shape": (3, 32, 32), "num_classes": 10}


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_linear_head_param_count():
    # He et al. 2016, Table 6: ResNet20 has 0.27M parameters (CIFAR10).
    assert _n_params(ResNet20(3, 10)) == pytest.approx(0.27e6, rel=0.01)


def test_option_a_shortcut_is_parameter_free():
    shortcut = ShortcutA(16, 32, 2)
    assert _n_params(shortcut) == 0
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().max() == 0 and y[:, 24:].abs().max() == 0
    downsampling = [m for m in ResNet20(3, 10).modules() if isinstance(m, ShortcutA)]
    assert len(downsampling) == 2


@pytest.mark.parametrize("info", [MNIST, CIFAR], ids=["mnist", "cifar"])
@pytest.mark.parametrize("head", [{"head": "linear"}, {"head": "fixed", "head_width": 32},
                                  {"head": "adaptive"}], ids=lambda h: h["head"])
def test_forward_shapes(info, head):
    model = build_model(OmegaConf.create({"name": "resnet20", **head}), info)
    x = torch.randn(2, *info["input_shape"])
    assert model(x).shape == (2, 10)


def test_adaptive_head_is_awnn_setting():
    model = build_model(OmegaConf.load(ROOT / "conf/model/resnet20.yaml").copy(), CIFAR)
    assert adaptive_modules(model) == []
    model = build_model(OmegaConf.create({"name": "resnet20", "head": "adaptive"}), CIFAR)
    [head] = adaptive_modules(model)
    assert head.widths == [117] and head.activation_name == "leaky_relu"   # ν0 = 0.02
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with torch.no_grad():
        head.raw_nu.add_(1.0)
    assert update_widths(model, opt) and head.widths[0] < 117
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_head_values_are_named():
    with pytest.raises(ValueError, match="head='mlp'.*allowed"):
        ResNet20(3, 10, head="mlp")
    with pytest.raises(ValueError, match="head_width=0"):
        ResNet20(3, 10, head="fixed")
    with pytest.raises(ValueError, match="input_shape"):
        build_model(OmegaConf.create({"name": "resnet20"}), {"input_shape": (784,), "num_classes": 10})
