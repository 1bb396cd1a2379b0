"""What a sweep plans, in numbers: the confirmation seeds per cell, the trials (the most it can run),
the confidence its verdicts are judged at, and the plan as the report reads it (SweepInfo)."""
from __future__ import annotations

from typing import Optional

from orchestrator.report.model import CellInfo, SweepInfo
from orchestrator.report.rounds import look_confidence, looks
from orchestrator.spec.cells import Cell
from orchestrator.spec.schema import SweepSpec


def max_seeds(spec: SweepSpec) -> Optional[int]:
    """With seeds until decided, the most confirmation seeds per cell; None: exactly `seeds`."""
    return spec.confirm.max_seeds if spec.confirm.until_decided else None


def seeds_per_cell(spec: SweepSpec) -> int:
    """The most confirmation seeds one cell can run."""
    return max_seeds(spec) or len(spec.seeds)


def planned_trials(spec: SweepSpec, cells: list[Cell]) -> int:
    """Search and confirmation trials of every cell: the most the sweep can run (with seeds until
    decided, the worst case, every cell at max_seeds)."""
    return len(cells) * (spec.search.trials_per_cell + seeds_per_cell(spec))


def sweep_looks(spec: SweepSpec) -> int:
    """How many times the claims may be judged (1 when the seeds are fixed)."""
    return looks(len(spec.seeds), max_seeds(spec))


def sweep_confidence(spec: SweepSpec) -> float:
    """The confidence of each look at the claims and of the report: 1 - alpha / looks."""
    return look_confidence(spec.confirm.alpha, sweep_looks(spec))


def sweep_info(spec: SweepSpec, cells: list[Cell], partial: bool, stopped: Optional[str] = None) -> SweepInfo:
    """The plan as the report reads it; `stopped`: why seeds until decided ended, once it has."""
    return SweepInfo(
        name=spec.name, metric=spec.metric, mode=spec.mode, grid={k: list(v) for k, v in spec.grid.items()},
        cells=[CellInfo(c.id, c.label, dict(c.values), c.method, c.family) for c in cells],
        seeds=list(spec.seeds), trials_per_cell=spec.search.trials_per_cell,
        planned_trials=planned_trials(spec, cells), partial=partial, description=spec.description,
        claims=list(spec.claims), confidence=sweep_confidence(spec), max_seeds=max_seeds(spec), stopped=stopped,
    )
