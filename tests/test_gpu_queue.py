"""The GPU queue walks its items in order, in time-boxed chunks that resume."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from data.paths import resolve

QUEUE = {"items": [
    {"name": "needs_data", "why": "skipped: its files are absent", "args": ["experiment=nb_table1"],
     "est_gpu_min": 1, "needs": ["MNIST/raw"]},
    {"name": "digits", "why": "the demo sweep", "args": ["experiment=demo_digits", "seed=0"],
     "est_gpu_min": 1, "needs": []},
]}


def _queue(tmp_path, *args):
    path = tmp_path / "queue.yaml"
    path.write_text(yaml.safe_dump(QUEUE))
    return subprocess.run([sys.executable, "scripts/gpu_queue.py", "--queue", str(path), "--profile", "smoke",
                           f"run.results_dir={tmp_path / 'r'}", f"data.root={tmp_path / 'data'}",
                           "run.progress=false", *args], cwd=resolve("."), capture_output=True, text=True)


def test_queue_skips_items_without_data_and_runs_the_next_to_completion(tmp_path):
    stopped = _queue(tmp_path, "--chunk-min", "0.001")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "skip needs_data: no MNIST/raw" in stopped.stdout and "digits: stopped" in stopped.stdout
    done = _queue(tmp_path)
    assert "digits: done" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    ledger = json.loads((tmp_path / "r" / "gpu_queue.json").read_text())
    assert ledger["digits"]["chunks"] == 2 and ledger["digits"]["last"] == "done"
    listing = _queue(tmp_path, "--list").stdout
    assert "4/4" not in listing and " 0/4  done" in listing, listing
    assert "every item with data is done" in _queue(tmp_path).stdout


def test_unknown_item_is_one_line_and_exit_2(tmp_path):
    proc = _queue(tmp_path, "--item", "nope")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "allowed: ['needs_data', 'digits']" in proc.stderr
