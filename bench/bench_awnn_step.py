"""AWNN training-step time / fixed-width step time at the same width (AWNN §3.3 overhead).

Run: python bench/bench_awnn_step.py [--steps N] [--device cpu|cuda]
Cases: the SpiralHard-sized MLP (2 inputs, batch 128, width 232, Adam) and the ResNet20 head
(64-dim feature batch, width 117, SGD momentum), each with the widths free to change every step
("natural") and with a width change forced on every step ("resize every step"); then the full
ResNet20 on CIFAR-shaped inputs. AWNN steps include the ELBO prior penalty and Algorithm 1's width
update; fixed steps are plain CE ("fixed") or CE with the same Gaussian prior on the weights
("fixed+prior", i.e. L2: isolates the cost of the adaptive layer itself). Times are medians over
repeats of interleaved blocks.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.awnn import AdaptiveMLP, log_prior_theta, update_widths  # noqa: E402
from models.resnet import ResNet20  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model: nn.Module, optimizer, x, y, adaptive: bool, force_resize: bool,
              prior: bool | None = None):
    mlps = [m for m in model.modules() if isinstance(m, AdaptiveMLP)]
    flip = [1.0]
    state = {"changes": 0}
    prior = adaptive if prior is None else prior

    def step():
        loss = F.cross_entropy(model(x), y)
        if prior:
            loss = loss - log_prior_theta(model, 1.0) / 10_000
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if adaptive:
            if force_resize:                     # nudge ν so that the width moves every step
                with torch.no_grad():
                    for m in mlps:
                        m.raw_nu.add_(0.01 * flip[0])
                flip[0] = -flip[0]
            state["changes"] += update_widths(model, optimizer)

    return step, state


def time_cases(builders: dict, steps: int, repeats: int, device) -> dict:
    """Median seconds per step of each builder's step, timed in interleaved blocks."""
    runs = {name: build() for name, build in builders.items()}
    for step, _ in runs.values():                # warm-up
        for _ in range(max(3, steps // 5)):
            step()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (step, _) in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    out = {name: statistics.median(t) for name, t in times.items()}
    out["changes"] = runs["awnn"][1]["changes"]
    out["steps"] = (max(3, steps // 5) + repeats * steps)
    return out


def mlp_case(device, force_resize: bool):
    x = torch.randn(128, 2, device=device)
    y = torch.randint(0, 2, (128,), device=device)

    def fixed():
        model = nn.Sequential(nn.Linear(2, 232), nn.ReLU6(), nn.Linear(232, 2)).to(device)
        return make_step(model, torch.optim.Adam(model.parameters(), lr=0.01), x, y, False, False)

    def awnn():
        model = AdaptiveMLP(2, 2, 1, nu0=0.01).to(device)
        return make_step(model, torch.optim.Adam(model.parameters(), lr=0.01), x, y, True,
                         force_resize)

    def fixed_prior():
        model = nn.Sequential(nn.Linear(2, 232), nn.ReLU6(), nn.Linear(232, 2)).to(device)
        return make_step(model, torch.optim.Adam(model.parameters(), lr=0.01), x, y, False, False,
                         prior=True)

    return {"fixed": fixed, "fixed+prior": fixed_prior, "awnn": awnn}


def head_case(device, force_resize: bool):
    x = torch.randn(128, 64, device=device)
    y = torch.randint(0, 10, (128,), device=device)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def fixed():
        model = nn.Sequential(nn.Linear(64, 117), nn.LeakyReLU(), nn.Linear(117, 10)).to(device)
        return make_step(model, sgd(model), x, y, False, False)

    def awnn():
        model = AdaptiveMLP(64, 10, 1, nu0=0.02, activation="leaky_relu").to(device)
        return make_step(model, sgd(model), x, y, True, force_resize)

    def fixed_prior():
        model = nn.Sequential(nn.Linear(64, 117), nn.LeakyReLU(), nn.Linear(117, 10)).to(device)
        return make_step(model, sgd(model), x, y, False, False, prior=True)

    return {"fixed": fixed, "fixed+prior": fixed_prior, "awnn": awnn}


def resnet_case(device, batch: int, force_resize: bool):
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def fixed():
        model = ResNet20(3, 10, head="fixed", head_width=117).to(device)
        return make_step(model, sgd(model), x, y, False, False)

    def awnn():
        model = ResNet20(3, 10, head="adaptive").to(device)
        return make_step(model, sgd(model), x, y, True, force_resize)

    def fixed_prior():
        model = ResNet20(3, 10, head="fixed", head_width=117).to(device)
        return make_step(model, sgd(model), x, y, False, False, prior=True)

    return {"fixed": fixed, "fixed+prior": fixed_prior, "awnn": awnn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resnet-batch", type=int, default=32)
    parser.add_argument("--resnet-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.resnet_steps = 50, 2, 1
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    cases = []
    for label, case in (("MLP 2-232-2, batch 128, Adam", mlp_case),
                        ("ResNet20 head 64-117-10, batch 128, SGD", head_case)):
        for force in (False, True):
            cases.append((label, force, case(device, force), args.steps, args.repeats))
    for force in (False, True):
        label = f"ResNet20 full, batch {args.resnet_batch}, SGD"
        cases.append((label, force, resnet_case(device, args.resnet_batch, force),
                      args.resnet_steps, 3))
    print(f"{'case':42s} {'resize':>7s} {'fixed ms':>9s} {'+prior ms':>9s} {'awnn ms':>9s} "
          f"{'awnn/fixed':>10s} {'awnn/+prior':>11s} {'changes':>9s}")
    for label, force, builders, steps, repeats in cases:
        r = time_cases(builders, steps, repeats, device)
        resize = "every" if force else "free"
        print(f"{label:42s} {resize:>7s} {1e3 * r['fixed']:9.3f} {1e3 * r['fixed+prior']:9.3f} "
              f"{1e3 * r['awnn']:9.3f} {r['awnn'] / r['fixed']:10.2f} "
              f"{r['awnn'] / r['fixed+prior']:11.2f} {r['changes']:>4d}/{r['steps']}")


if __name__ == "__main__":
    main()
