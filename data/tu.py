"""Where a TU Dortmund data set's files live, and the checks made before a run starts.

Layout (PyG's): <root>/TUDataset/<NAME>/raw/<NAME>_{A,graph_indicator,graph_labels}.txt, optional
<NAME>_node_labels.txt / _node_attributes.txt; Errica et al.'s folds in
<root>/TUDataset/splits/<NAME>_splits.json (the degree draw in splits/degree/). The raw files are
copied into data.cache (PyG writes processed/ next to raw/), so nothing is written under root.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from data.paths import resolve

PRESETS = {"nci1": "NCI1", "reddit_binary": "REDDIT-BINARY"}   # dataset.name -> TU folder
REQUIRED = ("A", "graph_indicator", "graph_labels")
OPTIONAL = ("node_labels", "node_attributes", "edge_labels", "graph_attributes")
NODE_FEATURES = ("auto", "labels", "constant", "degree")  # auto: labels when the set has them, else degree
N_FOLDS = 10                                              # generated folds (Errica's files have 10 too)
URL = "https://www.chrsmrrs.com/graphkerneldatasets"      # PyG's TU source (data.download=true)


class TUInputError(ValueError):
    """A TU set's files or folds are missing or do not fit the config (one line)."""


def tu_folder(cfg) -> str:
    """The TU folder name: dataset.tu_name, or the preset's (nci1 -> NCI1)."""
    if cfg.get("tu_name"):
        return str(cfg.tu_name)
    if cfg.name in PRESETS:
        return PRESETS[cfg.name]
    raise TUInputError(f"dataset.name={cfg.name}: set dataset.tu_name=<NAME> (the folder under "
                       f"<data.root>/TUDataset/, e.g. MUTAG); presets: {sorted(PRESETS)}")


def required_files(tu_name: str) -> list[str]:
    return [f"{tu_name}_{part}.txt" for part in REQUIRED]


def raw_source(tu_name: str, root: Path) -> Path:
    return Path(root) / "TUDataset" / tu_name / "raw"


def has_raw(directory: Path, tu_name: str) -> bool:
    return all((directory / f).is_file() for f in required_files(tu_name))


def missing_message(tu_name: str, root: Path) -> str:
    source = raw_source(tu_name, root)
    missing = [f for f in required_files(tu_name) if not (source / f).is_file()]
    what = (f"data.root={root} does not exist" if not Path(root).is_dir()
            else f"{', '.join(missing)} missing in {source}")
    return (f"TU set {tu_name}: {what}; put {', '.join(required_files(tu_name))} (and, if the set has "
            f"them, {tu_name}_node_labels.txt) in {source}/, or point data.root at a folder holding "
            f"TUDataset/{tu_name}/raw/")


def prepare_raw(tu_name: str, root: Path, cache: Path, allow_download: bool) -> Path:
    """Directory to hand to PyG's TUDataset: raw files copied into the cache (or downloaded there)."""
    source, work = raw_source(tu_name, root), Path(cache) / "TUDataset"
    if has_raw(source, tu_name):
        target = work / tu_name / "raw"
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(source.glob(f"{tu_name}_*.txt")):
            dest = target / f.name
            if not dest.exists() or dest.stat().st_size != f.stat().st_size:
                shutil.copyfile(f, dest)
        return work
    if has_raw(work / tu_name / "raw", tu_name) or allow_download:
        return work  # already in the cache, or PyG downloads it there
    raise TUInputError(missing_message(tu_name, root))


def splits_path(cfg, tu_name: str, root: Path) -> Path | None:
    """Errica's splits file for this config (the degree draw for degree features), or None."""
    splits = Path(root) / "TUDataset" / "splits"
    path = splits / f"{tu_name}_splits.json"
    if cfg.get("splits_file"):
        return resolve(cfg.splits_file)      # relative to the project root, as data.root is
    if cfg.node_features == "degree" and (splits / "degree" / path.name).is_file():
        return splits / "degree" / path.name
    return path if path.is_file() else None


def check_inputs(cfg, data_cfg) -> None:
    """Before a run writes anything: the TU name, the fold, the splits file and the raw files
    (without data.download, nothing is fetched; with it, the files are fetched into the cache)."""
    tu_name = tu_folder(cfg)
    root, cache = resolve(data_cfg.root), resolve(data_cfg.cache)
    path = splits_path(cfg, tu_name, root)
    if cfg.get("splits_file") and not path.is_file():
        raise TUInputError(f"dataset.splits_file={cfg.splits_file}: no such file ({path})")
    n_folds = len(json.loads(path.read_text())) if path is not None else N_FOLDS
    if not 0 <= cfg.fold < n_folds:
        raise TUInputError(f"dataset.fold={cfg.fold}: allowed 0..{n_folds - 1} "
                           f"({path or f'{N_FOLDS} generated folds'})")
    if has_raw(raw_source(tu_name, root), tu_name) or has_raw(cache / "TUDataset" / tu_name / "raw", tu_name):
        return
    if not data_cfg.download:
        raise TUInputError(missing_message(tu_name, root) + " (data.download=false: nothing was fetched)")
    fetch_raw(tu_name, root, cache)


def fetch_raw(tu_name: str, root: Path, cache: Path) -> None:
    """PyG's download of <NAME>.zip into the cache; any failure is one line naming the files."""
    from torch_geometric.data import download_url, extract_zip

    folder = cache / "TUDataset" / tu_name
    made = not folder.exists()
    try:
        path = download_url(f"{URL}/{tu_name}.zip", str(folder), log=False)
        extract_zip(path, str(folder), log=False)
    except Exception as err:  # offline, unknown name: the files must be put there by hand
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise TUInputError(f"{missing_message(tu_name, root)} (download of {tu_name} failed: "
                           f"{type(err).__name__})") from err
    unpacked = folder / tu_name
    if unpacked.is_dir():
        shutil.rmtree(folder / "raw", ignore_errors=True)
        unpacked.rename(folder / "raw")
    if not has_raw(folder / "raw", tu_name):
        raise TUInputError(f"{missing_message(tu_name, root)} (the download of {tu_name} lacks them)")
