"""CIFAR-10/100 loader on tiny pickles in the official python format, and the device augmentation."""
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import data.cifar as cifar
from data import load_data
from data.tensors import iterate

CPU = torch.device("cpu")


def write_pickle(path, images, labels, label_key):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({b"data": images.reshape(len(images), -1), label_key: labels.tolist(),
                     b"batch_label": b"mini"}, f)


def write_cifar10(root, per_batch=20):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        labels = np.arange(per_batch) % 10
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        write_pickle(folder / f"data_batch_{i}", images, labels, b"labels")
    write_pickle(folder / "test_batch", rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8),
                 np.arange(30) % 10, b"labels")


def write_cifar100(root):
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    write_pickle(folder / "train", rng.integers(0, 256, (400, 3, 32, 32), dtype=np.uint8),
                 np.arange(400) % 100, b"fine_labels")
    write_pickle(folder / "test", rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8),
                 np.arange(100) % 100, b"fine_labels")


def load(tmp_path, name="cifar10", **options):
    cfg = OmegaConf.create({"name": name, "n_val": 20, **options})
    data_cfg = OmegaConf.create({"root": str(tmp_path / "root"), "cache": str(tmp_path / "cache"),
                                 "download": False})
    return load_data(cfg, data_cfg, CPU)


def test_cifar10_splits_normalisation_and_info(tmp_path):
    write_cifar10(tmp_path / "root")
    b = load(tmp_path)
    assert (len(b.train), len(b.val), len(b.test)) == (80, 20, 30)
    assert b.info == {"input_shape": (3, 32, 32), "in_features": 3072, "num_classes": 10, "n_train": 80}
    (x,), y = b.train.take(torch.arange(80))
    assert x.shape == (80, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    assert torch.bincount(b.val.target).tolist() == [2] * 10 and torch.bincount(y).tolist() == [8] * 10
    assert b.splits["split_seed"] == 42 and b.splits["n_val"] == 20
    assert b.val.augment is None and b.test.augment is None and b.train.augment is not None


def test_cifar10_test_set_is_the_official_order(tmp_path):
    write_cifar10(tmp_path / "root")
    b = load(tmp_path)
    with open(tmp_path / "root" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    mean, std = torch.tensor(b.splits["mean"]), torch.tensor(b.splits["std"])
    expected = torch.from_numpy(raw[b"data"].reshape(-1, 3, 32, 32)).float() / 255
    expected = (expected - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(b.test.inputs[0], expected, atol=1e-5)
    assert b.test.target.tolist() == raw[b"labels"]


def test_cifar100_fine_labels_and_fraction(tmp_path):
    write_cifar100(tmp_path / "root")
    b = load(tmp_path, "cifar100", n_val=100, fraction=0.5)
    assert b.info["num_classes"] == 100 and len(b.val) == 100 and len(b.test) == 100
    assert len(b.train) == 200 and (torch.bincount(b.train.target, minlength=100) == 2).all()


def test_cifar_cache_is_used(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "root")
    first = load(tmp_path)
    monkeypatch.setattr(cifar, "read_raw", lambda *a: pytest.fail("cache was not used"))
    second = load(tmp_path)
    assert torch.equal(first.train.inputs[0], second.train.inputs[0])


def test_cifar_missing_files_named(tmp_path):
    write_cifar10(tmp_path / "root")
    (tmp_path / "root" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "data_batch_3" in msg and "data_batch_2" not in msg and "data.root=" in msg
    assert str(tmp_path / "root" / "cifar-10-batches-py") in msg


def reference_crop_flip(images, generator, fill):
    """Per-sample loop with F.pad and slicing, drawing the same random numbers."""
    dy, dx = torch.randint(0, 9, (2, len(images)), generator=generator)
    flip = torch.rand(len(images), generator=generator) < 0.5
    out = []
    for img, y, x, f in zip(images, dy.tolist(), dx.tolist(), flip.tolist()):
        padded = F.pad(img - fill.view(3, 1, 1), (4, 4, 4, 4)) + fill.view(3, 1, 1)
        crop = padded[:, y:y + 32, x:x + 32]
        out.append(crop.flip(2) if f else crop)
    return torch.stack(out)


def test_augmentation_matches_reference_and_is_reproducible(tmp_path):
    write_cifar10(tmp_path / "root")
    b = load(tmp_path)
    (x,), _ = b.train.take(torch.arange(64))
    out = b.train.augment((x,), torch.Generator().manual_seed(3))[0]
    again = b.train.augment((x,), torch.Generator().manual_seed(3))[0]
    other = b.train.augment((x,), torch.Generator().manual_seed(4))[0]
    assert out.shape == x.shape and torch.equal(out, again) and not torch.equal(out, other)
    fill = b.train.augment.fill
    assert torch.allclose(fill, -torch.tensor(b.splits["mean"]) / torch.tensor(b.splits["std"]))
    assert torch.allclose(out, reference_crop_flip(x, torch.Generator().manual_seed(3), fill), atol=1e-6)


def test_iterate_applies_augmentation_to_training_batches(tmp_path):
    write_cifar10(tmp_path / "root")
    b = load(tmp_path)
    plain = [x for (x,), _ in iterate(b.train, 32, torch.Generator().manual_seed(0))]
    augmented = [x for (x,), _ in iterate(b.train, 32, torch.Generator().manual_seed(0), augment=True)]
    assert [t.shape for t in plain] == [t.shape for t in augmented]
    assert not all(torch.equal(p, a) for p, a in zip(plain, augmented))


def test_cifar_rejects_bad_n_val(tmp_path):
    write_cifar10(tmp_path / "root")
    with pytest.raises(ValueError, match="dataset.n_val=100"):
        load(tmp_path, n_val=100)
