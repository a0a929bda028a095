"""Table cells: the runs of one (row, column), the configuration chosen among them, their numbers.

A cell holding several configurations (an lr grid, say) picks the one with the best mean
validation score (`select_by`); its replicates (seeds, folds) give n, mean ± std and curves.
`report: final` takes each run's last epoch; `report: best_val` the epoch of its best validation
score (the last one among ties, so a width column shows where training settled).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from experiments.tables.jobs import Job

STATUS_NOTES = ("diverged", "failed", "missing", "running", "stale")


@dataclass
class Cell:
    config: str = ""                      # the selected configuration (when a cell holds several)
    values: list[float] = field(default_factory=list)
    curves: list[np.ndarray] = field(default_factory=list)
    extra: dict = field(default_factory=dict)          # metric -> values at the reported epoch
    final_extra: dict = field(default_factory=dict)    # metric -> values at the final epoch
    expected: int = 0
    statuses: dict = field(default_factory=lambda: defaultdict(int))
    selection_score: float | None = None
    jobs: list = field(default_factory=list)           # the runs behind the cell (selected config)
    notes: set = field(default_factory=set)            # e.g. "no validation split: final epoch"

    @property
    def n(self) -> int:
        return len(self.values)

    def mean_std(self) -> tuple[float, float]:
        """Mean and sample std; std is NaN for a single value (not 0: nothing is known)."""
        if not self.values:
            return math.nan, math.nan
        v = np.asarray(self.values, dtype=float)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan

    def best_epoch(self, direction: str) -> float:
        """SPEC A.2.6: the paper's cell = max over epochs of the seed-mean test curve."""
        if not self.curves:
            return math.nan
        length = min(len(c) for c in self.curves)
        mean_curve = np.mean([c[:length] for c in self.curves], axis=0)
        return float(np.nanmax(mean_curve) if direction == "max" else np.nanmin(mean_curve))

    @property
    def code_versions(self) -> set:
        return {j.code_version for j in self.jobs if j.status == "finished" and j.code_version}


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def key_of(job: Job, keys) -> tuple:
    return tuple(_fmt(job.value(k)) for k in keys)


def row_metric(spec, r: tuple) -> str:
    """The metric of a row: `row_metric` may override `metric` per row (e.g. a loss row)."""
    return (spec.get("row_metric") or {}).get("/".join(r), spec["metric"])


