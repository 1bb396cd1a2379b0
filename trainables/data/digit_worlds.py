"""The digit worlds, drawn from scikit-learn's 8x8 digits: nothing is downloaded, and every world
is fixed by `data.split_seed` and split by source digit, so a held-out sample never shows a digit
image seen in training.

- digits: the 1797 digits themselves (8x8 grey), split stratified by class.
- digits_clutter: each digit scaled to 10-15 px at a random place on a 24x24 canvas, among random
  line segments, plus pixel noise. SSL methods are far from saturation here.
- digits_dominant: each digit scaled to 7-10 px at a random place on a 24x24 canvas, with (by
  default) a second, larger digit unrelated to the label that every view of the sample shares
  (Chen et al.'s claim 3: the dominant object suppresses the small one), plus pixel noise.
- digits_on_natural: each digit scaled, coloured and pasted at a random place on a random crop of
  the natural photographs that ship with scikit-image (32x32 RGB). The backgrounds compete with
  the digit for the encoder's capacity (Chen et al.'s feature suppression, on a CPU scale).

Views of a composite world (digits_clutter, digits_on_natural): with `pair_views` the two views of
a training sample are two different composites of one source digit (each then augmented by the
recipe), so nothing but the digit is shared between them; without, both views come from one
composite, whose clutter or background the encoder can then match views by instead of the digit."""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from trainables.augment import Augmenter
from trainables.data.containers import (DATASETS, DataBundle, DatasetOptions, TensorSamples, image_bundle,
                                        in_memory_image_bundle, require_option)


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 images, 0..16) and labels, read from the file the package
    ships, as `load_digits` reads it: importing sklearn.datasets costs every trial worker ~1.4 s."""
    package = Path(importlib.util.find_spec("sklearn").origin).parent
    table = np.loadtxt(package / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


# Samples per class (0..9) of scikit-learn's digits: the training split's size is known without
# reading the file (tests/test_trial_config.py checks it against the file).
DIGIT_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def held_out_count(class_count: int, test_fraction: float) -> int:
    """How many samples of a class the stratified split holds out."""
    return round(class_count * test_fraction)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class's share of the test split rounded from `test_fraction`."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test.append(members[:held_out_count(len(members), test_fraction)])
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


def digit_train_count(cfg: DictConfig) -> int:
    """Source digits in the training split."""
    return sum(count - held_out_count(count, cfg.test_fraction) for count in DIGIT_CLASS_COUNTS)


@dataclass
class DigitsOptions(DatasetOptions):
    def train_size(self, cfg: DictConfig) -> int:
        return digit_train_count(cfg)


@DATASETS.register_dataset("digits", DigitsOptions)
def digits(cfg: DictConfig, options: DigitsOptions) -> DataBundle:
    x_train, y_train, x_test, y_test = digit_sources(cfg)
    train, test = TensorSamples(x_train, y_train), TensorSamples(x_test, y_test)
    return in_memory_image_bundle(cfg, train, test, 10, (float(x_train.mean()),), (float(x_train.std()),))


# --- composites of digits ---------------------------------------------------------------------
@dataclass
class CompositeOptions(DatasetOptions):
    # Composites drawn per source digit: the training split (SSL, kNN bank, probes) and the held-out one.
    composites: int = 2
    test_composites: int = 1
    # Side of the pasted digit in pixels, uniform in [digit_min, digit_max].
    digit_min: float = 10.0
    digit_max: float = 15.0
    # Views from two different composites of a source digit (needs composites >= 2), or both
    # from one composite.
    pair_views: bool = True

    def check(self) -> None:
        require_option(self.composites > 0 and self.test_composites > 0, "composites",
                f"composites and test_composites must be > 0, got {self.composites}, {self.test_composites}")
        require_option(self.composites >= 2 or not self.pair_views, "pair_views",
                f"needs composites >= 2, got composites={self.composites}")
        require_option(0 < self.digit_min <= self.digit_max <= self.canvas_side(), "digit_min",
                f"need 0 < digit_min <= digit_max <= {self.canvas_side()}, got {self.digit_min}, {self.digit_max}")

    def canvas_side(self) -> int:
        raise NotImplementedError

    def train_size(self, cfg: DictConfig) -> int:
        # With pair_views a training sample is a source digit's stack of composites.
        return digit_train_count(cfg) * (1 if self.pair_views else self.composites)


def place_digits(digits: torch.Tensor, side: int, o: CompositeOptions, gen: torch.Generator) -> torch.Tensor:
    """Each (1, 8, 8) digit scaled to a random size in [digit_min, digit_max] px and placed at a
    random position wholly inside a side x side canvas of zeros (bilinear resampling)."""
    n = len(digits)
    scale = (o.digit_min + (o.digit_max - o.digit_min) * torch.rand(n, generator=gen)) / side
    # Normalized coordinates: the canvas spans [-1, 1]; the digit's centre keeps it inside.
    centre = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale).unsqueeze(1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -centre / scale.unsqueeze(1)
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    return F.grid_sample(digits, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class CompositePairViews:
    """Views of training samples that each hold K >= 2 composites of one source digit (B, K, C, H, W):
    two different composites drawn at random, each augmented by its view's recipe. Evaluation
    samples are single composites."""

    base: Augmenter

    def views(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = x.shape[:2]
        first = torch.randint(0, k, (n,), generator=gen, device=x.device)
        second = (first + torch.randint(1, k, (n,), generator=gen, device=x.device)) % k
        rows = torch.arange(n, device=x.device)
        return self.base.view(x[rows, first], 0, gen), self.base.view(x[rows, second], 1, gen)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.normalize(x)

    def to(self, device) -> "CompositePairViews":
        return CompositePairViews(self.base.to(device))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())


def composite_bundle(cfg: DictConfig, o: CompositeOptions, compose) -> DataBundle:
    """`compose(digits, gen, sources)` applied to `composites` copies of every training source digit
    (the kNN bank and probes see each composite, labeled) and `test_composites` copies of every
    held-out one; the copies are copy-major: row r of `digits` is a copy of source r % sources."""
    x_train, y_train, x_test, y_test = digit_sources(cfg)
    gen = torch.Generator().manual_seed(cfg.split_seed)
    train = compose(x_train.repeat(o.composites, 1, 1, 1), gen, len(x_train))
    labeled = TensorSamples(train, y_train.repeat(o.composites))
    test = TensorSamples(compose(x_test.repeat(o.test_composites, 1, 1, 1), gen, len(x_test)),
                         y_test.repeat(o.test_composites))
    bundle = image_bundle(cfg, labeled, labeled, test, 10, tuple(train.shape[1:]), *channel_stats(train))
    if not o.pair_views:
        return bundle
    pairs = train.view(o.composites, len(x_train), *train.shape[1:]).transpose(0, 1).contiguous()
    return dataclasses.replace(bundle, train=TensorSamples(pairs, y_train), view_maker=CompositePairViews(bundle.view_maker))


# --- digits_clutter ------------------------------------------------------------------------------
@dataclass
class DigitsClutterOptions(CompositeOptions):
    # Random line segments per canvas, of random brightness in [0.3, 1] and this width in pixels.
    lines: int = 3
    line_width: float = 1.0
    # Std of the Gaussian pixel noise added last (pixels are then clipped to [0, 1]).
    noise_std: float = 0.1

    def canvas_side(self) -> int:
        return 24

    def check(self) -> None:
        super().check()
        require_option(self.lines >= 0, "lines", f"must be >= 0, got {self.lines}")
        require_option(self.line_width > 0, "line_width", f"must be > 0, got {self.line_width}")
        require_option(self.noise_std >= 0, "noise_std", f"must be >= 0, got {self.noise_std}")


def line_segments(n: int, lines: int, side: int, width: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 1, side, side): the brightest of `lines` anti-aliased segments between random points."""
    canvas = torch.zeros(n, 1, side, side)
    if lines == 0:
        return canvas
    ends = torch.rand(n, lines, 2, 2, generator=gen) * side
    brightness = 0.3 + 0.7 * torch.rand(n, lines, generator=gen)
    coords = torch.arange(side, dtype=torch.float32) + 0.5
    pixels = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1).view(1, 1, -1, 2)
    start, direction = ends[:, :, 0:1], ends[:, :, 1:2] - ends[:, :, 0:1]
    # Distance from each pixel centre to its nearest point on the segment.
    t = ((pixels - start) * direction).sum(-1) / direction.pow(2).sum(-1).clamp_min(1e-6)
    nearest = start + t.clamp(0, 1).unsqueeze(-1) * direction
    distance = (pixels - nearest).norm(dim=-1)
    ink = (width / 2 + 0.5 - distance).clamp(0, 1) * brightness.unsqueeze(-1)
    return ink.amax(dim=1).view(n, 1, side, side)


