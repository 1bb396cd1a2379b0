"""Backbones, projectors and predictors."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from trainables import distributed
from trainables.errors import ConfigError
from trainables.registry import Registry

BACKBONES: Registry = Registry("model.backbone")


@dataclass(frozen=True)
class BackboneArgs:
    # One input sample's shape: (C, H, W) for images, (p,) for vectors.
    input_shape: tuple[int, ...]
    width: int
    # deep_linear: number of layers.
    depth: int = 2
    # linear, deep_linear: initial singular values exp(-decay * k); None: PyTorch's default init.
    init_spectrum_decay: float | None = None

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    def image_channels(self, backbone: str) -> int:
        if len(self.input_shape) != 3:
            raise ConfigError(f"model.backbone: {backbone} needs images (C, H, W); this dataset's samples have "
                              f"shape {self.input_shape} (use mlp, linear, deep_linear or symrelu)")
        return self.input_shape[0]


@BACKBONES.register("mlp")
def mlp_backbone(args: BackboneArgs) -> tuple[nn.Module, int]:
    width = args.width
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(args.input_dim, width),
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
def convnet_backbone(args: BackboneArgs) -> tuple[nn.Module, int]:
    """Three 3x3 conv blocks (width/4, width/2, width channels; the last two stride 2), then
    global average pooling."""
    width = args.width
    c1, c2 = max(width // 4, 8), max(width // 2, 8)
    net = nn.Sequential(
        *conv_bn_relu(args.image_channels("convnet"), c1, 1),
        *conv_bn_relu(c1, c2, 2),
        *conv_bn_relu(c2, width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return net, width


@BACKBONES.register("resnet18")
def resnet18_backbone(args: BackboneArgs) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max-pool."""
    # Imported here: torchvision adds ~1.5 s to every trial worker's start, and most trials never use it.
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(args.image_channels("resnet18"), 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    repr_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, repr_dim


class MatrixBackbone(nn.Module):
    """A backbone made of weight matrices whose product is its linear part: what the theory
    diagnostics inspect (norm, spectra, alignment of layers, recovery of a dictionary)."""

    def layer_weights(self) -> list[torch.Tensor]:
        """Weights from the input side, each (out, in)."""
        raise NotImplementedError

    def end_to_end(self) -> torch.Tensor:
        """W_k ... W_1: row i is the input direction that drives output unit i."""
        first, *rest = self.layer_weights()
        product = first
        for w in rest:
            product = w @ product
        return product


class DeepLinear(MatrixBackbone):
    """x -> W_k ... W_1 x with bias-free layers (Jing et al.'s two-layer linear network; one layer
    is Tian et al.'s linear online network)."""

    def __init__(self, in_dim: int, width: int, depth: int, init_spectrum_decay: float | None):
        super().__init__()
        dims = [in_dim] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims, dims[1:]))
        if init_spectrum_decay is not None:
            with torch.no_grad():
                for layer in self.layers:
                    layer.weight.copy_(decaying_spectrum(*layer.weight.shape, init_spectrum_decay))

    def layer_weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return x


def decaying_spectrum(rows: int, cols: int, decay: float) -> torch.Tensor:
    """U diag(exp(-decay * k)) V^T with U, V random orthonormal (QR of Gaussian matrices, from the
    global torch RNG), k = 0 .. min(rows, cols) - 1."""
    k = min(rows, cols)
    u, _ = torch.linalg.qr(torch.randn(rows, k))
    v, _ = torch.linalg.qr(torch.randn(cols, k))
    return (u * torch.exp(-decay * torch.arange(k, dtype=torch.float32))) @ v.T