def build_cells(spec, jobs: list[Job]) -> dict[tuple, dict[tuple, Cell]]:
    rows, cols = list(spec["rows"]), list(spec["cols"])
    report = spec.get("report", "final")
    replicates = set(spec.get("replicates") or ["seed"])

    cells_jobs: dict[tuple, dict[tuple, list[Job]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        cells_jobs[key_of(job, rows)][key_of(job, cols)].append(job)

    table: dict[tuple, dict[tuple, Cell]] = defaultdict(dict)
    for r, by_col in cells_jobs.items():
        metric = row_metric(spec, r)
        select_by = spec.get("select_by") or f"val_{metric.split('_', 1)[1]}"
        for c, cell_jobs in by_col.items():
            # The configurations a cell chooses among: keys that vary inside it (seeds aside).
            varying = varying_keys(cell_jobs, exclude=set(rows) | set(cols) | replicates)
            by_config: dict[tuple, list[Job]] = defaultdict(list)
            for job in cell_jobs:
                by_config[key_of(job, varying)].append(job)
            by_config = longest_budget(by_config, varying)
            candidates = [cell_of(spec, group, metric, select_by, report) for group in by_config.values()]
            for cand, conf in zip(candidates, by_config.keys()):
                cand.config = ", ".join(f"{k}={v}" for k, v in zip(varying, conf) if k != "train.epochs")
            if len(candidates) == 1:
                table[r][c] = candidates[0]
                continue
            sign = 1 if select_by.endswith("acc") else -1
            scored = [cd for cd in candidates if cd.selection_score is not None]
            best = max(scored, key=lambda cd: sign * cd.selection_score) if scored else candidates[0]
            best.config = f"selected on {select_by}: {best.config}" if scored else f"no {select_by} to select on"
            table[r][c] = best
    return table


def longest_budget(by_config: dict, varying: list[str]) -> dict:
    """A cell holding the same model at several budgets reports the longest one: a 2000-epoch
    run never wins model selection over the paper's 5000 epochs by a luckier validation score."""
    if "train.epochs" not in varying:
        return by_config
    at = varying.index("train.epochs")
    longest = max(int(conf[at]) for conf in by_config)
    return {conf: jobs for conf, jobs in by_config.items() if int(conf[at]) == longest}


# Where a job ran and how it logged: never a configuration a cell selects among.
RUN_CONTROL = ("run.", "data.", "logger.", "hydra.", "hydra/")


def varying_keys(jobs: list[Job], exclude: set) -> list[str]:
    """Overridden keys (other than rows/cols/replicates) taking several values: the grid."""
    values: dict[str, set] = defaultdict(set)
    for job in jobs:
        for o in job.overrides:
            key, _, val = o.partition("=")
            key = key.lstrip("+~")
            if key not in exclude and not key.startswith(RUN_CONTROL):
                values[key].add(val)
    return sorted(k for k, v in values.items() if len(v) > 1)


def reported_row(history, report: str, select_by: str):
    """The epoch a run reports: its last, or (best_val) its best validation epoch, the last of
    tied ones. None when best_val is asked for and the run has no validation column."""
    if report != "best_val":
        return history.iloc[-1]
    if select_by not in history or history[select_by].isna().all():
        return None
    column = history[select_by]
    best = column.max() if select_by.endswith("acc") else column.min()
    return history.loc[column[column == best].index[-1]]


def cell_of(spec, jobs: list[Job], metric: str, select_by: str, report: str) -> Cell:
    cell = Cell(expected=len(jobs), jobs=jobs)
    scores = []
    for job in jobs:
        cell.statuses[job.status] += 1
        if job.status != "finished" or job.history is None:
            continue
        h = job.history
        row = reported_row(h, report, select_by)
        if row is None:
            cell.notes.add(f"no {select_by}: final epoch reported")
            row = h.iloc[-1]
        if metric in row:
            cell.values.append(float(row[metric]))
        if metric in h:
            cell.curves.append(h[metric].to_numpy(dtype=float))
        if select_by in h:
            scores.append(float(h[select_by].max() if select_by.endswith("acc") else h[select_by].min()))
        for extra in spec.get("extra") or []:
            if extra in row:
                cell.extra.setdefault(extra, []).append(float(row[extra]))
                cell.final_extra.setdefault(extra, []).append(float(h[extra].iloc[-1]))
        splits = (job.summary or {}).get("splits") or {}
        if splits.get("generated"):
            cell.notes.add("folds generated (no splits file): not the published folds")
        if splits.get("tokenizer"):
            cell.notes.add(f"tokenizer {splits['tokenizer']}")
    if scores:
        cell.selection_score = float(np.mean(scores))
    return cell


def paper_text(entry) -> str | None:
    """The paper's number of a cell as printed: a bare number, or the structured form
    {mean, sd, n, width, width_sd, note} -> "100.0 (0.0), width 8.1 (2.8)"."""
    if entry is None or not isinstance(entry, dict):
        return None if entry is None else str(entry)
    parts = []
    if "mean" in entry:
        parts.append(f"{entry['mean']}" + (f" ({entry['sd']})" if "sd" in entry else ""))
    if "width" in entry:
        parts.append(f"width {entry['width']}" + (f" ({entry['width_sd']})" if "width_sd" in entry else ""))
    if "note" in entry:
        parts.append(str(entry["note"]))
    return ", ".join(parts)


def paper_mean(entry) -> float | None:
    """The paper's mean of a cell (None when the paper gives none)."""
    if isinstance(entry, dict):
        entry = entry.get("mean")
    return float(entry) if isinstance(entry, (int, float)) else None


def replicate_key(spec, job: Job) -> tuple:
    """The replicate a run is (seed=0, or seed and fold): two cells that hold the same keys ran
    the same seeds (initialisation, batch order) or folds and are compared paired."""
    return tuple(f"{k}={v}" for k in (spec.get("replicates") or ["seed"]) if (v := job.value(k)) is not None)


def keyed_values(spec, r: tuple, cell: Cell, metric: str | None = None) -> dict:
    """{replicate key: value} of a cell's finished runs at the epoch the table reports, for
    `metric` (default: the row's metric)."""
    table_metric = row_metric(spec, r)
    select_by = spec.get("select_by") or f"val_{table_metric.split('_', 1)[1]}"
    out = {}
    for job in cell.jobs:
        if job.status != "finished" or job.history is None:
            continue
        at = reported_row(job.history, spec.get("report", "final"), select_by)
        at = job.history.iloc[-1] if at is None else at
        wanted = metric or table_metric
        if wanted in at and not math.isnan(float(at[wanted])):
            out[replicate_key(spec, job)] = float(at[wanted])
    return out
