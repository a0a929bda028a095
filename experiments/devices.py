"""Device choice. With several local GPUs (joblib launcher), each job claims a free one."""
from __future__ import annotations

import atexit
import fcntl
import os
import tempfile
import time

import torch

from experiments.schema import ConfigError

_claimed = []  # (index, open lock file), held for the life of the process


def pick_device(spec: str, jobs_per_gpu: int = 1) -> torch.device:
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{claim_gpu(torch.cuda.device_count(), jobs_per_gpu)}")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"run.device={spec!r} is not a device; allowed: auto, cpu, cuda, cuda:<k>") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={spec!r} but CUDA is not available here; allowed: cpu, auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"run.device={spec!r}: this host has {torch.cuda.device_count()} GPU(s)")
    return device


def claim_gpu(count: int, jobs_per_gpu: int = 1, poll_s: float = 5.0,
              timeout_s: float | None = None) -> int:
    """Lock a free slot, `jobs_per_gpu` slots per GPU (flock; released at process exit); return its GPU.

    A joblib worker runs many jobs in turn, so a worker keeps the GPU it claimed first. Slots fill
    GPU by GPU, least loaded first. When every slot is held, wait for one (saying so) rather than
    overloading a GPU; `timeout_s` bounds the wait (TimeoutError).
    """
    if _claimed:
        return _claimed[0][0]
    lock_dir = os.environ.get("BW_GPU_LOCK_DIR", tempfile.gettempdir())
    start, said = time.monotonic(), False
    while True:
        for slot in range(count * jobs_per_gpu):
            index, rank = slot % count, slot // count
            name = f"bw-gpu-{index}.lock" if rank == 0 else f"bw-gpu-{index}-{rank}.lock"
            handle = open(os.path.join(lock_dir, name), "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _claimed.append((index, handle))
            atexit.register(handle.close)
            return index
        if timeout_s is not None and time.monotonic() - start >= timeout_s:
            raise TimeoutError(f"all {count} GPU(s) x {jobs_per_gpu} slots stayed held by other jobs for {timeout_s:.0f}s")
        if not said:
            print(f"[device] all {count} GPUs are held by other jobs (locks in {lock_dir}); "
                  f"waiting for one to free up", flush=True)
            said = True
        time.sleep(poll_s)
