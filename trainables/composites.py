"""Image worlds composed from scikit-learn's digits, where SSL methods are far from saturation,
and RandBit, which wraps an image dataset. All are drawn from `data.split_seed`, download nothing,
and split by source digit: a held-out composite never shows a digit image seen in training.

Views of a composite world: with `pair_views` the two views of a training sample are two
different composites of one source digit (each then augmented by the recipe), so nothing but the
digit is shared between them; without, both views come from one composite, whose clutter or
background the encoder can then match views by instead of the digit (feature suppression).

- digits_clutter: each digit scaled to 10-15 px at a random place on a 24x24 canvas, among random
  line segments, plus pixel noise.
- digits_on_natural: each digit scaled, coloured and pasted at a random place on a random crop of
  the natural photographs that ship with scikit-image (32x32 RGB). The backgrounds compete with
  the digit for the encoder's capacity (Chen et al.'s feature suppression, on a CPU scale).
- randbit (Chen et al. 2021): any in-memory image dataset with n random bits appended as constant
  channels, drawn once per sample, identical in both views and never augmented."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dataclasses

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from trainables.augment import Augmenter
from trainables.config import structured_options
from trainables.data import (DATASETS, DataBundle, DatasetOptions, TensorSamples, ViewMaker, dataset_options,
                             digit_sources, image_bundle, require_option)
from trainables.errors import ConfigError


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
    """`compose(digits, gen)` applied to `composites` copies of every training source digit (the kNN
    bank and probes see each composite, labeled) and `test_composites` copies of every held-out one."""
    x_train, y_train, x_test, y_test = digit_sources(cfg)
    gen = torch.Generator().manual_seed(cfg.split_seed)
    # Copy-major: composite c of source i is row c * len(x_train) + i.
    train = compose(x_train.repeat(o.composites, 1, 1, 1), gen)
    labeled = TensorSamples(train, y_train.repeat(o.composites))
    test = TensorSamples(compose(x_test.repeat(o.test_composites, 1, 1, 1), gen), y_test.repeat(o.test_composites))
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

    def compose(digits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        image = torch.maximum(place_digits(digits, side, o, gen), line_segments(len(digits), o.lines, side, o.line_width, gen))
        return (image + o.noise_std * torch.randn(image.shape, generator=gen)).clamp(0, 1)

    return composite_bundle(cfg, o, compose)


# --- digits_on_natural -----------------------------------------------------------------------------
# scikit-image's photographs that load from the installed package, without a download.
NATURAL_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                  "camera", "coins", "grass", "gravel", "brick", "moon")


def natural_images() -> list[torch.Tensor]:
    """The photographs as float (3, H, W) in [0, 1]; grey ones repeated over the channels."""
    from skimage import data

    images = []
    for name in NATURAL_IMAGES:
        pixels = torch.from_numpy(getattr(data, name)()).float() / 255
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

    def compose(digits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        alpha = place_digits(digits, side, o, gen).clamp(0, 1)
        colour = torch.rand(len(digits), 3, 1, 1, generator=gen)
        return background_crops(len(digits), o, gen) * (1 - alpha) + colour * alpha

    return composite_bundle(cfg, o, compose)


# --- randbit -------------------------------------------------------------------------------------
@dataclass
class RandBitOptions(DatasetOptions):
    # The wrapped dataset: an in-memory image dataset, and its own options.
    base: str = "digits_clutter"
    base_options: dict[str, Any] = field(default_factory=dict)
    # Random bits appended to every sample as constant channels (0 = the base dataset unchanged).
    bits: int = 5

    def check(self) -> None:
        require_option(self.bits >= 0, "bits", f"must be >= 0, got {self.bits}")
        require_option(self.base != "randbit", "base", "randbit cannot wrap itself")
        entry = DATASETS.get(self.base, key="data.options.base")
        structured_options(entry.options, self.base_options, "data.options.base_options", "an option", self.base).check()


@dataclass(frozen=True)
class RandBitViews:
    """The base dataset's views of the image channels, with the bit channels appended as they are
    (as -1 / +1 planes): the bits are the same in both views and never augmented. Channels are
    dimension -3 of a sample, so a training sample of composite pairs (K, C, H, W) works alike:
    its composites carry the same bits."""

    base: ViewMaker
    image_channels: int

    def with_bits(self, images: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bits = x[..., self.image_channels :, 0, 0]
        if bits.ndim == 3:
            bits = bits[:, 0]  # the composites of one sample share their bits
        planes = ((bits > 0).to(images.dtype) * 2 - 1)[:, :, None, None]
        return torch.cat([images, planes.expand(-1, -1, *images.shape[-2:])], dim=1)

    def views(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(self.with_bits(v, x) for v in self.base.views(x[..., : self.image_channels, :, :], gen))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_bits(self.base.normalize(x[..., : self.image_channels, :, :]), x)

    def to(self, device) -> "RandBitViews":
        return RandBitViews(self.base.to(device), self.image_channels)


def with_random_bits(samples: TensorSamples, bits: int, gen: torch.Generator) -> TensorSamples:
    """Each sample (..., C, H, W) gets `bits` random constant channels (0 or the image's maximum);
    the composites of one sample share them."""
    images = samples.samples
    n, height, width = len(images), images.shape[-2], images.shape[-1]
    on = torch.randint(0, 2, (n, bits), generator=gen).to(images.dtype) * (255 if images.dtype == torch.uint8 else 1)
    on = on.view(n, *[1] * (images.ndim - 4), bits, 1, 1).expand(*images.shape[:-3], bits, height, width)
    return TensorSamples(torch.cat([images, on], dim=-3), samples.labels)


@DATASETS.register_dataset("randbit", RandBitOptions)
def randbit(cfg: DictConfig, o: RandBitOptions) -> DataBundle:
    base_cfg = OmegaConf.merge(cfg, {"name": o.base})
    base_cfg.options = o.base_options
    base = DATASETS.get(o.base).load(base_cfg, dataset_options(base_cfg))
    splits = (base.train, base.eval_train, base.test)
    if len(base.input_shape) != 3 or not all(isinstance(s, TensorSamples) for s in splits):
        raise ConfigError(f"data.options.base: randbit wraps an in-memory image dataset; {o.base} is not one")
    gen = torch.Generator().manual_seed(cfg.split_seed + 1)
    # A split shared by two roles (train is eval_train) gets its bits once.
    with_bits = {id(s): with_random_bits(s, o.bits, gen) for s in splits}
    channels, *size = base.input_shape
    return DataBundle(*(with_bits[id(s)] for s in splits), base.num_classes, (channels + o.bits, *size),
                      RandBitViews(base.view_maker, channels))
