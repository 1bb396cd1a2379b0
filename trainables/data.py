"""Datasets: SSL training samples, labeled training samples for the kNN bank and probes, the
held-out test split, and how the two views of a sample are made. Samples are images (C, H, W) or
vectors (p,); in-memory where the data fits, lazily decoded for image folders.

Generated and composite datasets live in trainables.synthetic and trainables.composites."""
from __future__ import annotations

import dataclasses
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from trainables.augment import Augmenter, recipe
from trainables.config import structured_options
from trainables.errors import ConfigError
from trainables.registry import Registry

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


class FolderImages:
    """An ImageFolder decoded and resized (short side, then centre crop) by DataLoader workers."""

    def __init__(self, folder: Path, image_size: int, workers: int):
        import torchvision.transforms.v2 as T
        from torchvision.datasets import ImageFolder

        transform = T.Compose([T.PILToTensor(), T.Resize(image_size, antialias=True), T.CenterCrop(image_size)])
        self.dataset = ImageFolder(str(folder), transform=transform)
        self.labels = torch.tensor(self.dataset.targets)
        self.workers = workers

    def __len__(self) -> int:
        return len(self.dataset)

    def to(self, device) -> "FolderImages":
        return self  # decoded on the fly by DataLoader workers; batches move one at a time

    def batches(self, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False) -> Iterator:
        sampler = None if order is None else order.tolist()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
            num_workers=self.workers, persistent_workers=False,
        )
        yield from loader


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

    def to(self, device) -> "DataBundle":
        """In-memory samples move to the device once, so batches are sliced and augmented there."""
        moved = {id(s): s.to(device) for s in (self.train, self.eval_train, self.test)}
        return dataclasses.replace(self, train=moved[id(self.train)], eval_train=moved[id(self.eval_train)],
                                   test=moved[id(self.test)], view_maker=self.view_maker.to(device))


@dataclass
class DatasetOptions:
    """Base of a dataset's `data.options` dataclass; itself the options of a dataset that has none."""

    def check(self) -> None:
        """Raise ConfigError for values the types allow but the dataset does not (see require_option)."""


def require_option(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"data.options.{key}: {message}")


@dataclass(frozen=True)
class DatasetEntry:
    load: Callable[[DictConfig, Any], DataBundle]
    # A DatasetOptions dataclass whose fields are the dataset's `data.options`.
    options: type


class DatasetRegistry(Registry[DatasetEntry]):
    def register_dataset(self, name: str, options: type = DatasetOptions):
        """Decorator of `load(cfg, options) -> DataBundle`."""

        def decorator(load: Callable[[DictConfig, Any], DataBundle]) -> Callable:
            self.register(name)(DatasetEntry(load, options))
            return load

        return decorator


DATASETS = DatasetRegistry("data.name")


def dataset_options(cfg: DictConfig) -> Any:
    """The dataset's options: `data.options` checked against its defaults (ConfigError otherwise)."""
    entry = DATASETS.get(cfg.name, key="data.name")
    options = structured_options(entry.options, dict(cfg.options), "data.options", "an option", cfg.name)
    options.check()
    return options


def load_data(cfg: DictConfig) -> DataBundle:
    return DATASETS.get(cfg.name, key="data.name").load(cfg, dataset_options(cfg))


def image_bundle(cfg: DictConfig, train: Samples, eval_train: Samples, test: Samples, num_classes: int,
                 input_shape: tuple[int, int, int], mean, std) -> DataBundle:
    """An image dataset's bundle: views by the augmentation recipe of `data.augment` for this dataset."""
    augmenter = Augmenter(recipe(cfg.name, cfg.augment), input_shape[-1], mean, std)
    return DataBundle(train, eval_train, test, num_classes, input_shape, augmenter)


def in_memory_image_bundle(cfg: DictConfig, train: TensorSamples, test: TensorSamples, num_classes: int,
                           mean, std) -> DataBundle:
    """Images in memory, SSL on the labeled training split."""
    return image_bundle(cfg, train, train, test, num_classes, tuple(train.samples.shape[1:]), mean, std)


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 images, 0..16) and labels, read from the file the package
    ships, as `load_digits` reads it: importing sklearn.datasets costs every trial worker ~1.4 s."""
    package = Path(importlib.util.find_spec("sklearn").origin).parent
    table = np.loadtxt(package / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class's share of the test split rounded from `test_fraction`."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test.append(members[:round(len(members) * test_fraction)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return rng.permutation(np.flatnonzero(~is_test)), rng.permutation(np.flatnonzero(is_test))


def digit_sources(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits as float images in [0, 1], split stratified by `data.split_seed`: train images,
    train labels, test images, test labels."""
    x, y = sklearn_digits()
    train, test = stratified_split(y, cfg.test_fraction, cfg.split_seed)

    def as_images(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)

    return as_images(x[train]), torch.tensor(y[train]), as_images(x[test]), torch.tensor(y[test])


