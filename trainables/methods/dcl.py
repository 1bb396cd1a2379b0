"""DCL (Yeh et al. 2022): SimCLR without the positive pair in InfoNCE's denominator."""
from trainables.methods.base import register
from trainables.methods.simclr import SimCLR


@register
class DCL(SimCLR):
    name = "dcl"
    source = "Yeh et al. 2022: InfoNCE without the positive pair in the denominator"
    decoupled = True
