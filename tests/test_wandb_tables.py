"""A sweep's table (and figure) goes to the sweep's W&B group as a wandb.Table, offline with no
account and no network (WANDB_MODE=offline)."""
from __future__ import annotations

import json
import sys
import types

import pytest
from omegaconf import OmegaConf

from experiments.loggers import log_table
from tests.helpers import run_cli


def sweep_config(results, logger="wandb"):
    return OmegaConf.create({"experiment": "demo_digits", "profile": {"name": "smoke"},
                             "run": {"results_dir": str(results)},
                             "logger": {"name": logger, "project": "balance-width", "entity": None,
                                        "mode": "auto"}})


def a_built_table(results):
    """The files the tables code writes: tables/<stem>.md|csv and figures/<stem>.png."""
    (results / "tables").mkdir(parents=True)
    (results / "figures").mkdir()
    md = results / "tables" / "demo_digits.smoke.md"
    md.write_text("| regime | test_acc |\n| --- | --- |\n| plain | 89.4 |\n")
    md.with_suffix(".csv").write_text("row,col,mean_final,std_final\nfcn,plain,89.4,\nfcn,nb_l1,90.1,0.3\n")
    from PIL import Image
    Image.new("RGB", (8, 8), "white").save(results / "figures" / "demo_digits.smoke.png")
    return md


class FakeRun:
    def __init__(self, **kwargs):
        self.init, self.logged, self.finished = kwargs, [], False
        self.settings, self.dir, self.url = types.SimpleNamespace(mode=kwargs["mode"]), "run-dir", "url"

    def log(self, row):
        self.logged.append(row)

    def finish(self):
        self.finished = True


def test_table_and_figure_go_to_the_sweep_group(results, monkeypatch):
    wandb = pytest.importorskip("wandb")
    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(FakeRun(**kw)) or runs[-1])
    monkeypatch.setenv("WANDB_MODE", "offline")
    log_table(sweep_config(results), a_built_table(results))
    (run,) = runs
    assert run.init["group"] == "demo_digits" and run.init["job_type"] == "table" and run.init["mode"] == "offline"
    (logged,) = run.logged
    assert isinstance(logged["table"], wandb.Table) and isinstance(logged["figure"], wandb.Image)
    assert logged["table"].columns == ["row", "col", "mean_final", "std_final"]
    assert [r[:2] for r in logged["table"].data] == [["fcn", "plain"], ["fcn", "nb_l1"]]
    assert run.finished


def test_csv_sweeps_and_missing_wandb_log_nothing(results, monkeypatch, capsys):
    md = a_built_table(results)
    monkeypatch.setitem(sys.modules, "wandb", None)   # `import wandb` fails
    log_table(sweep_config(results, logger="csv"), md)
    assert capsys.readouterr().err == ""
    log_table(sweep_config(results), md)               # the table files stay; one line says why
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[wandb] table demo_digits.smoke not logged" in err


def test_offline_table_run_is_written_for_wandb_sync(results, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    log_table(sweep_config(results), a_built_table(results))
    (table,) = (results / "wandb").glob("offline-run-*/files/media/table/*.table.json")
    assert json.loads(table.read_text())["columns"] == ["row", "col", "mean_final", "std_final"]
    assert list((results / "wandb").glob("offline-run-*/files/media/images/figure_*.png"))


@pytest.mark.slow
def test_a_wandb_sweep_logs_its_table(results):
    """Through the entry point: every run and then the table go to W&B, offline (run_cli sets
    WANDB_MODE=offline)."""
    pytest.importorskip("wandb")
    proc = run_cli("-m", "experiment=demo_digits", "profile=smoke", "seed=0", "logger=wandb",
                   f"run.results_dir={results}", "run.progress=false")
    assert "[wandb] table demo_digits.smoke" in proc.stdout and "logged to group demo_digits" in proc.stdout
    assert len(list((results / "wandb").glob("offline-run-*"))) == 5      # 4 runs + the table
    assert list((results / "wandb").glob("offline-run-*/files/media/table/*.table.json"))
