"""The Ray Tune entry points of trainables' trial kinds (see trainables.contract.TRIAL_KINDS): a
Ray-free trial function with Tune's report, checkpoint and resume. The one module of trainables that
imports Ray.

Tune calls an entry point with the sweep's plain dict config, {"trial": <trial config>, "sweep":
<where the trial belongs>}; only the trial config reaches the trial.

A data-parallel trial (trial config `workers` > 1) is a Ray Train run inside its Tune trial: the
Tune function builds a TorchTrainer of that many workers and fits it, while a thread of its own
hands each epoch's report to Tune. Rank 0 puts its metrics and checkpoint files on a queue; the
Tune trial reports them with the checkpoint, so Tune holds the trial's checkpoints exactly as for
one process (retries, resume, the fallback to an older checkpoint, a graceful stop, MLflow's
artifacts). Ray Train keeps none: its own checkpoints would be a second copy, and
ray.tune.integration.ray_train.TuneReportCallback forwards metrics only. A resumed or retried
trial passes its checkpoint's files to every worker through the object store, so workers on other
nodes read it too. A failed worker fails the Ray Train run at once (its max_failures is 0) and
with it the Tune trial, which the sweep's max_failures retries from its last checkpoint. A trial
that Tune stops mid-run (ASHA) removes its workers' placement group before its process ends: the
Ray Train run dies with that process, and Ray Train's own cleaner of the placement group needs the
dashboard's state API; without either, the workers' resources stay held for the rest of the sweep
and every later trial waits for them."""
from __future__ import annotations

import functools
import json
import logging
import re
import tempfile
import threading
from pathlib import Path
from typing import Callable

import pyarrow.fs
import ray
from ray import tune
from ray.util.placement_group import PlacementGroup

from trainables.contract import REPORTED_FILE
from trainables.errors import CheckpointError
from trainables.provenance import PROVENANCE_KEY, RAY_NODE_KEY
from trainables.stand_in import train_stand_in
from trainables.train import read_checkpoint, train

log = logging.getLogger(__name__)
# Tune's name for a trial's n-th checkpoint folder (zero-padded, so names sort as numbers).
CHECKPOINT_NAME = re.compile(r"checkpoint_\d{6}")

TrainFunction = Callable[[dict, Callable[[dict, str], None], "str | None"], object]


def run_under_tune(train_fn: TrainFunction, trial_config: dict, checkpoint_folder: str | None = None) -> None:
    """Run `train_fn(config, report, resume_from)` inside a Tune trial: every report becomes a Tune
    result with a checkpoint (copied by Tune before the trainable deletes its directory), and a
    retried or restored trial resumes from its latest checkpoint; from the one before when that
    cannot be read (the sweep keeps two), and from the start when none can. Ray's last snapshot
    before a kill may not know a trial's newest checkpoints, or the trial at all (it then starts
    again under a new id): the trial takes up the newest in its `checkpoint_folder` and reports
    again every result it holds that Tune does not know, so that the driver (MLflow, the scheduler)
    sees each epoch. The provenance of every result names the Ray node the trial runs on (a retried
    trial may run on another node)."""
    node_id = ray.get_runtime_context().get_node_id()
    history: list[dict] = []

    def report(metrics: dict, checkpoint_dir: str) -> None:
        provenance = metrics.get(PROVENANCE_KEY)
        if isinstance(provenance, dict):
            metrics = {**metrics, PROVENANCE_KEY: {**provenance, RAY_NODE_KEY: node_id}}
        history.append(metrics)
        (Path(checkpoint_dir) / REPORTED_FILE).write_text(json.dumps(history, default=float))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    latest = tune.get_checkpoint()
    known_epoch = max(reported_epoch(latest), 0) if latest else 0
    # Ray's snapshot may lag the checkpoints a killed driver's trial had made: the furthest in storage.
    candidates = saved_checkpoints(checkpoint_folder) or (restore_candidates(latest) if latest else [])
    for checkpoint in candidates:
        with checkpoint.as_directory() as directory:
            history[:] = reported_results(checkpoint)
            unknown = [result for result in history if result.get("epoch", 0) > known_epoch]
            # The killed driver may never have received these results: report them again, the last
            # with its checkpoint (MLflow's writer skips an epoch it has logged).
            for result in unknown:
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory)
                            if result is history[-1] else None)
            known_epoch = max([known_epoch, *(result["epoch"] for result in unknown)])
            try:
                train_fn(trial_config, report, directory)
                return
            except CheckpointError as exc:
                log.warning("trial %s: checkpoint %s cannot be read (%s); trying the one before",
                            tune.get_context().get_trial_name(), checkpoint.path, exc)
    history.clear()
    train_fn(trial_config, report, None)


