"""Datasets read from the local folder `data.root`: CIFAR-10/100 (the python pickle batches),
STL-10 (through torchvision) and image folders in ImageNet's layout. Their options state the
encoder's input shape; the training split's size is known once the files are read."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from trainables.data.containers import (DATASETS, DataBundle, DatasetOptions, FolderImages, TensorSamples,
                                        dataset_root, image_bundle, in_memory_image_bundle)
from trainables.errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class CifarOptions(DatasetOptions):
    def input_shape(self, cfg: DictConfig) -> tuple[int, ...]:
        return (3, 32, 32)


@dataclass
class Stl10Options(DatasetOptions):
    def input_shape(self, cfg: DictConfig) -> tuple[int, ...]:
        return (3, 96, 96)


@dataclass
class ImageFolderOptions(DatasetOptions):
    def input_shape(self, cfg: DictConfig) -> tuple[int, ...]:
        return (3, cfg.image_size, cfg.image_size)


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


# The only globals a CIFAR batch needs (numpy arrays of either numpy generation, and the byte
# decoding of the official Python 2 pickles): a hostile file under data.root can name no others.
CIFAR_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class CifarUnpickler(pickle.Unpickler):
    """Arrays, lists, dicts, strings and numbers only: nothing in the file runs code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: a CIFAR batch holds only arrays, "
                                         "lists, dicts, strings and numbers")
        return super().find_class(module, name)


def read_cifar_batches(files: list[Path], label_key: str) -> TensorSamples:
    images, labels = [], []
    for path in files:
        with open(path, "rb") as f:
            entry = CifarUnpickler(f, encoding="latin1").load()
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


@DATASETS.register_dataset("cifar10", CifarOptions, needs_root=True)
def cifar10(cfg: DictConfig, options: CifarOptions) -> DataBundle:
    # Imported here: torchvision adds ~1.5 s to a trial's start; only its downloader is used.
    from torchvision.datasets import CIFAR10

    return cifar(cfg, CIFAR10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@DATASETS.register_dataset("cifar100", CifarOptions, needs_root=True)
def cifar100(cfg: DictConfig, options: CifarOptions) -> DataBundle:
    # Imported here: torchvision adds ~1.5 s to a trial's start; only its downloader is used.
    from torchvision.datasets import CIFAR100

    return cifar(cfg, CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@DATASETS.register_dataset("stl10", Stl10Options, needs_root=True)
def stl10(cfg: DictConfig, options: Stl10Options) -> DataBundle:
    """SSL on train+unlabeled (105k), kNN bank and probes on the 5k labeled train images."""
    # Imported here: torchvision adds ~1.5 s to a trial's start, and most trials never read STL-10.
    from torchvision.datasets import STL10

    root = dataset_root(cfg)

    def split(name: str) -> TensorSamples:
        ds = torchvision_dataset(STL10, cfg, root, split=name)
        return TensorSamples(torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64)))

    return image_bundle(cfg, split("train+unlabeled"), split("train"), split("test"), 10,
                        options.input_shape(cfg), IMAGENET_MEAN, IMAGENET_STD)


@DATASETS.register_dataset("imagefolder", ImageFolderOptions, needs_root=True)
def imagefolder(cfg: DictConfig, options: ImageFolderOptions) -> DataBundle:
    """root/train/<class>/*.jpg and root/val/<class>/*.jpg (ImageNet layout; also PNG and WebP),
    decoded batch by batch on the trial's device (image_pipeline.py)."""
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
                        options.input_shape(cfg), IMAGENET_MEAN, IMAGENET_STD)
