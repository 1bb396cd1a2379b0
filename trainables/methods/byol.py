from trainables.losses import normalized_mse_loss
from trainables.methods import AsymmetricMethod, register


@register
class BYOL(AsymmetricMethod):
    name = "byol"
    family = "asymmetric"
    source = "Grill et al. 2020: EMA target (cosine tau schedule), MLP predictor"

    def loss(self, p, t):
        return normalized_mse_loss(p, t)
