"""A sweep's report, from storage alone (no Ray cluster): the plan from the sweep directory, every
trial from Ray Tune's experiment (config, per-epoch results, last checkpoint's spectra), each
trial's MLflow run id and provenance tags and the parent run's state from the sweep's MLflow store;
then orchestrator.report judges and writes, and the files go to the parent run as artifacts.
A sweep still running, or killed, gives what has been reported so far, marked partial."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ray.tune import ExperimentAnalysis

from orchestrator.report.model import SweepInfo, TrialRecord, ended_status, numeric
from orchestrator.report.render import ReportFiles, write_report
from orchestrator.spec import SWEEP_KEY, LoadedSpec, cell_params, expand_cells, sweep_info
from orchestrator.storage import REPORT_DIR, load_sweep_dir, newest_experiment_state, read_rounds, tune_path
from orchestrator.tracking import PROVENANCE_TAG, find_runs, log_report_files, sweep_runs, trial_error
from trainables.contract import PROVENANCE_KEY, SPECTRA_FILE

log = logging.getLogger(__name__)


def trial_status(ray_status: str, result: dict, epochs: int) -> str:
    if ray_status in ("ERROR", "TERMINATED"):
        return ended_status(ray_status == "ERROR", result, epochs)
    return "pending" if ray_status == "PENDING" else "running"


def read_history(trial) -> list[dict]:
    """The per-epoch results Tune's JSON logger wrote (one JSON object per line), read from the
    sweep's storage: the driver's own copy (trial.local_path) is in a Ray session's folder, which
    only a process with Ray running can name."""
    try:
        with trial.storage.storage_filesystem.open_input_stream(f"{trial.path}/result.json") as stream:
            text = stream.readall().decode()
    except OSError:
        return []  # not written yet (a trial that never reported) or not synced to storage yet
    history = []
    for line in text.splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a trial killed while it was written
        history.append(numeric(result))
    return history


def read_spectra(trial) -> Optional[dict]:
    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return None
    try:
        with checkpoint.as_directory() as directory:
            path = Path(directory) / SPECTRA_FILE
            return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None  # a checkpoint Tune already replaced or a storage that cannot be reached now


def dotted_value(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


class SavedTrials(ExperimentAnalysis):
    """Ray's reader of an experiment's saved trials, without the pandas table it builds from every
    trial's result.json (6 ms a trial: seconds for a sweep of a thousand), which read_history reads
    anyway."""

    def _fetch_trial_dataframes(self) -> dict:
        return {}


def read_trials(loaded: LoadedSpec) -> list[TrialRecord]:
    experiment_state = newest_experiment_state(tune_path(loaded))
    if experiment_state is None:
        return []
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    spec = loaded.spec
    cells = {c.id: c for c in expand_cells(spec)}
    records = []
    for trial in SavedTrials(experiment_state).trials:
        where = trial.config.get(SWEEP_KEY, {})
        cell = cells.get(where.get("cell"))
        if cell is None:
            continue
        result = trial.last_result or {}
        history = read_history(trial)
        provenance = result.get(PROVENANCE_KEY) or {}
        params = {key: dotted_value(trial.config["trial"], key) for key in cell_params(spec, cell)}
        records.append(TrialRecord(
            key=where["key"], cell=cell.id, cell_values=dict(cell.values), method=cell.method, family=cell.family,
            phase=where["phase"], seed=int(where["seed"]), params=params,
            status=trial_status(trial.status, result, where["epochs"]),
            error=trial_error(trial) if trial.status == "ERROR" else None,
            metrics=numeric(result),
            history=history, spectra=read_spectra(trial),
            provenance={k: str(v) for k, v in provenance.items()} if isinstance(provenance, dict) else {},
            epochs_planned=int(where["epochs"]),
            # Every failure but a failed trial's last one was followed by a retry.
            retries=trial.num_failures - (trial.status == "ERROR"),
        ))
    return records


def attach_mlflow(loaded: LoadedSpec, records: list[TrialRecord]) -> Optional[str]:
    """Each record's MLflow run id, and the sweep's parent run status (None when the store cannot be
    read: the report is then written without run ids)."""
    try:
        client, experiment, parent = sweep_runs(loaded)
        if parent is None:
            return None
        by_key = {run.data.tags.get("trial_key"): run for run in find_runs(client, experiment, sweep=loaded.spec.name,
                                                                             role="trial")}
    except Exception as exc:  # any failure of the store (down, locked, migrated) costs only the run ids
        log.warning("MLflow store %s not read (%s); the report has no run ids", loaded.spec.tracking.uri, exc)
        return None
    for record in records:
        run = by_key.get(record.key)
        if run is None:
            continue
        record.run_id = run.info.run_id
        # The run's tags are the provenance of record (what a user sees and may correct in MLflow);
        # the trial's own report is the fallback for a run not tagged yet.
        tagged = {k.removeprefix(PROVENANCE_TAG): v for k, v in run.data.tags.items() if k.startswith(PROVENANCE_TAG)}
        record.provenance = tagged or record.provenance
    return parent.info.status


def plan_of(loaded: LoadedSpec, partial: bool) -> SweepInfo:
    """The sweep's plan, with why its seeds until decided ended once they have."""
    return sweep_info(loaded.spec, expand_cells(loaded.spec), partial, read_rounds(loaded.sweep_dir).get("stopped"))


def collect(loaded: LoadedSpec) -> tuple[SweepInfo, list[TrialRecord]]:
    records = read_trials(loaded)
    parent_status = attach_mlflow(loaded, records)
    ended = sum(r.ended for r in records)
    info = plan_of(loaded, partial=True)
    # The parent run is FINISHED only when the Tuner ran to its end; without MLflow, count trials (with
    # seeds until decided the plan is the most it may run: the rounds' end says it ran to its end).
    if parent_status:
        complete = parent_status == "FINISHED"
    else:
        complete = ended == info.planned_trials or info.stopped is not None
    info.partial = not complete or ended < len(records)
    return info, records


@dataclass
class WrittenReport:
    info: SweepInfo
    trials: list[TrialRecord]
    files: ReportFiles
    run_id: Optional[str]  # the parent run that holds the files as artifacts

    def summary(self) -> str:
        state = "partial report (the sweep has not ended)" if self.info.partial else "report"
        logged = f"; logged to MLflow run {self.run_id}" if self.run_id else ""
        return f"{state} of {len(self.trials)} trials: {self.files.html}\nverdicts: {self.files.claims_json}{logged}"


def write_sweep_report(sweep_dir: Path, out: Optional[Path] = None) -> WrittenReport:
    loaded = load_sweep_dir(sweep_dir)
    info, trials = collect(loaded)
    files = write_report(info, trials, out or sweep_dir / REPORT_DIR)
    return WrittenReport(info, trials, files, log_report_files(loaded, files.all()))
