import argparse
import sys

from data.paths import LOCAL, PUBLISHED
from experiments.report import __doc__ as DOC, build

parser = argparse.ArgumentParser(prog="python -m experiments.report", description=DOC.splitlines()[0])
where = parser.add_mutually_exclusive_group()
where.add_argument("--local", action="store_true", help=f"your runs ({LOCAL}) instead of {PUBLISHED}")
where.add_argument("--results-dir", default=None, help="any records folder")
parser.add_argument("--out", default=None, help="the HTML file (default results/report.html; "
                    "results/local/report.html with --local)")
parser.add_argument("--no-redraw", action="store_true", help="the committed figures as they are")
args = parser.parse_args()
source = args.results_dir or (LOCAL if args.local else PUBLISHED)
out = args.out or ("results/local/report.html" if args.local else "results/report.html")
try:
    path = build(source, out, redraw=not args.no_redraw)
except FileNotFoundError as err:
    print(f"[report] {err}", file=sys.stderr)
    raise SystemExit(2) from None
print(f"[report] {path} ({path.stat().st_size // 1024} KiB): open it in any browser, offline")
