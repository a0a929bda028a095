"""Cost of neural balancing on the 5-layer FCN (784-512-256-128-64-10), CPU or GPU.

1. One partial sweep vs one training epoch (60000x784 resident tensors, batch 256, SGD 1e-3).
2. Full balance from PyTorch default init to tol 1e-6 (p = 1, 2): sweeps vs the direct solver.
3. Stacked (docs/STACKING.md): 8 members of 784-256-10 balanced in one vectorised pass vs a loop
   over the 8 unstacked members (partial sweep; full balance by the direct solver).

    python bench/bench_balancing.py [--quick] [--device cuda]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import balancing as nb  # noqa: E402
from models.fcn import FCN  # noqa: E402
from models.stacked import StackedFCN  # noqa: E402

WIDTHS = [512, 256, 128, 64]
MEMBERS = 8


def stacked_cases(device, repeats):
    torch.manual_seed(0)
    members = [FCN(784, [256], 10).to(device) for _ in range(MEMBERS)]
    cases = {f"partial sweep, {MEMBERS}x 784-256-10": lambda m: nb.partial_balance(m, 1),
             f"full direct p=2, {MEMBERS}x 784-256-10": lambda m: nb.full_balance(m, 2)}
    for case, balance in cases.items():   # each repeat from fresh copies, made before the clock
        stacks = [StackedFCN(copy.deepcopy(members)) for _ in range(repeats)]
        loops = [copy.deepcopy(members) for _ in range(repeats)]
        vec_s, _ = timed(lambda: balance(stacks.pop()), device, repeats)
        loop_s, _ = timed(lambda: [balance(m) for m in loops.pop()], device, repeats)
        print(f"{case}: vectorised {vec_s * 1e3:.1f} ms, loop {loop_s * 1e3:.1f} ms")
        print(f"ratio vectorised/loop ({case}): {vec_s / loop_s:.3f}")


def timed(fn, device, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def train_epoch(model, x, y, batch=256):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for i in range(0, len(x), batch):
        loss = torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="6000 samples instead of 60000")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    n = 6000 if args.quick else 60000
    torch.manual_seed(0)
    x = torch.rand(n, 784, device=device) * 2 - 1
    y = torch.randint(0, 10, (n,), device=device)
    model = FCN(784, WIDTHS, 10).to(device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} n={n}")

    epoch_s, _ = timed(lambda: train_epoch(model, x, y), device)
    sweep_s, _ = timed(lambda: nb.partial_balance(model, 1), device, repeats=5)
    epoch_full = epoch_s * 60000 / n
    print(f"partial sweep {sweep_s * 1e3:.2f} ms | epoch {epoch_full:.3f} s (60000 samples"
          f"{', extrapolated' if args.quick else ''}) | ratio {100 * sweep_s / epoch_full:.3f}%")
    print(f"ratio sweep/epoch (partial sweep, 784-512-256-128-64-10): {sweep_s / epoch_full:.5f}")

    for p in (1, 2):
        torch.manual_seed(p)
        init = FCN(784, WIDTHS, 10).to(device)
        rows = {}
        for method in ("sweep", "direct"):   # best of 3 runs, each from a fresh copy
            secs, r = timed(lambda: nb.full_balance(copy.deepcopy(init), p, method=method),
                            device, repeats=3)
            rows[method] = secs
            print(f"full balance p={p} {method:6s}: {secs:.3f} s, sweeps={r.sweeps}, "
                  f"newton_steps={r.newton_steps}, max|log A/B|={r.max_log_imbalance:.2e}, "
                  f"cost {r.cost_before:.4g} -> {r.cost_after:.4g}")
        print(f"ratio sweep/direct (full balance p={p}, 784-512-256-128-64-10): "
              f"{rows['sweep'] / rows['direct']:.2f}")

    stacked_cases(device, repeats=3)


if __name__ == "__main__":
    main()