@DATASETS.register_dataset("digits_clutter", DigitsClutterOptions)
def digits_clutter(cfg: DictConfig, o: DigitsClutterOptions) -> DataBundle:
    side = o.canvas_side()

    def compose(digits: torch.Tensor, gen: torch.Generator, sources: int) -> torch.Tensor:
        image = torch.maximum(place_digits(digits, side, o, gen), line_segments(len(digits), o.lines, side, o.line_width, gen))
        return (image + o.noise_std * torch.randn(image.shape, generator=gen)).clamp(0, 1)

    return composite_bundle(cfg, o, compose)


# --- digits_dominant ------------------------------------------------------------------------------
@dataclass
class DigitsDominantOptions(CompositeOptions):
    # The labeled digit is small: 7-10 px.
    digit_min: float = 7.0
    digit_max: float = 10.0
    # With `dominant`, each source digit gets a companion: another digit of its split, drawn at
    # random once (so the same in every composite and view of the source, and unrelated to the
    # label), pasted at dominant_min-dominant_max px. Without, the small digit is alone.
    dominant: bool = True
    dominant_min: float = 16.0
    dominant_max: float = 20.0
    noise_std: float = 0.1

    def canvas_side(self) -> int:
        return 24

    def check(self) -> None:
        super().check()
        require_option(0 < self.dominant_min <= self.dominant_max <= self.canvas_side(), "dominant_min",
                f"need 0 < dominant_min <= dominant_max <= {self.canvas_side()}, got {self.dominant_min}, {self.dominant_max}")
        require_option(self.noise_std >= 0, "noise_std", f"must be >= 0, got {self.noise_std}")


