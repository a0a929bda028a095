"""Structured-config schemas: every section of a run's config is typed and checked before training.

`dataset:` and `model:` have one schema per registered name (data/__init__.py, models/__init__.py).
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "multistep", "plateau")
PENALTIES = ("none", "l1", "l2")
ORDERS = ("forward", "reverse", "random")
PROFILES = ("paper", "quick", "smoke")
LOGGERS = ("csv", "wandb")
ON_LOCKED = ("skip", "wait")
DTYPES = ("float32", "float64")
STACK_OVER = ("regime.coeff", "optimizer.lr")   # values stacked members may differ in, besides seed


class ConfigError(ValueError):
    """A bad config value: the runner prints it as one line (no traceback) and exits with 2."""


@dataclass
class SchedulerConfig:
    name: str = "none"
    step_size: int = 1            # step: decay every step_size epochs
    gamma: float = 0.1            # step / multistep factor
    milestones: list[int] = field(default_factory=list)
    factor: float = 0.9           # plateau
    patience: int = 10            # plateau


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass
class AWNNRegimeConfig:
    enabled: bool = False
    sigma_theta: float = 1.0          # weight prior std (AWNN eq. 13)
    nu_prior_mu: Optional[float] = None    # Gaussian prior on ν; None = uninformative
    nu_prior_sigma: Optional[float] = None
    n_train: Optional[int] = None     # N in the ELBO; None = training-set size
    compress_start: Optional[int] = None   # online compression (AWNN §5.3): epoch to switch the ν prior on
    compress_end: Optional[int] = None     # epoch by which σν reaches compress_factor × its start
    compress_mu: float = 0.05
    compress_sigma: float = 1.0
    compress_factor: float = 0.1
    # A layer wider than this ends the run as diverged: with no prior on ν nothing bounds the
    # width, and the authors' renormalised importance lets ν collapse (Spiral seed 2: ν 0.01 ->
    # 2e-5, 110k neurons by epoch 180). The papers' widest layers are ~2k neurons.
    runaway_width: Optional[int] = 20000


@dataclass
class RegimeConfig:
    name: str = "plain"
    penalty: str = "none"             # none | l1 | l2 (added to the loss)
    coeff: float = 1e-5
    fb_start: bool = False            # full balance before training (NB Fig. 1)
    balance_every: int = 0            # partial balancing every k epochs (0 = off; NB Table 1)
    balance_p: int = 2                # the Lp cost the balancing minimises
    balance_order: str = "forward"
    include_bias: bool = True         # False = the authors' (not function-preserving) behaviour
    fb_tol: float = 1e-6
    fb_max_sweeps: int = 100000
    balance_full: bool = False        # balance_every epochs: a full balance instead of one sweep
    record_ratios: bool = False       # per-neuron ||in||/||out|| every epoch (NB toy figure)
    allow_non_homogeneous: bool = False   # LSTM: the authors' NOT function-preserving operation
    awnn: AWNNRegimeConfig = field(default_factory=AWNNRegimeConfig)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 4096
    grad_clip: float = 0.0            # 0 = off
    patience: int = 0                 # early stopping on the validation metric (0 = off)
    eval_train: bool = False          # also evaluate on the full training split each epoch
    dtype: str = "float32"            # float64: model and tensor data in double (exactness tests)
    bn_recalibrate: bool = False      # recompute BatchNorm running stats on training batches before each evaluation
    bn_recalibrate_batches: int = 100  # at most this many training batches for that (0 = all)
    eval_every: int = 1               # evaluate every k epochs (and always at the last); patience counts evaluations


@dataclass
class DataConfig:
    root: str = "datasets"            # raw files; relative paths are relative to the project root
    cache: str = "results/cache"      # processed tensors, tokenizers, fold files
    download: bool = True


@dataclass
class RunControl:
    results_dir: str = "results/local"   # your runs; the committed ones are in results/published
    device: str = "auto"              # auto | cpu | cuda | cuda:<k>
    jobs_per_gpu: int = 1             # auto: jobs sharing one GPU (small nets leave it idle)
    checkpoint_interval_s: float = 60.0   # checkpoint at most this often (and always at the end)
    progress: bool = True
    force: bool = False               # rerun even if a finished record exists
    threads: int = 0                  # torch CPU threads (0 = default; 1 for models under 50k params)
    on_locked: str = "skip"           # another job trains this run: skip it, or wait for it
    stack: bool = False               # multirun: train jobs differing only by seed as one stack
    stack_over: list[str] = field(default_factory=list)  # ...and by these value keys (e.g. optimizer.lr)
    stack_max: int = 64               # members per stacked process at most
    stack_file: Optional[str] = None  # set by the sweeper: the members of this stacked job


@dataclass
class ProfileConfig:
    name: str = "quick"


@dataclass
class LoggerConfig:
    name: str = "csv"
    project: str = "balance-width"
    entity: Optional[str] = None
    mode: str = "auto"                # auto: online if W&B has credentials, else offline (said)


@dataclass
class Config:
    experiment: str = "adhoc"
    seed: int = 0
    dataset: Any = None
    model: Any = None
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunControl = field(default_factory=RunControl)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    table: Any = None                 # table spec of an experiment (experiments/tables/)


# The schema is the first entry of conf/config.yaml's defaults list: every key exists (so any
# can be overridden) and every value is type-checked while Hydra composes.
ConfigStore.instance().store(name="schema", node=Config)


@contextlib.contextmanager
def quiet_imports():
    """PyG's import (model=gin) warns that torch.jit.script is deprecated: a library's note, not
    the user's; it would break the one-line error contract."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        yield


