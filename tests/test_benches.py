"""Every benchmark runs (`make bench`'s --quick settings) and prints its `ratio` lines: a bench
that falls behind the code it measures fails here, not in a user's hands."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

BENCHES = sorted((ROOT / "bench").glob("bench_*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("bench", BENCHES, ids=[b.stem for b in BENCHES])
def test_bench_runs_and_prints_ratios(bench):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(bench), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ratio ")]
    assert lines, proc.stdout[-2000:]
    for line in lines:
        float(line.rsplit(":", 1)[1].split()[0])        # `ratio <what>/<baseline> (<case>): X`
