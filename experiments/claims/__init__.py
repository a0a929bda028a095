"""The claims ledger: every headline claim of both papers, with a verdict from the run records.

    python -m experiments.claims [--local | run.results_dir=DIR]      (make claims)

Claims are data (the `claims:` list of each experiment file's `table:` node, experiments/claims/spec.py);
statistics come from experiments/stats.py; the verdict rule is experiments/claims/verdict.py.
Writes results/claims.md, results/claims.csv and results/claims_rows.csv.
"""
from experiments.claims.ledger import build, main

__all__ = ["build", "main"]
