"""What a sweep's `trainable:` may name: how its trial config is validated, its Ray Tune function,
and the metrics it reports. Nothing here imports Ray."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from trainables import ConfigError

# Datasets that are read from data.root; the others are generated or shipped with a package.
DATASETS_WITH_ROOT = ("cifar10", "cifar100", "stl10", "imagefolder")


@dataclass(frozen=True)
class TrainableKind:
    # Full trial config (defaults filled in, paths absolute) or ConfigError.
    trial_config: Callable[[dict], dict]
    # Imported only when a Tuner is built: it pulls in Ray.
    load_function: Callable[[], Callable[[dict], None]]
    metrics: tuple[str, ...]
    # Reported at the last epoch only: no use to an early-stopping scheduler.
    final_only_metrics: tuple[str, ...] = ()
    # Files of a trial's last checkpoint that MLflow keeps as the trial's artifacts.
    checkpoint_artifacts: tuple[str, ...] = ()


def ssl_trial_config(config: dict) -> dict:
    from trainables.config import trial_config
    from trainables.data import DATASETS
    from trainables.device import resolve_placement
    from trainables.methods import METHODS

    cfg = trial_config(config)
    method = METHODS.get(cfg.method, key="method")
    method.parse_kwargs(OmegaConf.to_container(cfg.method_kwargs))
    resolve_placement(cfg.device, cfg.precision, cfg.model.backbone)
    DATASETS.get(cfg.data.name, key="data.name")
    if cfg.data.root:
        # Trials run in Ray's working directories: a relative root would point elsewhere there.
        root = Path(cfg.data.root).expanduser().resolve()
        if not root.is_dir() and not cfg.data.download:
            raise ConfigError(f"data.root: {root} does not exist; point it at the folder holding {cfg.data.name}")
        cfg.data.root = str(root)
    elif cfg.data.name in DATASETS_WITH_ROOT:
        raise ConfigError(f"data.root: {cfg.data.name} needs data.root, the local folder that holds it")
    return OmegaConf.to_container(cfg)


def ssl_function() -> Callable[[dict], None]:
    from trainables.tune_entry import ssl_trial

    return ssl_trial


def synthetic_trial_config(config: dict) -> dict:
    from orchestrator.synthetic import synthetic_config

    return synthetic_config(config)


def synthetic_function() -> Callable[[dict], None]:
    from orchestrator.synthetic import synthetic_trial

    return synthetic_trial


TRAINABLES: dict[str, TrainableKind] = {
    "ssl": TrainableKind(
        ssl_trial_config, ssl_function,
        metrics=("knn_acc", "online_acc", "fewshot_acc", "loss", "rank_repr", "rank_emb", "emb_std", "n_collapsed",
                 "l_c", "l_nc", "garrido_residual", "linear_acc",
                 # Only where they apply: theory backbones, sparse_coding's dictionary, linear predictors.
                 "weight_norm", "layer_alignment", "recovery_max", "recovery_median", "recovery_min",
                 "predictor_asymmetry", "predictor_alignment"),
        final_only_metrics=("linear_acc",),
        checkpoint_artifacts=("spectra.json",),
    ),
    "synthetic": TrainableKind(synthetic_trial_config, synthetic_function, metrics=("knn_acc", "loss"),
                               checkpoint_artifacts=("synthetic_state.json",)),
}
