from trainables.methods import register
from trainables.methods.simclr import SimCLR


@register
class SimCLRSq(SimCLR):
    name = "simclr_sq"
    source = "Garrido et al. 2023: SimCLR with cos^2 for negative pairs"
    negatives = "sq"
