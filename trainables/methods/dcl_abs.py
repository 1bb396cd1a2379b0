"""DCL-abs (Garrido et al. 2023): DCL with |cos| for the negative pairs."""
from trainables.methods.base import register
from trainables.methods.dcl import DCL


@register
class DCLAbs(DCL):
    name = "dcl_abs"
    source = "Garrido et al. 2023: DCL with |cos| for negative pairs"
    negatives = "abs"
