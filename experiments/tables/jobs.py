"""The runs a table expects (from its manifest) and what their records say."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data.paths import resolve
from experiments import plan, records


@dataclass
class Job:
    key: str
    directory: Path
    overrides: list[str]
    choices: dict
    config: dict                          # flattened meaningful config ("model.widths": [256], ...)
    summary: dict | None = None
    history: pd.DataFrame | None = None
    environment: dict | None = None
    status: str = "missing"               # records.live_status: running / stale / finished / ...

    def value(self, key: str):
        if key in self.choices:
            return self.choices[key]
        if key in self.config:
            return self.config[key]
        prefix = key + "."
        nested = {k[len(prefix):]: v for k, v in self.config.items() if k.startswith(prefix)}
        return nested or None

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def code_version(self) -> str | None:
        return (self.environment or {}).get("code_version") or (self.summary or {}).get("code_version")


def load_jobs(manifest: dict, results_dir: str) -> list[Job]:
    """Every job of the manifest, with its summary, metrics and environment where they exist."""
    root = resolve(results_dir)
    jobs = []
    for entry in manifest["jobs"]:
        directory = root / entry["dir"]
        job = Job(entry["key"], directory, entry["overrides"], entry["choices"],
                  plan.job_config(manifest["base"], entry["delta"]))
        job.summary = records.read_summary(directory)
        job.status = records.live_status(directory, job.summary)
        if job.status in records.DONE_STATUSES and (directory / "metrics.csv").exists():
            job.history = pd.read_csv(directory / "metrics.csv")
        if (directory / "environment.json").exists():
            job.environment = records.read_json(directory / "environment.json")
        jobs.append(job)
    return jobs
