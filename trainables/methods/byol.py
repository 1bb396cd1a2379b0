"""BYOL (Grill et al. 2020): an online network with a predictor regresses an EMA target's embedding."""
from dataclasses import dataclass

from trainables.losses import normalized_mse_loss, squared_error_loss
from trainables.methods.base import AsymmetricMethod, register


@register
class BYOL(AsymmetricMethod):
    name = "byol"
    source = "Grill et al. 2020: EMA target (cosine tau schedule), MLP predictor"

    @dataclass
    class Kwargs(AsymmetricMethod.Kwargs):
        # false: 1/2 ||p - t||^2 on raw embeddings instead of 2 - 2 cos(p, t), the loss whose
        # dynamics Tian et al. analyse (with linear networks: W collapses to 0 or not).
        normalize: bool = True

    def loss(self, p, t):
        return normalized_mse_loss(p, t) if self.kw.normalize else squared_error_loss(p, t)