class SymReLU(MatrixBackbone):
    """Pokle et al.'s encoder: the symmetric ReLU relu(h + b) - relu(-h + b) of h = BN(W x), with a
    learned per-unit threshold b (b < 0 zeroes small |h|: a sparse code). The batch norm is that of
    their official runs (use_bn): without it W grows until b no longer matters, the encoder is
    then nearly linear and contrastive training no longer picks out the dictionary's directions."""

    def __init__(self, in_dim: int, width: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, width, bias=False)
        self.norm = nn.BatchNorm1d(width)
        # nn.Linear's bias init, kept as a separate parameter because it enters twice.
        self.bias = nn.Parameter(torch.empty(width).uniform_(-in_dim ** -0.5, in_dim ** -0.5))

    def layer_weights(self) -> list[torch.Tensor]:
        return [self.linear.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.linear(x.flatten(1)))
        return torch.relu(h + self.bias) - torch.relu(-h + self.bias)


def start_at_dictionary(encoder: SymReLU, dictionary: torch.Tensor, noise_std: float) -> None:
    """Pokle et al.'s warm start: unit i < d of the encoder starts at the dictionary's column M_i plus
    N(0, noise_std^2) per coordinate, rescaled to the norm PyTorch's init gave it; the other units
    keep their random init. Uses the global torch RNG."""
    weight = encoder.linear.weight
    p, d = dictionary.shape
    if weight.shape[1] != p or weight.shape[0] < d:
        raise ConfigError(f"model.init: dictionary needs an encoder of width >= d={d} on inputs of dim p={p}; "
                          f"its weight is {tuple(weight.shape)}")
    with torch.no_grad():
        rows = dictionary.T.to(weight) + noise_std * torch.randn(d, p).to(weight)
        weight[:d] = F.normalize(rows, dim=1) * weight[:d].norm(dim=1, keepdim=True)


@BACKBONES.register("linear")
def linear_backbone(args: BackboneArgs) -> tuple[nn.Module, int]:
    """One bias-free linear map W (input dim -> width)."""
    return DeepLinear(args.input_dim, args.width, 1, args.init_spectrum_decay), args.width


@BACKBONES.register("deep_linear")
def deep_linear_backbone(args: BackboneArgs) -> tuple[nn.Module, int]:
    """`depth` bias-free linear layers, input dim -> width -> ... -> width."""
    return DeepLinear(args.input_dim, args.width, args.depth, args.init_spectrum_decay), args.width


@BACKBONES.register("symrelu")
def symrelu_backbone(args: BackboneArgs) -> tuple[nn.Module, int]:
    return SymReLU(args.input_dim, args.width), args.width


def build_backbone(
    name: str, input_shape: tuple[int, ...], width: int, depth: int = 2, init_spectrum_decay: float | None = None
) -> tuple[nn.Module, int]:
    return BACKBONES.get(name)(BackboneArgs(tuple(input_shape), width, depth, init_spectrum_decay))


@functools.lru_cache(maxsize=None)
def forward_flops(backbone: str, input_shape: tuple[int, ...], width: int, projector: str, depth: int = 2) -> float:
    """FLOPs of one sample's forward pass through the backbone and the projector (a multiply-add
    counts 2): what torch's FlopCounterMode counts (matrix products and convolutions; norms and
    activations are left out) on a model built on the meta device, so nothing is allocated or run."""
    with torch.device("meta"):
        net, repr_dim = build_backbone(backbone, input_shape, width, depth)
        head, _ = build_projector(projector, repr_dim)
        # Two samples: batch norm in training mode needs more than one.
        batch = torch.empty(2, *input_shape)
        with FlopCounterMode(display=False) as counter:
            head(net(batch))
    return counter.get_total_flops() / 2


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
        steps after. Called before the predictor's forward, so the step's prediction uses it.
        Data-parallel: the correlation is the global batch's, so every rank sets the same weight."""
        # In F_hat's precision (float32 when the network runs in half precision).
        f = torch.cat(views).detach().to(self.correlation.dtype)
        batch_correlation = distributed.all_reduce_with_grad(f.T @ f) / (len(f) * distributed.world_size())
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
    in between) | directpred (DirectPredPredictor, symmetric PSD by construction). The choices are
    checked with the method's hyperparameters (AsymmetricMethod.check_kwargs)."""
    if kind not in PREDICTORS or (symmetric and kind not in ("linear", "directpred")):
        raise ValueError(f"no predictor {kind!r} (symmetric={symmetric}); allowed: {PREDICTORS}")
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
