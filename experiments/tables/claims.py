"""A paper's claim as a number in a table: the mean difference between two cells with a 95%
interval, from experiments/stats.py (paired t when both cells ran the same seeds or folds,
Welch t otherwise). The claims ledger (experiments/claims) decides verdicts; a table only shows."""
from __future__ import annotations

from experiments import stats
from experiments.tables.cells import keyed_values


def _label(spec, which: str, value) -> str:
    key = "/".join(value) if isinstance(value, tuple) else str(value)
    return str((spec.get(f"{which}_labels") or {}).get(key, key))


def claim_pairs(spec, table, row_keys, col_keys, claim):
    """[(label, row key, claimed cell, baseline cell)] for each row (`claim: {col, baseline}`) or
    each column (`claim: {row, baseline_row}`), and the claim's description."""
    def cell(r, c):
        return table.get(r, {}).get(c)

    if claim.get("row") is not None:
        r, b = (str(claim["row"]),), (str(claim["baseline_row"]),)
        pairs = [(_label(spec, "col", c), r, cell(r, c), b, cell(b, c)) for c in col_keys]
        return pairs, f"{_label(spec, 'row', r)} − {_label(spec, 'row', b)}"
    c, b = tuple(str(claim["col"]).split("/")), tuple(str(claim["baseline"]).split("/"))
    pairs = [(_label(spec, "row", r), r, cell(r, c), r, cell(r, b)) for r in row_keys]
    return pairs, f"{_label(spec, 'col', c)} − {_label(spec, 'col', b)}"


def claim_lines(spec, table, row_keys, col_keys, claim) -> list[str]:
    pairs, what = claim_pairs(spec, table, row_keys, col_keys, claim)
    out = [f"**Claim check** ({what}; mean difference of the reported metric with a 95% interval: paired t "
           "where both cells ran the same seeds or folds, Welch t otherwise; verdicts: results/claims.md):", ""]
    for label, ra, a, rb, b in pairs:
        if a is None or b is None or not a.n or not b.n:
            out.append(f"- {label}: not enough finished runs")
            continue
        va, vb = keyed_values(spec, ra, a), keyed_values(spec, rb, b)
        keys = sorted(va)
        is_paired = keys == sorted(vb) and len(keys) >= 2
        c = (stats.paired([va[k] for k in keys], [vb[k] for k in keys]) if is_paired
             else stats.welch(list(va.values()), list(vb.values())))
        test = f"{c.test}, n={c.n_a}" if is_paired else f"{c.test}, n={c.n_a} vs {c.n_b}"
        out.append(f"- {label}: {stats.interval_text(c)} ({test})")
    return out
