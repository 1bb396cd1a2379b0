"""SimSiam (Chen & He 2021): stop-gradient and a bottleneck predictor, no EMA target."""
from dataclasses import dataclass
from typing import Optional

from trainables.losses import negative_cosine_loss
from trainables.methods.base import AsymmetricMethod, register


@register
class SimSiam(AsymmetricMethod):
    name = "simsiam"
    source = "Chen & He 2021: stop-gradient, bottleneck MLP predictor (hidden = width / 4), no EMA"

    @dataclass
    class Kwargs(AsymmetricMethod.Kwargs):
        predictor_hidden: Optional[int] = None
        ema: bool = False

    def loss(self, p, t):
        return negative_cosine_loss(p, t)
