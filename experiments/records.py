"""Run records: identity, atomic files, checkpoints.

A run's identity is a hash of its meaningful config (seed included; run control, logging, data
paths and the table spec excluded), so a rerun finds its own directory: finished -> skipped,
interrupted -> resumed from the last checkpoint.

results/runs/<experiment>/<key>/
    config.yaml      resolved config          choices.json  Hydra group choices (model=fcn2, ...)
    metrics.csv      one row per epoch         summary.json  status, final / best metrics
    environment.json git revision, versions    checkpoint.pt model, optimiser, RNG, history
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from data.paths import PROJECT_ROOT, resolve

NOT_MEANINGFUL = ("run", "logger", "data", "table", "profile", "experiment", "hydra")


def meaningful(cfg: DictConfig) -> dict:
    full = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in full.items() if k not in NOT_MEANINGFUL}


def run_key(cfg: DictConfig) -> str:
    blob = json.dumps(meaningful(cfg), sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return f"{cfg.dataset.name}-{cfg.model.name}-{cfg.regime.name}-s{cfg.seed}-{digest}"


def run_dir(cfg: DictConfig) -> Path:
    return resolve(cfg.run.results_dir) / "runs" / cfg.experiment / run_key(cfg)


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


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{rev}{'-dirty' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device) -> dict:
    env = {
        "git": git_revision(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "argv": sys.argv,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def read_summary(directory: Path) -> dict | None:
    path = directory / "summary.json"
    return read_json(path) if path.exists() else None
