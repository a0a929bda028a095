"""Checks made before a run writes anything: the data set's raw files are where its loader will
look (fetched first when data.download=true), and TU folds exist. Each failure is one line naming
the missing files and the folder they belong in.

Embedded data sets (synthetic, digits) need no files.
"""
from __future__ import annotations

from pathlib import Path

from data.paths import resolve


def one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def check_idx(cfg, root: Path, download: bool) -> None:
    from data.vision import IDX_FILES, IDX_FOLDERS, _download_idx, _find_idx

    folder = root / IDX_FOLDERS[cfg.name] / "raw"
    stems = [s for pair in IDX_FILES.values() for s in pair]
    if any(_find_idx(folder, s) is None for s in stems) and download:
        try:
            _download_idx(cfg.name, root)
        except Exception:  # offline: the message below names the files
            pass
    missing = [s for s in stems if _find_idx(folder, s) is None]
    if missing:
        raise FileNotFoundError(f"{cfg.name}: {', '.join(missing)} (raw or .gz) missing in {folder}; put "
                                f"them there, or point data.root at a folder holding "
                                f"{IDX_FOLDERS[cfg.name]}/raw/" + ("" if download else ", or set data.download=true"))


def check_cifar(cfg, root: Path, download: bool) -> None:
    from data.cifar import LAYOUT, _download

    folder, train_files, test_file = LAYOUT[cfg.name][:3]
    missing = lambda: [f for f in train_files + [test_file] if not (root / folder / f).is_file()]
    if missing() and download:
        try:
            _download(cfg.name, root)
        except Exception:
            pass
    if missing():
        raise FileNotFoundError(f"{cfg.name}: {', '.join(missing())} missing in {root / folder}; put them "
                                f"there, or point data.root at a folder holding {folder}/"
                                + ("" if download else ", or set data.download=true"))


def check_text(cfg, root: Path, download: bool) -> None:
    """IMDB and Multi30k: their loaders' own file search (it downloads when allowed)."""
    if cfg.name == "imdb":
        from data.imdb import find_source as find
    else:
        from data.multi30k import find_files as find
    try:
        find(root, download)
    except OSError as err:  # a failed download, or the loader's missing-files message
        raise FileNotFoundError(one_line(err)) from err


def check_inputs(dataset_cfg, data_cfg) -> None:
    """Raise (one-line message) when the run could not read its data."""
    from data import DATASETS

    module = DATASETS[dataset_cfg.name][0]
    if module == "data.graphs":
        from data.tu import check_inputs as check_tu

        return check_tu(dataset_cfg, data_cfg)
    checks = {"data.vision": check_idx if dataset_cfg.name != "digits" else None,
              "data.cifar": check_cifar, "data.imdb": check_text, "data.multi30k": check_text}
    check = checks.get(module)
    if check is not None:
        check(dataset_cfg, resolve(data_cfg.root), bool(data_cfg.download))
