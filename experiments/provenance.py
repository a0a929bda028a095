"""Where a run's numbers come from: code version (git revision, dirty state, diff hash) and the
machine it ran on. Written to every run's environment.json; tables list each distinct one.

The code version covers the suite's source (CODE_PATHS), untracked files included, and never
the results directory, so runs written by a sweep do not make the next run "dirty".
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys

import torch

from data.paths import PROJECT_ROOT

CODE_PATHS = ("experiments", "models", "data", "conf", "hydra_plugins", "scripts", "Makefile",
              "pyproject.toml")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else None


def _source_files() -> list:
    files = []
    for name in CODE_PATHS:
        path = PROJECT_ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                      and p.suffix in (".py", ".yaml", ".yml", ".sh", ".md")]
    return sorted(files)


def source_sha() -> str:
    """sha256 over the source files (paths and bytes), the same with or without git."""
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


STAMP = ".code_version.json"


def _read_stamp() -> dict | None:
    try:
        return json.loads((PROJECT_ROOT / STAMP).read_text())
    except (OSError, ValueError):
        return None


def write_stamp() -> dict:
    """Record the clean revision and its source hash, for a copy of the tree shipped without .git
    (a cluster node, a rented GPU): runs there then carry the revision, not "nogit.<hash>"."""
    state = code_state()
    if not state["git_revision"] or state["git_dirty"]:
        raise SystemExit(f"error: no clean git revision to stamp (code version {state['code_version']})")
    stamp = {"git_revision": state["git_revision"], "source_sha256": source_sha()}
    (PROJECT_ROOT / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    return stamp


@functools.lru_cache(maxsize=1)
def code_state() -> dict:
    """{"git_revision", "git_dirty", "diff_sha256", "code_version"} of the source tree.

    code_version = <12-char revision>[+dirty.<8-char diff hash>]; without git, a hash of the
    source files themselves ("nogit.<hash>"). Computed once per process.
    """
    stamp = _read_stamp()
    if stamp and stamp.get("source_sha256") == source_sha():  # a stamped copy, sources unchanged
        return {"git_revision": stamp["git_revision"], "git_dirty": False, "diff_sha256": None,
                "code_version": stamp["git_revision"][:12]}
    rev = (_git("rev-parse", "HEAD") or "").strip()
    if not rev:
        sha = source_sha()
        return {"git_revision": None, "git_dirty": None, "diff_sha256": sha,
                "code_version": f"nogit.{sha[:12]}"}
    status = _git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS) or ""
    dirty = bool(status.strip())
    sha = None
    if dirty:
        digest = hashlib.sha256((_git("diff", "HEAD", "--binary", "--", *CODE_PATHS) or "").encode())
        for line in sorted(status.splitlines()):
            if line.startswith("??"):
                path = PROJECT_ROOT / line[3:].strip()
                if path.is_file():
                    digest.update(line.encode() + b"\0" + path.read_bytes())
        sha = digest.hexdigest()
    version = rev[:12] + (f"+dirty.{sha[:8]}" if dirty else "")
    return {"git_revision": rev, "git_dirty": dirty, "diff_sha256": sha, "code_version": version}


def environment(device: torch.device) -> dict:
    env = {
        **code_state(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "host": socket.gethostname(),
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


def describe(env: dict) -> str:
    """One line naming the hardware, torch and code version of an environment.json."""
    where = env.get("gpu") or f"{env.get('processor')} CPU x{env.get('torch_threads')} threads"
    code = env.get("code_version") or env.get("git") or "unknown"
    return f"{where}, torch {env.get('torch')}, code {code}"


if __name__ == "__main__":      # python -m experiments.provenance --stamp
    if sys.argv[1:] == ["--stamp"]:
        print(f"[provenance] {STAMP}: {write_stamp()}")
    else:
        print(json.dumps(code_state(), indent=1))
