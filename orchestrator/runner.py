"""Running a sweep: Ray start-up, the one Tuner that runs every trial of the sweep (per-cell search,
per-cell early stopping, MLflow tracking), and run / resume."""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import optuna
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from orchestrator.progress import ProgressLog
from orchestrator.scheduler import CellASHA, SchedulerState
from orchestrator.search import CellSearcher, create_studies
from orchestrator.spec import SWEEP_KEY, Cell, LoadedSpec, expand_cells, planned_trials, sweep_info
from orchestrator.storage import (TUNE_DIR, create_sweep_dir, driver_lock, ensure_new_sweep, load_sweep_dir, optuna_url,
                                  tune_path)
from orchestrator.tracking import MlflowTracking, check_store, end_parent_run, start_parent_run
from trainables.contract import TRIAL_KINDS

log = logging.getLogger(__name__)

# Ray snapshots its experiment state at most this often (seconds). Optuna and MLflow are written at
# once, so a short period keeps Ray's view of a killed sweep close to theirs; at a sweep's trial
# counts a snapshot costs milliseconds.
SNAPSHOT_PERIOD_S = "1"


class DeletedCheckpointFilter(logging.Filter):
    """After a restore, Tune may try to delete a trial's older checkpoint that was already deleted
    before the kill and logs the FileNotFoundError as an ERROR with a traceback, though nothing is
    lost (the trial goes on from its newer checkpoint). Such a record becomes one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if "Error handling checkpoint" in record.getMessage() and isinstance(exc, FileNotFoundError):
            log.debug("an older checkpoint was already gone at restore: %s", exc)
            return False
        return True


@dataclass
class Outcome:
    trials: int
    errors: int


def connect_ray(address: Optional[str], verbose: int) -> None:
    if ray.is_initialized():
        return  # e.g. the test suite's shared cluster
    address = address or os.environ.get("RAY_ADDRESS")
    # Quiet by default: trial workers log every checkpoint; failures still reach MLflow and Tune.
    options = dict(logging_level=logging.WARNING, log_to_driver=verbose > 0)
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(include_dashboard=False, **options)


def trial_slots(loaded: LoadedSpec) -> int:
    """Trials the cluster can run at once. Tune keeps only one trial pending for a custom searcher,
    so short trials would run one at a time: every trial slot gets a pending trial instead."""
    available = ray.cluster_resources()
    resources = loaded.spec.resources
    slots = available.get("CPU", 1.0) / resources.cpu
    if resources.gpu:
        slots = min(slots, available.get("GPU", 0.0) / resources.gpu)
    if loaded.spec.max_concurrent:
        slots = min(slots, loaded.spec.max_concurrent)
    return max(1, int(slots))


def tune_environment() -> None:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", SNAPSHOT_PERIOD_S)
    # Checkpoints force snapshots (see num_to_keep below), which Tune would warn about each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The automatic TensorBoard logger costs seconds at start; build_tuner adds the JSON one back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial_name(trial) -> str:
    return trial.config[SWEEP_KEY]["key"]


def entry_point(trainable: str) -> Callable[[dict], None]:
    """The trial kind's Ray Tune function, "module:function" in trainables' contract."""
    module, function = TRIAL_KINDS[trainable].entry_point.split(":")
    return getattr(importlib.import_module(module), function)


def trainable_with_resources(loaded: LoadedSpec):
    spec = loaded.spec
    return tune.with_resources(entry_point(spec.trainable), {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def build_tuner(loaded: LoadedSpec, cells: list[Cell], parent: tuple[str, str], verbose: int):
    """The one Tuner of a sweep: per-cell searcher and scheduler, MLflow and scheduler-state callbacks."""
    spec = loaded.spec
    searcher = CellSearcher(spec, cells, optuna_url(loaded.sweep_dir), str(loaded.sweep_dir))
    scheduler = CellASHA(spec.metric, spec.mode, spec.scheduler.grace_period, spec.scheduler.reduction_factor,
                         enabled=spec.scheduler.type == "asha")
    experiment, parent_run = parent
    # The JSON logger writes each trial's result.json, which `status` and `report` read through
    # Ray's ExperimentAnalysis. It comes first so that result.json is complete when MLflow logs the
    # trial's files.
    tracking = MlflowTracking(spec.tracking.uri, experiment, parent_run, TRIAL_KINDS[spec.trainable].artifacts)
    callbacks = [JsonLoggerCallback(), SchedulerState(scheduler), tracking,
                 ProgressLog(spec.metric, sweep_info(spec, cells, partial=True).planned_text)]
    return tune.Tuner(
        trainable_with_resources(loaded),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=planned_trials(spec, cells),
            max_concurrent_trials=spec.max_concurrent or None,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
            # Keeps worker processes (and their imported torch) from one trial to the next.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=loaded.tune_storage, callbacks=callbacks, verbose=verbose,
            # Two, not one: Tune deletes a trial's older checkpoint as soon as a newer one arrives,
            # before its next experiment snapshot; with one kept, a kill in between leaves the
            # snapshot pointing at a deleted checkpoint and the trial cannot be restored.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )


def run_sweep(loaded: LoadedSpec, address: Optional[str], verbose: int = 0) -> Outcome:
    ensure_new_sweep(loaded)
    check_store(loaded)
    cells = expand_cells(loaded.spec)
    create_sweep_dir(loaded)
    with driver_lock(loaded.sweep_dir):
        return execute(loaded, cells, address, verbose, restore=False)


def resume_sweep(sweep_dir: Path, address: Optional[str], verbose: int = 0) -> Outcome:
    loaded = load_sweep_dir(sweep_dir)
    check_store(loaded)
    # A driver killed before Ray's first snapshot left nothing for Tune to restore: start the Tuner
    # afresh; the searcher takes up the Optuna trials already asked and MLflow runs are found by tag.
    with driver_lock(sweep_dir):
        restore = tune.Tuner.can_restore(tune_path(loaded))
        return execute(loaded, expand_cells(loaded.spec), address, verbose, restore=restore)


def execute(loaded: LoadedSpec, cells: list[Cell], address: Optional[str], verbose: int, restore: bool) -> Outcome:
    tune_environment()
    create_studies(loaded.spec, cells, optuna_url(loaded.sweep_dir))
    parent = start_parent_run(loaded, len(cells), planned_trials(loaded.spec, cells))
    try:
        connect_ray(address, verbose)
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(trial_slots(loaded)))
        if restore:
            logging.getLogger("ray.tune.execution.tune_controller").addFilter(DeletedCheckpointFilter())
            tuner = tune.Tuner.restore(tune_path(loaded), trainable_with_resources(loaded),
                                       resume_unfinished=True, resume_errored=False)
        else:
            tuner = build_tuner(loaded, cells, parent, verbose)
    except BaseException:
        # Ray did not start or the Tuner could not be built: the parent run must not stay RUNNING.
        end_parent_run(loaded.spec.tracking.uri, parent[1], "FAILED")
        raise
    try:
        results = tuner.fit()
    except BaseException:
        end_parent_run(loaded.spec.tracking.uri, parent[1], "KILLED")
        raise
    end_parent_run(loaded.spec.tracking.uri, parent[1], "FINISHED")
    return Outcome(trials=len(results), errors=len(results.errors))
