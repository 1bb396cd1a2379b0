"""Batched augmentations on tensors, on the trial's device.

Every op draws its per-sample parameters from one torch.Generator, so a view is a pure function
of (images, generator state): an epoch's augmentations replay exactly after a resume.
Input: uint8 or float images (B, C, H, W) in [0, 255] or [0, 1]; output: normalized float.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewRecipe:
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    # brightness, contrast, saturation, hue (torchvision's ColorJitter meaning)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    noise_std: float = 0.0


def recipe(dataset: str, style: str) -> tuple[ViewRecipe, ViewRecipe]:
    """The two views' recipes. simclr: both views alike; byol: asymmetric blur and solarize
    (Grill et al.). CIFAR-sized images get no blur, as in SimCLR's CIFAR setting."""
    if style == "none":
        plain = ViewRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
        return plain, plain
    if dataset in ("digits", "digits_clutter", "digits_dominant"):
        # Grayscale digits: no flips (they change the digit), no colour; crops and pixel noise.
        digit = ViewRecipe(crop_scale=(0.5, 1.0), flip_p=0.0, jitter=(0.4, 0.4, 0.0, 0.0), grayscale_p=0.0, noise_std=0.1)
        return digit, digit
    if dataset == "digits_on_natural":
        # Coloured digits on photographs: no flips; SimCLR's strong colour jitter, mild crops.
        view = ViewRecipe(crop_scale=(0.5, 1.0), flip_p=0.0, jitter=(0.8, 0.8, 0.8, 0.2))
        return view, view
    small = dataset in ("cifar10", "cifar100")
    if style == "simclr":
        view = ViewRecipe(jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.0 if small else 0.5)
        return view, view
    return (
        ViewRecipe(blur_p=0.0 if small else 1.0, solarize_p=0.0),
        ViewRecipe(blur_p=0.0 if small else 0.1, solarize_p=0.2),
    )


