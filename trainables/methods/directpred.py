"""DirectPred (Tian, Chen, Ganguli 2021): BYOL whose linear predictor is set, not trained."""
from dataclasses import dataclass

from trainables.losses import normalized_mse_loss
from trainables.methods.base import AsymmetricMethod, register


@register
class DirectPred(AsymmetricMethod):
    name = "directpred"
    source = ("Tian, Chen, Ganguli 2021: BYOL whose linear predictor is set from the eigendecomposition "
              "of the EMA correlation of its inputs (official code: rho 0.3, eps 0.1, freq 1)")

    @dataclass
    class Kwargs(AsymmetricMethod.Kwargs):
        predictor: str = "directpred"

    def loss(self, p, t):
        return normalized_mse_loss(p, t)
