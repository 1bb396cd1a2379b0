"""The generalized contrastive loss (Chen, Luo, Li 2021): alignment + distribution matching to a prior."""
from dataclasses import dataclass

from trainables.losses import GENERALIZED_PRIORS, generalized_contrastive_loss
from trainables.methods.base import Method, register, require, require_choice


@register
class Generalized(Method):
    name = "generalized"
    family = "sample_contrastive"
    loss_terms = ("alignment", "distribution")
    source = ("Chen, Luo, Li 2021: alignment + lambda * distribution matching (LogSumExp on the sphere, "
              "or sliced Wasserstein to a uniform hypercube / Gaussian prior of unit expected norm)")

    @dataclass
    class Kwargs:
        # lse | uniform_cube | gaussian
        prior: str = "lse"
        # lambda
        distribution_weight: float = 1.0
        temperature: float = 0.1
        # Random directions of the sliced-Wasserstein estimate (uniform_cube, gaussian).
        num_projections: int = 128

    @classmethod
    def check_kwargs(cls, kw) -> None:
        require_choice("prior", kw.prior, GENERALIZED_PRIORS)
        require(kw.temperature > 0, "temperature", f"must be > 0, got {kw.temperature}")
        require(kw.num_projections > 0, "num_projections", f"must be > 0, got {kw.num_projections}")

    def loss(self, z1, z2):
        kw = self.kw
        return generalized_contrastive_loss(z1, z2, kw.prior, kw.distribution_weight, kw.temperature, kw.num_projections)
