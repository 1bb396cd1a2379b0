"""Image folders decoded in batches (trainables/data/image_pipeline.py): what they decode against
PIL and torchvision's transforms (the per-sample path they replace), the views the batched
augmentations make of them, two epochs of a trial through them, and the input's clock."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch

from trainables import ConfigError, train
from trainables.augment import Augmenter, recipe
from trainables.contract import SSL_EPOCH_METRICS
from trainables.data import load_data
from trainables.data.disk import IMAGENET_MEAN, IMAGENET_STD
from trainables.data.image_pipeline import FolderImages, InputMonitor, read_ahead
from trainables.config import trial_config

CLASSES = 3
# Class c is tinted towards channel c, so that swapped channels or classes show.
TINTS = np.array([[200, 60, 40], [50, 180, 70], [40, 80, 210]])


def write_image(path, cls: int, shape: tuple[int, int], rng, fmt: str) -> None:
    from PIL import Image

    height, width = shape
    ramp = np.linspace(0, 40, width)[None, :, None]
    pixels = TINTS[cls] + ramp + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, format=fmt, quality=90)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """root/{train,val}/<class>/: 8 training and 4 held-out JPEGs per class, 64x64 and, every third,
    64x80 (so that centre crops and resizing are exercised)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for cls in range(CLASSES):
            (root / split / f"class{cls}").mkdir(parents=True)
            for i in range(count):
                shape = (64, 80) if i % 3 == 2 else (64, 64)
                write_image(root / split / f"class{cls}" / f"{i}.jpg", cls, shape, rng, "JPEG")
    return root


def pil_batch(folder, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole folder as the per-sample path decoded it: PIL, torchvision's Resize + CenterCrop."""
    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    transform = T.Compose([T.PILToTensor(), T.Resize(size, antialias=True), T.CenterCrop(size)])
    dataset = ImageFolder(str(folder), transform=transform)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_decode_like_pil_per_sample(image_root, workers):
    size = 48
    folder = FolderImages(image_root / "train", size, workers)
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(0))
    batches = list(folder.batches(5, order))
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    reference, reference_labels = pil_batch(image_root / "train", size)
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 4]
    assert images.dtype == torch.uint8 and images.shape == (24, 3, size, size)
    assert torch.equal(labels, reference_labels[order]), "batches must follow the order given"
    difference = (images.float() - reference[order].float()).abs()
    # Two JPEG decoders and two resizers: a grey level or two apart, never a different image.
    assert difference.mean() < 1.5 and difference.mean(dim=(1, 2, 3)).max() < 3


def test_views_match_the_batched_augmentations_on_per_sample_decoded_images(image_root):
    size = 48
    folder = FolderImages(image_root / "train", size, workers=0)
    images, _ = next(folder.batches(len(folder)))
    reference, _ = pil_batch(image_root / "train", size)
    augmenter = Augmenter(recipe("imagefolder", "simclr"), size, IMAGENET_MEAN, IMAGENET_STD)
    ours, theirs = [], []
    for seed in range(6):
        ours.append(torch.cat(augmenter.views(images, torch.Generator().manual_seed(seed))))
        theirs.append(torch.cat(augmenter.views(reference, torch.Generator().manual_seed(seed))))
    ours, theirs = torch.cat(ours), torch.cat(theirs)
    assert ours.shape == theirs.shape == (2 * 6 * 24, 3, size, size)
    mean_ours, mean_theirs = ours.mean(dim=(0, 2, 3)), theirs.mean(dim=(0, 2, 3))
    std_ours, std_theirs = ours.std(dim=(0, 2, 3)), theirs.std(dim=(0, 2, 3))
    assert torch.allclose(mean_ours, mean_theirs, atol=0.02) and torch.allclose(std_ours, std_theirs, atol=0.02)
    # The tints survive decoding and augmentation: red, green and blue views stay apart per class.
    assert mean_ours.std() > 0.1
    # Crops and flips: how far each view is from its un-augmented image, over all views.
    plain = augmenter.normalize(images).repeat(12, 1, 1, 1)
    plain_reference = augmenter.normalize(reference).repeat(12, 1, 1, 1)
    distance = (ours - plain).abs().mean(dim=(1, 2, 3))
    distance_reference = (theirs - plain_reference).abs().mean(dim=(1, 2, 3))
    assert abs(distance.mean() - distance_reference.mean()) < 0.02 and distance.mean() > 0.1


