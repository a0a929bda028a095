"""Data path: our tensor-resident batches vs torchvision's MNIST + DataLoader (the naive way).

One epoch of the 2-layer FCN (784-256-10, SGD, batch 256) on MNIST-shaped data, both paths.
Prints seconds per epoch and the speed-up (target: at least 3x on 2 CPU cores).

    python bench/bench_dataloader.py [--n 60000] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def train_epoch(batches) -> float:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--quick", action="store_true", help="20000 images")
    args = ap.parse_args()
    n = 20000 if args.quick else args.n
    from omegaconf import OmegaConf
    from torchvision import datasets, transforms

    from data import load_data
    from data.tensors import iterate
    from tests.helpers import write_mnist_like

    with tempfile.TemporaryDirectory() as tmp:
        root = write_mnist_like(Path(tmp), n_train=n, n_test=100, compress=False)
        bundle = load_data(OmegaConf.create({"name": "mnist"}),
                           OmegaConf.create({"root": tmp, "download": False, "cache": tmp}), torch.device("cpu"))
        ours = min(train_epoch((inputs[0], y) for inputs, y in
                               iterate(bundle.train, 256, torch.Generator().manual_seed(r)))
                   for r in range(2))
        naive_set = datasets.MNIST(str(root), train=True, download=False,
                                   transform=transforms.Compose([transforms.ToTensor(),
                                                                 transforms.Normalize((0.5,), (0.5,))]))
        loader = torch.utils.data.DataLoader(naive_set, batch_size=256, shuffle=True, num_workers=0)
        naive = train_epoch(loader)
    print(f"images per epoch: {n}")
    print(f"torchvision MNIST + DataLoader : {naive:.3f} s/epoch")
    print(f"tensor-resident (ours)         : {ours:.3f} s/epoch")
    print(f"speed-up = {naive / ours:.1f}x  (target >= 3x)  threads={torch.get_num_threads()}")
    print(f"ratio ours/naive (MNIST epoch, {n} images, tensor-resident vs DataLoader): "
          f"{ours / naive:.3f}")


if __name__ == "__main__":
    main()
