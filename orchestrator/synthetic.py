"""A cheap analytic stand-in for an SSL trial, for orchestrator tests and the overhead benchmark.

Its score rises with the epoch and peaks at x = 0.3; `offset` shifts a whole cell, so a test can make
one cell score far higher than another. It checkpoints like a real trial, and with `epoch_log` set it
appends one line per epoch actually run, so a test can count re-executed epochs."""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.cells import SWEEP_KEY
from trainables import ConfigError

STATE_FILE = "synthetic_state.json"


@dataclass
class SyntheticConfig:
    # A registered SSL method name: only used for the MLflow tags (method, family).
    method: str = "simclr"
    epochs: int = 6
    seed: int = 0
    x: float = 0.5
    offset: float = 0.0
    seconds_per_epoch: float = 0.0
    # Absolute path of a file that gets "<trial> <epoch> <resumed from epoch>" per epoch run.
    epoch_log: Optional[str] = None


def synthetic_config(config: dict) -> dict:
    from trainables.methods import METHODS

    try:
        merged = OmegaConf.merge(OmegaConf.structured(SyntheticConfig), config)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{getattr(exc, 'full_key', '')}: {str(exc).splitlines()[0]}") from None
    METHODS.get(merged.method, key="method")
    if merged.epochs <= 0:
        raise ConfigError(f"epochs: must be a positive integer, got {merged.epochs}")
    if merged.epoch_log:
        merged.epoch_log = str(Path(merged.epoch_log).resolve())
    return OmegaConf.to_container(merged)


def score(cfg: dict, epoch: int) -> float:
    quality = 1.0 - (cfg["x"] - 0.3) ** 2
    return cfg["offset"] + quality * epoch / cfg["epochs"] + 0.001 * cfg["seed"]


def train_synthetic(config: dict, report: Callable[[dict, str], None], resume_from: str | None = None,
                    trial: str = "local") -> dict:
    cfg = synthetic_config(config)
    start_epoch = 0
    if resume_from:
        start_epoch = json.loads((Path(resume_from) / STATE_FILE).read_text())["epoch"]
    metrics: dict = {}
    for epoch in range(start_epoch + 1, cfg["epochs"] + 1):
        time.sleep(cfg["seconds_per_epoch"])
        if cfg["epoch_log"]:
            with open(cfg["epoch_log"], "a") as log:
                log.write(f"{trial} {epoch} {start_epoch}\n")
        value = score(cfg, epoch)
        metrics = {"epoch": epoch, "knn_acc": value, "loss": -value}
        with tempfile.TemporaryDirectory(prefix="dualsweep-synthetic-") as checkpoint_dir:
            (Path(checkpoint_dir) / STATE_FILE).write_text(json.dumps({"epoch": epoch}))
            report(metrics, checkpoint_dir)
    return metrics


def synthetic_trial(config: dict) -> None:
    """The function trainable of the `synthetic` trainable kind."""
    import ray

    from trainables.tune_entry import run_under_tune

    # Trial key and Ray job: a test tells epochs run by a killed driver's job from a resumed one's.
    trial = f"{config[SWEEP_KEY]['key']} {ray.get_runtime_context().get_job_id()}"
    run_under_tune(lambda c, r, d: train_synthetic(c, r, d, trial=trial), config["trial"])