def test_two_epochs_of_a_trial_through_the_image_folder(image_root, caplog):
    config = {
        "method": "simclr", "epochs": 2, "batch_size": 8, "seed": 1,
        "data": {"name": "imagefolder", "root": str(image_root), "image_size": 32, "loader_workers": 2},
        "model": {"backbone": "convnet", "width": 16, "projector": "32-16"},
        "eval": {"fewshot_k": 2, "linear_probe_steps": 20},
    }
    reports = []
    train(config, report=lambda metrics, checkpoint_dir: reports.append(metrics))
    assert [m["epoch"] for m in reports] == [1, 2]
    for metrics in reports:
        assert 0 <= metrics["data_wait_fraction"] < 1 and metrics["images_per_s_per_device"] > 0
        assert np.isfinite(metrics["loss"]) and 0 <= metrics["knn_acc"] <= 1
        assert {"data_wait_fraction", "images_per_s_per_device"} <= set(SSL_EPOCH_METRICS)
    # 24 training images, batch 8: three steps of 8 images per epoch.
    assert reports[0]["images_per_s_per_device"] == pytest.approx(reports[0]["samples_per_s"], rel=1e-6)


def test_in_memory_trials_report_no_input_metrics():
    reports = []
    train({"epochs": 1, "batch_size": 256, "model": {"width": 32, "projector": "32-16"},
           "eval": {"linear_probe_steps": 5}}, report=lambda metrics, checkpoint_dir: reports.append(metrics))
    assert "data_wait_fraction" not in reports[0] and "images_per_s_per_device" not in reports[0]


def slow_batches(count: int, delay: float):
    for _ in range(count):
        time.sleep(delay)
        yield torch.zeros(4, 3, 8, 8), torch.zeros(4)


def test_a_starved_device_is_reported_and_warned_about_once(caplog):
    monitor = InputMonitor(reports=True)
    fractions = []
    with caplog.at_level(logging.WARNING, logger="trainables.data.image_pipeline"):
        for _ in range(2):
            start = time.perf_counter()
            images = sum(len(batch[0]) for batch in monitor.watch(slow_batches(5, 0.02)))
            metrics = monitor.epoch_metrics(time.perf_counter() - start)
            fractions.append(metrics["data_wait_fraction"])
            assert images == 20 and metrics["images_per_s_per_device"] <= 20 / 0.1
    assert min(fractions) > 0.9
    warnings = [r for r in caplog.records if "starves the device" in r.getMessage()]
    assert len(warnings) == 1
    assert InputMonitor(reports=False).epoch_metrics(1.0) == {}


def test_read_ahead_keeps_the_order_whatever_finishes_first():
    def load(i: int) -> int:
        time.sleep(0.01 * (i % 3))
        return i * i

    assert list(read_ahead(range(10), load, workers=3)) == [i * i for i in range(10)]


def test_png_among_jpegs_and_a_corrupt_file_named(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for cls in range(2):
            (tmp_path / split / f"c{cls}").mkdir(parents=True)
            write_image(tmp_path / split / f"c{cls}" / "a.jpg", cls, (40, 40), rng, "JPEG")
            write_image(tmp_path / split / f"c{cls}" / "b.png", cls, (40, 40), rng, "PNG")
    cfg = trial_config({"data": {"name": "imagefolder", "root": str(tmp_path), "image_size": 40,
                                 "loader_workers": 0}}).data
    images, labels = next(load_data(cfg).train.batches(4))
    reference, reference_labels = pil_batch(tmp_path / "train", 40)
    assert torch.equal(labels, reference_labels)
    # PNG is lossless: decoded exactly; the JPEGs as above.
    assert torch.equal(images[1::2], reference[1::2])
    (tmp_path / "train" / "c1" / "c.jpg").write_bytes(b"\xff\xd8\xff" + b"not a jpeg" * 10)
    with pytest.raises(ConfigError, match=r"data.root: .*c1/c.jpg is not a decodable image"):
        list(load_data(cfg).train.batches(5))
