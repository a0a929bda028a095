"""The claims ledger: every headline claim of both papers, given a verdict from our run records.

    python -m experiments.claims [--local | run.results_dir=DIR]      (make claims)

Writes results/claims.md and results/claims.csv. Each claim reads the table cells of one
experiment (through its manifest, experiments/tables), preferring the paper-budget sweep and
falling back to the quick one, and reports our effect with a 95% interval and n:
  - a difference between two cells: Welch t interval (scipy.stats); a percentile bootstrap
    (scipy.stats.bootstrap) when the metric is an accuracy within 2 points of 100%, where a
    t interval would leave the possible range;
  - a monotone trend (width vs difficulty): the differences between neighbours.
Verdicts, from each row's 95% interval (EQUAL_TOLERANCE = 1 point):
  - reproduced: every row's interval lies on the claimed side (or within the tolerance for an
    "equal" claim);
  - not reproduced: no row holds and some interval rules the claim out (it excludes a gain of the
    tolerance or more, or lies outside the tolerance);
  - partly: some rows hold, others do not;
  - inconclusive: every interval is too wide to decide at its n;
  - not testable here: no finished runs (e.g. no CIFAR data on this machine) or n < 2.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data.paths import LOCAL, PUBLISHED, resolve
from experiments import plan, records
from experiments.tables.cells import build_cells
from experiments.tables.claims import bootstrap_interval, welch_interval
from experiments.tables.jobs import load_jobs

EQUAL_TOLERANCE = 1.0   # accuracy points within which two cells "match"


@dataclass
class Result:
    effect: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n: str = ""
    verdict: str = "not testable here"
    reason: str = ""
    budget: str = ""
    rows: list = field(default_factory=list)          # per-row (label, effect, lo, hi, n)


@dataclass
class Claim:
    paper: str
    claim: str
    paper_numbers: str
    experiment: str
    test: callable                 # (Tables) -> Result


class Tables:
    """Cells of each experiment's table, from the paper-budget sweep if it has finished runs,
    else from the quick one."""

    def __init__(self, results_dir: str):
        self.results_dir = results_dir
        self.cache: dict[str, tuple] = {}
        self.by_profile: dict[str, dict] = {}    # experiment -> {profile: cells}

    def same_budget(self, experiment: str, keys: list[tuple[str, str]], min_n: int = 1):
        """The cells (row, col) of `keys`, all from one sweep: the paper budget when it has every
        one of them with >= min_n runs, else the quick one; None when neither has them all. A
        comparison never mixes budgets."""
        for profile in ("paper", "quick"):
            table = self.cells_at(experiment, profile)
            found = [cell(table, r, c) for r, c in keys]
            if all(x is not None and x.n >= min_n for x in found):
                return found
        return None

    def cells_at(self, experiment: str, profile) -> dict:
        """The cells of one profile's sweep alone ({} when it has no finished runs)."""
        self.get(experiment)
        return self.by_profile.get(experiment, {}).get(profile, {})

    def get(self, experiment: str):
        if experiment not in self.cache:
            self.cache[experiment] = self._load(experiment)
        return self.cache[experiment]

    def _load(self, experiment: str):
        """(profile, spec, cells, jobs): rows of the paper sweep where it has finished runs, the
        quick sweep's rows otherwise; each cell remembers its profile (`cell.profile`)."""
        merged, jobs_all, spec, profiles = {}, [], None, []
        for profile in ("quick", "paper"):
            path = plan.manifest_path(self.results_dir, experiment, profile, [])
            if not path.exists():
                continue
            manifest = records.read_json(path)
            jobs = load_jobs(manifest, self.results_dir)
            if not any(j.status == "finished" for j in jobs):
                continue
            spec = manifest["table"]
            cells = build_cells(spec, jobs)
            self.by_profile.setdefault(experiment, {})[profile] = cells
            for row, by_col in cells.items():
                if not any(c.n for c in by_col.values()):
                    continue
                for c in by_col.values():
                    c.profile = profile
                merged[row] = by_col          # paper rows replace quick ones
            jobs_all += jobs
            profiles.append(profile)
        return "+".join(profiles) or None, spec, merged, jobs_all


