"""The GPU queue: paper-budget cells that do not fit a CPU, run in priority order, in chunks.

    python scripts/gpu_queue.py --list data.root=/data          # what is left, with GPU-minutes
    python scripts/gpu_queue.py data.root=/data                 # run the next chunk (make gpu-queue)
    python scripts/gpu_queue.py --item nb_fashion --chunk-min 9 data.root=/data

Items and their estimated GPU-minutes are in conf/gpu_queue.yaml. One call runs the first item
with unfinished runs for at most --chunk-min minutes (a lent GPU gives minutes, not hours), then
stops it (SIGTERM, then SIGKILL): every run resumes from its last checkpoint on the next call, so
calling this again and again walks down the queue. Time spent per item is kept in
<results_dir>/gpu_queue.json. Records go to run.results_dir (default results/local): publish
them with `make publish EXP=... PROFILE=paper` once an item is done.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.paths import LOCAL, resolve  # noqa: E402
from experiments.plan import override_value  # noqa: E402

PLANNED = re.compile(r"grid sweeper: (\d+) jobs \((\d+) not finished\)")


def _command(item: dict, profile: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "experiments.run", "-m", f"profile={profile}", *item["args"], *extra]


def count_unfinished(item: dict, profile: str, extra: list[str]) -> tuple[int, int]:
    """(jobs, not finished) from the sweeper's own plan (a dry run launches nothing)."""
    proc = subprocess.run([*_command(item, profile, extra), "hydra.sweeper.dry_run=true"], cwd=ROOT,
                          capture_output=True, text=True)
    found = PLANNED.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{item['name']}: planning failed: {tail[0]}")
    return int(found.group(1)), int(found.group(2))


def missing_data(item: dict, data_root: str) -> list[str]:
    return [need for need in item.get("needs", []) if not (resolve(data_root) / need).exists()]


def run_chunk(item: dict, profile: str, extra: list[str], seconds: float) -> str:
    """Run the item's sweep for at most `seconds`; 'done', 'stopped' (time up) or 'failed'."""
    command = [*_command(item, profile, extra), "run.checkpoint_interval_s=30"]
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        return "done" if proc.wait(timeout=seconds) == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return "stopped"


def _ledger(results_dir: str) -> tuple[Path, dict]:
    path = resolve(results_dir) / "gpu_queue.json"
    return path, (json.loads(path.read_text()) if path.exists() else {})


def _list(items: list[dict], profile: str, extra: list[str], data_root: str, spent: dict) -> None:
    print(f"{'item':22} {'est GPU-min':>11} {'spent min':>9} {'runs left':>10}  status")
    for item in items:
        lacking = missing_data(item, data_root)
        if lacking:
            left, status = "-", f"no data: {', '.join(lacking)} under {data_root}"
        else:
            jobs, unfinished = count_unfinished(item, profile, extra)
            left, status = f"{unfinished}/{jobs}", "done" if unfinished == 0 else "to run"
        used = spent.get(item["name"], {}).get("seconds", 0) / 60
        print(f"{item['name']:22} {item['est_gpu_min']:>11} {used:>9.1f} {left:>10}  {status}")


def _next(items: list[dict], profile: str, extra: list[str], data_root: str) -> dict | None:
    for item in items:
        lacking = missing_data(item, data_root)
        if lacking:
            print(f"[gpu-queue] skip {item['name']}: no {', '.join(lacking)} under {data_root}")
            continue
        jobs, unfinished = count_unfinished(item, profile, extra)
        if unfinished:
            print(f"[gpu-queue] next: {item['name']} ({unfinished}/{jobs} runs left, "
                  f"~{item['est_gpu_min']} GPU-min in all): {item['why']}")
            return item
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="show the queue and stop")
    parser.add_argument("--item", help="run this item instead of the first unfinished one")
    parser.add_argument("--chunk-min", type=float, default=8.5, help="minutes of one chunk (default 8.5)")
    parser.add_argument("--queue", default=str(ROOT / "conf" / "gpu_queue.yaml"))
    parser.add_argument("--profile", default="paper")
    args, extra = parser.parse_known_args(argv)
    items = yaml.safe_load(Path(args.queue).read_text())["items"]
    names = [i["name"] for i in items]
    if args.item and args.item not in names:
        print(f"[gpu-queue] --item {args.item!r}; allowed: {names}", file=sys.stderr)
        return 2
    data_root = override_value(extra, "data.root", os.environ.get("BW_DATA_ROOT", "datasets"))
    path, spent = _ledger(override_value(extra, "run.results_dir", LOCAL))
    if args.list:
        _list(items, args.profile, extra, data_root, spent)
        return 0
    item = next(i for i in items if i["name"] == args.item) if args.item else _next(items, args.profile, extra, data_root)
    if item is None:
        print("[gpu-queue] every item with data is done")
        return 0
    start = time.monotonic()
    status = run_chunk(item, args.profile, extra, args.chunk_min * 60)
    entry = spent.setdefault(item["name"], {"seconds": 0.0, "chunks": 0})
    entry.update(seconds=entry["seconds"] + time.monotonic() - start, chunks=entry["chunks"] + 1, last=status)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spent, indent=1, sort_keys=True))
    print(f"[gpu-queue] {item['name']}: {status} after {(time.monotonic() - start) / 60:.1f} min "
          f"({entry['seconds'] / 60:.1f} of ~{item['est_gpu_min']} GPU-min spent)")
    return 1 if status == "failed" else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
