"""Spectral contrastive learning (HaoChen et al. 2021)."""
from dataclasses import dataclass

from trainables.losses import spectral_contrastive_loss
from trainables.methods.base import Method, register, require


@register
class Spectral(Method):
    name = "spectral"
    family = "sample_contrastive"
    loss_terms = ("alignment", "repulsion")
    source = "HaoChen et al. 2021, spectral contrastive loss on the sphere of radius sqrt(mu)"

    @dataclass
    class Kwargs:
        mu: float = 1.0

    @classmethod
    def check_kwargs(cls, kw) -> None:
        require(kw.mu > 0, "mu", f"must be > 0, got {kw.mu}")

    def loss(self, z1, z2):
        return spectral_contrastive_loss(z1, z2, self.kw.mu)
