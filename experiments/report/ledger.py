"""The claims ledger for the report, read from results/claims.csv (and claims_rows.csv) without
assuming more columns than `claim` and `verdict`: the ledger's columns evolve."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pandas as pd

# Columns shown when present, in this order, with their headings; others are left out.
SHOWN = [("id", "#"), ("paper", "paper"), ("claim", "claim"), ("kind", "kind"), ("row", "deciding row"),
         ("what", "comparison"), ("effect", "effect"), ("ci", "95% CI"), ("test", "test"),
         ("p_adj", "Holm p"), ("n", "n"), ("budget", "epochs (paper)"), ("paper_numbers", "ours vs paper"),
         ("verdict", "verdict")]
ROW_SHOWN = ["row", "what", "status", "profile", "test", "effect", "ci", "p_adj", "n", "budget", "note"]


def _number(value, digits: int = 3, signed: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "—"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        value = int(value)
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    if isinstance(value, float):
        return f"{value:{'+' if signed else ''}.{digits}g}"
    return str(value)


def _derived(row: dict) -> dict:
    """The ledger's numbers joined the way a reader reads them (each part only when present)."""
    out = dict(row)
    if "ci_low" in row or "ci_high" in row:
        low, high = row.get("ci_low"), row.get("ci_high")
        out["ci"] = "—" if _number(low) == "—" else f"[{_number(low)}, {_number(high)}]"
    if "n_a" in row or "n_b" in row:
        out["n"] = f"{_number(row.get('n_a'), signed=False)} vs {_number(row.get('n_b'), signed=False)}"
    if "epochs" in row or "paper_epochs" in row:
        out["budget"] = f"{_number(row.get('epochs'), signed=False)} ({_number(row.get('paper_epochs'), signed=False)})"
    for key in ("effect",):
        if key in row:
            out[key] = _number(row.get(key))
    for key in ("p", "p_adj"):
        if key in row:
            out[key] = _number(row.get(key), 2, signed=False)
    return {k: ("—" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in out.items()}


def read_ledger(claims_csv: Path) -> dict | None:
    """{columns, claims, counts, rows_by_claim} or None when there is no ledger file."""
    if not claims_csv.exists():
        return None
    frame = pd.read_csv(claims_csv)
    claims = [_derived(r) for r in frame.to_dict("records")]
    present = {k for c in claims for k in c}
    columns = [(key, title) for key, title in SHOWN if key in present]
    counts = Counter(str(c.get("verdict", "?")) for c in claims)
    rows_by_claim: dict[str, list[dict]] = {}
    rows_csv = claims_csv.with_name("claims_rows.csv")
    if rows_csv.exists():
        rows = pd.read_csv(rows_csv)
        id_col = next((c for c in ("claim_id", "id", "claim") if c in rows.columns), None)
        if id_col:
            for r in rows.to_dict("records"):
                rows_by_claim.setdefault(str(r[id_col]), []).append(_derived(r))
    row_columns = [k for k in ROW_SHOWN if any(k in r for rs in rows_by_claim.values() for r in rs)]
    return {"columns": columns, "claims": claims, "counts": sorted(counts.items(), key=lambda kv: -kv[1]),
            "rows_by_claim": rows_by_claim, "row_columns": row_columns, "source": str(claims_csv)}


def verdict_class(verdict: str) -> str:
    """A CSS class per verdict family (colour only; the word is always printed)."""
    text = str(verdict).lower()
    for family in ("not reproduced", "partly", "reproduced", "inconclusive", "pending", "not testable"):
        if text.startswith(family):
            return family.replace(" ", "-")
    return "other"
