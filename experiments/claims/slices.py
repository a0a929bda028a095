"""The run records a claim reads, cut into budget slices: one table per (profile, epochs).

A claim compares cells of one slice (or of two experiments' slices at the same profile and
epochs), never cells of different budgets. A `Sample` is one cell's numbers per replicate key
(seed, or seed and fold), with what the budget check needs (epochs, accuracy, curves).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from experiments import plan, records
from experiments.tables.cells import build_cells, keyed_values, replicate_key, row_metric
from experiments.tables.jobs import load_jobs

PROFILES = ("paper", "quick")


@dataclass
class Sample:
    experiment: str
    profile: str
    epochs: int
    row: str
    col: str
    values: dict = field(default_factory=dict)        # replicate key -> value of the compared metric
    accuracy: dict = field(default_factory=dict)      # replicate key -> the table's metric
    curves: list = field(default_factory=list)        # the table's metric per evaluated epoch, per run
    histories: list = field(default_factory=list)     # (key, metrics frame) per run

    @property
    def n(self) -> int:
        return len(self.values)

    def keys(self) -> list:
        return sorted(self.values)

    def array(self, keys=None):
        return np.array([self.values[k] for k in (keys or self.keys())], float)


def _key(value) -> str:
    return "/".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


class Slices:
    """Budget slices of every experiment's published (or local) records, loaded on demand."""

    def __init__(self, results_dir: str):
        self.results_dir = results_dir
        self._cache: dict[str, list] = {}

    def of(self, experiment: str) -> list[tuple[str, int, dict, list]]:
        """[(profile, epochs, spec, {row: {col: Cell}})] of `experiment`, paper profile first."""
        if experiment not in self._cache:
            self._cache[experiment] = self._load(experiment)
        return self._cache[experiment]

    def _load(self, experiment: str) -> list:
        out = []
        for profile in PROFILES:
            path = plan.manifest_path(self.results_dir, experiment, profile, [])
            if not path.exists():
                continue
            manifest = records.read_json(path)
            spec = manifest["table"]
            by_epochs = defaultdict(list)
            for job in load_jobs(manifest, self.results_dir):
                by_epochs[int(job.config.get("train.epochs") or 0)].append(job)
            for epochs, jobs in sorted(by_epochs.items(), reverse=True):
                if any(j.status == "finished" for j in jobs):
                    cells = {_key(r): {_key(c): x for c, x in by.items()} for r, by in build_cells(spec, jobs).items()}
                    out.append((profile, epochs, spec, cells))
        return out

    def samples(self, experiment: str, row: str, col: str, metric: str | None = None) -> list[Sample]:
        """The cell (row, col) in every slice that has runs of it; col "*": the row's fullest cell."""
        found = []
        for profile, epochs, spec, cells in self.of(experiment):
            by_col = cells.get(row) or {}
            if col == "*":
                named = max(by_col, key=lambda c: by_col[c].n, default=None)
            else:
                named = col
            cell = by_col.get(named) if named is not None else None
            if cell is not None and cell.n:
                found.append(sample_of(experiment, profile, epochs, spec, row, named, cell, metric))
        return found


def sample_of(experiment, profile, epochs, spec, row, col, cell, metric=None) -> Sample:
    """One cell's values per replicate key, at the epoch the table reports (final or best
    validation), for `metric` (default: the table's metric of that row)."""
    r = tuple(row.split("/"))
    table_metric = row_metric(spec, r)
    sample = Sample(experiment, profile, epochs, row, col)
    sample.values = keyed_values(spec, r, cell, metric)
    sample.accuracy = keyed_values(spec, r, cell)
    for job in cell.jobs:
        if job.status != "finished" or job.history is None:
            continue
        if table_metric in job.history:
            sample.curves.append(job.history[table_metric].dropna().to_numpy(float))
        sample.histories.append((replicate_key(spec, job), job.history))
    return sample
