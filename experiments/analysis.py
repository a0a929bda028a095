"""Figures and numbers that need more than metric curves: they read finished runs (or fresh models).

Each `*_figure(spec, jobs, out, stem)` is named by an experiment's `table.post` and is called by the
table builder after the table; `learned_widths` is the `${learned_widths:...}` config resolver.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from data import load_data
from data.paths import resolve
from experiments import records
from experiments.train import evaluate
from models import build_model


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def restore(job, device: str = "cpu"):
    """The trained model of a finished run, and its data (rebuilt from the run's own config)."""
    cfg = OmegaConf.load(job.directory / "config.yaml")
    data = load_data(cfg.dataset, cfg.data, torch.device(device))
    model = build_model(cfg.model, data.info)
    state = records.load_checkpoint(job.directory)
    model.load_state_dict(state["model"])
    return model.eval(), data


# --------------------------------------------------------------------------- AWNN Fig. 6
TRUNCATION_KEEP = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def run_truncation_curve(job) -> pd.DataFrame | None:
    """Test accuracy of one finished run truncated to each fraction of its neurons, kept in the
    run's record as `truncation.csv` (computed once from the checkpoint, which is not committed,
    so the curve regenerates on any clone from the record alone). None: no curve can be had."""
    from models.awnn import adaptive_modules, truncate

    path = job.directory / "truncation.csv"
    fresh = path.exists() and (not records.has_checkpoint(job.directory)
                               or path.stat().st_mtime >= (job.directory / "checkpoint.pt").stat().st_mtime)
    if fresh:
        return pd.read_csv(path)
    if not records.has_checkpoint(job.directory):
        return None
    model, data = restore(job)
    if not adaptive_modules(model):
        return None
    widths = [w for m in adaptive_modules(model) for w in m.widths]
    profile = adaptive_modules(model)[0].importances()[0].detach().cpu().numpy()
    rows = [{"keep": keep, "width": sum(max(1, round(keep * w)) for w in widths),
             "test_acc": evaluate(truncate(model, keep), data.test, data.task, 4096)["acc"]}
            for keep in TRUNCATION_KEEP]
    frame = pd.DataFrame(rows)
    frame["importance_profile"] = [" ".join(f"{v:.6g}" for v in profile)] + [""] * (len(rows) - 1)
    records.atomic_write_text(path, frame.to_csv(index=False))
    return frame


def truncation_figure(spec, jobs, out: Path, stem: str) -> None:
    """Post-hoc truncation (AWNN §5.4): test accuracy vs fraction of neurons kept, per run and
    importance convention, and the learned importance profile f(j; ν) of the first adaptive layer.
    Writes tables/<stem>_curve.csv and figures/<stem>_curve.png."""
    frames, profiles = [], []
    for job in jobs:
        if job.status != "finished":
            continue
        curve = run_truncation_curve(job)
        if curve is None:
            continue
        convention = job.value("model.importance") or "paper"
        profile = str(curve.importance_profile.iloc[0])
        profiles.append((convention, np.array([float(v) for v in profile.split()])))
        frames.append(curve.drop(columns="importance_profile").assign(
            run=job.directory.name, seed=job.seed, importance=convention,
            epochs=job.value("train.epochs"))[["run", "seed", "importance", "epochs", "keep", "width", "test_acc"]])
    if not frames:
        print("[analysis] truncation: no finished adaptive runs with a checkpoint or truncation.csv yet")
        return
    frame = pd.concat(frames, ignore_index=True)
    records.atomic_write_text(out / "tables" / f"{stem}_curve.csv", frame.to_csv(index=False))
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for convention, group in frame.groupby("importance"):
        curve = group.groupby("keep").test_acc.agg(["mean", "std"]).fillna(0)
        a.errorbar(curve.index * 100, curve["mean"], yerr=curve["std"], marker="o", ms=3,
                   label=f"{convention} (n={group.run.nunique()})")
    a.set_xlabel("neurons kept (%)")
    a.set_ylabel("test accuracy (%)")
    a.set_title("post-hoc truncation", fontsize=9)
    a.legend(fontsize=8)
    colours = {c: f"C{i}" for i, c in enumerate(sorted(frame.importance.unique()))}
    for convention, p in profiles:
        b.plot(np.arange(len(p)), p, lw=1, color=colours[convention])
    b.set_xlabel("neuron j")
    b.set_ylabel("importance f(j; ν)")
    b.set_title("learned importance, first adaptive layer", fontsize=9)
    fig.tight_layout()
    (out / "figures").mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "figures" / f"{stem}_curve.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- AWNN Figs. 2 / 7
def activation_variance(init: str, layers: int = 5, width_nu: float = 0.01, n: int = 4096,
                        seed: int = 0) -> list[float]:
    """Variance of each hidden layer's rescaled activations at initialisation (AWNN eq. 14)."""
    from models.awnn import AdaptiveMLP

    torch.manual_seed(seed)
    mlp = AdaptiveMLP(64, 10, num_hidden=layers, nu0=width_nu, activation="relu", init=init)
    x = torch.randn(n, 64)
    with torch.no_grad():
        acts = mlp.hidden_activations(x)
        weights = mlp.importances()
    return [float((a * f).var()) for a, f in zip(acts, weights)]


def init_figure(spec, jobs, out: Path, stem: str) -> None:
    """AWNN Fig. 2: per-layer activation variance at init, kaiming vs kaiming+ (no training)."""
    table = pd.DataFrame({init: activation_variance(init) for init in ("kaiming", "kaiming_plus")})
    table.index = [f"layer {i + 1}" for i in range(len(table))]
    records.atomic_write_text(out / "tables" / "awnn_init_variance.csv", table.to_csv())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for init in table:
        ax.semilogy(range(1, len(table) + 1), table[init], marker="o", label=init)
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("activation variance at init")
    ax.set_title("AWNN Fig. 2: 5-layer ReLU AWNN MLP", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    (out / "figures").mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "figures" / "awnn_init_variance.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- AWNN App. D
def learned_widths(experiment: str, dataset: str, results_dir: str = "results/local",
                   profile: str | None = None, epochs: int | None = None) -> str:
    """`${learned_widths:awnn_table1,spiral}`: the widths AWNN learned on `dataset` in
    `experiment` (runs of `profile` only, when given), as an override value "[w1,w2,...]": the
    final per-layer widths averaged over the seeds of the AWNN configuration with the best mean
    validation score (the one the table reports). Reads run records only."""
    root = resolve(results_dir) / "runs" / experiment
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for summary_path in sorted(root.glob("*/summary.json")):
        summary = records.read_json(summary_path)
        if summary.get("status") != "finished":
            continue
        cfg = OmegaConf.load(summary_path.parent / "config.yaml")
        if cfg.dataset.name != dataset or not cfg.regime.awnn.enabled:
            continue
        if profile is not None and cfg.profile.name != profile:
            continue
        if epochs is not None and cfg.train.epochs != epochs:
            continue
        body = OmegaConf.to_container(cfg, resolve=True)
        body.pop("seed", None)
        body.get("dataset", {}).pop("fold", None)
        groups.setdefault(repr(sorted(body.items(), key=str)), []).append((summary, cfg))
    if not groups:
        at = f" at profile={profile}" if profile else ""
        raise ValueError(f"learned_widths: no finished AWNN run on {dataset!r}{at} under {root}; "
                         f"run `python -m experiments.run -m experiment={experiment}"
                         f"{f' profile={profile}' if profile else ''}` first")

    def score(runs):
        values = [s["best_val"].get(f"val_{s['metric']}") for s, _ in runs if s.get("best_val")]
        sign = 1 if runs[0][0]["direction"] == "max" else -1
        return sign * float(np.mean(values)) if values else -math.inf

    best = max(groups.values(), key=score)
    layers = sorted(k for k in best[0][0]["final"] if k.startswith("width/l"))
    widths = [max(1, round(np.mean([s["final"][k] for s, _ in best]))) for k in layers]
    return "[" + ",".join(str(w) for w in widths) + "]"
