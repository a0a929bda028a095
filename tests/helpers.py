"""Test helpers: tiny data in real formats, the CLI runner, config composition."""
from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array in the IDX format (magic 0x0000_08_<ndim>, big-endian dims)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist_like(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 100,
                     compress: bool = True, seed: int = 0) -> Path:
    """A few hundred MNIST-format images: class c has a bright block at a class-specific row."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 3: 2 * c + 6, 4:24] = 250
        write_idx(raw / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, compress)
    return root


def run_cli(*overrides: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m experiments.run <overrides>`: the entry point users run."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "experiments.run", *overrides], cwd=os.getcwd(), env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}")
    return proc


def compose_config(*overrides: str):
    """Compose the real config tree (as the entry point would) without running it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import experiments  # noqa: F401  (resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


KILL_MID_RUN = """
import os, signal, sys
import experiments.train as train
from experiments.run import execute
from tests.helpers import compose_config

name, after, *overrides = sys.argv[1:]
real, calls = getattr(train, name), [0]

def kill_after(*args, **kwargs):
    calls[0] += 1
    if calls[0] > int(after):
        os.kill(os.getpid(), signal.SIGKILL)    # no cleanup, no finally: a real kill -9
    return real(*args, **kwargs)

setattr(train, name, kill_after)
execute(compose_config(*overrides))
"""


def run_killed(evaluator: str, after: int, *overrides: str) -> subprocess.CompletedProcess:
    """Run `overrides` in a child process that SIGKILLs itself on the (after+1)-th call of
    experiments.train.<evaluator> (2 calls per epoch: val, test)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", KILL_MID_RUN, evaluator, str(after), *overrides],
                          env=env, capture_output=True, text=True, timeout=600)


def per_piece(m, tensors) -> list:
    """Tensors aligned with an AdaptiveMLP's parameters (raw_nu, θ) as (raw_nu, W_0, ..., b_0, ...):
    the active blocks of θ's weights and biases (models/awnn/layout.py, capacity.py)."""
    raw, theta = tensors
    return [raw, *m.active_pieces(theta)]
