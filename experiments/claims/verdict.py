"""Row statuses and claim verdicts.

A row decides only at the paper's epochs with n >= 3 per side (or as a deterministic
measurement). On its Holm-adjusted p (over every decisive test of the ledger) a decisive row
  holds   p_adj < 0.05 with the effect on the claimed side (equivalence: TOST p_adj < 0.05);
  fails   its 95% interval lies below the smallest gain the claim means (`margin`), or p_adj <
          0.05 on the other side, or (equivalence) the interval lies wholly outside the margin;
  open    otherwise (the row prints the smallest effect it could have detected).
A claim is reproduced when every decisive row holds, not reproduced when none does and one
fails, partly reproduced when some hold and others do not, inconclusive when all are open;
with no decisive row it is pending (budget) (with the provisional reading and what is missing)
or not testable (with the reason).
"""
from __future__ import annotations

import math

from experiments import stats
from experiments.claims.rows import Row

ALPHA = 0.05


def judge(row: Row, p: float) -> str:
    """holds / fails / open of a row's comparison at p (adjusted or raw)."""
    c = row.comparison
    if c is None or not math.isfinite(c.ci_low) or not math.isfinite(p):
        return "open"
    if row.expect == "equal":
        if p < ALPHA:
            return "holds"
        m = row.margin or 0.0
        return "fails" if c.ci_low > m or c.ci_high < -m else "open"
    sign = 1.0 if row.expect == "greater" else -1.0
    effect, high = sign * c.effect, max(sign * c.ci_low, sign * c.ci_high)
    if row.margin is not None and high < row.margin:
        return "fails"           # even a real gain is smaller than the claim means
    if p < ALPHA:
        return "holds" if effect > 0 else "fails"
    return "open"


def adjust(rows: list[Row]) -> None:
    """Holm over every decisive test of the ledger (the rows verdicts rest on; a pending row's p is
    a provisional reading and shown raw), then each row's status."""
    tested = [r for r in rows if r.used and r.comparison is not None and math.isfinite(r.comparison.p)]
    for r, p_adj in zip(tested, stats.holm([r.comparison.p for r in tested])):
        r.p_adj = p_adj
    for r in rows:
        if r.block:
            r.status = r.block
        elif not r.status:
            r.status = judge(r, r.p_adj)


def describe(row: Row) -> str:
    """'fcn2 (L1 vs plain): +0.12 [-0.03, +0.27], paired t, p 0.04, Holm 0.4, n 8 vs 8, 500/500 ep'."""
    c = row.comparison
    head = f"{row.row} ({row.what})"
    if c is None:
        return head
    if c.test == "deterministic":
        return f"{head}: {c.effect:+.2f} (deterministic)"
    n = f"n {c.n_a} vs {c.n_b}" if c.n_a != c.n_b or row.design != "paired" else f"n {c.n_a} paired"
    p_adj = f", Holm {row.p_adj:.2g}" if math.isfinite(row.p_adj) else ""
    budget = f", {row.epochs} of {row.paper_epochs or '?'} epochs ({row.profile} profile)" if row.epochs else ""
    return f"{head}: {stats.interval_text(c)}, {c.test}, p {c.p:.2g}{p_adj}, {n}{budget}"


WOULD = {"holds": "hold", "fails": "fail", "open": "stay open"}


def _names(rows: list[Row]) -> str:
    return ", ".join(r.name for r in rows)


def _missing(rows: list[Row]) -> str:
    return "; ".join(f"{r.name}: {r.status}: {', '.join(r.why)}" for r in rows)


def _mde(row: Row) -> str:
    c = row.comparison
    return f"{row.name}: could detect |effect| >= {c.mde:.2f} at 80% power (n {c.n_a} vs {c.n_b})" \
        if c is not None and math.isfinite(c.mde) else f"{row.name}: no interval"


def verdict(rows: list[Row]) -> tuple[str, str, Row | None]:
    """(verdict, reason, deciding row) of one claim from its rows' statuses."""
    used = [r for r in rows if r.used]
    rest = [r for r in rows if not r.used]
    by = {s: [r for r in used if r.status == s] for s in ("holds", "fails", "open")}
    scope = f"; not deciding: {_missing(rest)}" if rest else ""
    findings = "; ".join(w for r in used for w in r.why if w.startswith("finding"))
    scope += f"; {findings}" if findings else ""
    if used and len(by["holds"]) == len(used):
        decider = max(used, key=lambda r: r.p_adj if math.isfinite(r.p_adj) else -1.0)
        return "reproduced", f"holds in {_names(used)}{scope}", decider
    if by["holds"]:
        other = by["fails"] + by["open"]
        return ("partly reproduced", f"holds in {_names(by['holds'])}; "
                f"{'fails' if by['fails'] else 'open'} in {_names(other)}{scope}", other[0])
    if by["fails"]:
        return "not reproduced", f"fails in {_names(by['fails'])}{scope}", by["fails"][0]
    if by["open"]:
        return "inconclusive", "; ".join(_mde(r) for r in by["open"]) + scope, by["open"][0]
    pending = [r for r in rows if r.status == "pending"]
    if pending:
        reading = "; ".join(f"{r.name} would {WOULD[judge(r, r.comparison.p)]} on its raw p"
                            for r in pending if r.comparison is not None)
        return "pending (budget)", f"provisional: {reading or 'no comparison yet'}; missing: {_missing(pending)}", pending[0]
    blocked = [r for r in rows if r.status == "not testable"] or rows
    return "not testable", _missing(blocked), blocked[0] if blocked else None
