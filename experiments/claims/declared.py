"""The declared kinds (superiority, equivalence, trend, as_in_paper, speed): one Row per
compared pair of cells, all from one budget slice."""
from __future__ import annotations

import numpy as np

from experiments import stats
from experiments.claims.rows import (MIN_N, Row, match, paper_numbers, resolve, row_key,
                                     epochs_to_target, unlearned, what_of)
from experiments.claims.slices import Slices
from experiments.claims.spec import Claim, Operand, table_info


def margin_of(claim: Claim, a, b) -> float | None:
    if claim.get("margin_rel"):
        return float(claim.get("margin_rel")) * float(np.mean([np.mean(a), np.mean(b)]))
    return float(claim.get("margin")) if claim.get("margin") is not None else None


def budget_of(row: Row, a: Operand, b: Operand, sa, sb) -> None:
    """Epochs and seeds against the paper's; what keeps the row from deciding."""
    infos = [table_info(a.experiment), table_info(b.experiment)]
    wanted = [e for e in (infos[0].paper_epochs(a.row), infos[1].paper_epochs(b.row)) if e is not None]
    row.paper_epochs = max(wanted) if wanted else None
    row.paper_seeds = infos[0].paper_seeds()
    row.profile, row.epochs = sa.profile, sa.epochs
    if row.paper_epochs is not None and sa.epochs < row.paper_epochs:
        row.block = "pending"
        row.why.insert(0, f"needs {row.paper_epochs} epochs, has {sa.epochs}")
    if min(sa.n, sb.n) < MIN_N:
        row.block = "pending"
        row.why.append(f"needs n >= {MIN_N} per side, has {sa.n} vs {sb.n}")


def learned_check(row: Row, claim: Claim, a: Operand, b: Operand, sa, sb) -> None:
    """Under a cut budget a side that has not learned makes the row not testable; at the paper's
    budget it is a finding, said beside the verdict."""
    metric_is_table = claim.get("metric") is None and claim.kind != "speed"
    half = row.comparison.half_width if row.comparison is not None else None
    for op, sample in ((a, sa), (b, sb)):
        chance = table_info(op.experiment).chance_of(op.row)
        found = unlearned(sample, chance, half, metric_is_table)
        if found is None:
            continue
        what, reason = found
        if row.block == "pending" and row.epochs is not None and row.epochs < (row.paper_epochs or 0):
            row.block, row.why = "not testable", [f"{reason} under a cut budget", *row.why]
        elif not row.block and what == "chance":
            row.why.append(f"finding at the paper's budget: {reason}")


def setting_check(row: Row, claim: Claim, a: Operand, b: Operand, sa, sb) -> None:
    """`setting: {of, metric, factor, paper_row?}`: our cell's metric against the paper's (e.g.
    width), read from the paper's entry of that row (or of `paper_row`)."""
    setting = claim.get("setting")
    if not setting:
        return
    op, sample = (a, sa) if setting.get("of", "a") == "a" else (b, sb)
    entry = table_info(op.experiment).paper_entry(setting.get("paper_row", op.row), op.col) or {}
    paper = entry.get(setting["metric"].split("/")[0]) if isinstance(entry, dict) else None
    ours = float(np.mean(list(sample.values.values())))
    factor = float(setting.get("factor", 3))
    if paper and not (paper / factor <= ours <= paper * factor):
        row.block = "not testable"
        row.why = [f"setting differs from the paper's: {setting['metric']} {ours:.0f} vs ~{paper}"]


def compare_row(claim: Claim, slices: Slices, a: Operand, b: Operand, expect: str) -> Row:
    metric = claim.get("metric")
    # a claim across rows, column by column (`cols:`), names each compared pair by its column
    key = a.col if claim.get("cols") and a.col == b.col and a.row != b.row else row_key(a, b)
    row = Row(claim.id, key, what_of(a, b), expect=expect, paper_numbers=paper_numbers(a, b))
    paper_epochs = table_info(a.experiment).paper_epochs(a.row)
    samples_a, samples_b = resolve(slices, a, metric), resolve(slices, b, metric)
    pair = match(samples_a, samples_b, paper_epochs)
    if pair is None:
        have = sorted({f"{s.profile} {s.epochs} ep" for s in samples_a + samples_b})
        row.block = "pending"
        row.why = [f"no budget with runs of both sides (has {', '.join(have)})" if have else "no finished runs"]
        row.paper_epochs = paper_epochs
        return row
    sa, sb = pair
    if "*" in (a.col, b.col):
        row.what = what_of(Operand(a.experiment, a.row, sa.col, a.minus), Operand(b.experiment, b.row, sb.col, b.minus))
    if claim.kind == "speed":
        (sa, never_a), (sb, never_b) = (epochs_to_target(s, claim.get("metric_of_speed", "test_acc"),
                                                         float(claim.get("target"))) for s in (sa, sb))
        if never_a or never_b:
            row.why.append(f"runs that never reach {claim.get('target')}: {never_a} vs {never_b} "
                           f"(counted as epochs + 1)")
    keys_a, keys_b = sa.keys(), sb.keys()
    is_paired = keys_a == keys_b and len(keys_a) >= 2
    x, y = sa.array(keys_a), sb.array(keys_b)
    row.margin = margin_of(claim, x, y) if claim.kind == "equivalence" or claim.get("margin") else None
    tost_margin = row.margin if claim.kind == "equivalence" else None
    ceiling = 100.0 if metric is None and claim.kind != "speed" else None
    row.comparison = stats.compare(x, y, is_paired, tost_margin, ceiling)
    row.design = "paired" if is_paired else "unpaired"
    budget_of(row, a, b, sa, sb)
    learned_check(row, claim, a, b, sa, sb)
    setting_check(row, claim, a, b, sa, sb)
    return row


def declared_rows(claim: Claim, slices: Slices) -> list[Row]:
    return [compare_row(claim, slices, a, b, expect) for a, b, expect in claim.pairs()]