# --------------------------------------------------------------------------- helpers
def cell(table, row: str, col: str):
    return table.get(tuple(row.split("/")), {}).get(tuple(col.split("/")))


def budget_of(profile, jobs, cells) -> str:
    """Profiles and epochs of the cells a claim used, e.g. "paper 500 ep; quick 15 ep"."""
    parts: dict[str, set] = {}
    for c in cells:
        if c is None:
            continue
        epochs = {int(j.config.get("train.epochs", 0)) for j in c.jobs}
        parts.setdefault(getattr(c, "profile", profile), set()).update(epochs)
    return "; ".join(f"{p} {'/'.join(str(e) for e in sorted(es))} ep" for p, es in sorted(parts.items())) or str(profile)


def difference(a, b) -> tuple[float, float, float]:
    near_ceiling = max(np.max(a.values), np.max(b.values)) > 98.0
    return (bootstrap_interval if near_ceiling else welch_interval)(a.values, b.values)


def compare_cells(experiment: str, pairs: list[tuple[str, str, str, str]], claimed: str,
                  metric: str | None = None) -> callable:
    """A claim over rows: for each (row_a, col_a, row_b, col_b), effect = a − b.
    claimed: "greater" (a > b), "less" or "equal" (|a − b| within EQUAL_TOLERANCE).
    metric: an `extra` column of the table (e.g. width/total) instead of the table's metric."""

    def test(tables: Tables) -> Result:
        profile, spec, table, jobs = tables.get(experiment)
        res = Result()
        used = []
        for ra, ca, rb, cb in pairs:
            found = tables.same_budget(experiment, [(ra, ca), (rb, cb)])
            if found is None:
                continue
            a, b = found
            if metric is not None and not (a.extra.get(metric) and b.extra.get(metric)):
                continue
            used += [a, b]
            if metric is None:
                (diff, lo, hi), n = difference(a, b), f"{a.n} vs {b.n}"
            else:
                (diff, lo, hi), n = (welch_interval(a.extra[metric], b.extra[metric]),
                                     f"{len(a.extra[metric])} vs {len(b.extra[metric])}")
            label = ra if ra == rb else f"{ca}: {ra} vs {rb}" if ca == cb else f"{ra}/{ca} vs {rb}/{cb}"
            res.rows.append((label, diff, lo, hi, n))
        if not res.rows:
            res.reason = "no finished runs for these cells"
            return res
        res.budget = budget_of(profile, jobs, used)
        res.verdict, res.reason = verdict(res.rows, claimed)
        first = res.rows[0]
        res.effect, res.lo, res.hi, res.n = first[1], first[2], first[3], first[4]
        return res

    return test


def verdict(rows, claimed: str) -> tuple[str, str]:
    """Each row's 95% interval either holds the claim (lies above 0 / below 0 / within the
    tolerance), rules it out (excludes a gain of EQUAL_TOLERANCE or more / lies outside the
    tolerance), or is too wide to decide at its n. A claim whose every row is undecided is
    "inconclusive", not "not reproduced"."""
    tol = EQUAL_TOLERANCE
    state = {}
    for label, diff, lo, hi, _ in rows:
        if not math.isfinite(lo):
            continue
        if claimed == "greater":
            state[label] = "holds" if lo > 0 else "fails" if hi < tol else "open"
        elif claimed == "less":
            state[label] = "holds" if hi < 0 else "fails" if lo > -tol else "open"
        else:
            state[label] = ("holds" if -tol <= lo and hi <= tol
                            else "fails" if lo > tol or hi < -tol else "open")
    if not state:
        return "not testable here", "fewer than 2 replicates per cell: no interval"
    named = {k: [label for label, s in state.items() if s == k] for k in ("holds", "fails", "open")}
    side = {"greater": "above 0", "less": "below 0", "equal": f"within ±{tol}"}[claimed]
    ruled_out = {"greater": f"excludes a gain of {tol} or more", "less": f"excludes a drop of {tol} or more",
                 "equal": f"lies outside ±{tol}"}[claimed]
    parts = [f"{what} in {', '.join(named[k])}" for k, what in
             (("holds", "holds"), ("fails", "ruled out"), ("open", "undecided"))
             if named[k] and len(named[k]) < len(rows)]
    if len(named["holds"]) == len(rows):
        return "reproduced", f"95% interval {side} in every row ({len(rows)})"
    if len(named["fails"]) == len(rows):
        return "not reproduced", f"95% interval {ruled_out} in every row ({len(rows)})"
    if len(named["open"]) == len(rows):
        return "inconclusive", (f"every 95% interval is too wide to decide at this n: it contains 0 "
                                f"and {'a gap beyond' if claimed == 'equal' else 'an effect of'} ±{tol}")
    if named["holds"]:
        return "partly", "; ".join(parts)
    return "not reproduced", "; ".join(parts) + f" (ruled out: the interval {ruled_out})"


