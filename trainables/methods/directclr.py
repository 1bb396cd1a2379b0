"""DirectCLR (Jing et al. 2022): InfoNCE on the leading coordinates of the representation, no projector."""
import logging
from dataclasses import dataclass

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.losses import nt_xent_loss
from trainables.methods.base import Method, register, require

log = logging.getLogger(__name__)


class LeadingCoordinates(nn.Module):
    """The first `d0` coordinates of the representation: DirectCLR's parameter-free head."""

    def __init__(self, d0: int):
        super().__init__()
        self.d0 = d0

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        return representation[:, : self.d0]

    def extra_repr(self) -> str:
        return f"d0={self.d0}"


@register
class DirectCLR(Method):
    name = "directclr"
    family = "sample_contrastive"
    loss_terms = ("alignment", "repulsion")
    source = "Jing et al. 2022: InfoNCE on the first d0 coordinates of the representation, no projector"

    @dataclass
    class Kwargs:
        # 360 of ResNet-50's 2048 in the paper.
        d0: int = 360
        temperature: float = 0.1

    @classmethod
    def check_kwargs(cls, kw) -> None:
        require(kw.d0 > 0, "d0", f"must be > 0, got {kw.d0}")
        require(kw.temperature > 0, "temperature", f"must be > 0, got {kw.temperature}")

    def build_head(self, projector: str, repr_dim: int) -> tuple[nn.Module, int]:
        if self.kw.d0 > repr_dim:
            raise ConfigError(f"method_kwargs.d0: {self.kw.d0} exceeds the representation width {repr_dim}")
        if projector.strip().lower() != "none":
            log.info("directclr has no projector: model.projector=%s is not used", projector)
        return LeadingCoordinates(self.kw.d0), self.kw.d0

    def loss(self, z1, z2):
        return nt_xent_loss(z1, z2, self.kw.temperature)
