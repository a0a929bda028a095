"""Embedded synthetic data sets (no download).

AWNN (SPEC B.2): DoubleMoon, Spiral, SpiralHard; noise std 0.3, generated with seed 0, split with
seed 42 into test 20% and validation 10% of the rest, stratified. Sizes are *per class*, as in
the authors' code (the paper's Table 2 gives them as totals): 2500 / 2500 / 5000 per class.
NB (App. A.2): 2-D concentric circles for the toy balancing experiment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from data.tensors import DataBundle, TensorSplit, stratified_indices, stratified_split

PER_CLASS = {"double_moon": 2500, "spiral": 2500, "spiral_hard": 5000, "circles": 500}


@dataclass
class SyntheticConfig:
    name: str = "double_moon"
    per_class: int | None = None   # None: the paper's size
    noise: float = 0.3
    generation_seed: int = 0
    split_seed: int = 42
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    fraction: float = 1.0


def double_moon(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b = rng.uniform(0, math.pi, n), rng.uniform(0, math.pi, n)
    e = rng.normal(0, noise, (4, n))
    upper = np.stack([10 * np.cos(a) - 5 + e[0], 10 * np.sin(a) + e[1]], 1)
    lower = np.stack([-(10 * np.cos(b) + e[2]) + 5, -(10 * np.sin(b) + e[3]) + 5], 1)
    return np.concatenate([upper, lower]), np.repeat([0, 1], n)


def spiral(n: int, noise: float, rng: np.random.Generator, repetition: int) -> tuple[np.ndarray, np.ndarray]:
    def arm() -> np.ndarray:
        t = np.sqrt(rng.uniform(0, 1, n)) * repetition * 4 * math.pi
        e = rng.normal(0, noise, (2, n))
        return np.stack([-np.cos(t) * t + e[0], np.sin(t) * t + e[1]], 1)

    x = np.concatenate([arm(), -arm()]) / repetition
    return x, np.repeat([0, 1], n)


def circles(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles (radii 1 and 0.5) with Gaussian noise; class 1 is the inner one."""
    angles = rng.uniform(0, 2 * math.pi, (2, n))
    radii = np.array([[1.0], [0.5]])
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], -1).reshape(-1, 2)
    return pts + rng.normal(0, noise, pts.shape), np.repeat([0, 1], n)


def generate(cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.generation_seed)
    n = cfg.per_class or PER_CLASS[cfg.name]
    if cfg.name == "double_moon":
        return double_moon(n, cfg.noise, rng)
    if cfg.name == "spiral":
        return spiral(n, cfg.noise, rng, repetition=1)
    if cfg.name == "spiral_hard":
        return spiral(n, cfg.noise, rng, repetition=2)
    if cfg.name == "circles":
        return circles(n, cfg.noise, rng)
    raise ValueError(f"dataset.name={cfg.name!r} is not synthetic; allowed: {sorted(PER_CLASS)}")


def load(cfg: SyntheticConfig, data_cfg, device: torch.device) -> DataBundle:
    x, y = generate(cfg)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    rest, test = stratified_split(y, cfg.test_fraction, cfg.split_seed)
    train, val = stratified_split(y[rest], cfg.val_fraction, cfg.split_seed)
    train, val = rest[train], rest[val]
    train = train[stratified_indices(y[train], cfg.fraction, cfg.split_seed)]
    part = lambda idx: TensorSplit(x[idx].to(device), y[idx].to(device))  # noqa: E731
    return DataBundle(
        train=part(train), val=part(val), test=part(test),
        info={"in_features": 2, "input_shape": (2,), "num_classes": 2, "n_train": len(train)},
        splits={"train": len(train), "val": len(val), "test": len(test),
                "generation_seed": cfg.generation_seed, "split_seed": cfg.split_seed,
                "per_class": cfg.per_class or PER_CLASS[cfg.name]},
    )
