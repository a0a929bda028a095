"""Paper-shaped tables and figures, built from run directories only.

    python -m experiments.tables <experiment> [overrides...]     e.g. nb_table1 profile=quick

The experiment's sweep is expanded exactly as the grid sweeper expands it, so every run the table
expects is known: a missing, failed or diverged seed is shown in its cell, never dropped.

Table spec (the `table:` node of an experiment file):
    title, metric (e.g. test_acc), rows / cols (lists of group names or dotted config keys),
    row_labels / col_labels, row_order / col_order, paper: {row: {col: number}},
    select_by (validation metric used to pick one configuration per cell when a cell holds
    several, e.g. an lr grid; default val_<metric>), report: final | best_val,
    extra: [metric, ...] (e.g. width/total, shown as mean ± std), claim: {col, baseline},
    plots: [{y: test_acc}, {y: "ratio/*", seeds: 1}]
"""
from __future__ import annotations

import fnmatch
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

import experiments  # noqa: F401  (resolvers)
from data.paths import PROJECT_ROOT, resolve
from experiments import records
from experiments.schema import validate

CONF_DIR = str(PROJECT_ROOT / "conf")


# --------------------------------------------------------------------------- expected runs
@dataclass
class Job:
    overrides: list[str]
    cfg: DictConfig
    choices: dict
    directory: Path
    summary: dict | None = None
    history: pd.DataFrame | None = None

    def value(self, key: str):
        if key in self.choices:
            return self.choices[key]
        return OmegaConf.select(self.cfg, key)

    @property
    def status(self) -> str:
        return self.summary["status"] if self.summary else "missing"


