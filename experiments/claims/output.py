"""results/claims.md, claims.csv (one line per claim: its deciding row) and claims_rows.csv
(one line per claim x compared row)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from experiments import records, stats
from experiments.claims.rows import Row
from experiments.claims.verdict import describe

FLOAT = "%.6g"


def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def row_record(row: Row) -> dict:
    c = row.comparison
    return {"claim_id": row.claim_id, "row": row.row, "what": row.what, "used": row.used, "status": row.status,
            "design": row.design, "test": c.test if c else "", "effect": _num(c.effect) if c else None,
            "ci_low": _num(c.ci_low) if c else None, "ci_high": _num(c.ci_high) if c else None,
            "p": _num(c.p) if c else None, "p_adj": _num(row.p_adj), "n_a": c.n_a if c else None,
            "n_b": c.n_b if c else None, "epochs": row.epochs, "paper_epochs": row.paper_epochs,
            "paper_seeds": row.paper_seeds, "margin": _num(row.margin), "mde": _num(c.mde) if c else None,
            "profile": row.profile, "paper_numbers": row.paper_numbers, "note": "; ".join(row.why)}


INTS = ("n_a", "n_b", "epochs", "paper_epochs", "paper_seeds", "seeds")


def frame_of(records_: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records_)
    for col in INTS:
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame


def claim_record(claim, verdict: str, reason: str, decider: Row | None) -> dict:
    deciding = row_record(decider) if decider is not None else {}
    deciding.pop("claim_id", None)
    return {"id": claim.id, "paper": claim.paper, "claim": claim.text, "verdict": verdict,
            **{k: deciding.get(k) for k in ("row", "what", "effect", "ci_low", "ci_high", "test", "p", "p_adj",
                                             "n_a", "n_b", "epochs", "paper_epochs", "paper_seeds")},
            "kind": claim.kind, "experiments": " ".join(claim.experiments()),
            "paper_numbers": deciding.get("paper_numbers"), "reason": reason}


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown(results: list[tuple], n_tests: int, source: str) -> str:
    lines = ["# Claims ledger", "",
             "Every headline claim of the two papers, tested on the run records (`make claims`; the rule is in "
             "`experiments/claims/verdict.py`, the claims in each experiment file's `table: claims:`). Effect: "
             "side a − side b, with its two-sided 95% interval; test: paired t on per-seed (per-fold) differences "
             "when both sides ran the same seeds, Welch t otherwise, TOST for equivalence (declared margin), "
             f"bootstrap only from n >= 10 per side. p is raw, Holm is adjusted over the ledger's {n_tests} decisive "
             "tests (statsmodels multipletests); verdicts use the adjusted p. A row decides only at the paper's "
             "epochs with n >= 3 per side (or as a deterministic measurement); other rows give a provisional "
             "reading on their raw p and say what they miss.", "",
             "| # | paper | claim | kind | paper's numbers (deciding row) | deciding row: effect [95% CI] | test | p | "
             "Holm p | n (paper's) | epochs (paper's) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for claim, verdict, reason, decider, rows in results:
        c = decider.comparison if decider is not None else None
        effect = stats.interval_text(c) if c is not None else "—"
        n = f"{c.n_a} vs {c.n_b} ({decider.paper_seeds or '—'})" if c is not None else "—"
        paper = decider.paper_numbers if decider is not None and decider.paper_numbers else "—"
        ep = f"{decider.epochs or '—'} ({decider.paper_epochs or '—'})" if decider is not None else "—"
        p = f"{c.p:.2g}" if c is not None and math.isfinite(c.p) else "—"
        p_adj = f"{decider.p_adj:.2g}" if decider is not None and math.isfinite(decider.p_adj) else "—"
        lines.append(f"| {claim.id} | {claim.paper} | {_cell(claim.text)} | {claim.kind} | {_cell(paper)} | "
                     f"{_cell(decider.row if decider else '—')}: {effect} | {c.test if c else '—'} | {p} | {p_adj} | "
                     f"{n} | {ep} | **{verdict}** |")
    lines += ["", "## Claims, row by row", ""]
    for claim, verdict, reason, decider, rows in results:
        lines += [f"### {claim.id}. {claim.text} ({claim.paper}; {claim.kind}; `{' + '.join(claim.experiments())}`)", "",
                  f"**{verdict}**: {reason}", ""]
        if claim.get("margin_reason"):
            lines += [f"Margin: {claim.get('margin') or str(claim.get('margin_rel')) + ' x mean'}: "
                      f"{claim.get('margin_reason')}", ""]
        for r in rows:
            paper = f"; paper {r.paper_numbers}" if r.paper_numbers and r.paper_numbers != "—" else ""
            note = f"; {'; '.join(r.why)}" if r.why else ""
            seeds = f"; paper seeds {r.paper_seeds}" if r.paper_seeds else ""
            lines.append(f"- {_cell(describe(r))} — {r.status}{paper}{seeds}{_cell(note)}")
        lines.append("")
    lines += [f"_Regenerate: `make claims` (python -m experiments.claims; the records are in `{source}/runs/`)._", ""]
    return "\n".join(lines)


def write(out: Path, results: list[tuple], n_tests: int, source: str) -> None:
    records.atomic_write_text(out / "claims.md", markdown(results, n_tests, source))
    claims = frame_of([claim_record(c, v, why, d) for c, v, why, d, _ in results])
    rows = frame_of([row_record(r) for *_, rs in results for r in rs])
    records.atomic_write_text(out / "claims.csv", claims.to_csv(index=False, float_format=FLOAT))
    records.atomic_write_text(out / "claims_rows.csv", rows.to_csv(index=False, float_format=FLOAT))
