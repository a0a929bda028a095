"""Where the published numbers come from: per table (manifest) its runs, epochs and seeds beside
the paper's, and the machines and code versions of every record."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _plain(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "—" if value is None or (isinstance(value, float) and value != value) else str(value)


def _span(values) -> str:
    values = sorted({int(v) for v in values if v is not None})
    if not values:
        return "—"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def table_budgets(root: Path, ledger: dict | None) -> list[dict]:
    """One row per manifest: experiment, profile, runs finished/expected, epochs and replicates
    (seeds or folds) used, and the paper's epochs/seeds where the ledger states them."""
    paper = {}
    for claim in (ledger or {}).get("claims", []):
        for experiment in str(claim.get("experiments", "")).replace(";", ",").split(","):
            if experiment.strip() and claim.get("paper_epochs") not in (None, "—"):
                paper.setdefault(experiment.strip(), (_plain(claim.get("paper_epochs")),
                                                      _plain(claim.get("paper_seeds"))))
    rows = []
    for manifest_path in sorted(root.glob("runs/*/manifests/*.json")):
        manifest = _read(manifest_path)
        jobs = manifest.get("jobs", [])
        epochs, replicates, finished = [], set(), 0
        for job in jobs:
            summary = _read(root / job.get("dir", "") / "summary.json")
            finished += summary.get("status") == "finished"
            epochs.append(summary.get("epochs"))
            overrides = dict(o.split("=", 1) for o in job.get("overrides", []) if "=" in o)
            replicates.add((overrides.get("seed"), overrides.get("dataset.fold")))
        paper_epochs, paper_seeds = paper.get(manifest.get("experiment", ""), ("—", "—"))
        rows.append({"experiment": manifest.get("experiment", manifest_path.parts[-3]),
                     "profile": manifest.get("profile", manifest_path.stem), "runs": f"{finished}/{len(jobs)}",
                     "epochs": _span(epochs), "replicates": len(replicates),
                     "paper_epochs": paper_epochs, "paper_seeds": paper_seeds})
    return rows


def machines(root: Path) -> tuple[list[dict], list[dict]]:
    """(hardware rows, code-version rows), each with its number of run records."""
    hardware, code = Counter(), Counter()
    for env_path in root.glob("runs/*/*/environment.json"):
        env = _read(env_path)
        device = str(env.get("device", "?"))
        name = env.get("gpu") or env.get("gpu_name") or env.get("processor") or "?"
        hardware[(device.split(":")[0], str(name), str(env.get("torch", "?")),
                  str(env.get("cpu_count", "?")), str(env.get("torch_threads", "?")))] += 1
        code[str(env.get("code_version", "?"))] += 1
    hw_rows = [{"device": d, "name": n, "torch": t, "cpus": c, "threads": th, "runs": k}
               for (d, n, t, c, th), k in hardware.most_common()]
    code_rows = [{"code_version": v, "runs": k} for v, k in code.most_common()]
    return hw_rows, code_rows
