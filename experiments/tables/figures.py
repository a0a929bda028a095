"""Curves of a table: metric vs epoch per row, one line per column (the selected configuration),
mean over its runs with a ±1 std band."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from experiments.tables.claims import _label
from experiments.tables.render import layout


def informative_ylim(curves: list, skip: float = 0.1, pad: float = 0.08) -> tuple[float, float] | None:
    """The y-range where the curves differ: the first `skip` of epochs (the climb from chance)
    left out, so e.g. NB Table 1's 500-epoch accuracy curves show 90-99 instead of 20-100.
    None (matplotlib's own range) when the early epochs hold little of the range anyway."""
    tails = [c[int(len(c) * skip):] for c in curves if len(c) >= 10]
    if not tails:
        return None
    values = np.concatenate(tails)
    values = values[np.isfinite(values)]
    everything = np.concatenate([c[np.isfinite(c)] for c in curves])
    if not len(values) or not len(everything):
        return None
    low, high = float(values.min()), float(values.max())
    full = float(everything.max() - everything.min())
    if full <= 0 or (high - low) > 0.6 * full:
        return None
    margin = max(high - low, 1e-9 * max(abs(high), 1.0)) * pad
    return low - margin, high + margin


def plot_curves(spec, table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = spec.get("plots") or [{"y": spec["metric"]}]
    row_keys, col_keys = layout(spec, table)
    fig, axes = plt.subplots(len(plots), len(row_keys), figsize=(4.5 * len(row_keys), 3.4 * len(plots)),
                             squeeze=False)
    for p, plot in enumerate(plots):
        for i, r in enumerate(row_keys):
            ax = axes[p][i]
            shown = []
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
                    shown.append(mean)
                    if len(curves) > 1:
                        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
            ax.set_title(_label(spec, "row", r), fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(plot["y"])
            if plot.get("log"):
                ax.set_yscale("log")
            else:
                limits = informative_ylim(shown)
                if limits:
                    ax.set_ylim(*limits)
            handles = ax.get_legend_handles_labels()[0]
            if handles and len(handles) <= 12:
                ax.legend(fontsize=7)
    fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
