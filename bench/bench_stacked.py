"""Stacked training of S seeds (models/stacked) vs S sequential runs: throughput ratio per case.

    python bench/bench_stacked.py [--quick] [--device cuda] [--seeds 8] [--case spiral|mnist]
                                  [--routes]

Cases (each run trains from its own seed's init with its own batch order, as experiments/run.py):
  spiral: AWNN-Spiral-sized 2-232-2 FCN, Adam 0.01, batch 128, 3600 training points.
  mnist:  NB Table 1 2-FCN 784-256-10 on MNIST-shaped random tensors (60000 x 784, [-1, 1]),
          SGD 1e-3, batch 256, L1 partial balancing after every epoch (nb_l1).
Printed as `ratio stacked/sequential (<case>): X`, X = sequential time / stacked time (> 1: the
stack wins). Times are wall-clock seconds summed over the epochs, the two alternating epoch by
epoch (training steps + per-epoch loss sync + balancing); process CPU seconds are printed beside
them. `--routes` also times one Adam step of the two stacking routes, printed as
`ratio batched/vmap (<case>): X` (> 1: batched layers win): batched layers (torch.bmm in one
autograd Function, models/stacked) vs torch.func stack_module_state + vmap.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.tensors import TensorSplit, iterate, iterate_members  # noqa: E402
from models import balancing  # noqa: E402
from models.fcn import FCN  # noqa: E402
from models.stacked import (load_member_optimizer_state, member_losses,  # noqa: E402
                            member_optimizer_state, stack_models)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_split(n: int, in_features: int, classes: int, device, seed: int = 0) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, in_features, generator=g) * 2 - 1
    return TensorSplit(x.to(device), torch.randint(0, classes, (n,), generator=g).to(device))


def build(seed: int, sizes: tuple[int, int, int], device) -> FCN:
    torch.manual_seed(seed)
    return FCN(sizes[0], [sizes[1]], sizes[2]).to(device)


# --------------------------------------------------------------------------- balancing
def stacked_has_member_axis() -> bool:
    return hasattr(balancing, "chain_groups_from_params")


def balance_unstacked(model, optimizer, epoch: int) -> None:
    """experiments/regimes/balance.py PartialBalancing.on_epoch_end, p = 1."""
    result = balancing.partial_balance(model, 1, "forward", True, seed=epoch)
    balancing.rescale_optimizer_state(optimizer, result.param_scales())


def balance_stack(stack, optimizer, epoch: int, scratch) -> None:
    """The stack's members balanced: in one pass with the member axis, else member by member
    through an unstacked scratch model and the per-member state conversions."""
    if stacked_has_member_axis():
        balance_unstacked(stack, optimizer, epoch)
        return
    for i in range(stack.members):
        scratch.load_state_dict(stack.member_state_dict(i))
        scratch_opt = type(optimizer)(scratch.parameters(), **optimizer.defaults)
        scratch_opt.load_state_dict(member_optimizer_state(optimizer, i))
        balance_unstacked(scratch, scratch_opt, epoch)
        stack.load_member_state_dict(i, scratch.state_dict())
        load_member_optimizer_state(optimizer, i, scratch_opt.state_dict())


# --------------------------------------------------------------------------- runs
class Sequential:
    """S ordinary runs (experiments/train.py's loop), stepped one epoch at a time."""

    def __init__(self, case: dict, seeds: list[int], device):
        self.case, self.device = case, device
        self.runs = []
        for seed in seeds:
            model = build(seed, case["sizes"], device)
            self.runs.append((model, case["optimizer"](model.parameters()),
                              torch.Generator().manual_seed(seed + 1)))

    def epoch(self, epoch: int, data) -> None:
        for model, opt, gen in self.runs:
            loss_sum = torch.zeros((), device=self.device)
            for (x,), y in iterate(data, self.case["batch"], gen):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
            if self.case["balance"]:
                balance_unstacked(model, opt, epoch)
            loss_sum.item()                       # the loop's one sync per epoch


class Stacked:
    """The same S runs as one stack."""

    def __init__(self, case: dict, seeds: list[int], device):
        self.case, self.device = case, device
        self.stack = stack_models([build(seed, case["sizes"], device) for seed in seeds])
        self.opt = case["optimizer"](self.stack.parameters())
        self.gens = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
        self.scratch = build(0, case["sizes"], device)

    def epoch(self, epoch: int, data) -> None:
        loss_sum = torch.zeros(self.stack.members, device=self.device)
        for (x,), y in iterate_members(data, self.case["batch"], self.gens):
            losses = member_losses(self.stack(x), y)
            self.opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            self.opt.step()
            loss_sum += losses.detach()
        if self.case["balance"]:
            balance_stack(self.stack, self.opt, epoch, self.scratch)
        loss_sum.tolist()


def timed(fn, device) -> tuple[float, float]:
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(case: dict, seeds: list[int], device) -> dict[str, float]:
    """Wall and CPU seconds of S sequential runs and of their stack, over the same epochs.

    The two alternate epoch by epoch (order swapped every epoch), so that a shared machine's
    load falls on both alike."""
    runs = {"seq": Sequential(case, seeds, device), "stk": Stacked(case, seeds, device)}
    warm = TensorSplit(case["data"].inputs[0][:3 * case["batch"]],
                       case["data"].target[:3 * case["batch"]])
    for run in runs.values():
        run.epoch(0, warm)
    totals = {f"{name}_{kind}": 0.0 for name in runs for kind in ("wall", "cpu")}
    for epoch in range(case["epochs"]):
        order = list(runs) if epoch % 2 == 0 else list(reversed(runs))
        for name in order:
            wall, cpu = timed(lambda: runs[name].epoch(epoch, case["data"]), device)
            totals[f"{name}_wall"] += wall
            totals[f"{name}_cpu"] += cpu
    return totals


# --------------------------------------------------------------------------- routes
def time_routes(sizes, batch: int, seeds: list[int], device, steps: int) -> tuple[float, float]:
    """Seconds per Adam step of the batched-layer stack and of the vmap stack."""
    from torch.func import functional_call, stack_module_state, vmap

    members = [build(s, sizes, device) for s in seeds]
    x = torch.rand(len(seeds), batch, sizes[0], device=device) * 2 - 1
    y = torch.randint(0, sizes[2], (len(seeds), batch), device=device)
    stack = stack_models(copy.deepcopy(members))
    opt_b = torch.optim.Adam(stack.parameters(), lr=1e-3)
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    batched = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)))
    opt_v = torch.optim.Adam(list(params.values()), lr=1e-3)

    def step_bmm():
        loss = member_losses(stack(x), y).sum()
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()

    def step_vmap():
        loss = member_losses(batched(params, buffers, x), y).sum()
        opt_v.zero_grad(set_to_none=True)
        loss.backward()
        opt_v.step()

    times = {step_bmm: [], step_vmap: []}
    for fn in times:
        for _ in range(3):
            fn()
    for _ in range(5):
        for fn, t in times.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            t.append((time.perf_counter() - start) / steps)
    return statistics.median(times[step_bmm]), statistics.median(times[step_vmap])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings)")
    parser.add_argument("--quick", action="store_true", help="fewer epochs, a MNIST subset")
    parser.add_argument("--routes", action="store_true",
                        help="also time batched layers vs vmap stacking")
    parser.add_argument("--case", choices=("all", "spiral", "mnist"), default="all")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={device} ({name}) torch={torch.__version__} threads={torch.get_num_threads()} "
          f"seeds={len(seeds)}")
    mnist_n = 10_000 if args.quick else 60_000
    cases = {
        "spiral 2-232-2, Adam 0.01, batch 128": dict(
            sizes=(2, 232, 2), batch=128, epochs=3 if args.quick else 20, balance=False,
            optimizer=lambda p: torch.optim.Adam(p, lr=0.01),
            data=random_split(3600, 2, 2, device)),
        f"mnist 784-256-10, SGD 1e-3, batch 256, nb_l1, {mnist_n} images": dict(
            sizes=(784, 256, 10), batch=256, epochs=1 if args.quick else 2, balance=True,
            optimizer=lambda p: torch.optim.SGD(p, lr=1e-3),
            data=random_split(mnist_n, 784, 10, device)),
    }
    route = ("member axis, one pass" if stacked_has_member_axis()
             else "member by member (models.balancing has no member axis yet)")
    print(f"stacked balancing: {route}")
    for label, case in cases.items():
        if args.case != "all" and not label.startswith(args.case):
            continue
        t = compare(case, seeds, device)
        print(f"# {label}: {case['epochs']} epochs; wall: sequential {t['seq_wall']:.2f} s, "
              f"stacked {t['stk_wall']:.2f} s; process CPU: sequential {t['seq_cpu']:.2f} s, "
              f"stacked {t['stk_cpu']:.2f} s (cpu ratio {t['seq_cpu'] / t['stk_cpu']:.2f})")
        print(f"ratio stacked/sequential ({label}): {t['seq_wall'] / t['stk_wall']:.2f}")
    if args.routes:
        for label, sizes, batch in (("784-256-10, batch 256", (784, 256, 10), 256),
                                    ("2-232-2, batch 128", (2, 232, 2), 128)):
            steps = 5 if sizes[0] > 100 else 50
            t_bmm, t_vmap = time_routes(sizes, batch, seeds, device, steps)
            print(f"# route {label}: batched layers {1e3 * t_bmm:.2f} ms/step, "
                  f"vmap {1e3 * t_vmap:.2f} ms/step")
            print(f"ratio batched/vmap ({label}): {t_vmap / t_bmm:.2f}")


if __name__ == "__main__":
    main()
