"""A cheap analytic stand-in for an SSL trial, Ray-free: orchestrator tests and the sweep overhead
benchmark run sweeps of it in seconds.

Its score rises with the epoch and peaks at x = 0.3; `offset` shifts a whole cell, so a test can make
one cell score far higher than another. `noise` adds a draw of N(0, noise^2) to every epoch's score,
the same draw for every trial with the same seed, method and offset (a generator seeded by them), so
that confirmation seeds of one cell scatter like a real trial's and a rerun repeats them; the search
trials of a cell share one seed, hence one draw, and rank by x alone. It checkpoints like a real
trial (STATE_FILE), and with `epoch_log` set it appends "<trial name> <epoch> <resumed from epoch>
<process id>" per epoch actually run, so a test can count re-executed epochs and find the worker.
The faults a fault test needs are options: raise at an epoch, diverge at an epoch, or write a
corrupt checkpoint at an epoch."""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainables.config import omegaconf_message
from trainables.errors import CheckpointError, ConfigError
from trainables.methods import METHODS
from trainables.provenance import PROVENANCE_KEY, code_provenance

# The stand-in's checkpoint: the last epoch it ran.
STATE_FILE = "stand_in_state.json"


@dataclass
class StandInConfig:
    # A registered SSL method name: only used for the MLflow tags (method, family).
    method: str = "simclr"
    epochs: int = 6
    seed: int = 0
    x: float = 0.5
    offset: float = 0.0
    # The sd of a normal draw added to the score, fixed by (seed, method, offset); 0: none.
    noise: float = 0.0
    seconds_per_epoch: float = 0.0
    # Absolute path of a file that gets "<trial name> <epoch> <resumed from epoch> <pid>" per epoch run.
    epoch_log: Optional[str] = None
    # Faults (0: none): raise RuntimeError on reaching this epoch, every attempt; report a NaN loss
    # and diverged at this epoch; write this epoch's checkpoint truncated.
    fail_at_epoch: int = 0
    diverge_at_epoch: int = 0
    corrupt_checkpoint_at_epoch: int = 0


def validate_stand_in(config: dict) -> dict:
    """The full stand-in config (defaults filled, epoch_log absolute) or ConfigError."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(StandInConfig), config)
    except OmegaConfBaseException as exc:
        raise ConfigError(omegaconf_message(exc)) from None
    METHODS.get(merged.method, key="method")
    if merged.epochs <= 0:
        raise ConfigError(f"epochs: must be a positive integer, got {merged.epochs}")
    if merged.noise < 0:
        raise ConfigError(f"noise: must be >= 0 (the sd of the score's noise), got {merged.noise}")
    if merged.epoch_log:
        merged.epoch_log = str(Path(merged.epoch_log).resolve())
    return OmegaConf.to_container(merged)


def noise_draw(cfg: dict) -> float:
    """N(0, noise^2), the same for every trial of this seed, method and offset."""
    if not cfg["noise"]:
        return 0.0
    key = zlib.crc32(f"{cfg['seed']}/{cfg['method']}/{cfg['offset']}".encode())
    return random.Random(key).gauss(0.0, cfg["noise"])


def score(cfg: dict, epoch: int) -> float:
    quality = 1.0 - (cfg["x"] - 0.3) ** 2
    return cfg["offset"] + quality * epoch / cfg["epochs"] + 0.001 * cfg["seed"] + noise_draw(cfg)


def train_stand_in(config: dict, report: Callable[[dict, str], None], resume_from: str | None = None,
                   trial_name: str = "local") -> dict:
    """Like trainables.train: `report(metrics, checkpoint_dir)` after every epoch; `resume_from` is
    a copy of a reported checkpoint directory. `trial_name` only labels the epoch log's lines."""
    cfg = validate_stand_in(config)
    start_epoch = read_state(resume_from) if resume_from else 0
    metrics: dict = {}
    for epoch in range(start_epoch + 1, cfg["epochs"] + 1):
        time.sleep(cfg["seconds_per_epoch"])
        if cfg["epoch_log"]:
            with open(cfg["epoch_log"], "a") as log:
                log.write(f"{trial_name} {epoch} {start_epoch} {os.getpid()}\n")
        if epoch == cfg["fail_at_epoch"]:
            raise RuntimeError(f"stand-in failure at epoch {epoch}")
        value = math.nan if epoch == cfg["diverge_at_epoch"] else score(cfg, epoch)
        metrics = {"epoch": epoch, "knn_acc": value, "loss": -value, PROVENANCE_KEY: code_provenance()}
        if math.isnan(value):
            metrics["diverged"] = 1.0
        state = json.dumps({"epoch": epoch})
        with tempfile.TemporaryDirectory(prefix="dualsweep-stand-in-") as checkpoint_dir:
            (Path(checkpoint_dir) / STATE_FILE).write_text(state[:5] if epoch == cfg["corrupt_checkpoint_at_epoch"] else state)
            report(metrics, checkpoint_dir)
        if math.isnan(value):
            break
    return metrics


class EpochLine(NamedTuple):
    """One line of a stand-in's `epoch_log`: an epoch a trial actually ran."""

    key: str  # the trial's key
    job: str  # the Ray job (one per driver)
    epoch: int
    start: int  # the epoch it resumed from
    pid: int  # the worker process


def read_epoch_log(path: Path) -> list[EpochLine]:
    """Every line of an `epoch_log` (a trial name is "<key> <job>" under Tune), in order."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        key, job, epoch, start, pid = line.split()
        lines.append(EpochLine(key, job, int(epoch), int(start), int(pid)))
    return lines


def read_state(checkpoint_dir: str) -> int:
    """The epoch a stand-in checkpoint was written at; CheckpointError when it cannot be read."""
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
