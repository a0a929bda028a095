"""Device-resident data splits: a batch is an index slice, never a per-sample Python loop."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor

Batch = tuple[tuple[Tensor, ...], Tensor]  # (model inputs, target)


class TensorSplit:
    """A split held as tensors whose first dimension indexes samples.

    `inputs` are passed to the model as `model(*inputs)`; `target` goes to the loss.
    `augment`, when set, maps a batch of inputs to augmented inputs (on the device) and is
    applied to training batches only.
    """

    def __init__(self, inputs: tuple[Tensor, ...] | Tensor, target: Tensor,
                 augment: Callable[[tuple[Tensor, ...], torch.Generator | None], tuple[Tensor, ...]] | None = None):
        self.inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        self.target = target
        self.augment = augment
        n = len(target)
        for t in self.inputs:
            if len(t) != n:
                raise ValueError(f"input has {len(t)} rows but target has {n}")

    def __len__(self) -> int:
        return len(self.target)

    def take(self, idx: Tensor) -> Batch:
        return tuple(t[idx] for t in self.inputs), self.target[idx]

    def to(self, device: torch.device | str) -> "TensorSplit":
        return TensorSplit(tuple(t.to(device) for t in self.inputs), self.target.to(device), self.augment)


def iterate(split, batch_size: int, generator: torch.Generator | None = None,
            shuffle: bool = True, augment: bool = False) -> Iterator[Batch]:
    """Yield batches of a split. Shuffling draws one permutation from `generator` per call."""
    n = len(split)
    device = split.target.device if hasattr(split, "target") else None
    if shuffle:
        # The permutation is drawn on the CPU generator (reproducible across devices), then moved.
        order = torch.randperm(n, generator=generator).to(device)
    else:
        order = torch.arange(n, device=device)
    for start in range(0, n, batch_size):
        inputs, target = split.take(order[start:start + batch_size])
        if augment and getattr(split, "augment", None) is not None:
            inputs = split.augment(inputs, generator)
        yield inputs, target


def iterate_members(split: TensorSplit, batch_size: int, generators: list[torch.Generator],
                    shuffle: bool = True) -> Iterator[Batch]:
    """Batches for S stacked members: inputs [S, B, ...], target [S, B] (docs/STACKING.md).

    Member i's batches equal those of `iterate(split, batch_size, generators[i], shuffle)`: each
    generator draws its member's permutation once per call, then every batch is one gather.
    Unshuffled, all members share the batch (expanded, not copied).
    """
    if not isinstance(split, TensorSplit):
        raise TypeError(f"iterate_members needs a TensorSplit; got {type(split).__name__}")
    if not generators:
        raise ValueError("iterate_members needs one generator per member; got none")
    n, members, device = len(split), len(generators), split.target.device
    if shuffle:
        # drawn on the CPU generators, as iterate() draws them, then moved in one copy
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
    else:
        order = torch.arange(n, device=device).expand(members, n)
    for start in range(0, n, batch_size):
        idx = order[:, start:start + batch_size]                      # [S, B]
        if shuffle:
            yield tuple(t[idx] for t in split.inputs), split.target[idx]
        else:
            inputs, target = split.take(idx[0])
            yield (tuple(t.expand(members, *t.shape) for t in inputs),
                   target.expand(members, *target.shape))


def stratified_indices(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a class-stratified random subset holding `fraction` of each class (at least 1)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"dataset.fraction={fraction}: must be in (0, 1]")
    labels = labels.cpu()
    if fraction == 1.0:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        k = max(1, round(fraction * len(members)))
        keep.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.sort(torch.cat(keep)).values


def stratified_split(labels: Tensor, holdout: float | int, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (keep, held): `holdout` is a fraction, or an exact count (int >= 1).

    Each class contributes in proportion to its size (largest remainder, so counts are exact).
    """
    labels = labels.cpu()
    classes, counts = torch.unique(labels, return_counts=True)
    total = round(holdout * len(labels)) if isinstance(holdout, float) else int(holdout)
    if not 0 <= total <= len(labels):
        raise ValueError(f"holdout={holdout} is outside [0, {len(labels)}] samples")
    quota = counts.double() * total / len(labels)
    per_class = quota.floor().long()
    per_class[torch.argsort(quota - per_class, descending=True)[: total - int(per_class.sum())]] += 1
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c, k in zip(classes, per_class.tolist()):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        held.append(members[:k])
        keep.append(members[k:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values


def with_dtype(split, dtype: torch.dtype):
    """A TensorSplit whose floating-point tensors have `dtype` (integer ids and labels keep theirs)."""
    if split is None or dtype == torch.float32:
        return split
    if not isinstance(split, TensorSplit):
        raise ValueError(f"train.dtype={str(dtype).split('.')[-1]} needs tensor data sets; "
                         f"got {type(split).__name__}")
    cast = tuple(t.to(dtype) if t.is_floating_point() else t for t in split.inputs)
    return TensorSplit(cast, split.target, split.augment)


@dataclass
class DataBundle:
    """What a data set hands to the runner.

    task: "classification" (target = class index, metric accuracy) or "seq2seq"
    (target = token ids with `info["pad_id"]` as padding, metric token cross-entropy).
    info: what models need to size themselves (in_features, num_classes, vocab sizes, ...).
    splits: recorded split provenance (sizes, seeds, files) written into the run record.
    """

    train: object
    val: object | None
    test: object
    task: str = "classification"
    info: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
