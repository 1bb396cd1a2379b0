"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on the embeddings."""
from dataclasses import dataclass

from trainables.losses import vicreg_loss
from trainables.methods.base import Method, register


@register
class VICReg(Method):
    name = "vicreg"
    family = "dimension_contrastive"
    loss_terms = ("invariance", "variance", "covariance")
    source = "Bardes et al. 2022, official defaults"

    @dataclass
    class Kwargs:
        sim_coeff: float = 25.0
        std_coeff: float = 25.0
        cov_coeff: float = 1.0
        std_eps: float = 1e-4

    def loss(self, z1, z2):
        kw = self.kw
        return vicreg_loss(z1, z2, kw.sim_coeff, kw.std_coeff, kw.cov_coeff, kw.std_eps)
