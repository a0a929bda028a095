"""Where things live: relative paths in configs are relative to the project root."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Run records: the committed evidence behind every table and the claims ledger, and a user's own
# runs (git-ignored). Nothing reads one when asked for the other; `experiments.publish` copies.
PUBLISHED = "results/published"
LOCAL = "results/local"


def resolve(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p
