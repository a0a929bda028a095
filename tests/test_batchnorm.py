"""recalibrate_batchnorm against a slow reference: per-batch statistics taken by hand."""
import copy

import pytest
import torch
from torch import nn

from data.tensors import TensorSplit, iterate
from models.batchnorm import batchnorm_layers, recalibrate_batchnorm


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6, momentum=0.3),
                         nn.ReLU(), nn.Dropout(0.0), nn.Linear(6, 3)).double()


def split(n: int = 50) -> TensorSplit:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 5, 5, generator=g, dtype=torch.float64) * 3 + 1
    return TensorSplit(x, torch.randint(0, 3, (n,), generator=g))


def reference_stats(model: nn.Module, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each BN layer's input, batch by batch, through the train-mode net; then the average over
    batches of the per-channel mean and unbiased variance, computed by hand."""
    model = copy.deepcopy(model).train()
    layers = batchnorm_layers(model)
    seen = {id(bn): [] for bn in layers}
    hooks = [bn.register_forward_pre_hook(lambda m, args: seen[id(m)].append(args[0].detach()))
             for bn in layers]
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    out = []
    for bn in layers:
        means, variances = [], []
        for a in seen[id(bn)]:
            a = a.transpose(0, 1).reshape(a.shape[1], -1)    # channels x (batch, positions)
            n = a.shape[1]
            mu = a.sum(1) / n
            means.append(mu)
            variances.append(((a - mu[:, None]) ** 2).sum(1) / (n - 1))
        out.append((torch.stack(means).mean(0), torch.stack(variances).mean(0)))
    return out


@pytest.mark.parametrize("max_batches", [0, 3])
def test_running_stats_are_the_average_batch_statistics(max_batches):
    model, data = small_net(), split()
    # Stale statistics from "training".
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 2, 5, 5, dtype=torch.float64) * 10)
    model.eval()
    generator = torch.Generator().manual_seed(7)
    batches = [x for (x,), _ in iterate(data, 16, generator, shuffle=True)]
    if max_batches:
        batches = batches[:max_batches]
    expected = reference_stats(model, batches)

    used = recalibrate_batchnorm(model, data, 16, max_batches=max_batches, seed=7)
    assert used == len(batches) == (max_batches or 4)
    for bn, (mean, var) in zip(batchnorm_layers(model), expected):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-12)
        assert bn.num_batches_tracked.item() == len(batches)
    # Mode and momenta restored.
    assert not model.training
    assert [bn.momentum for bn in batchnorm_layers(model)] == [0.1, 0.3]


def test_eval_output_after_recalibration_matches_train_mode_on_one_batch():
    """With one batch, the recalibrated eval-mode net normalises exactly like train mode,
    up to BN's biased (train) vs unbiased (running) variance."""
    model, data = small_net(), split(16)
    recalibrate_batchnorm(model, data, 16)
    conv_bn, linear_bn = batchnorm_layers(model)
    conv_bn.running_var.mul_(399 / 400)   # unbiased -> biased (train mode): 16 x 5 x 5 values
    linear_bn.running_var.mul_(15 / 16)   # 16 values per channel
    (x,), _ = data.take(torch.arange(16))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), model.train()(x), rtol=1e-9, atol=1e-9)


def test_training_mode_restored_and_gradients_untouched():
    model, data = small_net(), split()
    model.train()
    assert recalibrate_batchnorm(model, data, 10, max_batches=2) == 2
    assert model.training and all(p.grad is None for p in model.parameters())


def test_model_without_batchnorm_is_a_no_op():
    model = nn.Linear(3, 2)
    state = copy.deepcopy(model.state_dict())
    assert recalibrate_batchnorm(model, split(), 8) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_bad_batch_size_named():
    with pytest.raises(ValueError, match="batch_size=0"):
        recalibrate_batchnorm(small_net(), split(), 0)