class Augmenter:
    """The view maker of image datasets: two views by the recipes, then per-channel normalization."""

    def __init__(self, recipes: tuple[ViewRecipe, ViewRecipe], out_size: int, mean, std, device="cpu"):
        self.recipes = recipes
        self.out_size = out_size
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def to(self, device) -> "Augmenter":
        return Augmenter(self.recipes, self.out_size, self.mean.flatten().tolist(), self.std.flatten().tolist(), device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (to_float(images) - self.mean) / self.std

    def view(self, images: torch.Tensor, index: int, gen: torch.Generator) -> torch.Tensor:
        """View `index` (0 or 1) by its recipe, normalized."""
        return self.normalize(augment(to_float(images), self.recipes[index], self.out_size, gen))

    def views(self, images: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(images, 0, gen), self.view(images, 1, gen)


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def bernoulli(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def augment(x: torch.Tensor, r: ViewRecipe, out_size: int, gen: torch.Generator) -> torch.Tensor:
    x = resized_crop_flip(x, r, out_size, gen)
    if r.jitter_p > 0 and any(r.jitter):
        x = color_jitter(x, r.jitter, r.jitter_p, gen)
    if r.grayscale_p > 0 and x.shape[1] == 3:
        x = torch.where(bernoulli(len(x), r.grayscale_p, gen, x.device).view(-1, 1, 1, 1), grayscale(x), x)
    if r.blur_p > 0:
        x = gaussian_blur(x, r.blur_p, r.blur_sigma, gen)
    if r.solarize_p > 0:
        chosen = bernoulli(len(x), r.solarize_p, gen, x.device).view(-1, 1, 1, 1)
        x = torch.where(chosen & (x >= 0.5), 1 - x, x)
    if r.noise_std > 0:
        x = x + r.noise_std * torch.randn(x.shape, generator=gen, device=x.device)
    return x


def resized_crop_flip(x: torch.Tensor, r: ViewRecipe, out_size: int, gen: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop + horizontal flip as one per-sample affine resampling (bilinear).
    Crop sides are fractions of the image side; crops that would overflow are clipped."""
    b, device = len(x), x.device
    area = uniform(b, *r.crop_scale, gen, device)
    log_ratio = uniform(b, math.log(r.crop_ratio[0]), math.log(r.crop_ratio[1]), gen, device)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen, device=device) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen, device=device) * 2 - 1) * (1 - h)
    flip = torch.where(bernoulli(b, r.flip_p, gen, device), -1.0, 1.0)
    if r.crop_scale == (1.0, 1.0) and r.flip_p == 0 and x.shape[-1] == out_size:
        return x
    # Sampling grid in normalized coordinates (pixel centres, align_corners=False), built by
    # broadcasting: F.affine_grid does the same through a batched matmul, ~10x slower on CPU.
    base = (torch.arange(out_size, device=device, dtype=x.dtype) * 2 + 1) / out_size - 1
    grid_x = (w * flip).view(b, 1, 1) * base.view(1, 1, -1) + cx.view(b, 1, 1)
    grid_y = h.view(b, 1, 1) * base.view(1, -1, 1) + cy.view(b, 1, 1)
    grid = torch.stack(torch.broadcast_tensors(grid_x, grid_y), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True).expand_as(x)


def color_jitter(x: torch.Tensor, strength, p: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue factors drawn per sample (torchvision's ranges),
    applied in that fixed order to the chosen samples."""
    b, device = len(x), x.device
    brightness, contrast, saturation, hue = strength
    chosen = bernoulli(b, p, gen, device).view(-1, 1, 1, 1)
    out = x
    if brightness > 0:
        f = uniform(b, max(0, 1 - brightness), 1 + brightness, gen, device).view(-1, 1, 1, 1)
        out = (out * f).clamp(0, 1)
    if contrast > 0:
        f = uniform(b, max(0, 1 - contrast), 1 + contrast, gen, device).view(-1, 1, 1, 1)
        mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
        out = (f * out + (1 - f) * mean).clamp(0, 1)
    if x.shape[1] == 3 and saturation > 0:
        f = uniform(b, max(0, 1 - saturation), 1 + saturation, gen, device).view(-1, 1, 1, 1)
        out = (f * out + (1 - f) * grayscale(out)).clamp(0, 1)
    if x.shape[1] == 3 and hue > 0:
        angle = uniform(b, -hue, hue, gen, device) * 2 * math.pi
        out = torch.einsum("bij,bjhw->bihw", hue_rotation(angle), out).clamp(0, 1)
    return torch.where(chosen, out, x)


def hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations of RGB space about the grey axis (1, 1, 1): a hue shift by angle/2pi
    of the colour wheel that keeps luminance-neutral greys fixed. Cheaper than an HSV round
    trip (one batched matmul) and equal to it for shifts of 1/3 (a cyclic channel permutation)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    third, root = (1 - cos) / 3, sin / math.sqrt(3)
    diag = cos + third
    return torch.stack([
        torch.stack([diag, third - root, third + root], dim=1),
        torch.stack([third + root, diag, third - root], dim=1),
        torch.stack([third - root, third + root, diag], dim=1),
    ], dim=1)


def gaussian_blur(x: torch.Tensor, p: float, sigma_range, gen: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (kernel ~10% of the side, odd), applied as
    one grouped convolution over the chosen samples."""
    b, c, height, width = x.shape
    chosen = bernoulli(b, p, gen, x.device)
    sigma = uniform(b, *sigma_range, gen, x.device)
    idx = chosen.nonzero().flatten()
    if idx.numel() == 0:
        return x
    size = max(3, (int(0.1 * height) // 2) * 2 + 1)
    offsets = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
    kernels = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma[idx].view(-1, 1) ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    sel = x[idx].reshape(1, -1, height, width)
    pad = size // 2
    sel = F.conv2d(F.pad(sel, (0, 0, pad, pad), mode="reflect"), kernels.view(-1, 1, size, 1), groups=len(kernels))
    sel = F.conv2d(F.pad(sel, (pad, pad, 0, 0), mode="reflect"), kernels.view(-1, 1, 1, size), groups=len(kernels))
    out = x.clone()
    out[idx] = sel.view(-1, c, height, width)
    return out
