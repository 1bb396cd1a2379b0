"""The trial config's schema: OmegaConf structured configs with defaults, merged onto a plain dict and
checked for types and ranges. What the registries know (methods, datasets, backbones) is checked
with the whole trial config, in trainables.contract."""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from trainables.errors import ConfigError, did_you_mean


@dataclass
class DataConfig:
    name: str = "digits"
    # Local folder holding the dataset (cifar10, cifar100, stl10, imagefolder).
    root: Optional[str] = None
    download: bool = False
    # Fixes the data, not the trial's seed, so trial seeds share one dataset: the held-out split,
    # and everything a generated dataset draws (sparse_coding's M, digits_clutter's composites...).
    split_seed: int = 0
    test_fraction: float = 0.2
    # imagefolder only: images are decoded and resized to this side before augmentation.
    image_size: int = 64
    loader_workers: int = 2
    # Augmentation recipe of image datasets: simclr | byol | none (two copies of the image).
    # Vector datasets make their views themselves (see their options).
    augment: str = "simclr"
    # Knobs of a generated or composite dataset, checked against its own defaults
    # (e.g. sparse_coding: {p: 50, d: 10}; randbit: {base: digits_clutter, bits: 5}).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    backbone: str = "mlp"
    # mlp: hidden width; convnet: channels of its last block; linear, deep_linear, symrelu: output
    # width. resnet18 ignores it.
    width: int = 512
    # deep_linear: number of bias-free layers.
    depth: int = 2
    # linear, deep_linear: initial singular values exp(-decay * k), k = 0, 1, ..., between random
    # orthogonal bases (Jing et al. use 0.35; 0 is an orthogonal init); null: PyTorch's default init.
    init_spectrum_decay: Optional[float] = None
    # Garrido's notation: "2048-2048-256" = Linear-BN-ReLU between layers, plain last; "none".
    projector: str = "1024-1024-128"
    # random: PyTorch's init. dictionary (symrelu on sparse_coding): Pokle et al.'s warm start, the
    # first d units at the dictionary's d columns plus Gaussian noise of std warm_start_noise.
    init: str = "random"
    warm_start_noise: float = 0.1


@dataclass
class OptimConfig:
    name: str = "sgd"
    # Learning rate per 256 samples when scale_lr is true (lr * batch_size / 256).
    lr: float = 0.5
    scale_lr: bool = True
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Linear warmup; null: DEFAULT_WARMUP_EPOCHS, or all epochs of a shorter trial.
    warmup_epochs: Optional[float] = None
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
    # fewshot_acc: a linear probe trained on this many labeled samples per class; 0: not reported.
    fewshot_k: int = 10
    # n_collapsed counts eigenvalues of the embedding covariance below this fraction of the largest.
    collapse_threshold: float = 1e-4


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
    # Threads for torch; 0 means the CPUs this process may run on (with workers: its share of them).
    cpus: int = 0
    # Data-parallel processes, one device each: every step each takes batch_size / workers samples
    # of the global batch, and losses, gradients and metrics are those of the global batch
    # (trainables.distributed). `dualsweep train` starts them on this machine; a sweep sets this
    # from resources.workers.
    workers: int = 1


DEFAULT_WARMUP_EPOCHS = 2.0


def warmup_epochs(cfg: DictConfig) -> float:
    """The trial's warmup in epochs: `optim.warmup_epochs` as set, or the default capped at `epochs`."""
    if cfg.optim.warmup_epochs is None:
        return min(DEFAULT_WARMUP_EPOCHS, float(cfg.epochs))
    return cfg.optim.warmup_epochs


