"""Backbones, projectors and predictors."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from trainables.errors import ConfigError
from trainables.registry import Registry

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


def build_predictor(kind: str, dim: int, hidden: int) -> nn.Module | None:
    """none | linear (dim x dim, no bias) | mlp (dim-hidden-dim, BN+ReLU in between)."""
    if kind == "none":
        return None
    if kind == "linear":
        return nn.Linear(dim, dim, bias=False)
    if kind == "mlp":
        return mlp_from_dims(dim, [hidden, dim], last_bias=True)
    raise ConfigError(f"method_kwargs.predictor: unknown value {kind!r}; allowed: none, linear, mlp")


def is_norm_or_bias(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias")