def reported_results(checkpoint: tune.Checkpoint) -> list[dict]:
    """The results reported up to `checkpoint`, oldest first; none when they cannot be read."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{REPORTED_FILE}") as stream:
            results = json.loads(stream.read())
    except (OSError, ValueError):
        return []
    # A checkpoint from before the history was kept holds its own result alone.
    results = results if isinstance(results, list) else [results]
    return [result for result in results if isinstance(result, dict) and isinstance(result.get("epoch"), (int, float))]


def reported_epoch(checkpoint: tune.Checkpoint) -> int:
    """The epoch whose result was reported with `checkpoint`; -1 when that cannot be read."""
    results = reported_results(checkpoint)
    return int(results[-1]["epoch"]) if results else -1


def restore_candidates(latest: tune.Checkpoint) -> list[tune.Checkpoint]:
    """`latest` and the older checkpoints beside it in the trial's storage, newest first."""
    folder, name = latest.path.rstrip("/").rsplit("/", 1)
    return [latest, *(c for c in checkpoints_in(folder, latest.filesystem) if c.path.rsplit("/", 1)[1] < name)]


def saved_checkpoints(folder: str | None) -> list[tune.Checkpoint]:
    """The checkpoints a trial left in its folder (a path or URI), the furthest along first; none
    without one. A trial started again under a new id finds its folder taken, and Tune gives it
    `<folder>_<4 hex digits>`: its checkpoints there count too."""
    if not folder:
        return []
    filesystem, path = pyarrow.fs.FileSystem.from_uri(folder if "://" in folder else f"file://{folder}")
    parent, name = path.rstrip("/").rsplit("/", 1)
    own = re.compile(re.escape(name) + r"(_[0-9a-f]{4})?")
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    found = [checkpoint for info in entries
             if info.type == pyarrow.fs.FileType.Directory and own.fullmatch(info.base_name)
             for checkpoint in checkpoints_in(info.path, filesystem)]
    found.sort(key=lambda checkpoint: (reported_epoch(checkpoint), checkpoint.path), reverse=True)
    if found:
        log.info("trial %s: its newest checkpoint is %s", folder, found[0].path)
    return found


def checkpoints_in(folder: str, filesystem: pyarrow.fs.FileSystem) -> list[tune.Checkpoint]:
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    names = sorted((info.base_name for info in entries if info.type == pyarrow.fs.FileType.Directory
                    and CHECKPOINT_NAME.fullmatch(info.base_name)), reverse=True)
    return [tune.Checkpoint(f"{folder}/{name}", filesystem) for name in names]


def ssl_trial(config: dict, worker_cpu: float = 1.0, worker_gpu: float = 0.0) -> None:
    """The entry point of the `ssl` trial kind: trainables.train. A trial config with `workers` > 1
    runs as a Ray Train job, each worker asking for worker_cpu CPUs and worker_gpu GPUs (the sweep's
    resources, which orchestrator.runner binds with tune.with_parameters)."""
    trial_config = dict(config["trial"])
    train_fn: TrainFunction = train
    if trial_config.get("workers", 1) > 1:
        trial_config["cpus"] = trial_config.get("cpus") or max(1, int(worker_cpu))
        train_fn = functools.partial(train_data_parallel, cpu=worker_cpu, gpu=worker_gpu)
    elif not trial_config.get("cpus"):
        # Ray does not pin a trial to its CPUs; without this torch would use every core.
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        trial_config["cpus"] = max(1, int(assigned))
    run_under_tune(train_fn, trial_config, config["sweep"].get("checkpoints"))


# Ray Train's run of a data-parallel trial, in the trial's storage: one name for every attempt, so
# that a retried trial does not leave a run behind per attempt.
TRAIN_RUN_NAME = "data_parallel"


