"""Barlow Twins (Zbontar et al. 2021): the views' cross-correlation driven to the identity."""
from dataclasses import dataclass

from trainables.losses import barlow_twins_loss
from trainables.methods.base import Method, register, require


@register
class BarlowTwins(Method):
    name = "barlow_twins"
    family = "dimension_contrastive"
    loss_terms = ("on_diagonal", "off_diagonal")
    source = "Zbontar et al. 2021: non-affine BN, lambda 5e-3; loss_scale was 0.024 in early official code"

    @dataclass
    class Kwargs:
        # lambda: weight of the off-diagonal (redundancy reduction) term.
        redundancy_weight: float = 5e-3
        loss_scale: float = 1.0

    @classmethod
    def check_kwargs(cls, kw) -> None:
        require(kw.loss_scale > 0, "loss_scale", f"must be > 0, got {kw.loss_scale}")

    def loss(self, z1, z2):
        return barlow_twins_loss(z1, z2, self.kw.redundancy_weight, self.kw.loss_scale)
