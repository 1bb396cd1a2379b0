"""SimCLR-abs (Garrido et al. 2023): SimCLR with |cos| for the negative pairs."""
from trainables.methods.base import register
from trainables.methods.simclr import SimCLR


@register
class SimCLRAbs(SimCLR):
    name = "simclr_abs"
    source = "Garrido et al. 2023: SimCLR with |cos| for negative pairs"
    negatives = "abs"