def trial_config(config: dict | DictConfig | None = None) -> DictConfig:
    """Merge a plain dict onto the defaults; raise ConfigError on unknown keys or wrong types."""
    base = OmegaConf.structured(TrialConfig)
    try:
        merged = OmegaConf.merge(base, config or {})
        # Interpolations (${...}) are resolved here, so that a bad one is this one-line error.
        OmegaConf.resolve(merged)
    except (OmegaConfBaseException, TypeError) as exc:
        if getattr(exc, "full_key", None):
            raise ConfigError(omegaconf_message(exc)) from None
        located = merge_problem(base, config or {})
        raise ConfigError(": ".join(located) if located else str(exc).splitlines()[0]) from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{missing[0]}: '???' (OmegaConf's missing value) is not a value; set one")
    check_ranges(merged)
    return merged


def omegaconf_message(exc: OmegaConfBaseException) -> str:
    """One line: the dotted key, what is wrong, and for an unknown key the keys allowed there."""
    key = getattr(exc, "full_key", None) or ""
    first_line = str(exc).splitlines()[0]
    parent = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(parent):
        allowed = ", ".join(f.name for f in dataclasses.fields(parent))
        hint = did_you_mean(exc.key, [f.name for f in dataclasses.fields(parent)])
        return f"{key}: unknown key{hint}; allowed here: {allowed}"
    return f"{key}: {first_line}" if key else first_line


def check_ranges(cfg: DictConfig) -> None:
    positive = {
        "epochs": cfg.epochs,
        "model.width": cfg.model.width,
        "model.depth": cfg.model.depth,
        "data.image_size": cfg.data.image_size,
        "eval.knn_k": cfg.eval.knn_k,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be a positive integer, got {value}")
    if cfg.batch_size < 2:
        raise ConfigError(f"batch_size: must be >= 2 (the losses compare the samples of a batch, and batch norm "
                          f"needs two), got {cfg.batch_size}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")
    if not 0.0 < cfg.data.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction: must be in (0, 1), got {cfg.data.test_fraction}")
    warmup = cfg.optim.warmup_epochs
    if warmup is not None and not 0 <= warmup <= cfg.epochs:
        raise ConfigError(f"optim.warmup_epochs: must be in [0, epochs={cfg.epochs}] (or null: "
                          f"min({DEFAULT_WARMUP_EPOCHS:g}, epochs)), got {warmup}")
    if cfg.workers < 1:
        raise ConfigError(f"workers: must be >= 1 (data-parallel processes of the trial), got {cfg.workers}")
    if cfg.batch_size % cfg.workers:
        raise ConfigError(f"batch_size: {cfg.batch_size} does not split over workers={cfg.workers}; each process takes "
                          f"an equal share of the global batch, so batch_size must be a multiple of {cfg.workers}")
    if cfg.workers > 1 and re.fullmatch(r"cuda:\d+", cfg.device):
        raise ConfigError(f"device: {cfg.device} names one device, but each of the {cfg.workers} workers takes its own; "
                          "use auto, cuda or cpu")
    if cfg.cpus < 0:
        raise ConfigError(f"cpus: must be >= 0 (0 = all this process may use), got {cfg.cpus}")
    if cfg.eval.fewshot_k < 0:
        raise ConfigError(f"eval.fewshot_k: must be >= 0 (0 = no fewshot_acc), got {cfg.eval.fewshot_k}")
    if not 0.0 < cfg.eval.collapse_threshold < 1.0:
        raise ConfigError(f"eval.collapse_threshold: must be in (0, 1), got {cfg.eval.collapse_threshold}")
    if cfg.model.init == "dictionary" and (cfg.model.backbone, cfg.data.name) != ("symrelu", "sparse_coding"):
        raise ConfigError(f"model.init: dictionary starts a symrelu encoder on sparse_coding's dictionary; got backbone "
                          f"{cfg.model.backbone} on {cfg.data.name}")
    if cfg.model.warm_start_noise < 0:
        raise ConfigError(f"model.warm_start_noise: must be >= 0, got {cfg.model.warm_start_noise}")
    choices = {
        "model.init": (cfg.model.init, ("random", "dictionary")),
        "optim.name": (cfg.optim.name, ("sgd", "adamw", "lars")),
        "precision": (cfg.precision, ("auto", "fp32", "bf16")),
        "data.augment": (cfg.data.augment, ("simclr", "byol", "none")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def structured_options(schema: type, user: dict, key: str, noun: str, owner: str) -> Any:
    """`user` merged onto the defaults of the dataclass `schema`, as a `schema` instance. A name
    `schema` lacks or a value of the wrong type is a one-line ConfigError naming `key.<name>`
    (e.g. "method_kwargs.tau: not a hyperparameter of simclr; allowed: temperature")."""
    allowed = [f.name for f in dataclasses.fields(schema)]
    for name in user:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}: not {noun} of {owner}; allowed: {', '.join(allowed) or 'none'}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), user)
    except (OmegaConfBaseException, TypeError) as exc:
        where, message = merge_problem(OmegaConf.structured(schema), user) or (getattr(exc, "key", None),
                                                                              str(exc).splitlines()[0])
        raise ConfigError(f"{key}.{where}: {message}") from None
    options = OmegaConf.to_object(merged)
    problem = next(scalar_list_problems(options, f"{key}."), None)
    if problem:
        raise ConfigError(": ".join(problem))
    return options


def merge_problem(base: DictConfig, update: dict | DictConfig, path: tuple = ()) -> tuple[str, str] | None:
    """(dotted key, message) for the first key of `update` that cannot be merged into `base`, each key
    tried alone from the top down: OmegaConf names no key for a list where a mapping belongs (a bare
    TypeError) nor for a section given a scalar. None where every key merges alone."""
    if isinstance(update, DictConfig):
        update = OmegaConf.to_container(update)
    for key, value in update.items():
        where = (*path, key)
        exc = merge_exception(base, where, value)
        if exc is None:
            continue
        if isinstance(value, dict) and merge_exception(base, where, {}) is None:
            inner = merge_problem(base, value, where)
            if inner:
                return inner
        name = ".".join(map(str, where))
        if isinstance(exc, TypeError):
            given, belongs = ("a list", "a mapping") if isinstance(value, list) else ("a mapping", "a list")
            return name, f"wrong type: {given} where {belongs} belongs"
        if not isinstance(value, dict) and merge_exception(base, where, {}) is None:
            return name, f"wrong type: {value!r} where a mapping belongs"
        return name, str(exc).splitlines()[0]
    return None


def merge_exception(base: DictConfig, where: tuple, value: Any) -> Exception | None:
    """What merging `value` at the key path `where` into `base` raises, if anything."""
    for key in reversed(where):
        value = {key: value}
    try:
        OmegaConf.merge(base, value)
    except (OmegaConfBaseException, TypeError) as exc:
        return exc
    return None


def scalar_list_problems(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, message) for each list that a dataclass types as scalars (seeds: list[int])
    but that holds a list or a mapping, which OmegaConf lets through; at any depth of `node`."""
    if dataclasses.is_dataclass(node):
        hints = typing.get_type_hints(type(node))
        for f in dataclasses.fields(node):
            value, key, hint = getattr(node, f.name), f"{prefix}{f.name}", hints[f.name]
            scalar_list = typing.get_origin(hint) is list and typing.get_args(hint)[0] in (int, float, str, bool)
            if not scalar_list:
                yield from scalar_list_problems(value, key + ".")
            elif isinstance(value, list) and any(isinstance(item, (list, dict)) for item in value):
                yield key, f"must be a list of {typing.get_args(hint)[0].__name__} values, got {value!r}"
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from scalar_list_problems(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from scalar_list_problems(value, f"{prefix[:-1]}[{index}].")
