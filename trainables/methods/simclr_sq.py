"""SimCLR-sq (Garrido et al. 2023): SimCLR with cos^2 for the negative pairs."""
from trainables.methods.base import register
from trainables.methods.simclr import SimCLR


@register
class SimCLRSq(SimCLR):
    name = "simclr_sq"
    source = "Garrido et al. 2023: SimCLR with cos^2 for negative pairs"
    negatives = "sq"
