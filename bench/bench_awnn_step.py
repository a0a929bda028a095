"""AWNN training-step time / fixed-width step time at the same width (AWNN §3.3 overhead), and a
stack of AWNN members against the same members run one after another.

Run: python bench/bench_awnn_step.py [--steps N] [--device cpu|cuda] [--clock wall|cpu] [--quick]
Cases: the Spiral-sized MLP (2 inputs, batch 128, width 232, Adam) and the ResNet20 head
(64-dim feature batch, width 117, SGD momentum), each with widths that never change ("steady": ν in
its own param group at lr 0, so every step still runs the importance, the prior, ν's optimiser
update and the width check), widths free to change ("free": random labels keep ν drifting, so the
width moves on most steps, more often than in real training) and a width change forced on every
step ("every"); then the full ResNet20 on CIFAR-shaped inputs.
Stacks: one step of S stacked AWNN MLPs against S unstacked steps (random data, widths free), and
the first epochs of S seeds of the Spiral paper configuration (AWNN App. C: ν0 0.01, relu6,
kaiming+, Adam 0.01, batch 128, σθ 10, widths shrinking from 232) trained stacked vs one by one,
each drawing its batches and losses as the training loop does (experiments/train.py: `iterate`
one by one; `iterate_members` and `member_losses` stacked, member i's batches those of its
unstacked run). An AWNN step is the training loop's step with the AWNN regime: CE + the ELBO
prior penalty (the weight prior's gradient added in the optimiser step, as the regime does it),
backward, optimiser step, Algorithm 1's width update. Fixed steps are plain CE
("fixed") or CE + the same Gaussian prior on the weights ("+prior", i.e. L2: isolates the cost of
the adaptive layer itself). Times are medians over repeats of interleaved blocks; `--clock cpu`
times process CPU time (steadier on a shared machine). The stacked case times one step of S
stacked AWNN members against S unstacked steps (same data sizes, per-member batches).

Output: tables, then one line per case, `ratio awnn/fixed (<case>): X` and
`ratio stacked/sequential (<case>): X` (> 1 means the stack is faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.synthetic import SyntheticConfig  # noqa: E402
from data.synthetic import load as load_synthetic  # noqa: E402
from data.tensors import iterate, iterate_members  # noqa: E402
from experiments.regimes.awnn import AWNNRegime  # noqa: E402
from experiments.regimes.base import RunContext  # noqa: E402
from models.awnn import (AdaptiveMLP, AdaptiveMLPConfig, adaptive_modules, build,  # noqa: E402
                         stack_adaptive, theta_penalty)
from models.resnet import ResNet20  # noqa: E402
from models.stacked import member_losses  # noqa: E402


MODES = ("steady", "free", "every")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def awnn_optimizer(model: nn.Module, make, mode: str):
    """The optimiser `make(params)`; in mode "steady" ν sits in its own group at lr 0."""
    if mode != "steady":
        return make(model.parameters())
    nus = {id(m.raw_nu) for m in adaptive_modules(model)}
    return make([{"params": [p for p in model.parameters() if id(p) not in nus]},
                 {"params": [p for p in model.parameters() if id(p) in nus], "lr": 0.0}])


def awnn_step(model: nn.Module, optimizer, x, y, force_resize: bool, stacked: bool = False):
    """The training loop's step under regime=awnn (experiments/train.py `fit`)."""
    ctx = RunContext(model=model, optimizer=optimizer, data=SimpleNamespace(info={"n_train": 10_000}),
                     cfg=None, device=x.device)
    regime = AWNNRegime(sigma_theta=1.0)
    regime.before_training(ctx)
    mlps = adaptive_modules(model)
    flip = [1.0]
    state = {"changes": 0}

    def step():
        out = model(x)
        if stacked:
            per_sample = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
            loss = per_sample.view(y.shape).mean(1).sum()       # Σ_i mean CE of member i
        else:
            loss = F.cross_entropy(out, y)
        penalty = regime.penalty(ctx)
        if penalty is not None:
            loss = loss + penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if force_resize:                         # nudge ν so that the width moves every step
            with torch.no_grad():
                for m in mlps:
                    m.raw_nu.add_(0.01 * flip[0])
            flip[0] = -flip[0]
        before = [m.widths for m in mlps]
        regime.after_step(ctx)
        state["changes"] += before != [m.widths for m in mlps]

    return step, state


def fixed_step(model: nn.Module, optimizer, x, y, prior: bool):
    coef = 0.5 / 10_000

    def step():
        loss = F.cross_entropy(model(x), y)
        if prior:
            loss = loss + theta_penalty([p for p in model.parameters()], coef)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, {"changes": 0}


