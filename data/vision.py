"""Small image data sets held as tensors: scikit-learn's digits, MNIST and Fashion-MNIST (IDX files)."""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.paths import resolve
from data.tensors import DataBundle, TensorSplit, stratified_indices, stratified_split

IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NORMALIZATIONS = ("minus_one_one", "standard", "none")


@dataclass
class IDXConfig:
    name: str = "mnist"
    normalize: str = "minus_one_one"   # NB code: inputs in [-1, 1]
    val_size: int = 0                  # stratified holdout from the 60k training images (AWNN: 5000)
    split_seed: int = 42
    fraction: float = 1.0              # stratified fraction of the training part (NB limited data: 0.01)


@dataclass
class DigitsConfig:
    name: str = "digits"
    normalize: str = "minus_one_one"
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    split_seed: int = 42
    fraction: float = 1.0


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x00000803 / 0x00000801, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _download_idx(name: str, root: Path) -> None:
    from torchvision import datasets  # torchvision's own download and checksum code

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    for train in (True, False):
        cls(str(root), train=train, download=True)


def normalize(images: torch.Tensor, how: str, max_value: float, mean_std=None) -> torch.Tensor:
    if how == "minus_one_one":
        return images / (max_value / 2) - 1
    if how == "standard":
        mean, std = mean_std
        return (images - mean) / std
    if how == "none":
        return images
    raise ValueError(f"dataset.normalize={how!r}; allowed: {list(NORMALIZATIONS)}")


def load_idx(cfg: IDXConfig, data_cfg, device: torch.device) -> DataBundle:
    if cfg.name not in IDX_FOLDERS:
        raise ValueError(f"dataset.name={cfg.name!r}: IDX loader handles {sorted(IDX_FOLDERS)}")
    root = resolve(data_cfg.root)
    folder = root / IDX_FOLDERS[cfg.name] / "raw"
    stems = [s for pair in IDX_FILES.values() for s in pair]
    if any(_find_idx(folder, s) is None for s in stems) and data_cfg.download:
        try:
            _download_idx(cfg.name, root)
        except Exception as err:  # offline: fall through to the clear message below
            print(f"[data] download of {cfg.name} failed ({type(err).__name__}: {err})")
    missing = [s for s in stems if _find_idx(folder, s) is None]
    if missing:
        raise FileNotFoundError(
            f"{cfg.name}: missing {', '.join(missing)} (raw or .gz) in {folder}. Put the four IDX "
            f"files there, or point data.root=<dir> at a directory holding "
            f"{IDX_FOLDERS[cfg.name]}/raw/, or run online with data.download=true.")
    arrays = {split: [read_idx(_find_idx(folder, s)) for s in stems_]
              for split, stems_ in IDX_FILES.items()}
    x_train = torch.from_numpy(arrays["train"][0].copy()).float()
    y_train = torch.from_numpy(arrays["train"][1].astype(np.int64))
    x_test = torch.from_numpy(arrays["test"][0].copy()).float()
    y_test = torch.from_numpy(arrays["test"][1].astype(np.int64))
    return _bundle(cfg, x_train, y_train, x_test, y_test, device, max_value=255.0,
                   splits={"source": str(folder), "val_size": cfg.val_size})


def load_digits(cfg: DigitsConfig, data_cfg, device: torch.device) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes): a real data set, no download."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    rest, test = stratified_split(y, cfg.test_fraction, cfg.split_seed)
    return _bundle(cfg, x[rest], y[rest], x[test], y[test], device, max_value=16.0,
                   splits={"test_fraction": cfg.test_fraction}, val_fraction=cfg.val_fraction)


def _bundle(cfg, x_train, y_train, x_test, y_test, device, max_value, splits, val_fraction=None):
    """Hold out validation (stratified, seeded), subsample the training part, normalise, move."""
    if val_fraction is None:
        val_fraction = cfg.val_size  # an exact count
    train_idx, val_idx = stratified_split(y_train, val_fraction, cfg.split_seed)
    train_idx = train_idx[stratified_indices(y_train[train_idx], cfg.fraction, cfg.split_seed)]
    mean_std = None
    if cfg.normalize == "standard":
        xt = x_train[train_idx]
        mean_std = (xt.mean(), xt.std())
    norm = lambda t: normalize(t, cfg.normalize, max_value, mean_std).unsqueeze(1)  # noqa: E731
    part = lambda x, y: TensorSplit(norm(x).to(device), y.to(device))  # noqa: E731
    val = part(x_train[val_idx], y_train[val_idx]) if len(val_idx) else None
    shape = tuple(x_train.shape[1:])
    return DataBundle(
        train=part(x_train[train_idx], y_train[train_idx]), val=val, test=part(x_test, y_test),
        info={"in_features": int(np.prod(shape)), "input_shape": (1, *shape), "num_classes": 10,
              "n_train": len(train_idx)},
        splits={**splits, "train": len(train_idx), "val": len(val_idx), "test": len(y_test),
                "split_seed": cfg.split_seed, "fraction": cfg.fraction},
    )
