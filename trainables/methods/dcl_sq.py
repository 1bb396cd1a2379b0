"""DCL-sq (Garrido et al. 2023): DCL with cos^2 for the negative pairs."""
from trainables.methods.base import register
from trainables.methods.dcl import DCL


@register
class DCLSq(DCL):
    name = "dcl_sq"
    source = "Garrido et al. 2023: DCL with cos^2 for negative pairs"
    negatives = "sq"