@DATASETS.register_dataset("digits")
def digits(cfg: DictConfig, options: DatasetOptions) -> DataBundle:
    x_train, y_train, x_test, y_test = digit_sources(cfg)
    train, test = TensorSamples(x_train, y_train), TensorSamples(x_test, y_test)
    return in_memory_image_bundle(cfg, train, test, 10, (float(x_train.mean()),), (float(x_train.std()),))


def dataset_root(cfg: DictConfig) -> Path:
    if not cfg.root:
        raise ConfigError(f"data.root: {cfg.name} needs data.root, the local folder that holds it")
    root = Path(cfg.root).expanduser().resolve()
    if not root.is_dir() and not cfg.download:
        raise ConfigError(f"data.root: {root} does not exist; point it at the folder holding {cfg.name} "
                          "(or set data.download=true where the machine can download)")
    return root


def torchvision_dataset(cls, cfg: DictConfig, root: Path, **kwargs):
    try:
        return cls(str(root), download=cfg.download, **kwargs)
    except RuntimeError as exc:
        raise ConfigError(f"data.root: no readable {cfg.name} under {root} ({str(exc).splitlines()[0]})") from None


CIFAR_LAYOUT = {
    # dataset: (folder, training batch files, test file, label key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels"),
}


def read_cifar_batches(files: list[Path], label_key: str) -> TensorSamples:
    images, labels = [], []
    for path in files:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[label_key])
    return TensorSamples(torch.from_numpy(np.concatenate(images)), torch.tensor(labels))


def cifar(cfg: DictConfig, cls, num_classes: int, mean, std) -> DataBundle:
    """Reads CIFAR's python pickle batches directly (torchvision only downloads them): its own
    loader insists on the official files' md5 sums, which refuses verified subsets."""
    root = dataset_root(cfg)
    if cfg.download:
        torchvision_dataset(cls, cfg, root, train=True)
    folder, train_files, test_file, label_key = CIFAR_LAYOUT[cfg.name]
    train_paths = [root / folder / name for name in train_files]
    missing = [p.name for p in train_paths + [root / folder / test_file] if not p.is_file()]
    if missing:
        raise ConfigError(f"data.root: {root / folder} lacks {', '.join(missing)}; "
                          f"expected the python version of {cfg.name} (e.g. extracted from the official tar.gz)")
    try:
        train = read_cifar_batches(train_paths, label_key)
        test = read_cifar_batches([root / folder / test_file], label_key)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
        raise ConfigError(f"data.root: unreadable {cfg.name} batch under {root / folder}: {exc!r}") from None
    return in_memory_image_bundle(cfg, train, test, num_classes, mean, std)


@DATASETS.register_dataset("cifar10")
def cifar10(cfg: DictConfig, options: DatasetOptions) -> DataBundle:
    from torchvision.datasets import CIFAR10

    return cifar(cfg, CIFAR10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@DATASETS.register_dataset("cifar100")
def cifar100(cfg: DictConfig, options: DatasetOptions) -> DataBundle:
    from torchvision.datasets import CIFAR100

    return cifar(cfg, CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@DATASETS.register_dataset("stl10")
def stl10(cfg: DictConfig, options: DatasetOptions) -> DataBundle:
    """SSL on train+unlabeled (105k), kNN bank and probes on the 5k labeled train images."""
    from torchvision.datasets import STL10

    root = dataset_root(cfg)

    def split(name: str) -> TensorSamples:
        ds = torchvision_dataset(STL10, cfg, root, split=name)
        return TensorSamples(torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64)))

    return image_bundle(cfg, split("train+unlabeled"), split("train"), split("test"), 10, (3, 96, 96),
                        IMAGENET_MEAN, IMAGENET_STD)


@DATASETS.register_dataset("imagefolder")
def imagefolder(cfg: DictConfig, options: DatasetOptions) -> DataBundle:
    """root/train/<class>/*.jpg and root/val/<class>/*.jpg (ImageNet layout)."""
    root = dataset_root(cfg)
    folders = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ConfigError(f"data.root: {root} has no {split}/ folder; imagefolder expects root/train/<class>/ and root/val/<class>/")
        try:
            folders[split] = FolderImages(root / split, cfg.image_size, cfg.loader_workers)
        except (FileNotFoundError, RuntimeError) as exc:
            raise ConfigError(f"data.root: {root / split}: {str(exc).splitlines()[0]}") from None
    num_classes = len(folders["train"].dataset.classes)
    return image_bundle(cfg, folders["train"], folders["train"], folders["val"], num_classes,
                        (3, cfg.image_size, cfg.image_size), IMAGENET_MEAN, IMAGENET_STD)


# Imported for their registration side effect.
from trainables import composites, synthetic  # noqa: E402,F401
