"""Device choice. With several local GPUs (joblib launcher), each job claims a free one."""
from __future__ import annotations

import atexit
import fcntl
import os
import tempfile

import torch

_claimed = []  # open lock files, held for the life of the process


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{claim_gpu(torch.cuda.device_count())}")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={spec!r} but CUDA is not available; allowed here: cpu, auto")
    return device


def claim_gpu(count: int) -> int:
    """Lock the first GPU no other job on this host holds (flock; released at process exit).

    A joblib worker runs many jobs in turn, so a worker keeps the GPU it claimed first.
    """
    if _claimed:
        return _claimed[0][0]
    lock_dir = os.environ.get("BW_GPU_LOCK_DIR", tempfile.gettempdir())
    for index in range(count):
        handle = open(os.path.join(lock_dir, f"bw-gpu-{index}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _claimed.append((index, handle))
        atexit.register(handle.close)
        return index
    return os.getpid() % count  # more jobs than GPUs: share
