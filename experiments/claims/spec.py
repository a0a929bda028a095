"""Claims as data: the `claims:` lists of the experiment files' `table:` nodes (conf/experiment),
with each table's `paper:` numbers, `paper_budget:` and `chance:` levels.

A claim (one list entry):
    id, paper (NB | AWNN | ours), text (states the direction), kind:
      superiority   a > b (expect: greater | less)
      equivalence   |a - b| < margin (margin_reason required; margin_rel: a fraction of the mean)
      trend         an ordering over `order` (neighbours, or each level against the last: against: last)
      as_in_paper   the paper reports a below / above b, and so do we (expect)
      speed         epochs until `target` is reached: a before b
      custom        a Python kind (experiments/claims/custom.py, `custom: <name>`)
    a, b: cells {experiment?, row?, col?, minus?} by the table's row / column keys (col "*": the
    row's only column; minus: a column subtracted replicate by replicate, a gain); b may be a list.
    rows / cols: the rows (columns) the a/b pair is compared in, when a and b name none.
    metric: a column of the run records (default: the table's metric, e.g. width/total);
    margin: equivalence margin, or for superiority the smallest gain the claim means (an interval
    below it rules the claim out); setting: {of: a|b, metric, factor}: not testable when our
    cell's metric is more than `factor` times off the paper's (e.g. width 63 vs ~800).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf" / "experiment"
KINDS = ("superiority", "equivalence", "trend", "as_in_paper", "speed", "custom")
CUSTOM_NAMES = ("ratios_to_one", "truncation_cost", "init_variance")     # experiments/claims/custom.py
EXPECT = {"superiority": "greater", "as_in_paper": "greater", "trend": "greater", "speed": "less",
          "equivalence": "equal", "custom": "equal"}


@dataclass
class Operand:
    experiment: str
    row: str
    col: str
    minus: str | None = None

    def label(self) -> str:
        return f"{self.col} − {self.minus}" if self.minus else self.col


@dataclass
class Claim:
    id: int
    paper: str
    text: str
    kind: str
    experiment: str
    raw: dict = field(default_factory=dict)

    def get(self, key, default=None):
        return self.raw.get(key, default)

    @property
    def expect(self) -> str:
        return self.raw.get("expect") or EXPECT[self.kind]

    def experiments(self) -> list[str]:
        nodes = [self.raw.get("a") or {}, *self._bs(), *(self.raw.get("order") or []),
                 *[side for p in self.raw.get("pairs") or [] for side in (p["a"], p["b"])]]
        named = [o.get("experiment") for o in nodes]
        return list(dict.fromkeys([self.experiment, *[e for e in named if e]]))

    def _bs(self) -> list[dict]:
        b = self.raw.get("b") or {}
        return list(b) if isinstance(b, list) else [b]

    def pairs(self) -> list[tuple[Operand, Operand, str]]:
        """(a, b, expect) per compared row: effect = a − b."""
        return [(p["a"], p["b"], p.get("expect") or self.expect) if isinstance(p, dict) else (*p, self.expect)
                for p in self._pairs()]

    def _pairs(self) -> list:
        if self.raw.get("pairs"):
            return [{"a": self._operand(p["a"]), "b": self._operand(p["b"]), "expect": p.get("expect")}
                    for p in self.raw["pairs"]]
        if self.raw.get("order"):
            levels = [self._operand(o) for o in self.raw["order"]]
            if self.raw.get("against") == "last":
                return [(levels[-1], lower) for lower in levels[:-1]]
            return [(hi, lo) for lo, hi in zip(levels, levels[1:])]
        out = []
        for b in self._bs():
            for row in self.raw.get("rows") or [None]:
                for col in self.raw.get("cols") or [None]:
                    out.append((self._operand(self.raw["a"], row, col), self._operand(b, row, col)))
        return out

    def _operand(self, node: dict, row=None, col=None) -> Operand:
        return Operand(str(node.get("experiment") or self.experiment), str(node.get("row") or row),
                       str(node.get("col") or col), node.get("minus"))


@dataclass
class TableInfo:
    """What the ledger needs from one experiment's table node besides its cells."""
    paper: dict
    budget: dict
    chance: object

    def paper_epochs(self, row: str) -> int | None:
        epochs = (self.budget.get("rows") or {}).get(row, self.budget.get("epochs"))
        return int(epochs) if epochs is not None else None

    def paper_seeds(self) -> int | None:
        return self.budget.get("seeds")

    def chance_of(self, row: str):
        return self.chance.get(row) if isinstance(self.chance, dict) else self.chance

    def paper_entry(self, row: str, col: str):
        by_col = self.paper.get(row) or {}
        return by_col.get(col, by_col.get("*"))


@lru_cache(maxsize=None)
def _table_node(experiment: str, stamp: float) -> dict:
    node = OmegaConf.load(CONF / f"{experiment}.yaml").get("table")
    return OmegaConf.to_container(node, resolve=False) if node is not None else {}


def table_node(experiment: str) -> dict:
    """The experiment file's `table:` node (cached until the file changes)."""
    path = CONF / f"{experiment}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no experiment file {path}")
    return _table_node(experiment, path.stat().st_mtime)


def table_info(experiment: str) -> TableInfo:
    node = table_node(experiment)
    return TableInfo(node.get("paper") or {}, node.get("paper_budget") or {}, node.get("chance"))


def load_claims() -> list[Claim]:
    """Every claim of every experiment file, by id; a bad entry raises ValueError naming it."""
    claims = []
    for path in sorted(CONF.glob("*.yaml")):
        for raw in table_node(path.stem).get("claims") or []:
            claim = Claim(int(raw["id"]), str(raw["paper"]), str(raw["text"]), str(raw["kind"]), path.stem, raw)
            _check(claim, raw, path.name)
            claims.append(claim)
    ids = [c.id for c in claims]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate claim ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    return sorted(claims, key=lambda c: c.id)


def _check(claim: Claim, raw: dict, where: str) -> None:
    """A claim entry that cannot be judged: ValueError naming it."""
    margin = raw.get("margin") or raw.get("margin_rel")
    problems = [
        (claim.kind not in KINDS, f"kind {claim.kind!r} not in {KINDS}"),
        (claim.kind == "equivalence" and not margin, "an equivalence claim needs a margin"),
        (bool(margin) and not raw.get("margin_reason"), "a margin needs its margin_reason"),
        (claim.kind == "speed" and raw.get("target") is None, "a speed claim needs a target"),
        (claim.kind == "custom" and raw.get("custom") not in CUSTOM_NAMES, f"custom must be one of {CUSTOM_NAMES}"),
        (claim.kind not in ("custom",) and not (raw.get("a") or raw.get("order") or raw.get("pairs")),
         "name the cells: a/b, order or pairs"),
    ]
    for bad, what in problems:
        if bad:
            raise ValueError(f"claim {claim.id} ({where}): {what}")
