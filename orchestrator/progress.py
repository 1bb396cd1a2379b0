"""One log line per trial that ends, instead of Ray Tune's tables (the CLI's default output)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ray.tune import Callback

from orchestrator.spec import SWEEP_KEY
from orchestrator.tracking import trial_error

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

log = logging.getLogger(__name__)


class ProgressLog(Callback):
    def __init__(self, metric: str, planned: str):
        # "40", or "at most 40" with seeds until decided.
        self.metric = metric
        self.planned = planned
        self.ended = 0

    def get_state(self) -> dict:
        return {"ended": self.ended}

    def set_state(self, state: dict) -> None:
        self.ended = state["ended"]

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.ended += 1
        result = trial.last_result or {}
        epochs, planned_epochs = result.get("epoch", 0), trial.config[SWEEP_KEY]["epochs"]
        if result.get("diverged"):
            how = f" (diverged at epoch {epochs})"
        elif epochs < planned_epochs:
            how = f" (stopped early by ASHA at epoch {epochs} of {planned_epochs})"
        else:
            how = ""
        log.info("[%d/%s] %s %s=%.4f%s", self.ended, self.planned, trial.config[SWEEP_KEY]["key"], self.metric,
                 result.get(self.metric, float("nan")), how)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.ended += 1
        log.warning("[%d/%s] %s failed: %s (the traceback is in its MLflow run)", self.ended, self.planned,
                    trial.config[SWEEP_KEY]["key"], trial_error(trial) or "no message")
