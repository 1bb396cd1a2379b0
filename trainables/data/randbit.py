"""RandBit (Chen, Luo, Li 2021, feature suppression): any in-memory image dataset with n random bits
appended as constant channels, drawn once per sample from `data.split_seed`, identical in both
views and never augmented. An easy shared feature that the encoder can match views by instead of
the image."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainables.config import structured_options
from trainables.data.containers import (DATASETS, DataBundle, DatasetOptions, TensorSamples, ViewMaker,
                                        dataset_options, require_option)
from trainables.errors import ConfigError


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
        self.base_dataset_options().check()

    def train_size(self, cfg: DictConfig) -> int | None:
        return self.base_dataset_options().train_size(cfg)

    def base_dataset_options(self) -> DatasetOptions:
        entry = DATASETS.get(self.base, key="data.options.base")
        return structured_options(entry.options, self.base_options, "data.options.base_options", "an option", self.base)


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
