"""Build the ledger: every claim's rows, Holm over all tests, verdicts, the three files."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from data.paths import LOCAL, PUBLISHED, resolve
from experiments import plan
from experiments.claims.custom import CUSTOM
from experiments.claims.declared import declared_rows
from experiments.claims.output import write
from experiments.claims.rows import Row
from experiments.claims.slices import Slices
from experiments.claims.spec import load_claims
from experiments.claims.verdict import adjust, verdict


def rows_of(claim, slices: Slices) -> list[Row]:
    rows = CUSTOM[claim.get("custom")](claim, slices) if claim.kind == "custom" else declared_rows(claim, slices)
    keys = [r.row for r in rows]
    for r in rows:
        r.name = r.row if keys.count(r.row) == 1 else f"{r.row} ({r.what})"
    return rows


def build(results_dir: str = PUBLISHED, out_dir: str | None = None) -> Path:
    """The ledger from the records under `results_dir`, written to `out_dir` (results/ for the
    published records, the records' own folder otherwise)."""
    slices = Slices(results_dir)
    claims = load_claims()
    per_claim = [(claim, rows_of(claim, slices)) for claim in claims]
    every = [r for _, rows in per_claim for r in rows]
    adjust(every)
    results = [(claim, *verdict(rows), rows) for claim, rows in per_claim]
    n_tests = sum(r.used and r.comparison is not None and r.comparison.p == r.comparison.p for r in every)
    out = resolve(out_dir or ("results" if results_dir == PUBLISHED else results_dir))
    write(out, results, n_tests, results_dir)
    counts = Counter(v for _, v, *_ in results)
    print(f"[claims] {out / 'claims.md'}: " + ", ".join(f"{v} {k}" for v, k in sorted(counts.items())))
    return out / "claims.md"


def main(argv: list[str]) -> None:
    """`python -m experiments.claims [--local | run.results_dir=DIR]`."""
    default = LOCAL if "--local" in argv else PUBLISHED
    results_dir = plan.override_value(argv, "run.results_dir", default)
    try:
        build(results_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"[claims] {err}", file=sys.stderr)
        raise SystemExit(2) from err
