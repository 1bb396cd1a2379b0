"""The Ray Tune entry points of trainables' trial kinds (see trainables.contract.TRIAL_KINDS): a
Ray-free trial function with Tune's report, checkpoint and resume. The one module of trainables that
imports Ray.

Tune calls an entry point with the sweep's plain dict config, {"trial": <trial config>, "sweep":
<where the trial belongs>}; only the trial config reaches the trial."""
from __future__ import annotations

import functools
import logging
import re
from typing import Callable

import pyarrow.fs
import ray
from ray import tune

from trainables.errors import CheckpointError
from trainables.provenance import PROVENANCE_KEY, RAY_NODE_KEY
from trainables.stand_in import train_stand_in
from trainables.train import train

log = logging.getLogger(__name__)
# Tune's name for a trial's n-th checkpoint folder (zero-padded, so names sort as numbers).
CHECKPOINT_NAME = re.compile(r"checkpoint_\d{6}")

TrainFunction = Callable[[dict, Callable[[dict, str], None], "str | None"], object]


def run_under_tune(train_fn: TrainFunction, trial_config: dict) -> None:
    """Run `train_fn(config, report, resume_from)` inside a Tune trial: every report becomes a Tune
    result with a checkpoint (copied by Tune before the trainable deletes its directory), and a
    retried or restored trial resumes from its latest checkpoint; from the one before when that
    cannot be read (the sweep keeps two), and from the start when none can. The provenance of every
    result names the Ray node the trial runs on (a retried trial may run on another node)."""
    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict, checkpoint_dir: str) -> None:
        provenance = metrics.get(PROVENANCE_KEY)
        if isinstance(provenance, dict):
            metrics = {**metrics, PROVENANCE_KEY: {**provenance, RAY_NODE_KEY: node_id}}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    latest = tune.get_checkpoint()
    for checkpoint in restore_candidates(latest) if latest else []:
        with checkpoint.as_directory() as directory:
            try:
                train_fn(trial_config, report, directory)
                return
            except CheckpointError as exc:
                log.warning("trial %s: checkpoint %s cannot be read (%s); trying the one before",
                            tune.get_context().get_trial_name(), checkpoint.path, exc)
    train_fn(trial_config, report, None)


def restore_candidates(latest: tune.Checkpoint) -> list[tune.Checkpoint]:
    """`latest` and the older checkpoints beside it in the trial's storage, newest first."""
    filesystem = latest.filesystem
    folder, name = latest.path.rstrip("/").rsplit("/", 1)
    siblings = filesystem.get_file_info(pyarrow.fs.FileSelector(folder))
    older = sorted((info.base_name for info in siblings if info.type == pyarrow.fs.FileType.Directory
                    and CHECKPOINT_NAME.fullmatch(info.base_name) and info.base_name < name), reverse=True)
    return [latest, *(tune.Checkpoint(f"{folder}/{base}", filesystem) for base in older)]


def ssl_trial(config: dict) -> None:
    """The entry point of the `ssl` trial kind: trainables.train."""
    trial_config = dict(config["trial"])
    if not trial_config.get("cpus"):
        # Ray does not pin a trial to its CPUs; without this torch would use every core.
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        trial_config["cpus"] = max(1, int(assigned))
    run_under_tune(train, trial_config)


def stand_in_trial(config: dict) -> None:
    """The entry point of the `stand_in` trial kind: trainables.stand_in."""
    # The trial's name (the orchestrator names trials by their key) and the Ray job: a test tells
    # the epochs a killed driver's job ran from those of the job that resumed it.
    name = f"{tune.get_context().get_trial_name()} {ray.get_runtime_context().get_job_id()}"
    run_under_tune(functools.partial(train_stand_in, trial_name=name), config["trial"])
