"""Running a sweep: Ray start-up, the one Tuner that runs every trial of the sweep (per-cell search,
per-cell early stopping, MLflow tracking), and run / resume."""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import optuna
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.logger import JsonLoggerCallback

from orchestrator.progress import ProgressLog
from orchestrator.scheduler import CellASHA, SchedulerState
from orchestrator.search import CellSearcher, create_studies
from orchestrator.spec import SWEEP_KEY, Cell, LoadedSpec, expand_cells, planned_trials, sweep_info
from orchestrator.spec.schema import TRIAL_DRIVER_CPU
from orchestrator.storage import (TUNE_DIR, create_sweep_dir, driver_lock, ensure_new_sweep, load_sweep_dir, optuna_url,
                                  snapshot_to_restore, tune_path)
from orchestrator.tracking import MlflowTracking, check_store, end_parent_run, start_parent_run
from trainables.contract import TRIAL_KINDS

log = logging.getLogger(__name__)

# Ray snapshots its experiment state at most this often (seconds). Optuna and MLflow are written at
# once, so a short period keeps Ray's view of a killed sweep close to theirs, and a resumed trial
# loses no epoch beyond its last checkpoint. A snapshot writes every trial's state (about 20 KB a
# trial): milliseconds for tens of trials, about 0.1 s for a thousand (benchmarks/load_test.py), the
# one cost of the driver that grows with the sweep.
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


