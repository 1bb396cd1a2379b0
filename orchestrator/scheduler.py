"""Per-cell early stopping: asynchronous successive halving (ASHA) with one set of rungs per grid
cell, so that a trial is only ever compared with trials of its own cell. Confirmation trials are
never stopped.

Ray Tune never saves a trial scheduler's state (a restored sweep would start with empty rungs), so
SchedulerState, a Tune Callback holding the same scheduler object, saves and restores the rungs with
Tune's callback snapshots."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.spec import SEARCH, SWEEP_KEY

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

log = logging.getLogger(__name__)


def milestones(grace_period: int, reduction_factor: float, epochs: int) -> list[float]:
    """Rung epochs grace * rf^k below the trial's last epoch (a trial at its last epoch just ends)."""
    rungs, epoch = [], float(grace_period)
    while epoch < epochs:
        rungs.append(epoch)
        epoch *= reduction_factor
    return rungs


class CellASHA(FIFOScheduler):
    def __init__(self, metric: str, mode: str, grace_period: int, reduction_factor: float, enabled: bool = True):
        super().__init__()
        self._metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.enabled = enabled
        # cell id -> rung epoch -> Ray trial id -> signed score at that rung (higher is better)
        self.rungs: dict[str, dict[float, dict[str, float]]] = {}
        # Ray trial id -> why it was stopped
        self.stopped: dict[str, str] = {}

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        where = trial.config.get(SWEEP_KEY, {})
        epoch, value = result.get("epoch"), result.get(self._metric)
        if not self.enabled or where.get("phase") != SEARCH or epoch is None or value is None:
            return TrialScheduler.CONTINUE
        cell_rungs = self.rungs.setdefault(where["cell"], {})
        for rung in reversed(milestones(self.grace_period, self.reduction_factor, where["epochs"])):
            if epoch < rung:
                continue
            recorded = cell_rungs.setdefault(rung, {})
            if trial.trial_id in recorded:
                break  # decided at this rung already (a restored trial may replay an epoch)
            score = self.sign * value
            others = list(recorded.values())
            recorded[trial.trial_id] = score
            if others:
                cutoff = float(np.nanpercentile(others, (1 - 1 / self.reduction_factor) * 100))
                if score < cutoff:
                    self.stopped[trial.trial_id] = (
                        f"{self._metric}={value:.4g} at epoch {epoch} below the cutoff {self.sign * cutoff:.4g} "
                        f"of {len(others)} other trial(s) of cell {where['cell']}"
                    )
                    log.info("stopping %s: %s", where["key"], self.stopped[trial.trial_id])
                    return TrialScheduler.STOP
            break
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"Per-cell ASHA: {len(self.stopped)} trial(s) stopped early"

    def get_state(self) -> dict:
        return {"rungs": self.rungs, "stopped": self.stopped}

    def set_state(self, state: dict) -> None:
        self.rungs = state["rungs"]
        self.stopped = state["stopped"]


class SchedulerState(Callback):
    """Saves the scheduler's rungs in Tune's callback snapshots. Tune pickles the scheduler and the
    callbacks together, so after a restore this still holds the Tuner's own scheduler object."""

    def __init__(self, scheduler: CellASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        return self.scheduler.get_state()

    def set_state(self, state: dict) -> None:
        self.scheduler.set_state(state)
