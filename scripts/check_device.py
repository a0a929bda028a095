"""Device check: the suite's device-sensitive tests on this host's accelerator (CUDA when present).

    python scripts/check_device.py            # make check-device
    python scripts/check_device.py -k stack   # a subset (pytest -k expression)

Runs, through pytest, one line per check: the smoke profile of every experiment through the real
entry point (`run.device=auto` takes the GPU), the balancing and AWNN device tests (CUDA results
against the CPU, a meta-device guard against tensors made off the data's device), a killed run and
a killed stack resuming, and a stacked sweep against the unstacked one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHECKS = [
    "tests/test_experiments.py::test_experiment_smoke_runs",
    "tests/test_balancing_device.py",
    "tests/test_awnn_device.py",
    "tests/test_runner.py::test_killed_run_resumes_to_the_same_numbers",
    "tests/test_stack_run.py::test_killed_stack_resumes_every_member",
    "tests/test_stack_run.py::test_sweep_with_run_stack_gives_the_unstacked_table",
]


def main(argv: list[str]) -> int:
    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    else:
        device = f"cpu only (torch {torch.__version__}): CUDA checks skip, runs use the CPU"
    print(f"[check-device] {device}", flush=True)
    code = pytest.main([*(str(ROOT / c) for c in CHECKS), "-m", "", "-q", "-rA", "--no-header",
                        "-p", "no:cacheprovider", "--rootdir", str(ROOT), *argv])
    print(f"[check-device] {'all checks passed' if code == 0 else f'FAILED (pytest exit {int(code)})'}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
