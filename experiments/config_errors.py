"""Bad input: one line on stderr, exit code 2, no traceback (HYDRA_FULL_ERROR=1 keeps it)."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from data.paths import PROJECT_ROOT
from experiments.schema import ConfigError


def fail_config(err: Exception) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    _remove_run_log_dir()
    print(f"config error: {err}", file=sys.stderr)
    sys.exit(2)


def _remove_run_log_dir() -> None:
    """A rejected single run leaves nothing behind: Hydra made its log folder (.hydra/, run.log)
    before our checks ran; a sweep's folder is kept (its other jobs log there)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
        if hydra.mode == RunMode.RUN and hydra.runtime.output_dir:
            logging.shutdown()
            run_dir = Path(hydra.runtime.output_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
            for empty in (run_dir.parent, run_dir.parent.parent):   # hydra/<experiment>/, hydra/
                if empty.is_dir() and not any(empty.iterdir()):
                    empty.rmdir()
    except ValueError:   # no Hydra config: called before Hydra set one up
        return


def check_group_options(argv: list[str]) -> None:
    """`dataset=imagenet`: name the choices in one line before Hydra composes anything."""
    conf = PROJECT_ROOT / "conf"
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if arg.startswith("-") or not sep or key.startswith("hydra") or not (conf / key).is_dir():
            continue
        if any(c in value for c in "()[]{}$") or value in ("null", ""):
            continue  # sweep functions, interpolations: Hydra's own checks apply
        allowed = sorted(p.stem for p in (conf / key).glob("*.yaml"))
        bad = [v for v in value.split(",") if v not in allowed]
        if bad:
            fail_config(ConfigError(f"{key}={','.join(bad)} is not a config option; allowed: {allowed}"))