def timer(clock: str):
    return time.process_time if clock == "cpu" else time.perf_counter


def time_cases(builders: dict, steps: int, repeats: int, device, clock: str) -> dict:
    """Median seconds per step of each builder's step, timed in interleaved blocks."""
    now = timer(clock)
    runs = {name: build() for name, build in builders.items()}
    warm = max(3, steps // 5)
    for step, _ in runs.values():
        for _ in range(warm):
            step()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (step, _) in runs.items():
            _sync(device)
            t0 = now()
            for _ in range(steps):
                step()
            _sync(device)
            times[name].append((now() - t0) / steps)
    out = {name: statistics.median(t) for name, t in times.items()}
    out["changes"] = runs["awnn"][1]["changes"]
    out["steps"] = warm + repeats * steps
    return out


def mlp_case(device, mode: str):
    x = torch.randn(128, 2, device=device)
    y = torch.randint(0, 2, (128,), device=device)

    def net():
        return nn.Sequential(nn.Linear(2, 232), nn.ReLU6(), nn.Linear(232, 2)).to(device)

    def adam(model):
        return torch.optim.Adam(model.parameters(), lr=0.01)

    def awnn():
        model = AdaptiveMLP(2, 2, 1, nu0=0.01).to(device)
        opt = awnn_optimizer(model, lambda p: torch.optim.Adam(p, lr=0.01), mode)
        return awnn_step(model, opt, x, y, mode == "every")

    return {"fixed": lambda: fixed_step(m := net(), adam(m), x, y, False),
            "fixed+prior": lambda: fixed_step(m := net(), adam(m), x, y, True), "awnn": awnn}


def head_case(device, mode: str):
    x = torch.randn(128, 64, device=device)
    y = torch.randint(0, 10, (128,), device=device)

    def net():
        return nn.Sequential(nn.Linear(64, 117), nn.LeakyReLU(), nn.Linear(117, 10)).to(device)

    def sgd(params):
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)

    def awnn():
        model = AdaptiveMLP(64, 10, 1, nu0=0.02, activation="leaky_relu").to(device)
        return awnn_step(model, awnn_optimizer(model, sgd, mode), x, y, mode == "every")

    return {"fixed": lambda: fixed_step(m := net(), sgd(m.parameters()), x, y, False),
            "fixed+prior": lambda: fixed_step(m := net(), sgd(m.parameters()), x, y, True),
            "awnn": awnn}


def resnet_case(device, batch: int, mode: str):
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def net():
        return ResNet20(3, 10, head="fixed", head_width=117).to(device)

    def awnn():
        model = ResNet20(3, 10, head="adaptive").to(device)
        opt = awnn_optimizer(model, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9,
                                                              weight_decay=1e-4), mode)
        return awnn_step(model, opt, x, y, mode == "every")

    return {"fixed": lambda: fixed_step(m := net(), sgd(m), x, y, False),
            "fixed+prior": lambda: fixed_step(m := net(), sgd(m), x, y, True), "awnn": awnn}


