"""Re-key run directories after the identity scheme changed (experiments/identity.py).

    python scripts/migrate_records.py [results_dir] [--dry-run]

Each run directory's key is recomputed from its own config.yaml (validated against today's
schema); a directory whose name differs is renamed to the new key, and its summary.json `key`
updated. A run whose new directory already exists is left alone and reported. Runs keep their
environment.json, so tables still show which code produced them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.paths import resolve  # noqa: E402
from experiments import identity, records  # noqa: E402
from experiments.schema import ConfigError, validate  # noqa: E402


def migrate(results_dir: str, dry_run: bool = False) -> tuple[int, int, int]:
    moved = kept = clashes = 0
    for config in sorted(resolve(results_dir).glob("runs/*/*/config.yaml")):
        old = config.parent
        if not dry_run:
            add_code_version(old)
        try:
            key = identity.run_key(validate(OmegaConf.load(config)))
        except ConfigError as err:
            print(f"[migrate] {old}: config no longer valid ({err}); left alone")
            continue
        if key == old.name:
            kept += 1
            continue
        new = old.with_name(key)
        if new.exists():
            print(f"[migrate] {old.name} -> {key}: target exists; left alone")
            clashes += 1
            continue
        print(f"[migrate] {old.parent.name}/{old.name} -> {key}")
        moved += 1
        if dry_run:
            continue
        os.replace(old, new)
        summary = records.read_summary(new)
        if summary is not None:
            records.write_json(new / "summary.json", {**summary, "key": key})
    return moved, kept, clashes


def add_code_version(directory: Path) -> None:
    """Records written before code versions existed: derive one from the old `git` field."""
    path = directory / "environment.json"
    env = records.read_json(path) if path.exists() else None
    if env is None or "code_version" in env or not env.get("git"):
        return
    rev = str(env["git"])
    dirty = rev.endswith("-dirty")
    version = rev[:12] + ("+dirty.unknown" if dirty else "")
    records.write_json(path, {**env, "code_version": version, "git_revision": rev.removesuffix("-dirty"),
                              "git_dirty": dirty})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    moved, kept, clashes = migrate(args.results_dir, args.dry_run)
    print(f"[migrate] {moved} renamed, {kept} already keyed, {clashes} left alone (target exists)")


if __name__ == "__main__":
    main()