def from_spec(experiment: str, claimed: str) -> callable:
    """The claim the experiment's table spec states (`claim: {col, baseline}` per row or
    `{row, baseline_row}` per column), over every row / column the table has."""

    def test(tables: Tables) -> Result:
        profile, spec, table, jobs = tables.get(experiment)
        if not table:
            return Result(reason="no finished runs")
        c = spec["claim"]
        rows = sorted(table)
        cols = sorted({k for by in table.values() for k in by})
        if c.get("row") is not None:
            pairs = [(str(c["row"]), "/".join(k), str(c["baseline_row"]), "/".join(k)) for k in cols]
        else:
            pairs = [("/".join(r), str(c["col"]), "/".join(r), str(c["baseline"])) for r in rows]
        return compare_cells(experiment, pairs, claimed)(tables)

    return test


def deeper_gap(experiment: str, col: str, base: str, rows: list[str]) -> callable:
    """The claimed gain (col − base) is largest at the deepest row: gap(deepest) − gap(each
    shallower row). The paper's own gains are not monotone below it (3.3, 3.1, 4.9)."""

    def test(tables: Tables) -> Result:
        profile, spec, table, jobs = tables.get(experiment)
        deepest, gaps = rows[-1], []
        for r in rows[:-1]:                       # the four cells of a pair from one budget
            found = tables.same_budget(experiment, [(deepest, col), (deepest, base), (r, col), (r, base)], 2)
            if found is not None:
                gaps.append((r, *found))
        res = Result()
        if not gaps:
            res.reason = f"needs {deepest} and a shallower row with >= 2 replicates at one budget"
            return res
        r2 = deepest
        for r1, a2, b2, a1, b1 in gaps:
            diff = (np.mean(a2.values) - np.mean(b2.values)) - (np.mean(a1.values) - np.mean(b1.values))
            se = math.sqrt(sum(np.var(c.values, ddof=1) / c.n for c in (a1, b1, a2, b2)))
            from scipy import stats

            dof = min(c.n for c in (a1, b1, a2, b2)) - 1       # conservative
            half = stats.t.ppf(0.975, dof) * se
            res.rows.append((f"{r2} − {r1}", diff, diff - half, diff + half,
                             f"{min(c.n for c in (a1, b1, a2, b2))}+ per cell"))
        res.budget = budget_of(profile, jobs, [c for g in gaps for c in g[1:]])
        res.verdict, res.reason = verdict(res.rows, "greater")
        res.effect, res.lo, res.hi, res.n = res.rows[0][1:]
        res.reason += " (difference of gains; conservative dof)"
        return res

    return test


def extra_trend(experiment: str, metric: str, cells_in_order: list[tuple[str, str]], claimed: str) -> callable:
    """A width (or other `extra`) that grows ("greater") along the listed cells, all from one
    sweep: the paper budget when it has them all, else the sweep with the most of them."""

    def test(tables: Tables) -> Result:
        profile, spec, table, jobs = tables.get(experiment)
        candidates = []
        for at in ("paper", "quick"):
            cells = tables.cells_at(experiment, at)
            found = [(r, c, x) for r, c in cells_in_order
                     if (x := cell(cells, r, c)) is not None and x.extra.get(metric)]
            candidates.append(found)
        found = max(candidates, key=len)          # ties: paper first
        res = Result()
        if len(found) < 2:
            res.reason = f"needs {metric} in two cells of one budget"
            return res
        for (r1, c1, x1), (r2, c2, x2) in zip(found, found[1:]):
            diff, lo, hi = welch_interval(x2.extra[metric], x1.extra[metric])
            label = f"{r2} − {r1}" if r1 != r2 else f"{r2}: {c2} − {c1}"
            res.rows.append((label, diff, lo, hi, f"{len(x2.extra[metric])} vs {len(x1.extra[metric])}"))
        res.budget = budget_of(profile, jobs, [x for _, _, x in found])
        res.verdict, res.reason = verdict(res.rows, claimed)
        res.effect, res.lo, res.hi, res.n = res.rows[0][1:]
        return res

    return test


