"""VICReg-exp (Garrido et al. 2023): VICReg with a LogSumExp covariance term."""
from dataclasses import dataclass

from trainables.losses import vicreg_exp_loss
from trainables.methods.base import register, require
from trainables.methods.vicreg import VICReg


@register
class VICRegExp(VICReg):
    name = "vicreg_exp"
    family = "dimension_contrastive"
    source = ("Garrido et al. 2023, eq. 12: VICReg with a LogSumExp covariance term; VICReg's "
              "coefficients, temperature 0.1 (not stated in the main text)")

    @dataclass
    class Kwargs(VICReg.Kwargs):
        temperature: float = 0.1

    @classmethod
    def check_kwargs(cls, kw) -> None:
        require(kw.temperature > 0, "temperature", f"must be > 0, got {kw.temperature}")

    def loss(self, z1, z2):
        kw = self.kw
        return vicreg_exp_loss(z1, z2, kw.sim_coeff, kw.std_coeff, kw.cov_coeff, kw.temperature, kw.std_eps)
