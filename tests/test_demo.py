"""make demo (experiments/demo.py): trains into your own records and compares each cell with the
published record of the same run key and with the paper."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

from data.paths import PROJECT_ROOT, resolve
from experiments import demo

PUBLISHED_DIGITS = resolve("results/published/runs/demo_digits")


def _copy_published_digits(tmp_path):
    """Your records = copies of the published ones (what a faithful re-run produces)."""
    target = tmp_path / "runs" / "demo_digits"
    shutil.copytree(PUBLISHED_DIGITS, target, ignore=shutil.ignore_patterns("checkpoint*", ".lock"))
    return target


def test_same_records_are_within_the_published_spread(tmp_path, capsys):
    _copy_published_digits(tmp_path)
    code = demo.main(["--no-train", "--only", "demo_digits", "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    lines = [ln for ln in out.splitlines() if " yours " in ln and "|" in ln]
    assert len(lines) == 4                     # plain, l1, nb_l2, nb_l1
    assert all("| published 9" in ln and "within the published spread" in ln for ln in lines)
    assert "4/4 cells within the published spread" in out


def test_a_cell_far_from_the_published_one_is_judged_outside_but_exits_0(tmp_path, capsys):
    runs = _copy_published_digits(tmp_path)
    for run in runs.glob("digits-fcn-nb_l1-*"):
        metrics = run / "metrics.csv"
        lines = metrics.read_text().splitlines()
        header = lines[0].split(",")
        last = lines[-1].split(",")
        last[header.index("test_acc")] = "50.0"
        metrics.write_text("\n".join([*lines[:-1], ",".join(last)]) + "\n")
    code = demo.main(["--no-train", "--only", "demo_digits", "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    nb_l1 = next(ln for ln in out.splitlines() if " nb_l1 " in ln)
    assert "yours  50.00" in nb_l1 and "OUTSIDE the published spread" in nb_l1


def test_a_failed_run_fails_the_demo(tmp_path, capsys):
    runs = _copy_published_digits(tmp_path)
    summary_path = next(runs.glob("digits-fcn-plain-s0-*")) / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "status": "failed"}))
    assert demo.main(["--no-train", "--only", "demo_digits", "--results-dir", str(tmp_path)]) == 1
    assert "did not finish" in capsys.readouterr().err


def test_within_spread_rule():
    def item(yours, mean, std, n=3, metric="test_acc"):
        return demo.Comparison("e", "r", "c", metric, (yours, 0.0, 3), (mean, std, n), None, "")

    assert demo.within_spread(item(99.6, 99.7, 0.0))             # the floor: one test sample
    assert not demo.within_spread(item(99.0, 99.7, 0.1))
    assert demo.within_spread(item(96.0, 97.0, 0.6))             # 2 std
    assert demo.within_spread(item(99.0, 99.0, math.nan, n=1))   # one published replicate
    assert demo.within_spread(item(99.0, math.nan, math.nan, n=0)) is None


def test_demo_trains_through_the_sweep_entry_point(tmp_path):
    """A tiny (smoke) demo sweep: new records in the given results dir, none published."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments.demo", "--only", "demo_digits", "--profile", "smoke",
         "--jobs", "1", "--results-dir", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    finished = [json.loads(p.read_text())["status"] for p in tmp_path.glob("runs/demo_digits/*/summary.json")]
    assert finished == ["finished"] * 4
    assert "published none" in result.stdout      # no smoke-profile published twin
    assert "[demo] 1/1: demo_digits (smoke)" in result.stdout
