"""Publish a sweep: copy its finished run records from your results folder into the committed
evidence (results/published), merge its manifest into the published one and rebuild the table.

    python -m experiments.publish <experiment> [profile=quick] [sweep overrides] [--from DIR] [--dry-run]

The overrides name the sweep the way its command line did (they pick the manifest, as for
`python -m experiments.tables`). Only records whose run ended (finished or diverged) are copied,
without checkpoints, locks or hidden files; a published record is never overwritten. Runs still
missing stay listed in the manifest, so the published table shows them as missing.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from data.paths import LOCAL, PUBLISHED, resolve
from experiments import plan, records
from experiments.tables import build as build_table

def _copy_record(src: Path, dst: Path) -> None:
    """Every file of a run record but checkpoints, locks and hidden files (atomically: a
    half-copied record is never seen as published)."""
    tmp = dst.with_name(f".{dst.name}.publishing")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=lambda _d, names: [
        n for n in names if n.startswith(".") or n.startswith("checkpoint") or n.endswith(".lock")])
    tmp.rename(dst)


def publish(experiment: str, overrides: list[str], source: str = LOCAL, dry_run: bool = False,
            target: str = PUBLISHED) -> dict:
    """Returns counts: copied, already published, not ended (left out)."""
    profile = plan.override_value(overrides, "profile", "quick")
    if resolve(source) == resolve(target):
        raise ValueError(f"--from {source}: that is the published folder itself")
    src_manifest = plan.manifest_path(source, experiment, profile, overrides)
    if not src_manifest.exists():
        raise FileNotFoundError(f"no manifest {src_manifest}: run the sweep "
                                f"(python -m experiments.run -m experiment={experiment} profile={profile}) first")
    body = records.read_json(src_manifest)
    counts = {"copied": 0, "already published": 0, "not ended": 0}
    for job in body["jobs"]:
        src, dst = resolve(source) / job["dir"], resolve(target) / job["dir"]
        if not plan.finished(src):
            counts["not ended"] += 1
        elif plan.finished(dst):
            counts["already published"] += 1
        else:
            counts["copied"] += 1
            if not dry_run:
                _copy_record(src, dst)
    if not dry_run:
        plan.merge_manifest(plan.manifest_path(target, experiment, profile, overrides), body)
        build_table(experiment, [*overrides, f"run.results_dir={target}"])
    return counts


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        raise SystemExit(2)
    source = LOCAL
    if "--from" in argv:
        at = argv.index("--from")
        if at + 1 >= len(argv):
            print("[publish] --from needs a folder", file=sys.stderr)
            raise SystemExit(2)
        source = argv[at + 1]
        argv = argv[:at] + argv[at + 2:]
    dry_run = "--dry-run" in argv
    overrides = [a for a in argv[1:] if a != "--dry-run" and not a.startswith("experiment=")]
    try:
        counts = publish(argv[0], overrides, source, dry_run)
    except (FileNotFoundError, ValueError) as err:
        print(f"[publish] {err}", file=sys.stderr)
        raise SystemExit(2) from err
    verb = "would publish" if dry_run else "published"
    print(f"[publish] {argv[0]}: {verb} " + ", ".join(f"{n} {what}" for what, n in counts.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
