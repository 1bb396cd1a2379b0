"""The method base classes and the registry METHODS. A Method owns backbone, projector, optional
predictor and EMA target, and the shared training step; a method file (one per method, imported by
trainables.methods) only declares its family, hyperparameters, loss and loss terms, and registers."""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from trainables.config import structured_options
from trainables.errors import ConfigError, unknown_value
from trainables.losses import LossTerms, average
from trainables.models import (
    PREDICTORS,
    DirectPredPredictor,
    DirectPredSettings,
    build_predictor,
    build_projector,
    is_norm_or_bias,
)
from trainables.registry import Registry

FAMILIES = ("sample_contrastive", "dimension_contrastive", "asymmetric")


def require_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"method_kwargs.{key}: {unknown_value('value', value, list(allowed))}")


def require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"method_kwargs.{key}: {message}")


class Method(nn.Module):
    name: ClassVar[str]
    family: ClassVar[str]
    source: ClassVar[str] = ""
    # The names of the terms its loss returns (see trainables.losses); a trial reports each per
    # epoch as loss_<term>.
    loss_terms: ClassVar[tuple[str, ...]]

    @dataclass
    class Kwargs:
        pass

    def __init__(self, backbone: nn.Module, repr_dim: int, projector: str, kwargs: Any):
        super().__init__()
        self.kw = kwargs
        self.backbone = backbone
        self.repr_dim = repr_dim
        self.projector, self.emb_dim = self.build_head(projector, repr_dim)

    def build_head(self, projector: str, repr_dim: int) -> tuple[nn.Module, int]:
        """The module that maps a representation to the embedding the loss sees, and its width.
        A method whose loss works on the representation itself overrides this (e.g. DirectCLR)."""
        return build_projector(projector, repr_dim)

    @classmethod
    def parse_kwargs(cls, user: dict) -> Any:
        """Validate `method_kwargs` against this method's Kwargs dataclass (defaults filled in)."""
        kwargs = structured_options(cls.Kwargs, user, "method_kwargs", "a hyperparameter", cls.name)
        cls.check_kwargs(kwargs)
        return kwargs

    @classmethod
    def check_kwargs(cls, kw: Any) -> None:
        """Raise ConfigError for values the types allow but the method does not (choices, ranges),
        so a sweep fails at validation rather than inside a trial."""

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Hyperparameter names with their defaults, in declaration order."""
        return {f.name: f.default for f in dataclasses.fields(cls.Kwargs)}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        representation = self.backbone(x)
        return representation, self.projector(representation)

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> LossTerms:
        raise NotImplementedError

    def training_step(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[LossTerms, torch.Tensor]:
        """Returns the loss with its terms and view 1's representation (the online probe trains on
        it detached)."""
        r1, z1 = self(x1)
        _, z2 = self(x2)
        return self.loss(z1, z2), r1

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimizer step with the fraction of training done."""

    def param_groups(self, weight_decay: float, exclude_bias_norm: bool) -> list[dict]:
        """Groups for the optimizer; `lr_ratio` scales a group's learning rate, `lars` says whether
        LARS adapts it. Subclasses add groups for their own modules (e.g. a predictor)."""
        return split_bias_norm(
            [(n, p) for n, p in self.named_parameters() if not n.startswith("predictor.")],
            weight_decay,
            exclude_bias_norm,
        )


def split_bias_norm(
    named: list[tuple[str, nn.Parameter]], weight_decay: float, exclude: bool, lr_ratio: float = 1.0
) -> list[dict]:
    named = [(n, p) for n, p in named if p.requires_grad]
    regular = [p for n, p in named if not (exclude and is_norm_or_bias(n, p))]
    excluded = [p for n, p in named if exclude and is_norm_or_bias(n, p)]
    groups = [dict(params=regular, weight_decay=weight_decay, lr_ratio=lr_ratio, lars=True)]
    if excluded:
        groups.append(dict(params=excluded, weight_decay=0.0, lr_ratio=lr_ratio, lars=False))
    return [g for g in groups if g["params"]]


