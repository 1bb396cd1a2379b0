"""What the orchestrator may rely on about a trial, so that it copies none of it: the method
families and names, which datasets read `data.root`, and per kind of trial (TRIAL_KINDS) how its
config is validated, its Ray Tune entry point, the metrics it reports, its artifact files and
what its training steps process (for the cost of a sweep).
Nothing here imports Ray: the entry point is a name, imported only where a Tuner is built."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Callable, Optional

from omegaconf import DictConfig, OmegaConf

from trainables.config import trial_config
from trainables.data import DATASETS, check_data, dataset_options, load_data
from trainables.device import resolve_placement
from trainables.diagnostics import SPECTRA_FILE
from trainables.errors import ConfigError
from trainables.methods import FAMILIES, METHODS
from trainables.models import BACKBONES, forward_flops, parse_layer_spec
from trainables.provenance import PROVENANCE_KEY
from trainables.stand_in import STATE_FILE, validate_stand_in

# The orchestrator's part (SPECTRA_FILE: the ssl artifact that holds each epoch's spectra, for the
# report); ssl_trial_config and loss_term_metric are trainables.train's.
__all__ = ["FAMILIES", "PROVENANCE_KEY", "REPORTED_FILE", "SPECTRA_FILE", "TRIAL_KINDS", "TrainingLoad", "TrialKind",
           "datasets_needing_root", "method_family", "method_names"]

# In each trial checkpoint: every result the trial reported up to it, a JSON list, the checkpoint's
# own last (trainables.tune_entry writes it; a resume reads the epoch Tune knew from it).
REPORTED_FILE = "reported_metrics.json"


def method_names() -> list[str]:
    return METHODS.names()


def method_family(name: str) -> str:
    """One of FAMILIES; ConfigError ("method: unknown value ... (did you mean ...)") for an unknown name."""
    return METHODS.get(name, key="method").family


def datasets_needing_root() -> list[str]:
    """The registered datasets that read the local folder `data.root`."""
    return DATASETS.needing_root()


@dataclass(frozen=True)
class TrainingLoad:
    """What a trial's training steps process, known before it runs: for estimates of its cost."""
    backbone: str
    width: int
    projector: str
    # One sample's shape as the encoder sees it.
    input_shape: tuple[int, ...]
    batch_size: int
    epochs: int
    # Samples trained on per epoch (whole batches).
    samples_per_epoch: int
    # FLOPs of one view's forward pass through backbone and projector.
    forward_flops: float


@dataclass(frozen=True)
class TrialKind:
    # The full trial config (defaults filled in, paths absolute and checked), or ConfigError with a
    # one-line "dotted.key: message".
    validate: Callable[[dict], dict]
    # "module:function", called by Tune with {"trial": <trial config>, "sweep": {...}}; importing it
    # imports Ray.
    entry_point: str
    # Every metric a trial may report each epoch (some only where they apply).
    epoch_metrics: tuple[str, ...]
    # Reported at the last epoch only: no use to an early-stopping scheduler.
    final_metrics: tuple[str, ...]
    # Files of a trial's checkpoint directory that are the trial's artifacts.
    artifacts: tuple[str, ...]
    # What a trial of this config trains on (a validated config; ConfigError where that is unknown);
    # None: a kind whose cost is not estimated.
    training_load: Optional[Callable[[dict], TrainingLoad]] = None
    # Its config has `workers` and its entry point runs `workers` > 1 as a data-parallel job, each
    # worker asking for `worker_cpu` CPUs and `worker_gpu` GPUs (keyword arguments of the entry point).
    data_parallel: bool = False


