"""One compared row of a claim: two cells at one budget, tested (experiments/stats.py), with the
budget it ran at against the paper's and the reasons it cannot decide (cut budget, n < 3, a side
that has not learned, a setting that differs from the paper's)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from experiments import stats
from experiments.claims.slices import Sample, Slices
from experiments.claims.spec import Operand, table_info
from experiments.tables.cells import paper_mean, paper_text

MIN_N = 3              # fewer replicates per side never decide
CHANCE_BAND = 10.0     # a side within this many points of chance has not learned


@dataclass
class Row:
    claim_id: int
    row: str                                  # the table's row key (e.g. fcn2)
    what: str                                 # the compared cells (columns)
    comparison: stats.Comparison | None = None
    design: str = ""                          # paired | unpaired | deterministic
    profile: str = ""
    epochs: int | None = None
    paper_epochs: int | None = None
    paper_seeds: int | None = None
    paper_numbers: str = ""
    block: str = ""                           # "" (decisive) | pending | not testable | no runs
    why: list = field(default_factory=list)   # what is missing / why not testable / findings
    margin: float | None = None
    expect: str = "greater"
    status: str = ""                          # holds | fails | open (decisive rows), else = block
    p_adj: float = math.nan

    name: str = ""                            # how the verdict names the row (row key, made unique)

    @property
    def used(self) -> bool:
        return not self.block


def combine(part: Sample, minus: Sample) -> Sample:
    """A gain: part − minus replicate by replicate (the keys both have)."""
    keys = sorted(set(part.values) & set(minus.values))
    out = Sample(part.experiment, part.profile, part.epochs, part.row, f"{part.col} − {minus.col}")
    out.values = {k: part.values[k] - minus.values[k] for k in keys}
    out.accuracy = {**minus.accuracy, **part.accuracy}
    out.curves = part.curves + minus.curves
    out.parts = [part, minus]
    return out


def resolve(slices: Slices, op: Operand, metric: str | None) -> list[Sample]:
    found = slices.samples(op.experiment, op.row, op.col, metric)
    if not op.minus:
        return found
    minus = {(s.profile, s.epochs): s for s in slices.samples(op.experiment, op.row, op.minus, metric)}
    return [combine(s, minus[(s.profile, s.epochs)]) for s in found if (s.profile, s.epochs) in minus]


def epochs_to_target(sample: Sample, metric: str, target: float) -> tuple[Sample, int]:
    """Speed: per run, the first epoch whose `metric` reaches `target` (never: epochs + 1)."""
    out = Sample(sample.experiment, sample.profile, sample.epochs, sample.row, sample.col)
    out.accuracy, out.curves, never = sample.accuracy, sample.curves, 0
    for key, history in sample.histories:
        reached = history.loc[history[metric] >= target, "epoch"] if metric in history else []
        out.values[key] = int(reached.iloc[0]) if len(reached) else sample.epochs + 1
        never += not len(reached)
    return out, never


def decisive_rank(a: Sample, b: Sample, paper_epochs) -> tuple:
    at_paper = paper_epochs is not None and min(a.epochs, b.epochs) >= paper_epochs
    return (at_paper and min(a.n, b.n) >= MIN_N, a.epochs, min(a.n, b.n), a.profile == "paper")


def match(samples_a, samples_b, paper_epochs):
    """The best pair of samples at one budget (same profile and epochs): the paper's epochs with
    n >= 3 first, then the longest budget, then the larger n."""
    pairs = [(sa, sb) for sa in samples_a for sb in samples_b
             if (sa.profile, sa.epochs) == (sb.profile, sb.epochs)]
    return max(pairs, key=lambda p: decisive_rank(*p, paper_epochs), default=None)


def row_key(a: Operand, b: Operand) -> str:
    return a.row if a.row == b.row else f"{a.row} vs {b.row}"


def what_of(a: Operand, b: Operand) -> str:
    if a.experiment != b.experiment:
        return f"{a.experiment} {a.label()} vs {b.experiment} {b.label()}"
    return f"{a.label()} vs {b.label()}" if a.row == b.row else f"({a.label()}) {a.row} vs {b.row}"


def paper_of(op: Operand) -> tuple[str | None, float | None]:
    info = table_info(op.experiment)
    entry, minus = info.paper_entry(op.row, op.col), info.paper_entry(op.row, op.minus) if op.minus else None
    if op.minus:
        m, n = paper_mean(entry), paper_mean(minus)
        return (f"{m - n:+.2f}" if m is not None and n is not None else None), None
    return paper_text(entry), paper_mean(entry)


def paper_numbers(a: Operand, b: Operand) -> str:
    (ta, _), (tb, _) = paper_of(a), paper_of(b)
    return f"{ta or '—'} vs {tb or '—'}" if (ta or tb) else "—"


def unlearned(sample: Sample, chance, half_width: float | None, metric_is_table: bool) -> tuple[str, str] | None:
    """Why a side has not learned: ("chance", ...) within 10 points of chance, or ("gaining", ...)
    its last 10% of epochs still gain more than the interval's half-width (None: it has learned)."""
    for part in getattr(sample, "parts", [sample]):
        acc = list(part.accuracy.values())
        if chance is not None and acc and np.mean(acc) < chance + CHANCE_BAND:
            return "chance", f"{part.col} at {np.mean(acc):.1f}%, within {CHANCE_BAND:.0f} points of chance ({chance}%)"
        gains = [c[-1] - c[int(0.9 * (len(c) - 1))] for c in part.curves if len(c) >= 10]
        if metric_is_table and half_width and gains and np.mean(gains) > half_width:
            return "gaining", (f"{part.col} still gains {np.mean(gains):+.2f} in its last 10% of epochs "
                               f"(more than the interval half-width {half_width:.2f})")
    return None
