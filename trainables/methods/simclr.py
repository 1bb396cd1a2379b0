from dataclasses import dataclass

from trainables.losses import nt_xent_loss
from trainables.methods import Method, register


@register
class SimCLR(Method):
    name = "simclr"
    family = "sample_contrastive"
    source = "Chen et al. 2020, NT-Xent"

    @dataclass
    class Kwargs:
        temperature: float = 0.1

    def loss(self, z1, z2):
        return nt_xent_loss(z1, z2, self.kw.temperature)
