"""Datasets as image sets: SSL training images, labeled training images for the kNN bank and
probes, and the held-out test split. In-memory where the data fits, lazily decoded for folders."""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig

from trainables.errors import ConfigError
from trainables.registry import Registry


DATASETS: Registry = Registry("data.name")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TensorImages:
    """Images (N, C, H, W) as uint8 in [0, 255] or float in [0, 1], labels (-1 = unlabeled)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "TensorImages":
        return TensorImages(self.images.to(device), self.labels.to(device))

    def batches(self, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False) -> Iterator:
        order = torch.arange(len(self)) if order is None else order
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield self.images[idx], self.labels[idx]


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


@dataclass
class DataBundle:
    train: TensorImages | FolderImages  # what the SSL loss trains on
    eval_train: TensorImages | FolderImages  # labeled: kNN bank and probes
    test: TensorImages | FolderImages
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to(self, device) -> "DataBundle":
        """In-memory images move to the device once, so batches are sliced and augmented there."""
        moved = {id(s): s.to(device) for s in (self.train, self.eval_train, self.test)}
        return dataclasses.replace(self, train=moved[id(self.train)], eval_train=moved[id(self.eval_train)],
                                   test=moved[id(self.test)])


def load_data(cfg: DictConfig) -> DataBundle:
    return DATASETS.get(cfg.name)(cfg)


@DATASETS.register("digits")
def digits(cfg: DictConfig) -> DataBundle:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package), stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=cfg.test_fraction, stratify=y, random_state=cfg.split_seed
    )

    def as_images(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)

    train = TensorImages(as_images(x_train), torch.tensor(y_train))
    mean, std = float(train.images.mean()), float(train.images.std())
    return DataBundle(train, train, TensorImages(as_images(x_test), torch.tensor(y_test)), 10, 1, 8, (mean,), (std,))


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


def read_cifar_batches(files: list[Path], label_key: str) -> TensorImages:
    images, labels = [], []
    for path in files:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[label_key])
    return TensorImages(torch.from_numpy(np.concatenate(images)), torch.tensor(labels))


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
    return DataBundle(train, train, test, num_classes, 3, 32, mean, std)


@DATASETS.register("cifar10")
def cifar10(cfg: DictConfig) -> DataBundle:
    from torchvision.datasets import CIFAR10

    return cifar(cfg, CIFAR10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@DATASETS.register("cifar100")
def cifar100(cfg: DictConfig) -> DataBundle:
    from torchvision.datasets import CIFAR100

    return cifar(cfg, CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@DATASETS.register("stl10")
def stl10(cfg: DictConfig) -> DataBundle:
    """SSL on train+unlabeled (105k), kNN bank and probes on the 5k labeled train images."""
    from torchvision.datasets import STL10

    root = dataset_root(cfg)

    def split(name: str) -> TensorImages:
        ds = torchvision_dataset(STL10, cfg, root, split=name)
        return TensorImages(torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64)))

    return DataBundle(split("train+unlabeled"), split("train"), split("test"), 10, 3, 96, IMAGENET_MEAN, IMAGENET_STD)


@DATASETS.register("imagefolder")
def imagefolder(cfg: DictConfig) -> DataBundle:
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
    return DataBundle(folders["train"], folders["train"], folders["val"], num_classes, 3, cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