def csv_claim(path: str, compute: callable) -> callable:
    """A claim read from an analysis table the experiment's `post` step wrote (results/tables).
    `path` may be a list: the first that exists is read (the paper-budget table before the quick one)."""
    paths = [path] if isinstance(path, str) else list(path)

    def test(tables: Tables) -> Result:
        res = Result()
        for name in paths:
            file = resolve(tables.results_dir) / "tables" / name
            if file.exists():
                return compute(pd.read_csv(file), res)
        res.reason = f"{paths[-1]} not written yet (run the experiment)"
        return res

    return test


def truncation_cost(frame: pd.DataFrame, res: Result) -> Result:
    """Accuracy at 70% of the neurons minus at 100%, per run and importance convention;
    'costs nothing' = within tolerance."""
    frame = frame.assign(importance=frame.get("importance", "paper"))
    for convention, group in frame.groupby("importance", sort=True):
        full = group[group.keep == 1.0].set_index("run").test_acc
        cut = group[(group.keep - 0.7).abs() < 1e-9].set_index("run").test_acc
        drops = (cut - full.reindex(cut.index)).dropna().to_numpy()
        if len(drops) < 2:
            continue
        diff, lo, hi = welch_interval(drops, np.zeros_like(drops))
        res.rows.append((f"keep 70%, {convention} importance", diff, lo, hi, str(len(drops))))
    if not res.rows:
        res.reason = "fewer than 2 truncated runs"
        return res
    _, res.effect, res.lo, res.hi, res.n = res.rows[0]
    epochs = sorted({int(e) for e in frame.get("epochs", pd.Series(dtype=float)).dropna()})
    res.budget = f"{'/'.join(map(str, epochs))} ep" if epochs else "see awnn_truncation table"
    res.verdict, res.reason = verdict(res.rows, "equal")
    return res


def init_variance(frame: pd.DataFrame, res: Result) -> Result:
    """log10 of last-layer / first-layer activation variance: kaiming+ near 0, kaiming far below."""
    frame = frame.set_index(frame.columns[0])
    ratio = {c: math.log10(frame[c].iloc[-1] / frame[c].iloc[0]) for c in frame.columns}
    res.effect = ratio.get("kaiming_plus", math.nan)
    res.rows = [(c, v, math.nan, math.nan, "1 net") for c, v in ratio.items()]
    res.n = "1 net at init, 4096 inputs"
    res.budget = "at initialisation"
    keeps = abs(ratio["kaiming_plus"]) < 1.0 and ratio["kaiming"] < -3.0
    res.verdict = "reproduced" if keeps else "not reproduced"
    res.reason = (f"log10 Var(last)/Var(first): kaiming+ {ratio['kaiming_plus']:+.2f}, kaiming "
                  f"{ratio['kaiming']:+.2f} (deterministic; no interval)")
    return res


def ratios_to_one(tables: Tables) -> Result:
    """NB toy: per-neuron ||in||/||out|| ratios reach 1 (|log ratio| < 0.05 in the last epoch)."""
    profile, spec, table, jobs = tables.get("nb_toy")
    res = Result()
    worst = []
    for job in jobs:
        if job.history is None:
            continue
        cols = [c for c in job.history.columns if c.startswith("ratio/")]
        if cols:
            worst.append(float(np.abs(np.log(job.history[cols].iloc[-1].to_numpy(float))).max()))
    if not worst:
        res.reason = "no finished toy runs with ratios"
        return res
    res.effect, res.n = max(worst), str(len(worst))
    res.rows = [("max |log ratio|, last epoch", res.effect, math.nan, math.nan, res.n)]
    res.budget = budget_of(profile, jobs, [c for by in table.values() for c in by.values()])
    res.verdict = "reproduced" if res.effect < 0.05 else "not reproduced"
    res.reason = f"largest |log(in/out)| over neurons and runs at the end: {res.effect:.3g} (threshold 0.05)"
    return res


