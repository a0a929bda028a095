"""The suite's runner vs a bare PyTorch loop, side by side (DEVELOPERS.md yardstick: <= 1.2x).

Both train the 784-256-10 ReLU FCN with plain SGD (lr 1e-3, batch 256) on tensor-resident MNIST
and evaluate on the 10k test images after every epoch. The runner adds its hooks, metrics,
progress bar, per-epoch records and checkpoints. Reported: median seconds per epoch and the ratio.

    python bench/bench_runner.py [--epochs 5] [--data-root DIR]   (DIR holds MNIST/raw/; default:
    $BW_DATA_ROOT, else MNIST-shaped random IDX files written to a temp dir)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare_loop(x, y, xt, yt, epochs: int) -> list[float]:
    """The 20-line loop: what a researcher writes by hand."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 256):
            idx = perm[i:i + 256]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = sum((model(xt[i:i + 4096]).argmax(1) == yt[i:i + 4096]).sum() for i in range(0, len(xt), 4096))
        float(acc)
        times.append(time.perf_counter() - start)
    return times


def runner(data_root: str, results: str, epochs: int) -> list[float]:
    import pandas as pd

    from experiments.run import execute
    from tests.helpers import compose_config

    cfg = compose_config("dataset=mnist", "model=fcn2", "optimizer=sgd", "train.batch_size=256",
                         f"train.epochs={epochs}", f"data.root={data_root}", "data.download=false",
                         f"run.results_dir={results}", "run.device=cpu")
    summary = execute(cfg)
    metrics = pd.read_csv(Path(results) / "runs" / "adhoc" / summary["key"] / "metrics.csv")
    return metrics.epoch_time.tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--data-root", default=os.environ.get("BW_DATA_ROOT"))
    ap.add_argument("--quick", action="store_true", help="3 epochs")
    args = ap.parse_args()
    epochs = 3 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root
        if root is None or not (Path(root) / "MNIST" / "raw").exists():
            from tests.helpers import write_mnist_like

            root = write_mnist_like(Path(tmp) / "data", n_train=60000, n_test=10000)
            print("data: MNIST-shaped random IDX files (60000/10000)")
        else:
            print(f"data: {root}/MNIST/raw")
        from data import load_data
        from omegaconf import OmegaConf

        bundle = load_data(OmegaConf.create({"name": "mnist"}),
                           OmegaConf.create({"root": str(root), "download": False, "cache": tmp}), torch.device("cpu"))
        x, y, xt, yt = bundle.train.inputs[0], bundle.train.target, bundle.test.inputs[0], bundle.test.target
        # interleave: bare, runner, bare, runner so drift in machine load hits both alike
        bare, ours = [], []
        for rep in range(2):
            bare += bare_loop(x, y, xt, yt, epochs)[1:]  # first epoch warms up allocators
            ours += runner(str(root), str(Path(tmp) / f"results{rep}"), epochs)[1:]
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"bare loop : {b:.3f} s/epoch (median of {len(bare)})")
    print(f"runner    : {o:.3f} s/epoch (median of {len(ours)})")
    print(f"ratio runner/bare (runner with hooks, metrics, records vs a bare loop; target <= 1.2, "
          f"threads={torch.get_num_threads()}): {o / b:.3f}")


if __name__ == "__main__":
    main()