class GracefulStop(Callback):
    """SIGTERM or a first Ctrl-C: each running trial goes on to its next checkpoint, then Tune's own
    interrupt (SIGUSR1) ends the run with its state saved, the unfinished trials' MLflow runs and the
    parent are marked KILLED, and `dualsweep resume` continues. A second signal, or no checkpoint
    within PATIENCE_S, stops at once (the trials then resume from their last checkpoint)."""

    PATIENCE_S = 600.0

    def __init__(self) -> None:
        self.requested_at: Optional[float] = None
        self.running: set[str] = set()
        # Trials that were running when the stop was asked for and have not checkpointed since.
        self.waiting: set[str] = set()

    def setup(self, **info) -> None:
        # Tune set its SIGINT handler before calling this; SIGUSR1 keeps Tune's handler.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.request)
            signal.signal(signal.SIGTERM, self.request)

    def request(self, signum: int, frame) -> None:
        if self.requested_at is not None:
            self.stop_now()
            return
        self.requested_at = time.monotonic()
        self.waiting = set(self.running)
        print(f"{signal.Signals(signum).name}: stopping; {len(self.waiting)} running trials end at their next "
              "checkpoint (Ctrl-C again to stop them now)", file=sys.stderr, flush=True)
        if not self.waiting:
            self.stop_now()

    def stop_now(self) -> None:
        STOPPED.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGUSR1)

    def checkpointed(self, trial) -> None:
        if self.requested_at is not None and trial.trial_id in self.waiting:
            self.waiting.discard(trial.trial_id)
            if not self.waiting:
                self.stop_now()

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.running.add(trial.trial_id)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        # Tune registers the checkpoint in the same step, so the final snapshot holds it.
        self.checkpointed(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self.checkpointed(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self.checkpointed(trial)

    def on_step(self, iteration: int, trials: list, **info) -> None:
        if self.requested_at is not None and time.monotonic() - self.requested_at > self.PATIENCE_S:
            self.stop_now()


class TrialFailureLines(logging.Filter):
    """Tune logs each failure of a trial with its traceback, though the sweep handles it (a retry
    from the last checkpoint, or FAILED with the traceback in the trial's MLflow run): one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Trial task failed for trial") and record.exc_info:
            error = [line for line in str(record.exc_info[1]).splitlines() if line.strip()]
            record.msg = "%s: %s"
            record.args = (message, error[-1].strip() if error else type(record.exc_info[1]).__name__)
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class InterruptMessages(logging.Filter):
    """Tune's own lines at an interrupt point to `Tuner.restore`; the CLI says `dualsweep resume`."""

    DROPPED = ("Stop signal received", "Experiment has been interrupted", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.DROPPED)


# Set when a GracefulStop ended the run (Tune's callbacks come back from its pickle on a restore,
# so the flag cannot live in the instance the runner built).
STOPPED = threading.Event()
# One instance each, so that a driver running several sweeps adds each filter once.
DELETED_CHECKPOINT_FILTER, TRIAL_FAILURE_LINES, INTERRUPT_MESSAGES = (
    DeletedCheckpointFilter(), TrialFailureLines(), InterruptMessages())


@dataclass
class Outcome:
    trials: int
    errors: int
    # Ended by SIGTERM or Ctrl-C before every trial ended; `resume` continues.
    stopped: bool = False


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
    cpu, gpu = loaded.spec.resources.per_trial()
    slots = available.get("CPU", 1.0) / cpu
    if gpu:
        slots = min(slots, available.get("GPU", 0.0) / gpu)
    if loaded.spec.max_concurrent:
        slots = min(slots, loaded.spec.max_concurrent)
    return max(1, int(slots))


def tune_environment() -> None:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", SNAPSHOT_PERIOD_S)
    # Checkpoints force snapshots (see num_to_keep below), which Tune would warn about each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The automatic TensorBoard logger costs seconds at start; build_tuner adds the JSON one back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A tracking server that is down: fail a write at once (MLflow would retry it for minutes,
    # stalling the sweep); MlflowTracking keeps it and tries again.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial_name(trial) -> str:
    return trial.config[SWEEP_KEY]["key"]


def entry_point(trainable: str) -> Callable[[dict], None]:
    """The trial kind's Ray Tune function, "module:function" in trainables' contract."""
    module, function = TRIAL_KINDS[trainable].entry_point.split(":")
    return getattr(importlib.import_module(module), function)


def trainable_with_resources(loaded: LoadedSpec):
    spec, r = loaded.spec, loaded.spec.resources
    if r.workers == 1:
        return tune.with_resources(entry_point(spec.trainable), {"cpu": r.cpu, "gpu": r.gpu})
    # A data-parallel trial: the Tune trial drives the Ray Train run of its workers, which Ray Train
    # places itself (its own placement group), so Tune reserves only the driver.
    trainable = tune.with_parameters(entry_point(spec.trainable), worker_cpu=r.cpu, worker_gpu=r.gpu)
    return tune.with_resources(trainable, {"cpu": TRIAL_DRIVER_CPU})


def build_tuner(loaded: LoadedSpec, cells: list[Cell], parent: tuple[str, str], verbose: int):
    """The one Tuner of a sweep: per-cell searcher and scheduler, MLflow and scheduler-state callbacks."""
    spec = loaded.spec
    searcher = CellSearcher(spec, cells, optuna_url(loaded.sweep_dir), str(loaded.sweep_dir), tune_path(loaded))
    scheduler = CellASHA(spec.metric, spec.mode, spec.scheduler.grace_period, spec.scheduler.reduction_factor,
                         enabled=spec.scheduler.type == "asha")
    experiment, parent_run = parent
    # The JSON logger writes each trial's result.json, which `status` and `report` read through
    # Ray's ExperimentAnalysis. It comes first so that result.json is complete when MLflow logs the
    # trial's files.
    tracking = MlflowTracking(spec.tracking.uri, experiment, parent_run, TRIAL_KINDS[spec.trainable].artifacts)
    callbacks = [JsonLoggerCallback(), SchedulerState(scheduler), tracking,
                 ProgressLog(spec.metric, sweep_info(spec, cells, partial=True).planned_text), GracefulStop()]
    return tune.Tuner(
        trainable_with_resources(loaded),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=planned_trials(spec, cells),
            # Tune sees only a data-parallel trial's driver: it must not start trials whose workers
            # the cluster cannot hold (each Ray Train run would wait for them).
            max_concurrent_trials=trial_slots(loaded) if spec.resources.workers > 1 else spec.max_concurrent or None,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
            # Keeps worker processes (and their imported torch) from one trial to the next. Not for
            # data-parallel trials: a trial that ASHA stopped is still inside its Ray Train run, so
            # Tune could not reset its process for the next trial and would fail that one.
            reuse_actors=spec.resources.workers == 1,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=loaded.tune_storage, callbacks=callbacks, verbose=verbose,
            # Two, not one: Tune deletes a trial's older checkpoint as soon as a newer one arrives,
            # before its next experiment snapshot; with one kept, a kill in between leaves the
            # snapshot pointing at a deleted checkpoint and the trial cannot be restored.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # With a storage URI, Tune uploads its snapshot at most every sync_period (300 s by
            # default): a cluster lost in between would leave minutes of checkpoints unknown to a resume.
            sync_config=tune.SyncConfig(sync_period=int(SNAPSHOT_PERIOD_S)),
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
        restore, set_aside = snapshot_to_restore(tune_path(loaded))
        for line in set_aside:
            print(f"dualsweep: {line}", file=sys.stderr, flush=True)
        return execute(loaded, expand_cells(loaded.spec), address, verbose, restore=restore)


def execute(loaded: LoadedSpec, cells: list[Cell], address: Optional[str], verbose: int, restore: bool) -> Outcome:
    tune_environment()
    controller_log = logging.getLogger("ray.tune.execution.tune_controller")
    create_studies(loaded.spec, cells, optuna_url(loaded.sweep_dir))
    parent = start_parent_run(loaded, len(cells), planned_trials(loaded.spec, cells))
    try:
        connect_ray(address, verbose)
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(trial_slots(loaded)))
        if restore:
            controller_log.addFilter(DELETED_CHECKPOINT_FILTER)
            tuner = tune.Tuner.restore(tune_path(loaded), trainable_with_resources(loaded),
                                       resume_unfinished=True, resume_errored=False)
        else:
            tuner = build_tuner(loaded, cells, parent, verbose)
    except BaseException:
        # Ray did not start or the Tuner could not be built: the parent run must not stay RUNNING.
        end_parent_run(loaded.spec.tracking.uri, parent[1], "FAILED")
        raise
    STOPPED.clear()
    controller_log.addFilter(TRIAL_FAILURE_LINES)
    # The results of trials a stop left pending: nothing to say.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.tune").addFilter(INTERRUPT_MESSAGES)
    try:
        results = tuner.fit()
    except BaseException:
        end_parent_run(loaded.spec.tracking.uri, parent[1], "KILLED")
        raise
    stopped = STOPPED.is_set()
    end_parent_run(loaded.spec.tracking.uri, parent[1], "KILLED" if stopped else "FINISHED")
    return Outcome(trials=len(results), errors=results.num_errors, stopped=stopped)