# --------------------------------------------------------------------------- the ledger
CLAIMS = [
    Claim("NB", "L1 neural balance beats plain training on MNIST FCNs (Table 1)",
          "2-FCN 94.54 vs 91.22; 3-FCN 93.94 vs 90.84; 5-FCN 96.26 vs 91.37", "nb_table1",
          from_spec("nb_table1", "greater")),
    Claim("NB", "...and the gain grows with depth", "gain 3.3 (2-FCN), 3.1 (3-FCN), 4.9 (5-FCN)",
          "nb_table1", deeper_gap("nb_table1", "nb_l1/sgd", "plain/sgd", ["fcn2", "fcn3", "fcn5"])),
    Claim("NB", "Full balance at start helps (Fig. 1 table, L1)", "FB L1 93.96 vs 90.05 (2-layer)",
          "nb_fb_start", from_spec("nb_fb_start", "greater")),
    Claim("NB", "Full balance at start helps (plain)", "FB Plain 91.22 vs 90.09 (2-layer)",
          "nb_fb_start", compare_cells("nb_fb_start", [(r, "True/plain", r, "False/plain") for r in ("fcn2", "fcn3", "fcn5")], "greater")),
    Claim("NB", "Neural balance helps with limited data (§3.3: L1 NB +3-10%)", "+3 to +10 points",
          "nb_limited", from_spec("nb_limited", "greater")),
    Claim("NB", "NB at start helps the RNN on IMDB (Table 2)", "88.64 vs 88.26 (plain)", "nb_rnn_imdb",
          from_spec("nb_rnn_imdb", "greater")),
    Claim("NB", "NB at start on the Transformer's FFNs on IMDB (Table 3)", "83.52 vs 83.66 (plain): no change",
          "nb_transformer_imdb", from_spec("nb_transformer_imdb", "equal")),
    Claim("NB", "Balancing leaves DFA-trained nets unaffected (Figs. 12-13)", "nb = clean to 4 decimals",
          "nb_dfa", from_spec("nb_dfa", "equal")),
    Claim("NB", "Per-neuron in/out norm ratios converge to 1 (App. A.2)", "Figs. 3-4", "nb_toy", ratios_to_one),
    Claim("AWNN", "AWNN matches the fixed network's accuracy on every row (Table 1)",
          "equal within noise on all 9 rows", "awnn_table1", compare_cells("awnn_table1", [
              (r, "awnn", r, "plain") for r in ("double_moon", "spiral", "spiral_hard", "mnist", "cifar10",
                                                "cifar100", "nci1", "reddit_binary")], "equal")),
    Claim("AWNN", "Learned width grows with task difficulty (Fig. 3)", "DoubleMoon < Spiral < SpiralHard",
          "awnn_difficulty", extra_trend("awnn_difficulty", "width/total", [
              ("double_moon", "awnn/1"), ("spiral", "awnn/1"), ("spiral_hard", "awnn/1")], "greater")),
    Claim("AWNN", "Truncating 30% of a trained layer costs nothing (Fig. 6)", "Spiral: no loss at -30%",
          "awnn_truncation", csv_claim(["awnn_truncation.paper_curve.csv", "awnn_truncation_curve.csv"], truncation_cost)),
    Claim("AWNN", "Online compression shrinks the width (Fig. 5)", "SpiralHard ~800 -> ~300 neurons",
          "awnn_compression", lambda t: _compression(t)),
    Claim("AWNN", "kaiming+ keeps activation variance across depth (Figs. 2, 7)", "flat vs vanishing",
          "awnn_init", csv_claim("awnn_init_variance.csv", init_variance)),
    Claim("AWNN", "Width is stable across batch sizes and starting rates (Figs. 4, 10)",
          "similar final widths per activation", "awnn_stability", lambda t: _stability(t)),
    Claim("AWNN", "Fixed+ (fixed net at the AWNN width) matches AWNN (App. D)",
          "Spiral 100.0 vs 99.8; SpiralHard 83.2 vs 100.0", "awnn_fixed_plus", lambda t: _fixed_plus(t)),
    Claim("ours", "A tuned baseline (SGD+momentum, lr on validation) vs L1 NB at the paper's untuned lr",
          "not in the paper", "nb_table1",
          compare_cells("nb_table1", [(r, "plain/momentum", r, "nb_l1/sgd") for r in ("fcn2", "fcn3", "fcn5")], "greater")),
    Claim("ours", "A tuned baseline (Adam, lr on validation) vs L1 NB at the paper's untuned lr",
          "not in the paper", "nb_table1",
          compare_cells("nb_table1", [(r, "plain/adam", r, "nb_l1/sgd") for r in ("fcn2", "fcn3", "fcn5")], "greater")),
    Claim("NB", "An L1 penalty of 1e-5 alone beats plain training (Table 1, 'L1 1e-5')",
          "2-FCN 93.96 vs 91.22; 3-FCN 93.47 vs 90.84; 5-FCN 95.48 vs 91.37", "nb_table1",
          compare_cells("nb_table1", [(r, "l1/sgd", r, "plain/sgd") for r in ("fcn2", "fcn3", "fcn5")], "greater")),
]


