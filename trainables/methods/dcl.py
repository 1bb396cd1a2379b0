from trainables.methods import register
from trainables.methods.simclr import SimCLR


@register
class DCL(SimCLR):
    name = "dcl"
    source = "Yeh et al. 2022: InfoNCE without the positive pair in the denominator"
    decoupled = True