def train_data_parallel(config: dict, report: Callable[[dict, str], None], resume_from: str | None,
                        cpu: float, gpu: float) -> None:
    """trainables.train on `config["workers"]` Ray Train workers (gloo on CPU, NCCL on GPU); a
    TrainFunction of run_under_tune (`cpu`, `gpu`: each worker's resources)."""
    # Imported here: only data-parallel trials pay for Ray Train.
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    if resume_from:
        # An unreadable checkpoint fails here (run_under_tune then tries the one before), not in
        # the workers after they have started.
        read_checkpoint(resume_from)
    channel = Queue(maxsize=1, actor_options={"num_cpus": 0})
    storage = tune.get_context().get_storage()
    trainer = TorchTrainer(
        data_parallel_worker,
        train_loop_config={"trial": config, "channel": channel,
                           "resume": ray.put(read_files(resume_from)) if resume_from else None},
        scaling_config=ScalingConfig(num_workers=config["workers"], use_gpu=gpu > 0,
                                     resources_per_worker={"CPU": cpu, **({"GPU": gpu} if gpu else {})}),
        run_config=RunConfig(name=TRAIN_RUN_NAME, storage_path=storage.trial_fs_path,
                             storage_filesystem=storage.storage_filesystem, failure_config=FailureConfig(max_failures=0)),
    )
    forwarder = ReportForwarder(channel, report)
    forwarder.start()
    try:
        trainer.fit()
    finally:
        forwarder.finish()


class ReportForwarder(threading.Thread):
    """Reports rank 0's epochs to Tune from a thread of the Tune trial, while its function waits
    in TorchTrainer.fit. When Tune stops the trial, its report raises SystemExit here: this thread
    removes the workers' placement group (which ends them) and ends; Tune then ends the trial's
    process, and with it the Ray Train run that the process owns."""

    def __init__(self, channel, report: Callable[[dict, str], None]):
        super().__init__(daemon=True)
        self.channel, self.report = channel, report
        self.fitted = threading.Event()
        self.error: Exception | None = None
        # The workers' placement group, which rank 0 sends first.
        self.placement_group: PlacementGroup | None = None

    def run(self) -> None:
        from ray.util.queue import Empty

        while not (self.fitted.is_set() and self.channel.empty()):
            try:
                item = self.channel.get(timeout=0.5)
            except Empty:
                continue
            if isinstance(item, PlacementGroup):
                self.placement_group = item
                continue
            metrics, files = item
            try:
                with tempfile.TemporaryDirectory(prefix="dualsweep-ckpt-") as directory:
                    write_files(files, directory)
                    self.report(metrics, directory)
            except SystemExit:
                ray.util.remove_placement_group(self.placement_group)
                raise
            except Exception as exc:
                # Rank 0 would wait on the full queue forever: without it, its next report fails.
                self.error = exc
                self.channel.shutdown(force=True)
                return

    def finish(self) -> None:
        """After fit: the last reports, then this thread's error, if any."""
        self.fitted.set()
        self.join()
        if self.error is not None:
            raise self.error


def data_parallel_worker(loop_config: dict) -> None:
    """One Ray Train worker of a data-parallel trial (torch.distributed is set up by Ray Train)."""
    from ray.train import get_context

    channel = loop_config["channel"]
    if get_context().get_world_rank() == 0:
        channel.put(ray.util.get_current_placement_group())

    def report(metrics: dict, checkpoint_dir: str) -> None:
        # Rank 0 only. Waits while the Tune trial still holds the report before: one in flight.
        channel.put((metrics, read_files(checkpoint_dir)))

    if loop_config["resume"] is None:
        train(loop_config["trial"], report)
        return
    with tempfile.TemporaryDirectory(prefix="dualsweep-resume-") as directory:
        write_files(ray.get(loop_config["resume"]), directory)
        train(loop_config["trial"], report, directory)


def read_files(directory: str) -> dict[str, bytes]:
    """A checkpoint directory's files (a trial's checkpoint has no subdirectories)."""
    return {path.name: path.read_bytes() for path in Path(directory).iterdir() if path.is_file()}


def write_files(files: dict[str, bytes], directory: str) -> None:
    for name, content in files.items():
        (Path(directory) / name).write_bytes(content)


def stand_in_trial(config: dict) -> None:
    """The entry point of the `stand_in` trial kind: trainables.stand_in."""
    # The trial's name (the orchestrator names trials by their key) and the Ray job: a test tells
    # the epochs a killed driver's job ran from those of the job that resumed it.
    name = f"{tune.get_context().get_trial_name()} {ray.get_runtime_context().get_job_id()}"
    run_under_tune(functools.partial(train_stand_in, trial_name=name), config["trial"], config["sweep"].get("checkpoints"))