LEARNED_FLOOR = 90.0   # test accuracy (%) below which a SpiralHard net has not learned the task (paper: 100)


def _compression(tables: Tables) -> Result:
    """Compression shrinks the width *without test degradation*: a width change in nets that never
    learned the task is no evidence either way, so only rows (depths) whose nets learned count."""
    _, _, table, _ = tables.get("awnn_compression")
    accuracy = {"/".join(r): acc for r, by_col in table.items()
                if (acc := {c: float(np.mean(x.values)) for (c,), x in by_col.items() if x.n})}
    learned = [r for r, acc in accuracy.items()
               if {"awnn", "awnn_compress"} <= acc.keys() and min(acc.values()) >= LEARNED_FLOOR]
    pairs = [(r, "awnn", r, "awnn_compress") for r in learned or accuracy]   # none learned: shown, not judged
    res = compare_cells("awnn_compression", pairs, "greater", metric="width/total")(tables)
    if not learned and accuracy:
        res.verdict = "inconclusive"
        res.reason = (f"the nets did not learn the task (test accuracy "
                      + "; ".join(f"{r}: " + ", ".join(f"{c} {a:.1f}%" for c, a in sorted(acc.items()))
                                  for r, acc in accuracy.items())
                      + f", below {LEARNED_FLOOR:.0f}%): a width change there is no evidence on "
                        f"compression without degradation")
    elif len(learned) < len(accuracy):
        res.reason += f"; rows below {LEARNED_FLOOR:.0f}% test accuracy left out: " + ", ".join(
            r for r in accuracy if r not in learned)
    return res


def _stability(tables: Tables) -> Result:
    """Spread of the learned width across the batch-size × starting-rate grid, per activation:
    the coefficient of variation of the cell means (stable: below 0.25)."""
    profile, spec, table, jobs = tables.get("awnn_stability")
    res = Result()
    for r, by_col in table.items():
        means = [np.mean(c.extra["width/total"]) for c in by_col.values() if c.extra.get("width/total")]
        if len(means) >= 2:
            cv = float(np.std(means, ddof=1) / np.mean(means))
            res.rows.append(("/".join(r), cv, math.nan, math.nan, f"{len(means)} settings"))
    if not res.rows:
        res.reason = "no finished stability runs"
        return res
    res.effect, res.n = max(r[1] for r in res.rows), res.rows[0][4]
    res.budget = budget_of(profile, jobs, [c for by in table.values() for c in by.values()])
    stable = [r[0] for r in res.rows if r[1] < 0.25]
    res.verdict = ("reproduced" if len(stable) == len(res.rows) else "partly" if stable else "not reproduced")
    res.reason = ("coefficient of variation of the width across settings: "
                  + ", ".join(f"{r[0]} {r[1]:.2f}" for r in res.rows) + " (stable: < 0.25)")
    return res


