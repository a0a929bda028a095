"""Device cleanliness of AWNN (issue 9): every tensor AWNN creates lives on the device and dtype of
the parameters it meets. Without a GPU, a model kept on the CPU in float64 runs with the default
device set to `meta` and the default dtype float32: a tensor created without an explicit device
or dtype would land on `meta` (and fail to mix) or in float32."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments.regimes.awnn import AWNNRegime
from experiments.regimes.base import RunContext
from models.awnn import (AdaptiveMLP, log_prior_nu, log_prior_theta, stack_adaptive, truncate,
                         update_widths)
from tests.awnn_steps import plus_penalty


@pytest.fixture
def meta_default():
    """Default device `meta` while the test body runs (models were built before)."""
    def enter():
        torch.set_default_device("meta")
    yield enter
    torch.set_default_device(None)


def _check(tensors, where: str):
    for t in tensors:
        assert t.device.type == "cpu", f"{where}: tensor on {t.device}"
        if t.is_floating_point():
            assert t.dtype == torch.float64, f"{where}: tensor of dtype {t.dtype}"


def _all_tensors(model: nn.Module, optimizer) -> list[torch.Tensor]:
    out = list(model.parameters()) + list(model.buffers())
    for state in optimizer.state.values():
        out += [v for k, v in state.items() if torch.is_tensor(v) and k != "step"]
    return out


def _step(model, optimizer, x, y, regime=None, ctx=None):
    out = model(x)
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    if regime is not None:
        loss = plus_penalty(loss, regime, ctx)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return out


@pytest.mark.parametrize("convention", ["paper", "authors"])
def test_unstacked_stays_on_its_device_and_dtype(meta_default, convention):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(1), AdaptiveMLP(3, 2, 2, nu0=0.05, importance=convention,
                                                     grow_init="normal")).double()
    mlp = model[1]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    _step(model, opt, x, y)                     # Adam creates its step counters (not AWNN code)
    ctx = RunContext(model=model, optimizer=opt, data=SimpleNamespace(info={"n_train": 100}),
                     cfg=None, device=torch.device("cpu"))
    regime = AWNNRegime(sigma_theta=1.0, nu_prior=(0.1, 0.5))
    regime.before_training(ctx)
    meta_default()
    _check([_step(model, opt, x, y, regime, ctx)], "forward")
    mlp.resize([w + 40 for w in mlp.widths], opt)            # grow
    _step(model, opt, x, y, regime, ctx)
    mlp.resize([5, 3], opt)                                  # shrink
    with torch.no_grad():
        mlp.raw_nu.sub_(1.0)
    assert update_widths(model, opt)
    _check(_all_tensors(model, opt), "after resizes")
    _check([log_prior_theta(model, 2.0), log_prior_nu(model, 0.1, 0.3), regime.prior_penalty(ctx)], "priors")
    regime.after_step(ctx)
    regime.on_epoch_end(ctx, 0)
    small = truncate(model, 0.5)
    _check([small(x)] + list(small.parameters()) + [f for f in mlp.importances()], "truncate")
    _check(_all_tensors(model, opt), "end")


def test_stacked_stays_on_its_device_and_dtype(meta_default):
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(nn.Sequential(nn.Flatten(1), AdaptiveMLP(3, 2, 1, nu0=0.05)))
    stack = stack_adaptive(members).double()
    opt = torch.optim.Adam(stack.parameters(), lr=0.01)
    x, y = torch.randn(3, 8, 3, dtype=torch.float64), torch.randint(0, 2, (3, 8))
    _step(stack, opt, x, y)
    ctx = RunContext(model=stack, optimizer=opt, data=SimpleNamespace(info={"n_train": 100}),
                     cfg=None, device=torch.device("cpu"))
    regime = AWNNRegime(sigma_theta=[1.0, 2.0, 3.0])
    regime.before_training(ctx)
    meta_default()
    _check([_step(stack, opt, x, y, regime, ctx), stack(x[0])], "forward")
    mlp = stack[1]
    cap = mlp.capacities[0]
    mlp.resize_member(0, [cap + 5], opt)                     # capacity grows for all members
    mlp.resize_member(1, [4], opt)
    assert mlp.capacities[0] >= cap + 5
    with torch.no_grad():
        mlp.raw_nu[2] -= 0.5
    regime.after_step(ctx)
    _step(stack, opt, x, y, regime, ctx)
    regime.on_epoch_end(ctx, 0)
    state = stack.member_state_dict(1)
    stack.load_member_state_dict(2, state)
    stack.zero_member(0, opt)
    _check(_all_tensors(stack, opt) + [t for t in state.values() if torch.is_tensor(t)], "stack")


def _train(model, opt, regime, ctx, batches, stacked: bool) -> list:
    widths = []
    for x, y in batches:
        out = model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum")
        loss = plus_penalty(loss / y.shape[-1], regime, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():                   # push the widths down, then up
            adaptive = model[1]
            adaptive.raw_nu.add_(0.15 if len(widths) < 4 else -0.3)
        regime.after_step(ctx)
        widths.append(model.widths if stacked else adaptive.widths)
        del loss
    return widths


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("stacked", [False, True])
def test_cuda_run_matches_cpu_run(stacked):
    """Float64 on CUDA and on the CPU from the same init: same widths (growth draws come from the
    model's CPU generator), parameters within 1e-9, everything on the GPU."""
    results = []
    for device in ("cpu", "cuda"):
        members = []
        for seed in range(3 if stacked else 1):
            torch.manual_seed(seed)
            members.append(nn.Sequential(nn.Flatten(1), AdaptiveMLP(2, 3, 2, nu0=0.1)))
        model = (stack_adaptive(members) if stacked else members[0]).double().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        ctx = RunContext(model=model, optimizer=opt, data=SimpleNamespace(info={"n_train": 64}),
                         cfg=None, device=torch.device(device))
        regime = AWNNRegime(sigma_theta=1.0)
        regime.before_training(ctx)
        gen = torch.Generator().manual_seed(5)
        shape = (3, 16, 2) if stacked else (16, 2)
        batches = [(torch.randn(shape, generator=gen, dtype=torch.float64).to(device),
                    torch.randint(0, 3, shape[:-1], generator=gen).to(device)) for _ in range(8)]
        widths = _train(model, opt, regime, ctx, batches, stacked)
        tensors = _all_tensors(model, opt)
        assert all(t.device.type == device for t in tensors)
        results.append((widths, [p.detach().cpu() for p in model.parameters()]))
    (cpu_widths, cpu_params), (gpu_widths, gpu_params) = results
    assert cpu_widths == gpu_widths and len({str(w) for w in cpu_widths}) > 2
    for a, b in zip(cpu_params, gpu_params):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