def _check(value, allowed, key):
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {list(allowed)}")


def _one_line(err: OmegaConfBaseException) -> str:
    """OmegaConf's multi-line message as one line naming the key."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    key = getattr(err, "full_key", None)
    return f"{key}: {first}" if key and key not in first else first


# Size fields that must be positive wherever a dataset or model schema has them.
POSITIVE_SIZES = ("widths", "num_hidden", "hidden", "num_layers", "hidden_size",
                  "d_model", "nhead", "dim_feedforward", "num_encoder_layers", "num_decoder_layers",
                  "embed_dim", "max_width")


@functools.lru_cache(maxsize=4)
def _config_node(config_cls) -> DictConfig:
    """A config class as a structured config, built once (merge copies it; never mutated)."""
    return OmegaConf.structured(config_cls)


def validate(cfg: DictConfig) -> DictConfig:
    """Type-check the whole config and every choice against what exists. Returns a typed copy."""
    from data import validate_dataset_config
    from models import validate_model_config

    try:
        # Resolve interpolations (${budget:...}) against the whole config before sections part.
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        if cfg.get("dataset") is None or cfg.get("model") is None:
            raise ConfigError("config needs a dataset and a model (e.g. dataset=digits model=fcn)")
        body = {k: v for k, v in cfg.items() if k not in ("dataset", "model", "table", "hydra")}
        typed = OmegaConf.merge(_config_node(Config), body)
        with quiet_imports():
            typed.dataset = validate_dataset_config(cfg.dataset)
            typed.model = validate_model_config(cfg.model)
        typed.table = cfg.get("table")
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from err
    except ValueError as err:  # the registries' unknown names
        raise ConfigError(str(err)) from err
    _check(typed.optimizer.name, OPTIMIZERS, "optimizer.name")
    _check(typed.optimizer.scheduler.name, SCHEDULERS, "optimizer.scheduler.name")
    _check(typed.regime.penalty, PENALTIES, "regime.penalty")
    _check(typed.regime.balance_order, ORDERS, "regime.balance_order")
    _check(typed.regime.balance_p, (1, 2, 3, 4), "regime.balance_p")
    _check(typed.profile.name, PROFILES, "profile.name")
    _check(typed.logger.name, LOGGERS, "logger.name")
    _check(typed.logger.mode, ("auto", "online", "offline", "disabled"), "logger.mode")
    _check(typed.run.on_locked, ON_LOCKED, "run.on_locked")
    _check(typed.train.dtype, DTYPES, "train.dtype")
    for key in typed.run.stack_over:
        _check(key, STACK_OVER, "run.stack_over entry")
    for key, value in (("train.epochs", typed.train.epochs), ("train.batch_size", typed.train.batch_size),
                       ("optimizer.lr", typed.optimizer.lr), ("run.stack_max", typed.run.stack_max),
                       ("run.jobs_per_gpu", typed.run.jobs_per_gpu), ("train.eval_every", typed.train.eval_every)):
        if value <= 0:
            raise ConfigError(f"{key}={value} must be > 0")
    if typed.regime.awnn.runaway_width is not None and typed.regime.awnn.runaway_width <= 0:
        raise ConfigError(f"regime.awnn.runaway_width={typed.regime.awnn.runaway_width} must be > 0 "
                          f"(or null: no limit)")
    if typed.regime.balance_every < 0:
        raise ConfigError(f"regime.balance_every={typed.regime.balance_every} must be >= 0")
    if not 0 < typed.dataset.get("fraction", 1.0) <= 1:
        raise ConfigError(f"dataset.fraction={typed.dataset.fraction} must be in (0, 1]")
    for section in ("dataset", "model"):
        for name in POSITIVE_SIZES:
            value = typed[section].get(name)
            values = list(value) if OmegaConf.is_list(value) else [value]
            if any(v is not None and v < 1 for v in values):
                raise ConfigError(f"{section}.{name}={OmegaConf.to_container(value) if OmegaConf.is_list(value) else value}"
                                  f": every size must be >= 1")
    check_values(typed)
    if single_run():
        check_data_inputs(typed)
    return typed


def check_values(typed: DictConfig) -> None:
    """Values that type-check but cannot run: each is one ConfigError (issue 20's list)."""
    from models.activations import BILU
    from models.awnn.importance import IMPORTANCES

    clip = typed.train.grad_clip
    if not (math.isfinite(clip) and clip >= 0):
        raise ConfigError(f"train.grad_clip={clip} must be >= 0 (0 = off)")
    coeff = typed.regime.coeff
    if not (math.isfinite(coeff) and coeff >= 0):
        raise ConfigError(f"regime.coeff={coeff} must be a finite number >= 0")
    importance = typed.model.get("importance")
    if importance is not None:
        _check(importance, IMPORTANCES, "model.importance")
    activation = typed.model.get("activation")
    balancing = typed.regime.fb_start or typed.regime.balance_every > 0
    if balancing and activation is not None and activation not in BILU and not typed.regime.allow_non_homogeneous:
        raise ConfigError(f"model.activation={activation} is not positively homogeneous, so balancing "
                          f"(regime={typed.regime.name}) would change the network function; allowed: "
                          f"{list(BILU)} (regime.allow_non_homogeneous=true: the authors' variant)")
    if "tu_name" in typed.dataset:
        check_tu(typed.dataset)


def check_tu(dataset: DictConfig) -> None:
    """A TU set needs a name and an existing fold: Errica's files and the generated folds have 10
    (a custom dataset.splits_file is counted when the run starts, check_data_inputs)."""
    from data.tu import N_FOLDS, NODE_FEATURES, TUInputError, tu_folder

    try:
        tu_folder(dataset)
    except TUInputError as err:
        raise ConfigError(str(err)) from err
    _check(dataset.node_features, NODE_FEATURES, "dataset.node_features")
    if not dataset.get("splits_file") and not 0 <= dataset.fold < N_FOLDS:
        raise ConfigError(f"dataset.fold={dataset.fold}: allowed 0..{N_FOLDS - 1}")


def single_run() -> bool:
    """`python -m experiments.run ...` without -m: the data check below runs before the run's
    directory exists. Sweeps (planning, jobs) and API callers skip it: a sweep records a job
    whose data is missing as failed and goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def check_data_inputs(typed: DictConfig) -> None:
    """The data set's files are where its loader looks (data/inputs.py), as one ConfigError."""
    from data.inputs import check_inputs, one_line

    try:
        with quiet_imports():
            check_inputs(typed.dataset, typed.data)
    except (ValueError, OSError) as err:
        raise ConfigError(one_line(err)) from err