def _fixed_plus(tables: Tables) -> Result:
    """Fixed+ accuracy (awnn_fixed_plus) against AWNN (awnn_table1) of the same profile, per data set."""
    profile, _, plus, _ = tables.get("awnn_fixed_plus")
    res, used = Result(), []
    for (row,), by_col in plus.items():
        for c in by_col.values():
            a = cell(tables.cells_at("awnn_table1", getattr(c, "profile", None)), row, "awnn")
            if a is None or not c.n or not a.n:
                continue
            diff, lo, hi = difference(c, a)
            res.rows.append((row, diff, lo, hi, f"{c.n} vs {a.n}"))
            used += [c, a]
    if not res.rows:
        res.reason = "no finished Fixed+ runs with AWNN runs of the same profile"
        return res
    res.budget = budget_of(profile, [], used)
    res.verdict, res.reason = verdict(res.rows, "equal")
    res.effect, res.lo, res.hi, res.n = res.rows[0][1:]
    return res


# --------------------------------------------------------------------------- output
def fmt(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.2f}"


def build(results_dir: str = PUBLISHED, out_dir: str | None = None) -> Path:
    """The ledger from the records under `results_dir`; written to `out_dir` (results/ for the
    published records, the records' own folder otherwise)."""
    tables = Tables(results_dir)
    out_rows, lines = [], [
        "# Claims ledger", "",
        "Every headline claim of the two papers, tested on our run records (`make claims`). Effect = "
        "ours: claimed − baseline (accuracy points unless said), with its 95% interval (Welch t; "
        "bootstrap near 100%) and n (replicates per side); the verdict rule is in "
        "`experiments/claims.py`. Budget: the sweep the numbers come from (paper when it has "
        "finished runs, else quick).", "",
        "| # | paper | claim | paper's numbers | experiment (budget) | our effect [95% CI] (n) | verdict | reason |",
        "|---|---|---|---|---|---|---|---|"]
    for i, claim in enumerate(CLAIMS, 1):
        try:
            res = claim.test(tables)
        except Exception as err:  # a broken claim must show, not vanish
            res = Result(reason=f"error: {type(err).__name__}: {err}")
        if res.budget.startswith("quick") and res.verdict != "not testable here":
            res.reason += "; quick budget only: an early-training effect, not the paper's converged claim"
        per_row = "; ".join(f"{lab} {fmt(d)} [{fmt(lo)}, {fmt(hi)}] ({n})" for lab, d, lo, hi, n in res.rows)
        lines.append(f"| {i} | {claim.paper} | {claim.claim} | {claim.paper_numbers} | "
                     f"`{claim.experiment}` ({res.budget or 'no runs'}) | {per_row or '—'} | "
                     f"**{res.verdict}** | {res.reason} |")
        out_rows.append({"id": i, "paper": claim.paper, "claim": claim.claim, "paper_numbers": claim.paper_numbers,
                         "experiment": claim.experiment, "budget": res.budget, "effect": res.effect,
                         "ci_low": res.lo, "ci_high": res.hi, "n": res.n, "per_row": per_row,
                         "verdict": res.verdict, "reason": res.reason})
    lines += ["", "_Regenerate: `make claims` (python -m experiments.claims; the records are in "
              f"`{PUBLISHED}/runs/`)._", ""]
    out = resolve(out_dir or ("results" if results_dir == PUBLISHED else results_dir))
    records.atomic_write_text(out / "claims.md", "\n".join(lines))
    records.atomic_write_text(out / "claims.csv", pd.DataFrame(out_rows).to_csv(index=False))
    print(f"[claims] {out / 'claims.md'}: " + ", ".join(
        f"{v} {sum(r['verdict'] == v for r in out_rows)}" for v in
        ("reproduced", "partly", "not reproduced", "inconclusive", "not testable here")))
    return out / "claims.md"


def main(argv: list[str]) -> None:
    """`python -m experiments.claims [--local | run.results_dir=DIR]`: the published records by
    default; `--local` reads your own runs (results/local) and writes the ledger there."""
    default = LOCAL if "--local" in argv else PUBLISHED
    results_dir = next((a.split("=", 1)[1] for a in argv if a.startswith("run.results_dir=")), default)
    build(results_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
