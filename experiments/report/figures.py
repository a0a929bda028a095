"""The report's figures, inline: every committed figure of the records' folder, with the curve
figures redrawn from the records by experiments/tables/figures.py (y-range zoomed to where the
curves differ) when the records are there; the committed PNG otherwise."""
from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

from experiments import plan


def data_uri(path: Path) -> str:
    kind = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def redraw_curves(root: Path, out: Path) -> dict[str, Path]:
    """{stem: png} for every manifest under `root` (the stem its table is written under)."""
    from experiments.tables import build_cells, load_jobs, output_stem
    from experiments.tables.figures import plot_curves

    drawn = {}
    for manifest_path in sorted(root.glob("runs/*/manifests/*.json")):
        try:
            manifest = plan.read_manifest(manifest_path)
            spec = manifest.get("table")
            if not spec:
                continue
            experiment = manifest["experiment"]
            overrides = [o for o in manifest["overrides"] if not o.startswith("run.results_dir=")]
            stem = output_stem(experiment, manifest.get("profile", "quick"), overrides)
            jobs = load_jobs(manifest, str(root))
            if not any(j.history is not None for j in jobs):
                continue
            spec = {**spec, "experiment": experiment}
            plot_curves(spec, build_cells(spec, jobs), out / f"{stem}.png")
            drawn[stem] = out / f"{stem}.png"
        except Exception as err:  # one table's figure must not stop the report
            print(f"[report] {manifest_path}: figure not redrawn ({type(err).__name__}: {err})",
                  file=sys.stderr)
    return drawn


def collect(root: Path, redraw: bool = True) -> list[dict]:
    """[{name, uri, redrawn}] sorted by name."""
    files = {p.stem: p for p in sorted((root / "figures").glob("*.png"))}
    files.update({p.stem: p for p in sorted((root / "figures").glob("*.svg"))})
    redrawn = set()
    with tempfile.TemporaryDirectory(prefix="report-figures-") as tmp:
        if redraw:
            drawn = redraw_curves(root, Path(tmp))
            files.update(drawn)
            redrawn = set(drawn)
        return [{"name": name, "uri": data_uri(path), "redrawn": name in redrawn}
                for name, path in sorted(files.items())]
