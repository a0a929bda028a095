"""Markdown and CSV of a table: every cell states its n, its missing/failed/running runs, its
selected configuration, the paper's number, and mixed code versions; the table lists every
environment it aggregates."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from experiments.provenance import describe
from experiments.tables.cells import STATUS_NOTES, Cell, paper_text, row_metric
from experiments.tables.claims import _label, claim_lines

REPORTS = {"final": "final-epoch", "best_val": "at the best-validation epoch (last of ties)"}


def ordered(values, order):
    rank = {str(v): i for i, v in enumerate(order or [])}
    return sorted(values, key=lambda v: (rank.get("/".join(v), len(rank)), v))


def layout(spec, table) -> tuple[list, list]:
    rows = ordered(list(table), spec.get("row_order"))
    cols = ordered(sorted({c for by_col in table.values() for c in by_col}), spec.get("col_order"))
    return rows, cols


def status_note(cell: Cell) -> str:
    bad = [f"{cell.statuses[s]} {s}" for s in STATUS_NOTES if cell.statuses.get(s)]
    return ("; " + ", ".join(bad)) if bad else ""


def paper_value(spec, r, c):
    """The paper's number of a cell as printed (structured entries: experiments.tables.cells.paper_text;
    a row's "*" entry stands for every column)."""
    row = (spec.get("paper") or {}).get("/".join(r)) or {}
    entry = row.get("/".join(c), row.get("*"))
    return entry if entry is None or isinstance(entry, (int, float)) else paper_text(entry)


def mean_std_text(values: list[float], digits: int = 2) -> str:
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {float(np.std(values, ddof=1)):.{digits}f}"


def cell_epochs(cell: Cell) -> str:
    """The training budget of the cell's runs (each cell states it: budgets differ by row)."""
    epochs = sorted({int(j.config["train.epochs"]) for j in cell.jobs if j.config.get("train.epochs")})
    return "/".join(str(e) for e in epochs)


def cut_note(spec, r, cell: Cell) -> str:
    """" of the paper's 5000" where the cell ran fewer epochs than the paper (`paper_budget`)."""
    budget = spec.get("paper_budget") or {}
    paper = (budget.get("rows") or {}).get("/".join(r), budget.get("epochs"))
    ran = [int(j.config["train.epochs"]) for j in cell.jobs if j.config.get("train.epochs")]
    return f" of the paper's {paper}" if paper and ran and max(ran) < int(paper) else ""


def cell_text(spec, cell: Cell, r, c, direction: str) -> str:
    if not cell.n:
        text = f"no result [{cell.n}/{cell.expected}{status_note(cell)}]"
    else:
        text = f"{mean_std_text(cell.values)} [{cell.n}/{cell.expected}{status_note(cell)}]"
        text += f"<br>best-ep {cell.best_epoch(direction):.2f}"
    for extra, vals in cell.extra.items():
        text += f"<br>{extra} {mean_std_text(vals, 1)}"
        if cell.final_extra.get(extra) != vals:
            text += f" (final {mean_std_text(cell.final_extra[extra], 1)})"
    if cell_epochs(cell):
        text += f"<br><sub>{cell_epochs(cell)} epochs{cut_note(spec, r, cell)}</sub>"
    paper = paper_value(spec, r, c)
    if paper is not None:
        text += f"<br>paper {paper}"
    if cell.config and cell.config.startswith(("selected", "no ")):
        text += f"<br><sub>{cell.config}</sub>"
    if len(cell.code_versions) > 1:
        text += f"<br>⚠ runs from {len(cell.code_versions)} code versions"
    for note in sorted(cell.notes):
        text += f"<br><sub>{note}</sub>"
    return text


def render(spec, table, profile: str, jobs, command: str) -> tuple[str, pd.DataFrame]:
    metric = spec["metric"]
    row_keys, col_keys = layout(spec, table)
    lines = [f"# {spec['title']}", "",
             f"Profile `{profile}`. Each cell: **{REPORTS[spec.get('report', 'final')]}** {metric} "
             f"mean ± std over replicates [n finished / expected]; `best-ep`: max over epochs of "
             f"the replicate-mean curve (the paper's convention, SPEC A.2.6); `paper`: the "
             f"paper's number.", ""]
    lines += ["| " + " | ".join(["", *[_label(spec, "col", c) for c in col_keys]]) + " |",
              "|" + "---|" * (len(col_keys) + 1)]
    frame = []
    for r in row_keys:
        r_metric = row_metric(spec, r)
        direction = "min" if r_metric.endswith("loss") else "max"
        cells = []
        for c in col_keys:
            cell = table[r].get(c)
            if cell is None:
                cells.append("—")
                continue
            cells.append(cell_text(spec, cell, r, c, direction))
            mean, std = cell.mean_std()
            frame.append({"row": _label(spec, "row", r), "col": _label(spec, "col", c),
                          "metric": r_metric, "mean_final": mean, "std_final": std, "n": cell.n,
                          "expected": cell.expected, "epochs": cell_epochs(cell),
                          "best_epoch_mean_curve": cell.best_epoch(direction),
                          "paper": paper_value(spec, r, c),
                          **{f"n_{s}": k for s, k in cell.statuses.items()},
                          **{f"{e}_mean": float(np.mean(v)) for e, v in cell.extra.items()},
                          **{f"{e}_final_mean": float(np.mean(v)) for e, v in cell.final_extra.items()},
                          "config": cell.config,
                          "code_versions": " ".join(sorted(cell.code_versions))})
        lines.append("| " + " | ".join([_label(spec, "row", r), *cells]) + " |")
    if spec.get("claim"):
        lines += ["", *claim_lines(spec, table, row_keys, col_keys, spec["claim"])]
    if spec.get("notes"):
        lines += ["", str(spec["notes"]).strip()]
    lines += ["", *environment_lines(jobs), "", f"_Regenerate: `{command}` (add `data.root=...`; the records are in `runs/` beside this `tables/` folder)._", ""]
    return "\n".join(lines), pd.DataFrame(frame)


def environment_lines(jobs) -> list[str]:
    """Each distinct environment (hardware, torch, code version) the finished runs come from."""
    counts = Counter(describe(j.environment) for j in jobs if j.status == "finished" and j.environment)
    if not counts:
        return ["_Environments: no finished runs._"]
    if len(counts) == 1:
        (env, n), = counts.items()
        return [f"_Environment ({n} runs): {env}._"]
    return ["_Environments:_", *[f"- {env}: {n} runs" for env, n in counts.most_common()]]