# --- ssl: one SSL trial, trainables.train --------------------------------------------------------
def ssl_trial_config(config: dict | DictConfig) -> DictConfig:
    """Every check an SSL trial makes before it loads its data: the schema and ranges, the method
    and its hyperparameters, backbone and projector, device, the dataset and its options, and
    `data.root` made absolute (a trial runs in a working directory of Ray's). `dualsweep train`
    and a sweep's validation check exactly this."""
    cfg = trial_config(config)
    METHODS.get(cfg.method, key="method").parse_kwargs(OmegaConf.to_container(cfg.method_kwargs))
    BACKBONES.get(cfg.model.backbone, key="model.backbone")
    parse_layer_spec(cfg.model.projector, "model.projector")
    resolve_placement(cfg.device, cfg.precision, cfg.model.backbone)
    check_data(cfg.data, cfg.batch_size)
    return cfg


def validate_ssl(config: dict) -> dict:
    return OmegaConf.to_container(ssl_trial_config(config))


def ssl_training_load(config: dict) -> TrainingLoad:
    """The training load of a validated SSL trial config. The training split's size and the input
    shape come from the dataset's options where it states them, otherwise from loading the data
    once (a folder is listed, not decoded). ConfigError where the data cannot be read here."""
    cfg = ssl_trial_config(config)
    train_size, input_shape = data_dimensions(json.dumps(OmegaConf.to_container(cfg.data), sort_keys=True))
    if cfg.batch_size > train_size:
        raise ConfigError(f"batch_size: {cfg.batch_size} is larger than the {train_size} training samples of "
                          f"{cfg.data.name}")
    m = cfg.model
    return TrainingLoad(m.backbone, m.width, m.projector, input_shape, cfg.batch_size, cfg.epochs,
                        train_size - train_size % cfg.batch_size,
                        forward_flops(m.backbone, input_shape, m.width, m.projector, m.depth))


@functools.lru_cache(maxsize=64)
def data_dimensions(data_json: str) -> tuple[int, tuple[int, ...]]:
    """(training samples, input shape) of the trial's `data` section (as JSON: a cache key)."""
    data = trial_config({"data": json.loads(data_json)}).data
    options = dataset_options(data)
    size, shape = options.train_size(data), options.input_shape(data)
    if size is None or shape is None:
        bundle = load_data(data)
        size, shape = len(bundle.train), bundle.input_shape
    return size, tuple(shape)


def loss_term_metric(term: str) -> str:
    """The metric under which a trial reports its loss's term `term` each epoch."""
    return f"loss_{term}"


SSL_EPOCH_METRICS = (
    "epoch", "loss",
    # The terms of every method's loss; a trial reports its own method's.
    *sorted({loss_term_metric(term) for _, method in METHODS.items() for term in method.loss_terms}),
    "knn_acc", "online_acc", "fewshot_acc", "rank_repr", "rank_emb", "emb_std", "n_collapsed",
    "l_c", "l_nc", "garrido_residual", "samples_per_s", "lr", "knn_acc_random_init",
    # Only where they apply: theory backbones, sparse_coding's dictionary, linear predictors.
    "weight_norm", "layer_alignment", "recovery_max", "recovery_median", "recovery_min",
    "predictor_asymmetry", "predictor_alignment",
    # Trials streaming their training split from disk (image folders): the share of the epoch's
    # training time spent waiting for input, and this process's images per second.
    "data_wait_fraction", "images_per_s_per_device",
    # 1.0 in the epoch whose loss or features stopped being finite; the trial ends there.
    "diverged",
)

TRIAL_KINDS: dict[str, TrialKind] = {
    "ssl": TrialKind(
        validate=validate_ssl,
        entry_point="trainables.tune_entry:ssl_trial",
        epoch_metrics=SSL_EPOCH_METRICS,
        final_metrics=("linear_acc",),
        artifacts=(SPECTRA_FILE,),
        training_load=ssl_training_load,
        data_parallel=True,
    ),
    # The analytic stand-in of trainables.stand_in, for orchestrator tests and benchmarks.
    "stand_in": TrialKind(
        validate=validate_stand_in,
        entry_point="trainables.tune_entry:stand_in_trial",
        epoch_metrics=("epoch", "knn_acc", "loss"),
        final_metrics=(),
        artifacts=(STATE_FILE,),
    ),
}
