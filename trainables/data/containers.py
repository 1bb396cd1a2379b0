"""What every dataset is made of and where it is registered: samples in memory (TensorSamples) or
decoded from an image folder batch by batch (FolderImages, in image_pipeline.py), how a batch
becomes two views (ViewMaker), the bundle a dataset loads into (DataBundle), its `data.options`
(DatasetOptions), and the registry DATASETS, where each dataset also declares whether it reads
`data.root`.

Samples are images (C, H, W) or vectors (p,)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from omegaconf import DictConfig

from trainables.augment import Augmenter, recipe
from trainables.config import structured_options
from trainables.data.image_pipeline import FolderImages
from trainables.errors import ConfigError
from trainables.registry import Registry


class TensorSamples:
    """Samples (N, ...) in memory: images (N, C, H, W) as uint8 in [0, 255] or float in [0, 1], or
    vectors (N, p) as float; labels (-1 = unlabeled)."""

    def __init__(self, samples: torch.Tensor, labels: torch.Tensor):
        self.samples, self.labels = samples, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "TensorSamples":
        return TensorSamples(self.samples.to(device), self.labels.to(device))

    def batches(self, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False) -> Iterator:
        order = torch.arange(len(self)) if order is None else order
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield self.samples[idx], self.labels[idx]


class ViewMaker(Protocol):
    """How a dataset turns a batch of samples into the two training views, and a batch into the
    encoder's input for evaluation. Both draw only from `gen`, so views replay after a resume."""

    def views(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...

    def normalize(self, x: torch.Tensor) -> torch.Tensor: ...

    def to(self, device) -> "ViewMaker": ...


Samples = TensorSamples | FolderImages


@dataclass
class DataBundle:
    train: Samples  # what the SSL loss trains on
    eval_train: Samples  # labeled: kNN bank and probes
    test: Samples
    num_classes: int
    # One sample's shape as the encoder sees it: (C, H, W) for images, (p,) for vectors.
    input_shape: tuple[int, ...]
    view_maker: ViewMaker
    # The ground truth a generated dataset was made from, for diagnostics: sparse_coding's
    # dictionary M (p x d, orthonormal columns).
    dictionary: torch.Tensor | None = None

    def splits(self) -> list[Samples]:
        """train, eval_train and test, each once (a dataset may use one split in two roles)."""
        return list({id(s): s for s in (self.train, self.eval_train, self.test)}.values())

    def to(self, device) -> "DataBundle":
        """In-memory samples move to the device once, so batches are sliced and augmented there."""
        moved = {id(s): s.to(device) for s in self.splits()}
        return dataclasses.replace(self, train=moved[id(self.train)], eval_train=moved[id(self.eval_train)],
                                   test=moved[id(self.test)], view_maker=self.view_maker.to(device))


def image_bundle(cfg: DictConfig, train: Samples, eval_train: Samples, test: Samples, num_classes: int,
                 input_shape: tuple[int, int, int], mean, std) -> DataBundle:
    """An image dataset's bundle: views by the augmentation recipe of `data.augment` for this dataset."""
    augmenter = Augmenter(recipe(cfg.name, cfg.augment), input_shape[-1], mean, std)
    return DataBundle(train, eval_train, test, num_classes, input_shape, augmenter)


def in_memory_image_bundle(cfg: DictConfig, train: TensorSamples, test: TensorSamples, num_classes: int,
                           mean, std) -> DataBundle:
    """Images in memory, SSL on the labeled training split."""
    return image_bundle(cfg, train, train, test, num_classes, tuple(train.samples.shape[1:]), mean, std)


# --- the registry -------------------------------------------------------------------------------
@dataclass
class DatasetOptions:
    """Base of a dataset's `data.options` dataclass; itself the options of a dataset that has none."""

    def check(self) -> None:
        """Raise ConfigError for values the types allow but the dataset does not (see require_option)."""

    def train_size(self, cfg: DictConfig) -> int | None:
        """How many samples the training split (what a batch is drawn from) will hold, from the trial's
        `data` section and these options alone; None where only loading tells (a folder on disk)."""
        return None

    def input_shape(self, cfg: DictConfig) -> tuple[int, ...] | None:
        """One sample's shape as the encoder sees it, from the `data` section and these options alone;
        None where only loading tells."""
        return None


def require_option(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"data.options.{key}: {message}")


@dataclass(frozen=True)
class DatasetEntry:
    load: Callable[[DictConfig, Any], DataBundle]
    # A DatasetOptions dataclass whose fields are the dataset's `data.options`.
    options: type
    # Read from the local folder `data.root` (which must then exist); otherwise generated or shipped
    # with a package.
    needs_root: bool


class DatasetRegistry(Registry[DatasetEntry]):
    def register_dataset(self, name: str, options: type = DatasetOptions, needs_root: bool = False):
        """Decorator of `load(cfg, options) -> DataBundle`, where `cfg` is the trial's `data` section."""

        def decorator(load: Callable[[DictConfig, Any], DataBundle]) -> Callable:
            self.register(name)(DatasetEntry(load, options, needs_root))
            return load

        return decorator

    def needing_root(self) -> list[str]:
        return [name for name, entry in self.items() if entry.needs_root]


DATASETS = DatasetRegistry("data.name")


def dataset_options(cfg: DictConfig) -> Any:
    """The dataset's options: `data.options` checked against its defaults (ConfigError otherwise)."""
    entry = DATASETS.get(cfg.name, key="data.name")
    options = structured_options(entry.options, dict(cfg.options), "data.options", "an option", cfg.name)
    options.check()
    return options


def dataset_root(cfg: DictConfig) -> Path | None:
    """`data.root` as an absolute path, checked: a dataset that reads one must have one, and it must
    exist unless the dataset may download into it. None where the dataset needs none and got none."""
    entry = DATASETS.get(cfg.name, key="data.name")
    if not cfg.root:
        if entry.needs_root:
            raise ConfigError(f"data.root: {cfg.name} needs data.root, the local folder that holds it")
        return None
    root = Path(cfg.root).expanduser().resolve()
    if not root.is_dir() and not cfg.download:
        raise ConfigError(f"data.root: {root} does not exist; point it at the folder holding {cfg.name} "
                          "(or set data.download=true where the machine can download)")
    return root


def check_data(cfg: DictConfig, batch_size: int) -> None:
    """The trial's `data` section against the registry, in place: a known dataset, its options, a
    training split that holds at least one batch of `batch_size` where its size is known before
    loading, and `data.root` made absolute (a trial runs in a working directory of Ray's, where a
    relative root would point elsewhere). Raises ConfigError."""
    size = dataset_options(cfg).train_size(cfg)
    if size is not None and batch_size > size:
        raise ConfigError(f"batch_size: {batch_size} is larger than the {size} training samples of {cfg.name} "
                          f"with these data settings; allowed: 2 to {size}")
    root = dataset_root(cfg)
    if root is not None:
        cfg.root = str(root)


def load_data(cfg: DictConfig) -> DataBundle:
    """The dataset named by the trial's `data` section, loaded."""
    return DATASETS.get(cfg.name, key="data.name").load(cfg, dataset_options(cfg))
