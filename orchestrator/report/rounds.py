"""Seeds until decided: after each round of confirmation seeds, which cells get one more seed, and at
what confidence the claims are judged so that the sweep keeps its stated error rate.

A sweep with `confirm: {until_decided: true, max_seeds: M, alpha: a}` runs its first confirmation
seeds (n0 = len(seeds) per cell), then looks: it judges every claim. The cells of each claim still
inconclusive get one more seed, and it looks again once they have run, round after round, until no
claim is inconclusive ("cannot be judged" is not helped by seeds) or those cells have M seeds.
`look` is that rule; the searcher (orchestrator.search) applies it to its trials, and the simulation
test to synthetic scores.

Error rate (Bonferroni over the looks). There are at most L = M - n0 + 1 looks (one per number of
seeds). Each judges at confidence 1 - a / L, so the interval of each look misses the truth with
probability at most a / L, and a verdict wrong at whichever look the sweep stops is wrong with
probability at most L * a / L = a, however the stopping depends on the data. (Repeated looks at a
fixed confidence 1 - a would each add their own chance of a wrong verdict.) The report judges at
the same confidence, so it states the verdicts the run stopped on.

Balance. Counting one look per number of seeds needs every cell of a claim to have the same number
of seeds. A cell shared by a decided claim and an inconclusive one would otherwise grow under the
decided claim alone, which is then judged on a mix no look counted; so the cells that grow are
closed over shared cells: every cell of a claim that shares a cell with a growing claim grows too.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from orchestrator.report.claims import INCONCLUSIVE, Verdict, judge_claims
from orchestrator.report.model import SweepInfo, TrialRecord


def looks(first_seeds: int, max_seeds: Optional[int]) -> int:
    """How many times the claims may be judged: once per number of seeds from the first round's to
    max_seeds; once when the seeds are fixed (max_seeds None)."""
    return 1 if max_seeds is None else max_seeds - first_seeds + 1


def look_confidence(alpha: float, looks_: int) -> float:
    """The confidence of each look (and of the report) for a stated error rate alpha."""
    return 1.0 - alpha / looks_


@dataclass
class Look:
    round: int
    verdicts: list[Verdict]
    grow: list[str]  # the cells that get one more seed; empty: the rounds end here
    reason: str  # one line: what the next round adds, or why there is none

    @property
    def done(self) -> bool:
        return not self.grow

    def to_dict(self) -> dict:
        return {"round": self.round, "verdicts": {v.id: v.verdict for v in self.verdicts}, "grow": self.grow,
                "reason": self.reason}


def look(info: SweepInfo, trials: list[TrialRecord], round_: int, seeds: dict[str, int], max_seeds: int,
         next_seed: int) -> Look:
    """Judge the claims at info.confidence after round `round_` and decide the next round. `seeds`:
    the confirmation seeds each cell has run, for the cells that can run more (those with a best
    config); `next_seed`: the seed the next round would add (it only appears in the reason)."""
    verdicts = judge_claims(info, trials)
    open_ = [v.id for v in verdicts if v.verdict == INCONCLUSIVE]
    grow = [cell for cell in growing_cells(verdicts) if cell in seeds and seeds[cell] < max_seeds]
    if grow:
        reason = f"round {round_}: {summary(verdicts)}; seed {next_seed} for {', '.join(grow)}"
    elif open_:
        others = f"; {summary(verdicts, skip=open_)}" if len(open_) < len(verdicts) else ""
        reason = f"max_seeds {max_seeds} reached after round {round_}: {', '.join(open_)} still inconclusive{others}"
    else:
        reason = f"claims decided after round {round_}: {summary(verdicts)}"
    return Look(round_, verdicts, grow, reason)


def growing_cells(verdicts: list[Verdict]) -> list[str]:
    """The cells of the inconclusive claims, closed over cells shared with any other claim (see
    Balance above), sorted."""
    grow = {cell for v in verdicts if v.verdict == INCONCLUSIVE for cell in v.cells_used}
    changed = bool(grow)
    while changed:
        changed = False
        for v in verdicts:
            cells = set(v.cells_used)
            if cells & grow and not cells <= grow:
                grow |= cells
                changed = True
    return sorted(grow)


def summary(verdicts: list[Verdict], skip: Sequence[str] = ()) -> str:
    """"G2 supported, G7 contradicted"."""
    return ", ".join(f"{v.id} {v.verdict}" for v in verdicts if v.id not in skip)
