"""The method base class: owns backbone, projector, optional predictor and EMA target, and the
shared training step. A method file only declares its family, its hyperparameters and its loss."""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from trainables.errors import ConfigError
from trainables.models import build_predictor, build_projector, is_norm_or_bias

FAMILIES = ("sample_contrastive", "dimension_contrastive", "asymmetric")


class Method(nn.Module):
    name: ClassVar[str]
    family: ClassVar[str]
    source: ClassVar[str] = ""

    @dataclass
    class Kwargs:
        pass

    def __init__(self, backbone: nn.Module, repr_dim: int, projector: str, kwargs: Any):
        super().__init__()
        self.kw = kwargs
        self.backbone = backbone
        self.repr_dim = repr_dim
        self.projector, self.emb_dim = build_projector(projector, repr_dim)

    @classmethod
    def parse_kwargs(cls, user: dict) -> Any:
        """Validate `method_kwargs` against this method's Kwargs dataclass (defaults filled in)."""
        allowed = [f.name for f in dataclasses.fields(cls.Kwargs)]
        for key in user:
            if key not in allowed:
                raise ConfigError(
                    f"method_kwargs.{key}: not a hyperparameter of {cls.name}; "
                    f"allowed: {', '.join(allowed) or 'none'}"
                )
        try:
            merged = OmegaConf.merge(OmegaConf.structured(cls.Kwargs), user)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "key", None)
            raise ConfigError(f"method_kwargs.{key}: {str(exc).splitlines()[0]}") from None
        return OmegaConf.to_object(merged)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        representation = self.backbone(x)
        return representation, self.projector(representation)

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the loss and view 1's representation (the online probe trains on it detached)."""
        r1, z1 = self(x1)
        _, z2 = self(x2)
        return self.loss(z1, z2), r1

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimizer step with the fraction of training done."""

    def param_groups(self, weight_decay: float, exclude_bias_norm: bool) -> list[dict]:
        """Groups for the optimizer; `lr_ratio` scales a group's learning rate, `lars` says whether
        LARS adapts it. Subclasses add groups for their own modules (e.g. a predictor)."""
        return split_bias_norm(
            [(n, p) for n, p in self.named_parameters() if p.requires_grad and not n.startswith("predictor.")],
            weight_decay,
            exclude_bias_norm,
        )


def split_bias_norm(
    named: list[tuple[str, nn.Parameter]], weight_decay: float, exclude: bool, lr_ratio: float = 1.0
) -> list[dict]:
    regular = [p for n, p in named if not (exclude and is_norm_or_bias(n, p))]
    excluded = [p for n, p in named if exclude and is_norm_or_bias(n, p)]
    groups = [dict(params=regular, weight_decay=weight_decay, lr_ratio=lr_ratio, lars=True)]
    if excluded:
        groups.append(dict(params=excluded, weight_decay=0.0, lr_ratio=lr_ratio, lars=False))
    return [g for g in groups if g["params"]]


class AsymmetricMethod(Method):
    """Online network + predictor against a target branch: an EMA copy of backbone+projector, or
    the online network itself, with or without stop-gradient. Loss is symmetrized over views."""

    @dataclass
    class Kwargs:
        predictor: str = "mlp"
        predictor_hidden: int = 512
        predictor_lr_ratio: float = 1.0
        # None: the optimizer's weight decay.
        predictor_weight_decay: Optional[float] = None
        stop_gradient: bool = True
        ema: bool = True
        # Base EMA rate, raised to 1 over training on a cosine schedule (BYOL).
        ema_tau: float = 0.996

    def __init__(self, backbone: nn.Module, repr_dim: int, projector: str, kwargs: Any):
        super().__init__(backbone, repr_dim, projector, kwargs)
        self.predictor = build_predictor(kwargs.predictor, self.emb_dim, kwargs.predictor_hidden)
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

    def training_step(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r1, z1 = self(x1)
        _, z2 = self(x2)
        p1, p2 = (self.predictor(z1), self.predictor(z2)) if self.predictor is not None else (z1, z2)
        t1, t2 = self.target_embedding(x1, z1), self.target_embedding(x2, z2)
        return (self.loss(p1, t2) + self.loss(p2, t1)) / 2, r1

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
