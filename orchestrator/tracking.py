"""MLflow on the driver: one parent run per sweep, one child run per trial, written by a Tune
Callback through MlflowClient. The driver is the only writer, so a local sqlite store is safe and
workers never need to reach the tracking server.

Restores: Tune's snapshot of the trial -> run map can lag behind MLflow, so a trial's run is also
found by its tags (sweep, trial_key), every write is safe to repeat, and epochs replayed from an older
checkpoint are not logged twice."""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from orchestrator.messages import SpecError
from orchestrator.report.model import finite
from orchestrator.spec import SWEEP_KEY, LoadedSpec
from trainables.contract import PROVENANCE_KEY

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

log = logging.getLogger(__name__)
# Ray's bookkeeping in a result, not the trial's metrics (elapsed time is kept).
NOT_METRICS = (set(AUTO_RESULT_KEYS) - {"time_total_s"}) | {"done", "trial_id", "should_checkpoint",
                                                             "checkpoint_dir_name", "iterations_since_restore"}
MAX_PARAM_LENGTH = 6000
# Tags on every child run, from the trial's place in the sweep.
RUN_TAGS = ("sweep", "cell", "cell_label", "phase", "method", "family", "seed")
# A trial's provenance (versions, commit, device, data fingerprint) becomes tags with this prefix.
PROVENANCE_TAG = "provenance."
# MLflow's own refusals of a write: final, unlike a store that cannot be reached.
REFUSED = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST"}
# While the store cannot be reached, queued writes are tried again this often (seconds).
RETRY_S = 10.0
# MLflow 3 opens an experiment on its GenAI pages unless it is marked as model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_store(loaded: LoadedSpec, timeout_s: float = 5.0) -> None:
    """Fail fast, before anything of the sweep is written: an MLflow server that does not answer
    (MlflowClient would retry for minutes), or a sqlite store whose folder cannot be written."""
    uri = loaded.spec.tracking.uri
    where = f"{loaded.source}: tracking.uri"
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SpecError([f"{where}: the MLflow server {uri} does not answer ({reason}); start it "
                             "(`mlflow server ...`) or point tracking.uri at a store that is up"]) from None
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        folder = Path(uri[len(prefix):]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise SpecError([f"{where}: cannot write the MLflow store {uri}: {folder} is not a writable folder"])


def experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location(uri, name), tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def artifact_location(uri: str, experiment: str) -> Optional[str]:
    """With a local sqlite store, artifacts go beside the database; MLflow's default would be
    ./mlruns of whatever directory first created the experiment. A server decides for itself."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix):]).parent / "mlartifacts" / experiment).as_uri()


def find_runs(client: MlflowClient, experiment: str, **tags: str) -> list:
    """Every run of the experiment with these tags: MLflow returns at most a page per search."""
    query = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], filter_string=query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def start_parent_run(loaded: LoadedSpec, cells: int, trials: int) -> tuple[str, str]:
    """The sweep's parent run (created once; a resume finds it again). Returns (experiment, run)."""
    spec = loaded.spec
    client = MlflowClient(spec.tracking.uri)
    experiment = experiment_id(client, spec.tracking.uri, spec.tracking.experiment)
    existing = find_runs(client, experiment, sweep=spec.name, role="sweep")
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return experiment, run_id
    run = client.create_run(experiment, run_name=spec.name, tags={
        "sweep": spec.name, "role": "sweep", "mlflow.note.content": spec.description,
    })
    params = {"trainable": spec.trainable, "metric": spec.metric, "mode": spec.mode, "cells": cells,
              "planned_trials": trials, "trials_per_cell": spec.search.trials_per_cell,
              "sampler": spec.search.sampler, "scheduler": spec.scheduler.type, "seeds": spec.seeds,
              "grid_axes": ",".join(spec.grid)}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    client.log_text(run.info.run_id, loaded.yaml_text, "sweep.yaml")
    return experiment, run.info.run_id


def end_parent_run(uri: str, run_id: str, status: str) -> None:
    try:
        MlflowClient(uri).set_terminated(run_id, status)
    except Exception as exc:  # whatever the store raised: the sweep's results are in its storage
        log.warning("the sweep's MLflow run was not marked %s (%s); `dualsweep resume` marks it once the store "
                    "is back", status, one_line_error(exc))


def sweep_runs(loaded: LoadedSpec) -> tuple[MlflowClient, Optional[str], Optional[Any]]:
    """The store's client, the sweep's experiment id and its parent run (None for what is not there)."""
    spec = loaded.spec
    client = MlflowClient(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    if experiment is None:
        return client, None, None
    parents = find_runs(client, experiment.experiment_id, sweep=spec.name, role="sweep")
    return client, experiment.experiment_id, parents[0] if parents else None


def log_report_files(loaded: LoadedSpec, files: list[Path], folder: str = "report") -> Optional[str]:
    """The report's files as artifacts of the sweep's parent run; its run id, or None without one."""
    try:
        client, _, parent = sweep_runs(loaded)
        if parent is None:
            return None
        for path in files:
            client.log_artifact(parent.info.run_id, str(path), folder)
    except Exception as exc:  # whatever the store raised: the files are on disk all the same
        log.warning("the report was not logged to MLflow (%s)", one_line_error(exc))
        return None
    return parent.info.run_id


class MlflowTracking(Callback):
    """Every write is queued as plain data and made in order. While the store cannot be reached the
    sweep goes on: one warning, the queue waits (saved with Tune's callback state, so a killed
    driver keeps it) and is retried every RETRY_S seconds, at the sweep's end and at `resume`."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str, checkpoint_artifacts: tuple[str, ...] = ()):
        self.uri = uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.checkpoint_artifacts = checkpoint_artifacts
        # Ray trial id -> MLflow run id; saved in Tune's callback snapshots.
        self.runs: dict[str, str] = {}
        # Writes not made yet: (operation, Ray trial id, payload), plain data; saved in the snapshots.
        self.pending: list[tuple[str, str, dict]] = []
        # Ray trial id -> last epoch logged to its run (epochs replayed after a restore are skipped).
        self.logged_epoch: dict[str, float] = {}
        # Ray trial ids whose run carries the trial's provenance tags (set once per driver).
        self.provenance_tagged: set[str] = set()
        # Ray trial ids this driver has queued an "open" for, and those not ended yet.
        self.opened: set[str] = set()
        self.active: set[str] = set()
        # Since when the store cannot be reached (monotonic seconds), and when to try again.
        self.down_since: Optional[float] = None
        self.retry_at = 0.0
        self._client: Optional[MlflowClient] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def get_state(self) -> dict:
        return {"runs": dict(self.runs), "pending": list(self.pending)}

    def set_state(self, state: dict) -> None:
        # setup() runs after this on a restore and must not reset it.
        self.runs.update(state["runs"])
        self.pending[:0] = state.get("pending", [])

    # --- Tune's callback hooks: each queues its writes ------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.active.add(trial.trial_id)
        self.open(trial)
        self.flush()

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info) -> None:
        self.open(trial)  # a restored trial may report before Tune says it started
        epoch = result.get("epoch", result.get("training_iteration", 0))
        metrics = {key: value for key, value in ((key, finite(value)) for key, value in result.items()
                                                  if key not in NOT_METRICS) if value is not None}
        self.pending.append(("result", trial.trial_id, {
            "epoch": epoch, "metrics": metrics, "time_ms": int(time.time() * 1000),
            "provenance": result.get(PROVENANCE_KEY) if isinstance(result.get(PROVENANCE_KEY), dict) else None}))
        self.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        result = trial.last_result or {}
        stopped_early = result.get("epoch", 0) < trial.config[SWEEP_KEY]["epochs"] and not result.get("diverged")
        self.end(trial, RunStatus.to_string(RunStatus.FINISHED), stopped_early, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self.end(trial, RunStatus.to_string(RunStatus.FAILED), stopped_early=False, error=trial_error(trial))

    def on_step(self, iteration: int, trials: list, **info) -> None:
        if self.pending:
            self.flush()

    def on_experiment_end(self, trials: list, **info) -> None:
        """Trials left unfinished (the driver was stopped; Tune has already stopped their actors) are
        marked KILLED; a resume sets them RUNNING again. Then a last try at what is queued."""
        self.pending.extend(("kill", trial_id, {}) for trial_id in sorted(self.active))
        self.active.clear()
        self.flush(now=True)
        if self.pending:
            log.warning("%d MLflow writes wait for the store %s; `dualsweep resume` of this sweep makes them once "
                        "it is back", len(self.pending), self.uri)

    # --- queueing ------------------------------------------------------------------------------
    def open(self, trial: Trial) -> None:
        if trial.trial_id not in self.opened:
            self.opened.add(trial.trial_id)
            self.pending.append(("open", trial.trial_id, {"where": dict(trial.config[SWEEP_KEY]),
                                                          "config": trial.config["trial"]}))

    def end(self, trial: Trial, status: str, stopped_early: bool, error: Optional[str]) -> None:
        self.active.discard(trial.trial_id)
        self.open(trial)
        self.pending.append(("end", trial.trial_id, {
            "status": status, "stopped_early": stopped_early, "error": error, "config": trial.config["trial"],
            "final_result": json_safe(trial.last_result or {}), "files": [str(p) for p in trial_files(trial)],
            "checkpoint": trial.checkpoint if self.checkpoint_artifacts else None}))
        self.flush()

    def flush(self, now: bool = False) -> None:
        """Make the queued writes in order; stop at the first the store cannot take."""
        if self.down_since is not None and not now and time.monotonic() < self.retry_at:
            return
        while self.pending:
            operation, trial_id, payload = self.pending[0]
            try:
                getattr(self, f"write_{operation}")(trial_id, payload)
            except Exception as exc:  # whatever the store raised: only MLflow's own refusals are final
                if isinstance(exc, MlflowException) and exc.error_code in REFUSED:
                    log.warning("MLflow refused a write of trial %s (%s); it is skipped", trial_id, exc.message)
                    self.pending.pop(0)
                    continue
                if self.down_since is None:
                    log.warning("MLflow store %s cannot be reached (%s); the sweep goes on and its results are "
                                "written when the store is back", self.uri, one_line_error(exc))
                    self.down_since = time.monotonic()
                self.retry_at = time.monotonic() + RETRY_S
                return
            self.pending.pop(0)
        if self.down_since is not None:
            log.info("MLflow store %s is back after %.0f s; every result is written", self.uri,
                     time.monotonic() - self.down_since)
            self.down_since = None

    # --- the writes, each safe to repeat ---------------------------------------------------------
    def write_open(self, trial_id: str, payload: dict) -> None:
        where = payload["where"]
        run_id = self.runs.get(trial_id) or self.find_run(where)
        if run_id:
            # A restored or retried trial: its run goes on, and epochs it already logged are skipped.
            self.client.log_batch(run_id, tags=[RunTag("ray_trial_id", trial_id)])
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, "epoch")
            self.logged_epoch[trial_id] = max((m.value for m in history), default=0.0)
        else:
            run_id = self.create_run(trial_id, where, payload["config"])
            self.logged_epoch[trial_id] = 0.0
        self.runs[trial_id] = run_id

    def write_result(self, trial_id: str, payload: dict) -> None:
        run_id = self.runs[trial_id]
        if payload["provenance"] and trial_id not in self.provenance_tagged:
            tags = [RunTag(f"{PROVENANCE_TAG}{key}", str(value)) for key, value in payload["provenance"].items()]
            self.client.log_batch(run_id, tags=tags)
            self.provenance_tagged.add(trial_id)
        if trial_id not in self.logged_epoch:  # a result queued by a driver that was killed
            history = self.client.get_metric_history(run_id, "epoch")
            self.logged_epoch[trial_id] = max((m.value for m in history), default=0.0)
        epoch = payload["epoch"]
        if epoch <= self.logged_epoch[trial_id]:
            return
        metrics = [Metric(key, value, payload["time_ms"], int(epoch)) for key, value in payload["metrics"].items()]
        self.client.log_batch(run_id, metrics=metrics)
        self.logged_epoch[trial_id] = epoch

    def write_end(self, trial_id: str, payload: dict) -> None:
        run_id = self.runs[trial_id]
        tags = [RunTag("stopped_early", str(payload["stopped_early"]).lower())]
        if payload["error"]:
            tags.append(RunTag("error", payload["error"][:MAX_PARAM_LENGTH]))
        self.client.log_batch(run_id, tags=tags)
        self.client.log_dict(run_id, payload["config"], "trial_config.yaml")
        self.client.log_dict(run_id, payload["final_result"], "final_result.json")
        for path in map(Path, payload["files"]):
            if path.is_file():  # the driver's copy of a trial's files is gone after a restart
                self.client.log_artifact(run_id, str(path), "trial")
        if payload["checkpoint"] is not None:
            with payload["checkpoint"].as_directory() as directory:
                for path in (Path(directory) / name for name in self.checkpoint_artifacts):
                    if path.is_file():
                        self.client.log_artifact(run_id, str(path), "trial")
        self.client.set_terminated(run_id, payload["status"])

    def write_kill(self, trial_id: str, payload: dict) -> None:
        if trial_id in self.runs:
            self.client.set_terminated(self.runs[trial_id], RunStatus.to_string(RunStatus.KILLED))

    def find_run(self, where: dict) -> Optional[str]:
        """The run of this trial's key: Tune's saved map lags MLflow, and a trial Tune forgot at a
        kill is suggested again under a new Ray id but the same key."""
        found = find_runs(self.client, self.experiment, sweep=where["sweep"], trial_key=where["key"])
        return found[0].info.run_id if found else None

    def create_run(self, trial_id: str, where: dict, config: dict) -> str:
        tags = {key: str(where[key]) for key in RUN_TAGS}
        tags.update({MLFLOW_PARENT_RUN_ID: self.parent_run_id, MLFLOW_RUN_NAME: where["key"],
                     "trial_key": where["key"], "role": "trial", "ray_trial_id": trial_id})
        run = self.client.create_run(self.experiment, run_name=where["key"], tags=tags)
        params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in flatten(config).items()]
        # MLflow takes at most 100 params per batch.
        for start in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        return run.info.run_id


def trial_files(trial: Trial) -> list[Path]:
    """Files the trial left in its directory (plots, error logs); checkpoints stay in Tune's storage."""
    directory = Path(trial.local_path) if trial.local_path else None
    if directory is None or not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file())


def one_line_error(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def trial_error(trial: Trial) -> Optional[str]:
    """The exception a failed trial ended with ("Type: message", the last line of the error file
    Tune writes in the trial's directory), or None when there is none. Read from the sweep's
    storage; the driver's own copy, until it is synced there (only a process with Ray running can
    name that copy's folder)."""
    name = trial.run_metadata.error_filename
    if not name:
        return None
    try:
        with trial.storage.storage_filesystem.open_input_stream(f"{trial.path}/{name}") as stream:
            text = stream.readall().decode(errors="replace")
    except OSError:
        try:
            text = Path(trial.local_path, name).read_text(errors="replace")
        except Exception:  # no Ray session (its folder cannot be named) or no file: no message
            return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def json_safe(result: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in result.items() if k != "config"}, default=str))
