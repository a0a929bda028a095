"""The pieces of `make verify` (experiments/verify.py): which published runs can be re-trained
here, re-training one for its first k epochs, and comparing the metrics epoch by epoch."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf

from data.inputs import check_inputs, one_line
from data.paths import PROJECT_ROOT, resolve
from experiments.identity import NOT_MEANINGFUL, flatten

# Records whose first epochs moved with later code (float order, not the method) beyond even the
# float-drift tolerance, for a known reason; verify samples another run of the same experiment
# and lists these. Re-measured 2026-12-05 at code 4ecdf59e7e1a on the 2-core CPU.
DRIFTED = {
    "spiral_hard-awnn_mlp-awnn-s0-46e6aaf968":
        "4-layer kaiming+ AWNN at chance (50-53%) in its first epochs: the fused prior gradient "
        "(056f8a4) moves the epoch-1 loss by 1e-4 and accuracy flips by points; the kaiming run matches to 1e-9",
}
MACHINE_PREFIXES = ("run.", "data.", "hydra.", "logger", "train.epochs=")
NOT_COMPARED = ("epoch", "time", "epoch_time")


@dataclass
class PublishedRun:
    experiment: str
    key: str
    directory: Path
    overrides: list[str]
    config: dict
    epochs: int
    seconds_per_epoch: float
    device: str
    code_version: str
    k: int = 0


@dataclass
class Outcome:
    run: PublishedRun
    error: str | None = None
    device: str | None = None
    code_version: str | None = None
    config_diff: list[str] = field(default_factory=list)
    compared: int = 0                                   # epochs compared
    worst: tuple = ()                                   # (ratio to tolerance, column, epoch, diff, tol)
    per_epoch: list[tuple] = field(default_factory=list)   # (epoch, column, diff, tolerance)
    drift: float = 0.0                                    # largest diff / the drift tolerance
    history: pd.DataFrame | None = None                   # the re-trained run's metrics.csv
    seconds: float = 0.0

    @property
    def same_device(self) -> bool:
        return (self.device or "").split(":")[0] == self.run.device.split(":")[0]

    @property
    def same_code(self) -> bool:
        return self.code_version == self.run.code_version

    @property
    def verdict(self) -> str:
        if self.error:
            return "FAILED"
        if not self.compared:
            return "NOTHING COMPARED"
        if self.worst[0] <= 1.0:
            return "ok"
        return "ok (float drift)" if self.drift <= 1.0 else "MISMATCH"

    @property
    def passed(self) -> bool:
        return self.verdict.startswith("ok")

    def largest_text(self) -> str:
        if not self.worst:
            return "-"
        _, column, epoch, diff, tol = self.worst
        return f"{column}@{epoch} {diff:.2g} ({tol:.2g})"

    def config_text(self) -> str:
        return "same" if not self.config_diff else f"{len(self.config_diff)} diff"

    def epoch_lines(self) -> list[str]:
        lines = [f"config differs: {d}" for d in self.config_diff]
        return lines + [f"epoch {e}: largest {c} {d:.3g} (tolerance {t:.2g})" for e, c, d, t in self.per_epoch]


# --------------------------------------------------------------------------- what to re-train
def _read_run(experiment: str, directory: Path, overrides: list[str]) -> PublishedRun | None:
    try:
        summary = json.loads((directory / "summary.json").read_text())
        config = yaml.safe_load((directory / "config.yaml").read_text())
        env = json.loads((directory / "environment.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if summary.get("status") != "finished" or not (directory / "metrics.csv").exists():
        return None
    epochs = int(summary.get("epochs") or config["train"]["epochs"])
    per_epoch = float(summary.get("train_seconds") or 0.0) / max(1, epochs)
    return PublishedRun(experiment, directory.name, directory, overrides, config, epochs, per_epoch,
                        str(env.get("device", "?")), str(env.get("code_version", "?")))


def candidates(published: str, only: list[str] | None) -> list[tuple[str, list[PublishedRun]]]:
    """Every experiment with records, and its finished runs (the manifests give their overrides)."""
    out = []
    for exp_dir in sorted(p for p in (resolve(published) / "runs").iterdir() if p.is_dir()):
        if only and exp_dir.name not in only:
            continue
        runs, seen = [], set()
        for manifest in sorted((exp_dir / "manifests").glob("*.json")):
            for job in json.loads(manifest.read_text())["jobs"]:
                if job["key"] in seen:
                    continue
                seen.add(job["key"])
                run = _read_run(exp_dir.name, exp_dir / job["key"], job["overrides"])
                if run is not None and run.key not in DRIFTED:
                    runs.append(run)
        out.append((exp_dir.name, runs))
    return out


def available(config: dict, data_root: str) -> tuple[bool, str]:
    """(whether the run's data is here, why not): the check a run makes before it starts
    (data/inputs.py, the loaders' own file search), with nothing fetched."""
    dataset = OmegaConf.create(config["dataset"])
    data = OmegaConf.create({**config.get("data", {}), "root": data_root, "download": False})
    try:
        check_inputs(dataset, data)
    except KeyError:
        return False, f"dataset {dataset.name}: unknown here"
    except (OSError, ValueError) as err:       # the missing files and their folder, not the hints
        why = one_line(err).split("; ")[0].split(" Put them there")[0]
        return False, why if why.startswith(f"{dataset.name}:") else f"dataset {dataset.name}: {why}"
    return True, ""


def epochs_to_run(run: PublishedRun, k: int, budget_s: float) -> int:
    """k, rounded up to the run's evaluation period, at most its epochs; fewer when the record
    says those epochs took longer than budget_s (then only train columns may be compared)."""
    every = int(run.config["train"].get("eval_every") or 1)
    wanted = min(run.epochs, math.ceil(max(k, every) / every) * every)
    if run.seconds_per_epoch * wanted > budget_s:
        wanted = max(1, min(wanted, int(budget_s // max(run.seconds_per_epoch, 1e-9))))
    return wanted


def choose(runs: list[PublishedRun], k: int, budget_s: float) -> PublishedRun:
    """A CPU-recorded run if there is one (this suite's reference machine), the cheapest first."""
    for run in runs:
        run.k = epochs_to_run(run, k, budget_s)
    return min(runs, key=lambda r: (not r.device.startswith("cpu"), r.seconds_per_epoch * r.k, r.key))


# --------------------------------------------------------------------------- re-train, compare
def command(run: PublishedRun, data_root: str, results_dir: str) -> list[str]:
    kept = [o for o in run.overrides if not o.lstrip("+~").startswith(MACHINE_PREFIXES)]
    return [sys.executable, "-m", "experiments.run", *kept, f"train.epochs={run.k}",
            f"run.results_dir={results_dir}", f"data.root={resolve(data_root)}", "data.download=false",
            "run.progress=false", "run.threads=1", "run.stack=false", "logger=csv"]


def _meaningful(config: dict) -> dict:
    flat = flatten({k: v for k, v in config.items() if k not in NOT_MEANINGFUL})
    flat.pop("train.epochs", None)
    return flat


def retrain(run: PublishedRun, data_root: str) -> Outcome:
    outcome = Outcome(run)
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(command(run, data_root, tmp), cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, check=False)
        dirs = list(Path(tmp).glob(f"runs/{run.experiment}/*/metrics.csv"))
        if proc.returncode != 0 or len(dirs) != 1:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            outcome.error = f"exit {proc.returncode}: {tail[0][:300]}"
            return outcome
        directory = dirs[0].parent
        env_here = json.loads((directory / "environment.json").read_text())
        outcome.device, outcome.code_version = str(env_here.get("device")), str(env_here.get("code_version"))
        mine = _meaningful(yaml.safe_load((directory / "config.yaml").read_text()))
        theirs = _meaningful(run.config)
        # a key only here is a field added since the record, at its default (identity.py)
        outcome.config_diff = [f"{k}: published {theirs[k]!r}, here {mine.get(k)!r}"
                               for k in sorted(theirs) if mine.get(k) != theirs[k]]
        outcome.history = pd.read_csv(dirs[0])
    return outcome


def compare_metrics(outcome: Outcome, tolerance, drift_tolerance) -> None:
    """Per epoch, the value furthest from the published one relative to its tolerance; and the
    largest difference relative to the (wider) float-drift tolerance."""
    here = outcome.history
    published = pd.read_csv(outcome.run.directory / "metrics.csv")
    columns = [c for c in here.columns if c in published.columns and c not in NOT_COMPARED
               and pd.api.types.is_numeric_dtype(here[c]) and pd.api.types.is_numeric_dtype(published[c])]
    outcome.per_epoch, worst = [], (0.0, "", 0, 0.0, 0.0)
    for i in range(min(len(here), len(published), outcome.run.k)):
        epoch_worst = (-1.0, "", 0.0, 0.0)
        for column in columns:
            a, b = here[column].iloc[i], published[column].iloc[i]
            if pd.isna(a) or pd.isna(b):
                continue                                      # an epoch one of them did not evaluate
            diff, tol = abs(float(a) - float(b)), tolerance(column, float(b))
            outcome.drift = max(outcome.drift, diff / drift_tolerance(column, float(b)))
            if diff / tol > epoch_worst[0]:
                epoch_worst = (diff / tol, column, diff, tol)
        if epoch_worst[1]:
            outcome.per_epoch.append((i + 1, epoch_worst[1], epoch_worst[2], epoch_worst[3]))
            if epoch_worst[0] >= worst[0]:
                worst = (epoch_worst[0], epoch_worst[1], i + 1, epoch_worst[2], epoch_worst[3])
    outcome.compared = len(outcome.per_epoch)
    outcome.worst = worst if outcome.compared else ()
