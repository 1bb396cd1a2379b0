"""The trial config: an OmegaConf structured config with defaults that validates a plain dict."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from trainables.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "digits"
    # Local folder holding the dataset (cifar10, cifar100, stl10, imagefolder).
    root: Optional[str] = None
    download: bool = False
    # The held-out split is fixed by this seed, not the trial's, so seeds share one test set.
    split_seed: int = 0
    test_fraction: float = 0.2
    # imagefolder only: images are decoded and resized to this side before augmentation.
    image_size: int = 64
    loader_workers: int = 2
    # Augmentation recipe: simclr | byol | none (two copies of the image).
    augment: str = "simclr"


@dataclass
class ModelConfig:
    backbone: str = "mlp"
    # mlp: hidden width; convnet: channels of its last block. resnet18 ignores it.
    width: int = 512
    # Garrido's notation: "2048-2048-256" = Linear-BN-ReLU between layers, plain last; "none".
    projector: str = "1024-1024-128"


@dataclass
class OptimConfig:
    name: str = "sgd"
    # Learning rate per 256 samples when scale_lr is true (lr * batch_size / 256).
    lr: float = 0.5
    scale_lr: bool = True
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.0
    lars_eta: float = 0.02
    # Biases and norm weights get no weight decay and no LARS adaptation.
    exclude_bias_norm: bool = True


@dataclass
class EvalConfig:
    knn_k: int = 20
    knn_temperature: float = 0.07
    online_probe_lr: float = 1e-3
    linear_probe_steps: int = 200
    linear_probe_weight_decay: float = 1e-4


@dataclass
class TrialConfig:
    method: str = "simclr"
    # Hyperparameters of the method, checked against the method's own defaults.
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    epochs: int = 30
    batch_size: int = 256
    seed: int = 0
    # auto: CUDA when present (bf16 autocast, channels_last), else CPU.
    device: str = "auto"
    # auto: bf16 on CUDA, fp32 on CPU.
    precision: str = "auto"
    # Threads for torch; 0 means the CPUs this process may run on.
    cpus: int = 0


def trial_config(config: dict | DictConfig | None = None) -> DictConfig:
    """Merge a plain dict onto the defaults; raise ConfigError on unknown keys or wrong types."""
    base = OmegaConf.structured(TrialConfig)
    try:
        merged = OmegaConf.merge(base, config or {})
    except OmegaConfBaseException as exc:
        raise ConfigError(omegaconf_message(exc)) from None
    check_ranges(merged)
    return merged


def omegaconf_message(exc: OmegaConfBaseException) -> str:
    """One line: the dotted key, what is wrong, and for an unknown key the keys allowed there."""
    key = getattr(exc, "full_key", None) or ""
    first_line = str(exc).splitlines()[0]
    parent = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(parent):
        allowed = ", ".join(f.name for f in dataclasses.fields(parent))
        close = difflib.get_close_matches(str(exc.key), [f.name for f in dataclasses.fields(parent)], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{key}: unknown key{hint}; allowed here: {allowed}"
    return f"{key}: {first_line}" if key else first_line


def check_ranges(cfg: DictConfig) -> None:
    positive = {
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "model.width": cfg.model.width,
        "data.image_size": cfg.data.image_size,
        "eval.knn_k": cfg.eval.knn_k,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be a positive integer, got {value}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")
    if not 0.0 < cfg.data.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction: must be in (0, 1), got {cfg.data.test_fraction}")
    if cfg.optim.warmup_epochs < 0 or cfg.optim.warmup_epochs > cfg.epochs:
        raise ConfigError(
            f"optim.warmup_epochs: must be in [0, epochs={cfg.epochs}], got {cfg.optim.warmup_epochs}"
        )
    if cfg.cpus < 0:
        raise ConfigError(f"cpus: must be >= 0 (0 = all this process may use), got {cfg.cpus}")
    choices = {
        "optim.name": (cfg.optim.name, ("sgd", "adamw", "lars")),
        "precision": (cfg.precision, ("auto", "fp32", "bf16")),
        "data.augment": (cfg.data.augment, ("simclr", "byol", "none")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: unknown value {value!r}; allowed: {', '.join(allowed)}")
