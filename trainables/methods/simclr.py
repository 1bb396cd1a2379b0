"""SimCLR (Chen et al. 2020), the base of the InfoNCE family, with Garrido et al.'s normalizations."""
from dataclasses import dataclass
from typing import ClassVar

from trainables.losses import SIMCLR_NORMALIZATIONS, info_nce_loss, simclr_embeddings
from trainables.methods.base import Method, register, require, require_choice


@register
class SimCLR(Method):
    """Base of the InfoNCE family: variants only change how negatives' similarities enter
    (`negatives`) and whether the positive stays in the denominator (`decoupled`)."""

    name = "simclr"
    family = "sample_contrastive"
    loss_terms = ("alignment", "repulsion")
    source = "Chen et al. 2020, NT-Xent; normalizations from Garrido et al. 2023, Table 1"
    negatives: ClassVar[str] = "plain"
    decoupled: ClassVar[bool] = False

    @dataclass
    class Kwargs:
        temperature: float = 0.1
        # none (unit-norm embeddings) | centering | dimension_standardization
        normalization: str = "none"

    @classmethod
    def check_kwargs(cls, kw) -> None:
        require(kw.temperature > 0, "temperature", f"must be > 0, got {kw.temperature}")
        require_choice("normalization", kw.normalization, SIMCLR_NORMALIZATIONS)

    def loss(self, z1, z2):
        e1 = simclr_embeddings(z1, self.kw.normalization)
        e2 = simclr_embeddings(z2, self.kw.normalization)
        return info_nce_loss(e1, e2, self.kw.temperature, self.negatives, self.decoupled)