def _compose(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def _is_group(key: str) -> bool:
    return (Path(CONF_DIR) / key.lstrip("+~")).is_dir()


def overrides_groups(overrides: list[str]) -> list[str]:
    return [o for o in overrides if _is_group(o.split("=", 1)[0])]


def expected_jobs(experiment: str, overrides: list[str]) -> tuple[DictConfig, list[Job]]:
    """Compose the experiment, expand its grids, and locate every expected run directory."""
    from hydra_plugins.grid_sweeper.grid_sweeper import expand, select

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base = _compose([f"experiment={experiment}", *overrides], hydra_config=True)
        sweeper = base.hydra.sweeper
        grids = OmegaConf.to_container(sweeper.grids, resolve=True) if "grids" in sweeper else []
        only = sweeper.get("only")
        grids = select(grids, list(only) if only is not None else None)
        seeds = sweeper.get("seeds", 1)
        task_overrides = [o for o in overrides if not o.startswith("hydra.")]
        jobs = []
        by_groups: dict[tuple, tuple[DictConfig, dict]] = {}
        by_config: dict[tuple, DictConfig] = {}
        parser = OverridesParser.create()
        for job_overrides in expand(grids, seeds, task_overrides):
            # Composing is slow: compose once per combination of config-group choices, apply
            # the value overrides with OmegaConf, validate once per configuration (seeds aside).
            groups = tuple(o for o in job_overrides if _is_group(o.split("=", 1)[0]))
            values = [o for o in job_overrides if o not in groups and not o.startswith("seed=")]
            if groups not in by_groups:
                composed = _compose([f"experiment={experiment}", *groups, *overrides_groups(overrides)],
                                    hydra_config=True)
                choices = {k: v for k, v in composed.hydra.runtime.choices.items()
                           if not k.startswith("hydra/") and v is not None}
                with open_dict(composed):
                    del composed["hydra"]
                by_groups[groups] = (composed, choices)
            composed, choices = by_groups[groups]
            config_key = (groups, tuple(values))
            if config_key not in by_config:
                cfg = composed.copy()
                for override in parser.parse_overrides(values):
                    OmegaConf.update(cfg, override.get_key_element().lstrip("+~"), override.value(), merge=True)
                by_config[config_key] = validate(cfg)
            cfg = by_config[config_key].copy()
            cfg.seed = next((int(o.split("=", 1)[1]) for o in job_overrides if o.startswith("seed=")), cfg.seed)
            jobs.append(Job(job_overrides, cfg, choices, records.run_dir(cfg)))
    GlobalHydra.instance().clear()
    return base, jobs


def load_results(jobs: list[Job]) -> None:
    for job in jobs:
        job.summary = records.read_summary(job.directory)
        csv = job.directory / "metrics.csv"
        if job.summary and csv.exists():
            job.history = pd.read_csv(csv)


# --------------------------------------------------------------------------- cells
@dataclass
class Cell:
    config: str = ""                      # the selected configuration (when a cell holds several)
    values: list[float] = field(default_factory=list)
    curves: list[np.ndarray] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    expected: int = 0
    statuses: dict = field(default_factory=lambda: defaultdict(int))
    selection_score: float | None = None
    jobs: list = field(default_factory=list)       # the runs behind the cell (selected config)

    @property
    def n(self) -> int:
        return len(self.values)

    def mean_std(self) -> tuple[float, float]:
        if not self.values:
            return math.nan, math.nan
        v = np.asarray(self.values, dtype=float)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    def best_epoch(self, direction: str) -> float:
        """SPEC A.2.6: the paper's cell = max over epochs of the seed-mean test curve."""
        if not self.curves:
            return math.nan
        length = min(len(c) for c in self.curves)
        mean_curve = np.mean([c[:length] for c in self.curves], axis=0)
        return float(np.nanmax(mean_curve) if direction == "max" else np.nanmin(mean_curve))


def _label(spec, which: str, value) -> str:
    """Display name of a row/column key tuple: `<which>_labels["a/b"]`, else "a/b"."""
    key = "/".join(value) if isinstance(value, tuple) else str(value)
    labels = spec.get(f"{which}_labels") or {}
    return str(labels.get(key, key))


def _key(job: Job, keys) -> tuple:
    return tuple(_fmt(job.value(k)) for k in keys)


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        return "x".join(str(v) for v in value)
    return str(value)


def row_metric(spec, r: tuple) -> str:
    """The metric of a row: `row_metric` may override `metric` per row (e.g. a loss row)."""
    return (spec.get("row_metric") or {}).get("/".join(r), spec.metric)


def build_cells(spec, jobs: list[Job]) -> dict[tuple, dict[tuple, Cell]]:
    rows, cols = list(spec.rows), list(spec.cols)
    report = spec.get("report", "final")
    replicates = set(spec.get("replicates") or ["seed"])

    cells_jobs: dict[tuple, dict[tuple, list[Job]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        cells_jobs[_key(job, rows)][_key(job, cols)].append(job)

    table: dict[tuple, dict[tuple, Cell]] = defaultdict(dict)
    for r, by_col in cells_jobs.items():
        metric = row_metric(spec, r)
        select_by = spec.get("select_by") or f"val_{metric.split('_', 1)[1]}"
        for c, cell_jobs in by_col.items():
            # The configurations a cell chooses among: keys that vary inside it (seeds aside).
            varying = _varying_keys(cell_jobs, exclude=set(rows) | set(cols) | replicates)
            by_config: dict[tuple, list[Job]] = defaultdict(list)
            for job in cell_jobs:
                by_config[_key(job, varying)].append(job)
            candidates = [_cell(spec, jobs_, metric, select_by, report) for jobs_ in by_config.values()]
            for cand, conf in zip(candidates, by_config.keys()):
                cand.config = ", ".join(f"{k}={v}" for k, v in zip(varying, conf))
            if len(candidates) == 1:
                table[r][c] = candidates[0]
                continue
            sign = 1 if select_by.endswith("acc") else -1
            scored = [cd for cd in candidates if cd.selection_score is not None]
            best = max(scored, key=lambda cd: sign * cd.selection_score) if scored else candidates[0]
            best.config = f"selected on {select_by}: {best.config}" if scored else f"no {select_by} to select on"
            table[r][c] = best
    return table


def _varying_keys(jobs: list[Job], exclude: set) -> list[str]:
    """Overridden keys (other than rows/cols/seed) taking several values: the selection grid."""
    values: dict[str, set] = defaultdict(set)
    for job in jobs:
        for o in job.overrides:
            key, _, val = o.partition("=")
            key = key.lstrip("+~")
            if key not in exclude:
                values[key].add(val)
    return sorted(k for k, v in values.items() if len(v) > 1)


def _cell(spec, jobs: list[Job], metric: str, select_by: str, report: str) -> Cell:
    cell = Cell(expected=len(jobs), jobs=jobs)
    scores = []
    for job in jobs:
        cell.statuses[job.status] += 1
        if job.status not in ("finished",) or job.history is None:
            continue
        h = job.history
        row = h.iloc[-1]
        if report == "best_val" and select_by in h:
            row = h.loc[h[select_by].idxmax() if select_by.endswith("acc") else h[select_by].idxmin()]
        if metric in row:
            cell.values.append(float(row[metric]))
        if metric in h:
            cell.curves.append(h[metric].to_numpy(dtype=float))
        if select_by in h:
            scores.append(float(h[select_by].max() if select_by.endswith("acc") else h[select_by].min()))
        for extra in spec.get("extra") or []:
            if extra in row:
                cell.extra.setdefault(extra, []).append(float(row[extra]))
    if scores:
        cell.selection_score = float(np.mean(scores))
    return cell


# --------------------------------------------------------------------------- rendering
def _ordered(values, order):
    rank = {str(v): i for i, v in enumerate(order or [])}
    return sorted(values, key=lambda v: (rank.get("/".join(v), len(rank)), v))


def _status_note(cell: Cell) -> str:
    bad = [f"{cell.statuses[s]} {s}" for s in ("diverged", "failed", "missing", "running") if cell.statuses.get(s)]
    return ("; " + ", ".join(bad)) if bad else ""


def _paper(spec, r, c):
    row = (spec.get("paper") or {}).get("/".join(r)) or {}
    return row.get("/".join(c))


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean difference a - b with a Welch t confidence interval."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a.mean() - b.mean()
    if len(a) < 2 or len(b) < 2:
        return float(diff), math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return float(diff), float(diff), float(diff)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return float(diff), float(diff - half), float(diff + half)


_REPORTS = {"final": "final-epoch", "best_val": "at the best-validation epoch"}


def claim_lines(spec, table, row_keys, col_keys, claim) -> list[str]:
    """The paper's claim as a number: mean difference (claimed − baseline) with a 95% Welch
    interval over seeds, for each row (`claim: {col, baseline}`) or each column
    (`claim: {row, baseline_row}`)."""
    if claim.get("row") is not None:
        pairs = [(_label(spec, "col", c), table.get((str(claim.row),), {}).get(c),
                  table.get((str(claim.baseline_row),), {}).get(c)) for c in col_keys]
        what = f"{_label(spec, 'row', (str(claim.row),))} − {_label(spec, 'row', (str(claim.baseline_row),))}"
    else:
        pairs = [(_label(spec, "row", r), table[r].get((str(claim.col),)) or table[r].get(tuple(str(claim.col).split("/"))),
                  table[r].get((str(claim.baseline),)) or table[r].get(tuple(str(claim.baseline).split("/"))))
                 for r in row_keys]
        what = f"{_label(spec, 'col', tuple(str(claim.col).split('/')))} − " \
               f"{_label(spec, 'col', tuple(str(claim.baseline).split('/')))}"
    out = [f"**Claim check** ({what}; mean difference of the reported metric with a 95% Welch "
           "interval over seeds):", ""]
    for label, a, b in pairs:
        if a is None or b is None or not a.n or not b.n:
            out.append(f"- {label}: not enough finished runs")
            continue
        diff, lo, hi = welch_interval(a.values, b.values)
        out.append(f"- {label}: {diff:+.2f} [{lo:+.2f}, {hi:+.2f}] (n={a.n} vs {b.n})")
    return out


def render(spec, table, profile: str, environment: str) -> tuple[str, pd.DataFrame]:
    metric = spec.metric
    row_keys = _ordered(list(table), spec.get("row_order"))
    col_keys = _ordered(sorted({c for by_col in table.values() for c in by_col}), spec.get("col_order"))
    lines = [f"# {spec.title}", "",
             f"Profile `{profile}`. Each cell: **{_REPORTS[spec.get('report', 'final')]}** {metric} "
             f"mean ± std over seeds "
             f"[n finished / expected]; `best-ep`: max over epochs of the seed-mean curve (the "
             f"paper's convention, SPEC A.2.6); `paper`: the paper's number.", ""]
    header = "| " + " | ".join(["", *[_label(spec, "col", c) for c in col_keys]]) + " |"
    lines += [header, "|" + "---|" * (len(col_keys) + 1)]
    records_ = []
    for r in row_keys:
        r_metric = row_metric(spec, r)
        direction = "min" if r_metric.endswith("loss") else "max"
        cells = []
        for c in col_keys:
            cell = table[r].get(c)
            if cell is None:
                cells.append("—")
                continue
            mean, std = cell.mean_std()
            best = cell.best_epoch(direction)
            paper = _paper(spec, r, c)
            text = (f"{mean:.2f} ± {std:.2f} [{cell.n}/{cell.expected}{_status_note(cell)}]"
                    if cell.n else f"no result [{cell.n}/{cell.expected}{_status_note(cell)}]")
            if cell.n:
                text += f"<br>best-ep {best:.2f}"
            for extra, vals in cell.extra.items():
                text += f"<br>{extra} {np.mean(vals):.1f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.1f}"
            if paper is not None:
                text += f"<br>paper {paper}"
            if cell.config and cell.config.startswith(("selected", "no ")):
                text += f"<br><sub>{cell.config}</sub>"
            cells.append(text)
            records_.append({"row": _label(spec, "row", r), "col": _label(spec, "col", c),
                             "metric": r_metric, "mean_final": mean, "std_final": std, "n": cell.n,
                             "expected": cell.expected, "best_epoch_mean_curve": best, "paper": paper,
                             **{f"n_{s}": k for s, k in cell.statuses.items()},
                             **{f"{e}_mean": float(np.mean(v)) for e, v in cell.extra.items()},
                             "config": cell.config})
        lines.append("| " + " | ".join([_label(spec, "row", r), *cells]) + " |")
    claim = spec.get("claim")
    if claim:
        lines += ["", *claim_lines(spec, table, row_keys, col_keys, claim)]
    if spec.get("notes"):
        lines += ["", str(spec.notes).strip()]
    lines += ["", f"_Hardware: {environment}. Regenerate: `python -m experiments.run -m "
                  f"experiment={spec.get('experiment', '?')} profile={profile}`._", ""]
    return "\n".join(lines), pd.DataFrame(records_)


# --------------------------------------------------------------------------- figures
def plot_curves(spec, table, path: Path) -> None:
    """Metric vs epoch per row (one panel each), one line per column: mean over the runs of the
    cell's (selected) configuration with a ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = spec.get("plots") or [{"y": spec.metric}]
    row_keys = _ordered(list(table), spec.get("row_order"))
    col_keys = _ordered(sorted({c for by_col in table.values() for c in by_col}), spec.get("col_order"))
    fig, axes = plt.subplots(len(plots), len(row_keys), figsize=(4.5 * len(row_keys), 3.4 * len(plots)),
                             squeeze=False)
    for p, plot in enumerate(plots):
        for i, r in enumerate(row_keys):
            ax = axes[p][i]
            for c in col_keys:
                cell = table[r].get(c)
                group = [j for j in (cell.jobs if cell else []) if j.history is not None]
                group = group[: plot.get("seeds") or None]
                columns = sorted({col for j in group for col in j.history.columns
                                  if fnmatch.fnmatch(col, plot["y"])})
                for column in columns:
                    curves = [j.history[column].to_numpy(float) for j in group if column in j.history]
                    length = min(len(cv) for cv in curves)
                    stack = np.stack([cv[:length] for cv in curves])
                    x = np.arange(1, length + 1)
                    mean, std = stack.mean(0), stack.std(0)
                    label = _label(spec, "col", c) + ("" if column == plot["y"] else f" {column}")
                    ax.plot(x, mean, label=label, lw=1.2)
                    if len(curves) > 1:
                        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
            ax.set_title(_label(spec, "row", r), fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(plot["y"])
            if plot.get("log"):
                ax.set_yscale("log")
            if ax.get_legend_handles_labels()[0] and len(ax.get_legend_handles_labels()[0]) <= 12:
                ax.legend(fontsize=7)
    fig.suptitle(spec.title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry points
def build(experiment: str, overrides: list[str] | None = None) -> Path | None:
    overrides = [o for o in (overrides or []) if not o.startswith("experiment=")]
    base, jobs = expected_jobs(experiment, overrides)
    spec = base.get("table")
    if spec is None:
        print(f"[tables] experiment {experiment} has no table spec")
        return None
    spec = OmegaConf.create({**OmegaConf.to_container(spec, resolve=True), "experiment": experiment})
    load_results(jobs)
    environment = _environment(jobs)
    table = build_cells(spec, jobs)
    markdown, frame = render(spec, table, base.profile.name, environment)
    out = resolve(base.run.results_dir)
    md_path = out / "tables" / f"{experiment}.md"
    records.atomic_write_text(md_path, markdown)
    records.atomic_write_text(out / "tables" / f"{experiment}.csv", frame.to_csv(index=False))
    if any(j.history is not None for j in jobs):
        plot_curves(spec, table, out / "figures" / f"{experiment}.png")
    if spec.get("post"):
        import importlib

        module, _, func = spec.post.rpartition(".")
        getattr(importlib.import_module(module), func)(spec, jobs, out)
    done = sum(j.status == "finished" for j in jobs)
    print(f"[tables] {md_path} ({done}/{len(jobs)} runs finished)")
    return md_path


def _environment(jobs: list[Job]) -> str:
    for job in jobs:
        path = job.directory / "environment.json"
        if job.summary and path.exists():
            env = records.read_json(path)
            where = env.get("gpu") or f"{env.get('processor')} CPU x{env.get('torch_threads')} threads"
            return f"{where}, torch {env.get('torch')}, git {str(env.get('git'))[:12]}"
    return "no finished runs"


class BuildTablesCallback(Callback):
    """After a multirun, rebuild the experiment's table (Hydra callback, conf/config.yaml)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.get("table") is None or config.experiment == "adhoc":
            return
        overrides = [o for o in config.hydra.overrides.task if not o.startswith("experiment=")]
        overrides += [o for o in config.hydra.overrides.hydra if o.startswith("hydra.sweeper.")]
        try:
            build(config.experiment, overrides)
        except Exception as err:  # a table problem must not hide the sweep's own results
            print(f"[tables] could not build {config.experiment}: {type(err).__name__}: {err}")


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        raise SystemExit(2)
    build(argv[0], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
