"""The kinds that cannot be declared, in one place: each turns records into Rows like the
declared kinds do (claims 9, 12 and 14)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from data.paths import resolve
from experiments import stats
from experiments.claims.rows import MIN_N, Row
from experiments.claims.slices import Slices
from experiments.claims.spec import CUSTOM_NAMES, Claim, table_info


def _budget(row: Row, experiment: str, table_row: str, epochs: int, n: int) -> None:
    info = table_info(experiment)
    row.epochs, row.paper_epochs, row.paper_seeds = epochs, info.paper_epochs(table_row), info.paper_seeds()
    if row.paper_epochs is not None and epochs < row.paper_epochs:
        row.block, row.why = "pending", [f"needs {row.paper_epochs} epochs, has {epochs}"]
    if n < MIN_N:
        row.block = "pending"
        row.why.append(f"needs n >= {MIN_N}, has {n}")


def ratios_to_one(claim: Claim, slices: Slices) -> list[Row]:
    """NB App. A.2: every neuron's ||in|| / ||out|| reaches 1: per run the largest |log ratio|
    at the last epoch, TOST against 0 with the declared margin (one-sample, paired with zeros)."""
    best = None
    for profile, epochs, spec, cells in slices.of(claim.experiment):
        worst = []
        for by_col in cells.values():
            for cell in by_col.values():
                for job in cell.jobs:
                    cols = [c for c in (job.history.columns if job.history is not None else []) if c.startswith("ratio/")]
                    if cols:
                        worst.append(float(np.abs(np.log(job.history[cols].iloc[-1].to_numpy(float))).max()))
        if worst and (best is None or (epochs, len(worst)) > (best[1], len(best[2]))):
            best = (profile, epochs, worst)
    row = Row(claim.id, "fcn", "max |log(in/out)| at the last epoch vs 0", expect="equal")
    if best is None:
        row.block, row.why = "no runs", ["no finished toy runs with ratios"]
        return [row]
    profile, epochs, worst = best
    row.margin, row.profile, row.design = float(claim.get("margin")), profile, "paired"
    row.comparison = stats.tost(worst, np.zeros(len(worst)), row.margin, True)
    _budget(row, claim.experiment, "fcn", epochs, len(worst))
    return [row]


def truncation_cost(claim: Claim, slices: Slices) -> list[Row]:
    """AWNN Fig. 6: accuracy at 70% of the neurons minus at 100%, per run, TOST against 0."""
    file = next((f for name in claim.get("files") if (f := resolve(slices.results_dir) / "tables" / name).exists()), None)
    if file is None:
        return [Row(claim.id, "spiral", "keep 70% vs 100%", block="no runs", why=["truncation curve not written"])]
    frame = pd.read_csv(file)
    rows = []
    for convention, group in frame.groupby("importance", sort=True):
        full = group[group.keep == 1.0].set_index("run").test_acc
        cut = group[(group.keep - 0.7).abs() < 1e-9].set_index("run").test_acc
        keys = sorted(set(full.index) & set(cut.index))
        row = Row(claim.id, f"spiral/{convention}", "accuracy at keep 70% vs keep 100%", expect="equal",
                  margin=float(claim.get("margin")), design="paired", profile="paper")
        row.comparison = stats.tost(cut[keys].to_numpy(float), full[keys].to_numpy(float), row.margin, True)
        _budget(row, claim.experiment, f"spiral/{convention}", int(group.epochs.min()), len(keys))
        rows.append(row)
    return rows


def init_variance(claim: Claim, slices: Slices) -> list[Row]:
    """AWNN Thm 3.1 / Fig. 2: log10 Var(last layer) / Var(first) at initialisation, one net of
    4096 inputs (deterministic): kaiming+ within 1 decade of flat, kaiming vanishing (< -3)."""
    file = resolve(slices.results_dir) / "tables" / "awnn_init_variance.csv"
    if not file.exists():
        return [Row(claim.id, "spiral_hard", "activation variance", block="no runs", why=["awnn_init_variance.csv missing"])]
    frame = pd.read_csv(file, index_col=0)
    rows = []
    for init, holds in (("kaiming_plus", lambda v: abs(v) < 1.0), ("kaiming", lambda v: v < -3.0)):
        value = math.log10(frame[init].iloc[-1] / frame[init].iloc[0])
        row = Row(claim.id, "spiral_hard", f"{init}: log10 Var(last)/Var(first)", design="deterministic",
                  comparison=stats.deterministic(value), profile="at initialisation", expect="equal")
        row.status = "holds" if holds(value) else "fails"
        row.why = [f"{init} {value:+.2f} ({'within ±1' if init == 'kaiming_plus' else 'below -3'} decades claimed)"]
        rows.append(row)
    return rows


CUSTOM = {"ratios_to_one": ratios_to_one, "truncation_cost": truncation_cost, "init_variance": init_variance}
assert tuple(CUSTOM) == CUSTOM_NAMES
