"""What `dualsweep report` is computed from: the sweep's plan (SweepInfo) and its trials (TrialRecord).

These are plain data. Whoever reads a sweep directory and MLflow fills them; nothing in
orchestrator.report reads storage, imports Ray or talks to MLflow.

A *comparison group* is the set of cells that share every grid value except the method's: in a
grid `method x batch_size x model.projector`, the cells (simclr, 256, 8192-8192-256) and
(vicreg, 256, 8192-8192-256) form one group. Gaps between methods and families are computed
within a group ("in that cell" of the design means "in that comparison group"). When `method` is
not a grid axis every cell is a group of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

SEARCH, CONFIRM = "search", "confirm"
FINISHED = "finished"
# A trial has ended when it can no longer change; the others are "running" or "pending".
ENDED = ("finished", "stopped_early", "diverged", "failed")
STATUSES = ENDED + ("running", "pending")
# Families in the order their gaps are written (A - B with A first).
FAMILY_ORDER = ("sample_contrastive", "dimension_contrastive", "asymmetric")
METHOD_AXIS = "method"
# The confidence of every interval unless the sweep states another error rate (1 - alpha).
CONFIDENCE = 0.95


@dataclass
class TrialRecord:
    """One trial of the sweep."""

    key: str  # "c00-search-003", "c00-confirm-seed1"
    cell: str  # "c00"
    cell_values: dict[str, Any]  # grid values by dotted key
    method: str
    family: str  # sample_contrastive | dimension_contrastive | asymmetric
    phase: str  # "search" | "confirm"
    seed: int
    params: dict[str, Any]  # searched params (dotted keys)
    status: str  # finished | stopped_early | diverged | failed | running | pending
    metrics: dict[str, float] = field(default_factory=dict)  # final (last reported) metrics
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch metrics, in order
    spectra: Optional[dict] = None  # last spectra.json; the lists of numbers in it are plotted
    provenance: dict[str, str] = field(default_factory=dict)
    run_id: Optional[str] = None  # MLflow run id
    epochs_planned: int = 0
    error: Optional[str] = None  # a failed trial's exception, "Type: message"
    retries: int = 0  # times Ray restarted the trial after a failure (a lost node, an exception)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def stopped_early(self) -> bool:
        return self.status == "stopped_early"

    def value(self, metric: str) -> Optional[float]:
        """The final value of a metric, or None when the trial has none or it is not finite."""
        return finite(self.metrics.get(metric))

    @property
    def epochs_run(self) -> int:
        epoch = finite(self.metrics.get("epoch"))
        if epoch is not None:
            return int(epoch)
        return len(self.history)


@dataclass
class CellInfo:
    id: str  # "c00"
    label: str  # "method=simclr,batch_size=64"
    values: dict[str, Any]  # grid values by dotted key
    method: str
    family: str


@dataclass
class SweepInfo:
    name: str
    metric: str  # e.g. "knn_acc"
    mode: str  # "max" | "min"
    grid: dict[str, list]  # axes in order
    cells: list[CellInfo]
    seeds: list[int]
    trials_per_cell: int
    planned_trials: int
    partial: bool  # the sweep is still running or was killed
    description: str = ""
    # orchestrator.report.claims.ClaimSpec entries (not imported here: claims.py imports this module).
    claims: list[Any] = field(default_factory=list)
    # Of every interval and verdict: 1 - alpha, divided over the looks with seeds until decided.
    confidence: float = CONFIDENCE
    # Seeds until decided: at most this many confirmation seeds per cell (planned_trials is then the
    # most the sweep can run); None: every cell runs exactly `seeds`.
    max_seeds: Optional[int] = None
    # Seeds until decided: why the rounds ended, as the run said it; None while they go on.
    stopped: Optional[str] = None

    @property
    def planned_text(self) -> str:
        """"40", or "at most 40" when seeds until decided may stop the sweep earlier."""
        return str(self.planned_trials) if self.max_seeds is None else f"at most {self.planned_trials}"

    def cell(self, cell_id: str) -> Optional[CellInfo]:
        return next((c for c in self.cells if c.id == cell_id), None)

    @property
    def non_method_axes(self) -> list[str]:
        return [axis for axis in self.grid if axis != METHOD_AXIS]

    def better(self, metric: str) -> str:
        """"max" or "min": the sweep's mode for its own metric; any other metric is better higher."""
        return self.mode if metric == self.metric else "max"


def finite(value: Any) -> Optional[float]:
    """value as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def numeric(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a trial's result (its metrics and Ray's counters), nothing nested."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def ended_status(failed: bool, result: dict[str, Any], epochs: int) -> str:
    """How a trial that ended is reported: failed (it raised), diverged (it said so), finished (it ran
    every epoch) or stopped_early (by the scheduler)."""
    if failed:
        return "failed"
    if result.get("diverged"):
        return "diverged"
    return "finished" if result.get("epoch", 0) >= epochs else "stopped_early"


def percent(confidence: float) -> str:
    """0.95 -> "95%", 0.9875 -> "98.75%"."""
    return f"{100 * confidence:.4g}%"


def is_number(value: Any) -> bool:
    return finite(value) is not None


def same_value(a: Any, b: Any) -> bool:
    """Grid values compare equal, or their text does (a YAML may write 64 or "64")."""
    if isinstance(a, bool) != isinstance(b, bool):
        return str(a) == str(b)
    try:
        if a == b:
            return True
    except Exception:  # noqa: BLE001 - exotic values: fall back to their text
        pass
    return str(a) == str(b)


def group_key(values: dict[str, Any], without: tuple[str, ...] = (METHOD_AXIS,)) -> tuple:
    """The comparison group of a cell: its grid values without the given axes, as a hashable key."""
    return tuple((key, freeze(value)) for key, value in values.items() if key not in without)


def group_label(key: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in key) or "all cells"


def freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


def axis_order(values: list[Any]) -> list[Any]:
    """The values of an axis in the order an along-axis claim or figure walks them: sorted when
    every value is a number, else as written in the grid."""
    unique: list[Any] = []
    for value in values:
        if not any(same_value(value, u) for u in unique):
            unique.append(value)
    if unique and all(is_number(v) for v in unique):
        return sorted(unique, key=float)
    return unique


def position(value: Any, order: list[Any]) -> Optional[int]:
    return next((i for i, v in enumerate(order) if same_value(v, value)), None)


def family_rank(family: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(family), family) if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)
