"""CIFAR-10 / CIFAR-100 from the official python-pickle files, resident on the device.

45000/5000 stratified train/validation split of the official training set (seeded), official
test set. Inputs are normalised with the training part's per-channel mean/std. Training batches
are augmented on the device: random 32x32 crop of the 4-pixel padded image + horizontal flip.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from data.tensors import DataBundle, TensorSplit, stratified_indices, stratified_split
from data.text import cache_key, cached, check_choice, missing_files_error

LAYOUT = {  # name -> (folder, training files, test file, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels", 100),
}
PAD = 4


@dataclass
class CIFARConfig:
    name: str = "cifar10"      # cifar10 | cifar100
    fraction: float = 1.0      # stratified share of the training part kept
    split_seed: int = 42
    n_val: int = 5000          # stratified holdout of the 50000 training images
    augment: bool = True       # random crop (4-pixel padding) + horizontal flip on training batches


def _read_batch(path: Path, label_key: bytes) -> tuple[Tensor, Tensor]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    images = torch.from_numpy(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).copy())
    return images, torch.tensor(d[label_key], dtype=torch.long)


def _download(name: str, root: Path) -> None:
    import torchvision  # only needed to fetch the archive
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    cls(str(root), train=True, download=True)


def read_raw(name: str, root: Path, allow_download: bool) -> dict:
    folder, train_files, test_file, label_key, _ = LAYOUT[name]
    directory = root / folder
    missing = [f for f in train_files + [test_file] if not (directory / f).is_file()]
    if missing and allow_download:
        _download(name, root)
    elif missing:
        raise missing_files_error(name, directory, missing, root)
    train = [_read_batch(directory / f, label_key) for f in train_files]
    return {"train": (torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])),
            "test": _read_batch(directory / test_file, label_key)}


def random_crop_flip(images: Tensor, generator: torch.Generator | None, fill: Tensor) -> Tensor:
    """Random 32x32 crop of the image padded by PAD pixels of `fill`, flipped with p = 0.5.

    One gather for the whole batch: row/column index maps per sample, the flip folded into the
    column map. Random numbers come from `generator` on the CPU (reproducible across devices).
    """
    b, c, h, w = images.shape
    padded = fill.view(1, c, 1, 1).expand(b, c, h + 2 * PAD, w + 2 * PAD).clone()
    padded[:, :, PAD:PAD + h, PAD:PAD + w] = images
    dy, dx = torch.randint(0, 2 * PAD + 1, (2, b), generator=generator).to(images.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    rows = dy[:, None] + torch.arange(h, device=images.device)
    ar = torch.arange(w, device=images.device)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar, ar)
    bi = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


class CropFlip:
    """`TensorSplit.augment`: pads with the normalised value of a black pixel, so the result
    equals torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip before Normalize."""

    def __init__(self, mean: Tensor, std: Tensor):
        self.fill = -mean / std

    def __call__(self, inputs: tuple[Tensor, ...], generator: torch.Generator | None) -> tuple[Tensor, ...]:
        images = inputs[0]
        return (random_crop_flip(images, generator, self.fill.to(images.device, images.dtype)),) + inputs[1:]


def load(cfg: CIFARConfig, data_cfg, device) -> DataBundle:
    check_choice("dataset.name", cfg.name, LAYOUT)
    root = Path(data_cfg.root)
    num_classes = LAYOUT[cfg.name][4]
    # Read from raw only when the cache is cold: the check for missing files happens inside.
    cache_file = Path(data_cfg.cache) / cfg.name / f"{cache_key(root=str(root.resolve()))}.pt"
    raw = cached(cache_file, lambda: read_raw(cfg.name, root, bool(data_cfg.download)))
    images, labels = raw["train"]
    if not 0 <= cfg.n_val < len(labels):
        raise ValueError(f"dataset.n_val={cfg.n_val}: must be in [0, {len(labels)})")
    train_idx, val_idx = stratified_split(labels, cfg.n_val / len(labels), cfg.split_seed)
    train_idx = train_idx[stratified_indices(labels[train_idx], cfg.fraction, cfg.split_seed)]

    pixels = images[train_idx].float().div_(255)
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3))
    del pixels
    augment = CropFlip(mean, std) if cfg.augment else None

    def split(x: Tensor, y: Tensor, aug=None) -> TensorSplit:
        x = x.to(device).float().div_(255)
        x = (x - mean.to(device).view(1, 3, 1, 1)) / std.to(device).view(1, 3, 1, 1)
        return TensorSplit(x, y.to(device), augment=aug)

    train = split(images[train_idx], labels[train_idx], augment)
    val = split(images[val_idx], labels[val_idx]) if len(val_idx) else None
    test = split(*raw["test"])
    return DataBundle(
        train=train, val=val, test=test, task="classification",
        info={"input_shape": (3, 32, 32), "in_features": 3 * 32 * 32, "num_classes": num_classes,
              "n_train": len(train)},
        splits={"source": str(root / LAYOUT[cfg.name][0]), "cache_file": str(cache_file),
                "split_seed": cfg.split_seed, "fraction": cfg.fraction, "n_train": len(train),
                "n_val": 0 if val is None else len(val), "n_test": len(test),
                "mean": mean.tolist(), "std": std.tolist()})
