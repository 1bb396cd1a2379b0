"""Backbones, projectors and predictors."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.nn.utils import parametrize

from trainables.errors import ConfigError
from trainables.registry import Registry, unknown_name_message

BACKBONES: Registry = Registry("model.backbone")


@BACKBONES.register("mlp")
def mlp_backbone(in_channels: int, image_size: int, width: int) -> tuple[nn.Module, int]:
    in_dim = in_channels * image_size * image_size
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_dim, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
    )
    return net, width


def conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@BACKBONES.register("convnet")
def convnet_backbone(in_channels: int, image_size: int, width: int) -> tuple[nn.Module, int]:
    """Three 3x3 conv blocks (width/4, width/2, width channels; the last two stride 2), then
    global average pooling."""
    c1, c2 = max(width // 4, 8), max(width // 2, 8)
    net = nn.Sequential(
        *conv_bn_relu(in_channels, c1, 1),
        *conv_bn_relu(c1, c2, 2),
        *conv_bn_relu(c2, width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return net, width


@BACKBONES.register("resnet18")
def resnet18_backbone(in_channels: int, image_size: int, width: int) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max-pool."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    repr_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, repr_dim


def build_backbone(name: str, in_channels: int, image_size: int, width: int) -> tuple[nn.Module, int]:
    return BACKBONES.get(name)(in_channels, image_size, width)


def parse_layer_spec(spec: str, key: str) -> list[int]:
    """'2048-2048-256' -> [2048, 2048, 256]; 'none' -> []."""
    if spec.strip().lower() == "none":
        return []
    try:
        dims = [int(part) for part in spec.split("-")]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(
            f"{key}: {spec!r} is not a layer spec; use positive widths joined by '-' "
            "(e.g. '2048-2048-256') or 'none'"
        )
    return dims


def mlp_from_dims(in_dim: int, dims: list[int], last_bias: bool) -> nn.Module:
    """Linear-BN-ReLU between layers, last layer plain (Garrido's X-Y-Z notation)."""
    layers: list[nn.Module] = []
    prev = in_dim
    for i, d in enumerate(dims):
        last = i == len(dims) - 1
        layers.append(nn.Linear(prev, d, bias=last_bias if last else False))
        if not last:
            layers += [nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
        prev = d
    return nn.Sequential(*layers)


def build_projector(spec: str, in_dim: int) -> tuple[nn.Module, int]:
    dims = parse_layer_spec(spec, "model.projector")
    if not dims:
        return nn.Identity(), in_dim
    return mlp_from_dims(in_dim, dims, last_bias=False), dims[-1]


class Symmetric(nn.Module):
    """Parametrization W = (A + A^T) / 2: Tian et al.'s symmetric linear predictor."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return (a + a.T) / 2


@dataclass(frozen=True)
class DirectPredSettings:
    # EMA rate of the correlation estimate F_hat.
    rho: float = 0.3
    # Added to every eigenvalue's p_j so that weak directions still pass through.
    eps: float = 0.1
    # Steps between two settings of the predictor from F_hat.
    freq: int = 1
    # Whether the predictor also trains by gradient between two settings.
    trainable: bool = False


class DirectPredPredictor(nn.Module):
    """Tian et al.'s DirectPred: a bias-free linear predictor W_p = U diag(p) U^T set directly from
    the eigendecomposition F_hat = U diag(s) U^T of the EMA correlation of its inputs, with
    p_j = sqrt(max(s_j, 0) / max_j s_j) + eps, clamped at >= 1e-4 (the official code).

    F_hat and the step counter are buffers, so they live in state_dict and survive a resume."""

    def __init__(self, dim: int, settings: DirectPredSettings):
        super().__init__()
        self.settings = settings
        self.weight = nn.Parameter(torch.eye(dim), requires_grad=settings.trainable)
        self.register_buffer("correlation", torch.zeros(dim, dim))
        self.register_buffer("observed_steps", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T

    @torch.no_grad()
    def observe(self, *views: torch.Tensor) -> None:
        """One training step's inputs (the online projector outputs of both views): update F_hat
        with their uncentered correlation, and set the weight on the first step and every `freq`
        steps after. Called before the predictor's forward, so the step's prediction uses it."""
        f = torch.cat(views).detach().float()
        batch_correlation = f.T @ f / len(f)
        if self.observed_steps == 0:
            # The official Accumulator starts from the first batch, not from zero.
            self.correlation.copy_(batch_correlation)
        else:
            self.correlation.lerp_(batch_correlation, 1 - self.settings.rho)
        if self.observed_steps % self.settings.freq == 0:
            self.weight.copy_(directpred_weight(self.correlation, self.settings.eps))
        self.observed_steps += 1


def directpred_weight(correlation: torch.Tensor, eps: float) -> torch.Tensor:
    """U diag(p) U^T from F_hat = U diag(s) U^T, p_j = sqrt(max(s_j, 0) / max_j s_j) + eps >= 1e-4."""
    s, u = torch.linalg.eigh(correlation.double())
    p = (s.clamp_min(0) / s.max().clamp_min(torch.finfo(s.dtype).tiny)).sqrt() + eps
    p = p.clamp_min(1e-4)
    return (u * p) @ u.T


PREDICTORS = ("none", "linear", "mlp", "directpred")


def build_predictor(
    kind: str,
    dim: int,
    hidden: int,
    symmetric: bool = False,
    directpred: DirectPredSettings = DirectPredSettings(),
) -> nn.Module | None:
    """none | linear (dim x dim, no bias; symmetric: W = (A + A^T)/2) | mlp (dim-hidden-dim, BN+ReLU
    in between) | directpred (DirectPredPredictor, symmetric PSD by construction)."""
    if kind not in PREDICTORS:
        raise ConfigError(unknown_name_message("method_kwargs.predictor", kind, list(PREDICTORS)))
    if symmetric and kind not in ("linear", "directpred"):
        raise ConfigError(
            f"method_kwargs.predictor_symmetric: needs predictor=linear or directpred, got predictor={kind}"
        )
    if kind == "none":
        return None
    if kind == "linear":
        linear = nn.Linear(dim, dim, bias=False)
        if symmetric:
            parametrize.register_parametrization(linear, "weight", Symmetric())
        return linear
    if kind == "mlp":
        return mlp_from_dims(dim, [hidden, dim], last_bias=True)
    return DirectPredPredictor(dim, directpred)


def is_norm_or_bias(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias")
