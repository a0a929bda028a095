"""`make report`: one self-contained, offline HTML page of the results, results/report.html.

    python -m experiments.report [--local | --results-dir DIR] [--out PATH] [--no-redraw]

Reads the published records (results/published) by default, your own runs with --local
(results/local). The page, in order: the claims ledger (verdict counts; each claim's deciding
numbers, its rows folded under it), every table with its notes, the figures (curves redrawn
from the records with the y-range zoomed to where they differ), and provenance (code versions,
hardware, each table's epochs and seeds beside the paper's). CSS is inline and figures are
base64 data URIs: the file loads nothing, from the network or the disk.
"""
from __future__ import annotations

import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from data.paths import PROJECT_ROOT, PUBLISHED, resolve
from experiments.provenance import code_state
from experiments.report.figures import collect
from experiments.report.ledger import read_ledger, verdict_class
from experiments.report.markdown import to_html
from experiments.report.provenance import machines, table_budgets

TEMPLATES = Path(__file__).parent / "templates"


def ledger_path(root: Path) -> Path:
    """The ledger beside the records (results/local/claims.csv) or, for the published records,
    where `make claims` writes it (results/claims.csv)."""
    beside = root / "claims.csv"
    if beside.exists() or root != resolve(PUBLISHED):
        return beside
    return resolve("results") / "claims.csv"


def tables(root: Path, figure_names: set[str]) -> list[dict]:
    out = []
    for md in sorted((root / "tables").glob("*.md")):
        out.append({"name": md.stem, "html": to_html(md.read_text()),
                    "csv": md.with_suffix(".csv").name if md.with_suffix(".csv").exists() else None,
                    "figure": md.stem if md.stem in figure_names else None})
    return out


def context(root: Path, redraw: bool = True) -> dict:
    ledger = read_ledger(ledger_path(root))
    figures = collect(root, redraw=redraw)
    hardware, code_versions = machines(root)
    source = root.relative_to(PROJECT_ROOT) if root.is_relative_to(PROJECT_ROOT) else root
    return {"title": "balance-width: results", "source": str(source), "ledger": ledger,
            "tables": tables(root, {f["name"] for f in figures}), "figures": figures,
            "budgets": table_budgets(root, ledger), "hardware": hardware, "code_versions": code_versions,
            "code": code_state()["code_version"],
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def render(ctx: dict) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["verdict_class"] = verdict_class
    return env.get_template("report.html.j2").render(**ctx)


def build(results_dir: str = "results/published", out: str = "results/report.html",
          redraw: bool = True) -> Path:
    root = resolve(results_dir)
    if not (root / "runs").is_dir() and not (root / "tables").is_dir():
        raise FileNotFoundError(f"{root} holds no runs/ or tables/ (run a sweep, or make demo, first)")
    path = resolve(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(context(root, redraw)))
    return path