def stacked_case(device, members: int, steps: int, repeats: int, clock: str) -> tuple[float, float]:
    """Seconds per training step of `members` AWNN MLPs (Spiral size), stacked vs one by one."""
    now = timer(clock)
    xs = torch.randn(members, 128, 2, device=device)
    ys = torch.randint(0, 2, (members, 128), device=device)

    def classifier(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(1), AdaptiveMLP(2, 2, 1, nu0=0.01)).to(device)

    singles = []
    for i in range(members):
        model = classifier(i)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        singles.append(awnn_step(model, opt, xs[i], ys[i], False)[0])
    stack = stack_adaptive([classifier(i) for i in range(members)]).to(device)
    opt = torch.optim.Adam(stack.parameters(), lr=0.01)
    stacked = awnn_step(stack, opt, xs, ys, False, stacked=True)[0]

    def sequential():
        for s in singles:
            s()

    fns = {"sequential": sequential, "stacked": stacked}
    for fn in fns.values():
        for _ in range(max(3, steps // 5)):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = now()
            for _ in range(steps):
                fn()
            _sync(device)
            times[name].append((now() - t0) / steps)
    return statistics.median(times["sequential"]), statistics.median(times["stacked"])


def spiral_training(device, members: int, epochs: int, clock: str) -> tuple[float, float, list]:
    """Seconds to train `members` seeds of the Spiral paper configuration for `epochs` epochs,
    one after another and stacked (same per-member batches, regime=awnn σθ = 10)."""
    now = timer(clock)
    data = load_synthetic(SyntheticConfig(name="spiral"), None, device)

    def classifier(seed):
        torch.manual_seed(seed)
        return build(AdaptiveMLPConfig(), data.info).to(device)

    def run(model, seeds, stacked):
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        ctx = RunContext(model=model, optimizer=opt, data=data, cfg=None, device=device)
        regime = AWNNRegime(sigma_theta=10.0)
        regime.before_training(ctx)
        gens = [torch.Generator().manual_seed(s + 1) for s in seeds]
        for epoch in range(epochs):
            ctx.epoch = epoch
            # the training loop's batches (experiments/train.py Members.batches): one gather
            # per step for a stack, member i's batch equal to that of its unstacked run
            batches = iterate_members(data.train, 128, gens) if stacked else \
                iterate(data.train, 128, gens[0])
            for (x,), y in batches:
                loss = member_losses(model(x), y).sum() if stacked else F.cross_entropy(model(x), y)
                penalty = regime.penalty(ctx)
                if penalty is not None:
                    loss = loss + penalty
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                regime.after_step(ctx)
                del loss

    seeds = list(range(members))
    _sync(device)
    t0 = now()
    widths = []
    for s in seeds:
        model = classifier(s)
        run(model, [s], False)
        widths.append(model[1].widths[0])
    _sync(device)
    t1 = now()
    stack = stack_adaptive([classifier(s) for s in seeds])
    run(stack, seeds, True)
    _sync(device)
    t2 = now()
    if [w[0] for w in stack.widths] != widths:
        raise RuntimeError(f"stacked widths {stack.widths} differ from sequential {widths}")
    return t1 - t0, t2 - t1, widths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resnet-batch", type=int, default=32)
    parser.add_argument("--resnet-steps", type=int, default=3)
    parser.add_argument("--members", type=int, default=8, help="stacked cases: members (seeds)")
    parser.add_argument("--spiral-epochs", type=int, default=5, help="stacked Spiral case: epochs")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process' CPU time (steadier on a shared machine)")
    parser.add_argument("--skip-resnet", action="store_true", help="leave out the full ResNet20")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.resnet_steps, args.spiral_epochs = 50, 3, 1, 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={device} ({name}) torch={torch.__version__} threads={torch.get_num_threads()} "
          f"clock={args.clock}")
    cases = []
    for label, case in (("MLP 2-232-2, batch 128, Adam", mlp_case),
                        ("ResNet20 head 64-117-10, batch 128, SGD", head_case)):
        for mode in MODES:
            cases.append((label, mode, case(device, mode), args.steps, args.repeats))
    if not args.skip_resnet:
        for mode in MODES:
            label = f"ResNet20 full, batch {args.resnet_batch}, SGD"
            cases.append((label, mode, resnet_case(device, args.resnet_batch, mode),
                          args.resnet_steps, 3))
    print(f"{'case':42s} {'widths':>7s} {'fixed ms':>9s} {'+prior ms':>9s} {'awnn ms':>9s} "
          f"{'awnn/fixed':>10s} {'awnn/+prior':>11s} {'changes':>9s}")
    ratios = []
    for label, resize, builders, steps, repeats in cases:
        r = time_cases(builders, steps, repeats, device, args.clock)
        print(f"{label:42s} {resize:>7s} {1e3 * r['fixed']:9.3f} {1e3 * r['fixed+prior']:9.3f} "
              f"{1e3 * r['awnn']:9.3f} {r['awnn'] / r['fixed']:10.2f} "
              f"{r['awnn'] / r['fixed+prior']:11.2f} {r['changes']:>4d}/{r['steps']}")
        ratios.append((f"{label}, widths {resize}", r["awnn"] / r["fixed"]))
    sequential, stacked = stacked_case(device, args.members, args.steps, args.repeats, args.clock)
    print(f"stacked AWNN MLP 2-232-2 x{args.members}: sequential {1e3 * sequential:.3f} ms, "
          f"stacked {1e3 * stacked:.3f} ms per step of all members")
    spiral_seq, spiral_stack, widths = spiral_training(device, args.members, args.spiral_epochs,
                                                       args.clock)
    print(f"Spiral paper config x{args.members} seeds, {args.spiral_epochs} epochs: sequential "
          f"{spiral_seq:.2f} s, stacked {spiral_stack:.2f} s (final widths {widths})")
    for label, ratio in ratios:
        print(f"ratio awnn/fixed ({label}): {ratio:.2f}")
    print(f"ratio stacked/sequential (AWNN MLP 2-232-2, {args.members} members, Adam, "
          f"batch 128 each, random data): {sequential / stacked:.2f}")
    print(f"ratio stacked/sequential (AWNN Spiral paper config, {args.members} seeds, "
          f"{args.spiral_epochs} epochs): {spiral_seq / spiral_stack:.2f}")


if __name__ == "__main__":
    main()