class AsymmetricMethod(Method):
    """Online network + predictor against a target branch: an EMA copy of backbone+projector, or
    the online network itself, with or without stop-gradient. Loss is symmetrized over views.

    Every switch the theory papers ablate is a hyperparameter of every asymmetric method."""

    family = "asymmetric"
    loss_terms = ("prediction",)

    @dataclass
    class Kwargs:
        # none | linear | mlp | directpred
        predictor: str = "mlp"
        # Hidden width of the mlp predictor; None: a quarter of the embedding width (SimSiam's bottleneck).
        predictor_hidden: Optional[int] = 512
        # Linear predictor constrained to W = W^T (Tian et al.); directpred is symmetric anyway.
        predictor_symmetric: bool = False
        predictor_lr_ratio: float = 1.0
        # None: the optimizer's weight decay.
        predictor_weight_decay: Optional[float] = None
        # Without it, gradients also flow through the target branch (needs ema=false: an EMA
        # target has no gradient to stop).
        stop_gradient: bool = True
        ema: bool = True
        # Base EMA rate, raised to 1 over training on a cosine schedule (BYOL).
        ema_tau: float = 0.996
        # DirectPred (predictor=directpred): F_hat <- rho F_hat + (1 - rho) E[f f^T]; the predictor
        # is set from F_hat every `freq` steps, p_j = sqrt(s_j / max s) + eps.
        directpred_rho: float = 0.3
        directpred_eps: float = 0.1
        directpred_freq: int = 1
        # Also train the directpred predictor by gradient between two settings.
        directpred_sgd: bool = False

    @classmethod
    def check_kwargs(cls, kw: Any) -> None:
        require_choice("predictor", kw.predictor, PREDICTORS)
        require(not kw.predictor_symmetric or kw.predictor in ("linear", "directpred"), "predictor_symmetric",
                f"needs predictor=linear or directpred, got predictor={kw.predictor}")
        require(kw.stop_gradient or not kw.ema, "stop_gradient",
                "false needs ema=false: an EMA target has no gradient to stop")
        require(kw.predictor_hidden is None or kw.predictor_hidden > 0, "predictor_hidden", "must be > 0 or null")
        require(kw.predictor_lr_ratio > 0, "predictor_lr_ratio", f"must be > 0, got {kw.predictor_lr_ratio}")
        require(0.0 <= kw.ema_tau <= 1.0, "ema_tau", f"must be in [0, 1], got {kw.ema_tau}")
        require(0.0 <= kw.directpred_rho < 1.0, "directpred_rho", f"must be in [0, 1), got {kw.directpred_rho}")
        require(kw.directpred_freq >= 1, "directpred_freq", f"must be >= 1, got {kw.directpred_freq}")

    def __init__(self, backbone: nn.Module, repr_dim: int, projector: str, kwargs: Any):
        super().__init__(backbone, repr_dim, projector, kwargs)
        hidden = kwargs.predictor_hidden or max(self.emb_dim // 4, 1)
        settings = DirectPredSettings(kwargs.directpred_rho, kwargs.directpred_eps, kwargs.directpred_freq, kwargs.directpred_sgd)
        self.predictor = build_predictor(kwargs.predictor, self.emb_dim, hidden, kwargs.predictor_symmetric, settings)
        self.target: nn.Module | None = None
        if kwargs.ema:
            self.target = copy.deepcopy(nn.Sequential(self.backbone, self.projector))
            self.target.requires_grad_(False)

    def ema_tau(self, progress: float) -> float:
        return 1 - (1 - self.kw.ema_tau) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        if self.target is None:
            return
        tau = self.ema_tau(progress)
        online = nn.Sequential(self.backbone, self.projector)
        for t, o in zip(self.target.parameters(), online.parameters()):
            t.lerp_(o, 1 - tau)
        for t, o in zip(self.target.buffers(), online.buffers()):
            t.copy_(o)

    def target_embedding(self, x: torch.Tensor, z_online: torch.Tensor) -> torch.Tensor:
        if self.target is not None:
            with torch.no_grad():
                return self.target(x)
        return z_online.detach() if self.kw.stop_gradient else z_online

    def predict(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.predictor is None:
            return z1, z2
        if isinstance(self.predictor, DirectPredPredictor):
            self.predictor.observe(z1, z2)
        return self.predictor(z1), self.predictor(z2)

    def training_step(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[LossTerms, torch.Tensor]:
        r1, z1 = self(x1)
        _, z2 = self(x2)
        p1, p2 = self.predict(z1, z2)
        t1, t2 = self.target_embedding(x1, z1), self.target_embedding(x2, z2)
        return average(self.loss(p1, t2), self.loss(p2, t1)), r1

    def param_groups(self, weight_decay: float, exclude_bias_norm: bool) -> list[dict]:
        groups = super().param_groups(weight_decay, exclude_bias_norm)
        if self.predictor is not None:
            decay = self.kw.predictor_weight_decay
            groups += split_bias_norm(
                list(self.predictor.named_parameters()),
                weight_decay if decay is None else decay,
                exclude_bias_norm,
                lr_ratio=self.kw.predictor_lr_ratio,
            )
        return groups


METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator of a method file: checks what every method declares and registers it by name."""
    if cls.family not in FAMILIES:
        raise RuntimeError(f"{cls.__name__}.family must be one of {FAMILIES}")
    if not getattr(cls, "loss_terms", None):
        raise RuntimeError(f"{cls.__name__} must declare loss_terms, the names of its loss's terms")
    return METHODS.register(cls.name)(cls)