@DATASETS.register_dataset("digits_dominant", DigitsDominantOptions)
def digits_dominant(cfg: DictConfig, o: DigitsDominantOptions) -> DataBundle:
    side = o.canvas_side()
    large = dataclasses.replace(o, digit_min=o.dominant_min, digit_max=o.dominant_max)

    def compose(digits: torch.Tensor, gen: torch.Generator, sources: int) -> torch.Tensor:
        image = place_digits(digits, side, o, gen)
        if o.dominant:
            companion = torch.randint(0, sources, (sources,), generator=gen).repeat(len(digits) // sources)
            image = torch.maximum(image, place_digits(digits[companion], side, large, gen))
        return (image + o.noise_std * torch.randn(image.shape, generator=gen)).clamp(0, 1)

    return composite_bundle(cfg, o, compose)


# --- digits_on_natural -----------------------------------------------------------------------------
# scikit-image's photographs that load from the installed package, without a download.
NATURAL_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                  "camera", "coins", "grass", "gravel", "brick", "moon")


def natural_images() -> list[torch.Tensor]:
    """The photographs as float (3, H, W) in [0, 1]; grey ones repeated over the channels."""
    images = []
    for name in NATURAL_IMAGES:
        pixels = torch.from_numpy(getattr(skimage.data, name)()).float() / 255
        images.append(pixels.permute(2, 0, 1) if pixels.ndim == 3 else pixels.expand(3, -1, -1))
    return images


@dataclass
class DigitsOnNaturalOptions(CompositeOptions):
    digit_min: float = 12.0
    digit_max: float = 20.0
    # One composite per sample for both views, as in Chen et al.'s digits on ImageNet: the shared
    # background competes with the digit.
    pair_views: bool = False
    # Background = its mean colour + contrast * (crop - mean colour): 1 is the photograph, 0 a flat
    # colour (the digit then has no competitor).
    contrast: float = 1.0
    # Side of the square cut from a photograph before it is resized to 32 px, uniform in this range.
    crop_min: int = 48
    crop_max: int = 160

    def canvas_side(self) -> int:
        return 32

    def check(self) -> None:
        super().check()
        require_option(0.0 <= self.contrast <= 1.0, "contrast", f"must be in [0, 1], got {self.contrast}")
        # The smallest photograph (chelsea) is 300 px high.
        require_option(self.canvas_side() <= self.crop_min <= self.crop_max <= 300, "crop_min",
                f"need 32 <= crop_min <= crop_max <= 300, got {self.crop_min}, {self.crop_max}")


def background_crops(n: int, o: DigitsOnNaturalOptions, gen: torch.Generator) -> torch.Tensor:
    photos = natural_images()
    side = o.canvas_side()
    which = torch.randint(0, len(photos), (n,), generator=gen).tolist()
    crop = torch.randint(o.crop_min, o.crop_max + 1, (n,), generator=gen).tolist()
    corner = torch.rand(n, 2, generator=gen).tolist()
    crops = []
    for i, c, (u, v) in zip(which, crop, corner):
        photo = photos[i]
        top, left = int(u * (photo.shape[1] - c)), int(v * (photo.shape[2] - c))
        patch = photo[:, top : top + c, left : left + c].unsqueeze(0)
        crops.append(F.interpolate(patch, size=(side, side), mode="bilinear", antialias=True, align_corners=False))
    crops = torch.cat(crops)
    mean = crops.mean(dim=(2, 3), keepdim=True)
    return (mean + o.contrast * (crops - mean)).clamp(0, 1)


@DATASETS.register_dataset("digits_on_natural", DigitsOnNaturalOptions)
def digits_on_natural(cfg: DictConfig, o: DigitsOnNaturalOptions) -> DataBundle:
    side = o.canvas_side()

    def compose(digits: torch.Tensor, gen: torch.Generator, sources: int) -> torch.Tensor:
        alpha = place_digits(digits, side, o, gen).clamp(0, 1)
        colour = torch.rand(len(digits), 3, 1, 1, generator=gen)
        return background_crops(len(digits), o, gen) * (1 - alpha) + colour * alpha

    return composite_bundle(cfg, o, compose)
