"""Published records apart from a user's runs: defaults, and the one explicit publish step."""
from __future__ import annotations

import json

import pandas as pd

from data.paths import LOCAL, PUBLISHED, resolve
from experiments.publish import publish
from experiments.schema import RunControl
from tests.helpers import run_cli


def test_runs_go_to_the_ignored_local_folder_and_tables_read_the_published_one():
    assert RunControl().results_dir == LOCAL
    assert resolve(LOCAL) != resolve(PUBLISHED)
    ignored = (resolve(".") / ".gitignore").read_text().splitlines()
    assert f"/{LOCAL}/" in ignored
    assert any(resolve(PUBLISHED).glob("runs/*/manifests/*.json")), "published manifests moved?"


def test_publish_copies_ended_records_without_checkpoints_and_builds_the_table(tmp_path):
    local, published = tmp_path / "local", tmp_path / "published"
    run_cli("-m", "experiment=demo_digits", "profile=smoke", "seed=0", f"run.results_dir={local}",
            "run.progress=false")
    runs = sorted(p.parent for p in local.glob("runs/demo_digits/*/summary.json"))
    assert runs and all((r / "checkpoint.pt").exists() for r in runs)
    counts = publish("demo_digits", ["profile=smoke"], source=str(local), target=str(published))
    assert counts == {"copied": len(runs), "already published": 0, "not ended": 0}
    for run in runs:
        copy = published / run.relative_to(local)
        assert (copy / "metrics.csv").read_bytes() == (run / "metrics.csv").read_bytes()
        assert not (copy / "checkpoint.pt").exists() and not list(copy.glob(".*"))
    manifest = json.loads((published / "runs/demo_digits/manifests/smoke.json").read_text())
    assert {j["key"] for j in manifest["jobs"]} == {r.name for r in runs}
    mine = pd.read_csv(local / "tables/demo_digits.smoke.csv")
    theirs = pd.read_csv(published / "tables/demo_digits.smoke.csv")
    pd.testing.assert_frame_equal(mine, theirs)
    again = publish("demo_digits", ["profile=smoke"], source=str(local), target=str(published))
    assert again["already published"] == len(runs) and again["copied"] == 0


def test_publish_without_a_sweep_says_which_manifest_is_missing(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "experiments.publish", "nb_table1", "profile=smoke",
                           "--from", str(tmp_path)], cwd=resolve("."), capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("[publish] no manifest") and "experiment=nb_table1" in proc.stderr


def test_more_seeds_keep_the_old_seeds_planned_before_a_schema_field_existed(tmp_path):
    """A record planned before `train.eval_every` existed is at the same grid point as one planned
    after, at its default: a sweep of seeds 3-9 adds to seeds 0-2 instead of replacing them."""
    from experiments import plan, records

    flat = {"dataset.name": "spiral", "model.name": "fcn", "model.widths": [16], "train.epochs": 5}
    old = {"experiment": "e", "profile": "paper", "overrides": [], "commands": [[]], "table": None,
           "base": {**flat, "seed": 0}, "jobs": [{"key": "k0", "grid": "g", "delta": {}}]}
    path = tmp_path / "paper.json"
    records.write_json(path, old)
    new = {**old, "base": {**flat, "seed": 3, "train.eval_every": 1},
           "jobs": [{"key": "k3", "grid": "g", "delta": {}}], "commands": [["seed=3"]], "overrides": ["seed=3"]}
    assert {j["key"] for j in plan.merge_manifest(path, new)["jobs"]} == {"k0", "k3"}
    changed = {**new, "base": {**new["base"], "train.epochs": 6}, "jobs": [{"key": "k6", "grid": "g", "delta": {}}]}
    assert {j["key"] for j in plan.merge_manifest(path, changed)["jobs"]} == {"k6"}   # a changed grid replaces
