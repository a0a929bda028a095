"""Run records: atomic files, checkpoints, the run's status and its lock.

<results_dir>/runs/<experiment>/<key>/    (key: experiments/identity.py; results_dir: results/local
                                          for your runs, results/published for the committed ones)
    config.yaml      resolved config          choices.json  Hydra group choices (model=fcn2, ...)
    metrics.csv      one row per epoch         summary.json  status (running / finished /
    environment.json code version, machine                   diverged / failed), final metrics
    checkpoint.pt    model, optimiser, RNG, history (checkpoint.prev.pt: the one before)
    .lock            held (flock) by the job training this run, for the run's whole life
"""
from __future__ import annotations

import csv
import datetime
import fcntl
import io
import json
import os
import socket
import tempfile
from pathlib import Path

import torch

from experiments.identity import run_dir, run_key  # noqa: F401  (re-exported: records.run_dir)
from experiments.provenance import environment  # noqa: F401  (re-exported)

CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
# A run's summary.json status: running, then finished / diverged (done: skipped, tabled) or failed.
DONE_STATUSES = ("finished", "diverged")


def is_done(summary: dict | None) -> bool:
    """Whether a run with this summary is done (a sweep skips it, a table uses it)."""
    return bool(summary) and summary.get("status") in DONE_STATUSES


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(directory: Path, state: dict) -> None:
    """Write checkpoint.pt atomically, keeping the previous one as checkpoint.prev.pt."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path = directory / CHECKPOINT
    if path.exists():
        os.replace(path, directory / PREVIOUS)
    atomic_write_bytes(path, buf.getvalue())


def has_checkpoint(directory: Path) -> bool:
    return (directory / CHECKPOINT).exists() or (directory / PREVIOUS).exists()


def load_checkpoint(directory: Path, log=print) -> dict:
    """The newest readable checkpoint (weights only); falls back to the previous one, saying so."""
    errors = []
    for name in (CHECKPOINT, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, corrupt, or not a checkpoint at all
            errors.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            log(f"[run] {directory.name}: {name} is unreadable ({errors[-1]})")
            continue
        if name == PREVIOUS:
            log(f"[run] {directory.name}: resuming from the previous checkpoint ({PREVIOUS})")
            if (directory / CHECKPOINT).exists():  # keep it for a look, out of the rotation
                os.replace(directory / CHECKPOINT, directory / "checkpoint.corrupt.pt")
        return state
    raise CheckpointError(f"{directory}: no readable checkpoint ({'; '.join(errors) or 'none found'}). "
                          f"Delete the checkpoint files or rerun with run.force=true "
                          f"(starts the run over, losing its progress)")


def clear_checkpoints(directory: Path) -> None:
    for name in (CHECKPOINT, PREVIOUS, "checkpoint.corrupt.pt"):
        (directory / name).unlink(missing_ok=True)


def read_summary(directory: Path) -> dict | None:
    path = directory / "summary.json"
    try:
        return read_json(path) if path.exists() else None
    except json.JSONDecodeError:
        return None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def running_summary(key: str, experiment: str, seed: int) -> dict:
    """What summary.json says while a run trains: who trains it, where, since when."""
    return {"status": "running", "key": key, "experiment": experiment, "seed": seed,
            "host": socket.gethostname(), "pid": os.getpid(), "started": now()}


# --------------------------------------------------------------------------- run lock
class RunLock:
    """An exclusive flock on <run dir>/.lock, held while a job trains the run.

    Two jobs with the same key (a resubmitted array, a sweep started twice) cannot both train
    into one directory: the second finds the lock held and skips (or waits). Released when the
    process exits, however it exits.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.handle = None

    def acquire(self, wait: bool = False) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def is_locked(directory: Path) -> bool:
    """True if some process holds the run's lock now (on this host, or on a shared file system
    whose flock is coherent across hosts)."""
    path = directory / ".lock"
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def live_status(directory: Path, summary: dict | None) -> str:
    """The run's status as a table should show it: a `running` summary whose lock nobody holds
    on this host is `stale` (the job was killed); on another host it cannot be checked."""
    if summary is None:
        return "missing"
    status = summary.get("status", "missing")
    if status == "running" and summary.get("host") == socket.gethostname() and not is_locked(directory):
        return "stale"
    return status
