"""VICReg-ctr (Garrido et al. 2023): VICReg-exp on the transposed embeddings, a sample-contrastive loss."""
from trainables.losses import vicreg_ctr_loss
from trainables.methods.base import register
from trainables.methods.vicreg_exp import VICRegExp


@register
class VICRegCtr(VICRegExp):
    name = "vicreg_ctr"
    family = "sample_contrastive"
    source = ("Garrido et al. 2023, eq. 13: VICReg-exp on the transposed embedding matrix; VICReg's "
              "coefficients, temperature 0.1 (not stated in the main text)")

    def loss(self, z1, z2):
        kw = self.kw
        return vicreg_ctr_loss(z1, z2, kw.sim_coeff, kw.std_coeff, kw.cov_coeff, kw.temperature, kw.std_eps)
