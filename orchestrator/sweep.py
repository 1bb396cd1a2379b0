"""Running a sweep: the sweep directory, Ray, and the one Tuner that runs every trial of the sweep.

A sweep directory (<storage>/<name>/) holds sweep.yaml (the validated spec, so that `resume` and
`status` need nothing else), optuna.db (one study per cell) and tune/ (Ray Tune's experiment).
With a storage URI (s3://bucket/sweeps), tune/ and a copy of sweep.yaml live at <URI>/<name>/ and
the rest in ./sweeps-runs/<name>/; `resume <URI>/<name>` works from any machine, rebuilding the
Optuna studies from Ray's saved searcher state when they are not there."""
from __future__ import annotations

import logging
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator.cells import CONFIRM, SEARCH, SWEEP_KEY, Cell, expand_cells
from orchestrator.spec import DEFAULT_STORAGE, LoadedSpec, SpecError, is_uri, spec_from_yaml_text

log = logging.getLogger(__name__)

SPEC_FILE = "sweep.yaml"
OPTUNA_FILE = "optuna.db"
TUNE_DIR = "tune"
# Ray snapshots its experiment state at most this often (seconds). Optuna and MLflow are written at
# once, so a short period keeps Ray's view of a killed sweep close to theirs; at a sweep's trial
# counts a snapshot costs milliseconds.
SNAPSHOT_PERIOD_S = "1"


def optuna_url(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir / OPTUNA_FILE}"


def planned_trials(loaded: LoadedSpec, cells: list[Cell]) -> int:
    return len(cells) * (loaded.spec.search.trials_per_cell + len(loaded.spec.seeds))


def read_remote_text(uri: str) -> Optional[str]:
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def write_remote_text(uri: str, text: str) -> None:
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0])
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def fetch_remote_sweep(uri: str) -> Path:
    """The local directory of the sweep stored at `uri`, made from its spec copy when missing."""
    text = read_remote_text(f"{uri.rstrip('/')}/{SPEC_FILE}")
    if text is None:
        raise SpecError([f"{uri}: no sweep here; give the URI of a sweep's folder, <storage>/<name>, holding {SPEC_FILE}"])
    loaded = spec_from_yaml_text(text, f"{uri}/{SPEC_FILE}")
    loaded.sweep_dir.mkdir(parents=True, exist_ok=True)
    if not (loaded.sweep_dir / SPEC_FILE).exists():
        (loaded.sweep_dir / SPEC_FILE).write_text(text)
    return loaded.sweep_dir


def find_sweep_dir(sweep: str) -> Path:
    """`sweep` is a sweep directory, a sweep name under ./sweeps-runs, the sweep's YAML file, or
    the URI of a sweep kept in a storage URI."""
    if is_uri(sweep):
        return fetch_remote_sweep(sweep)
    path = Path(sweep)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from orchestrator.spec import load_spec

        path = load_spec(path).sweep_dir
    for candidate in (path, Path(DEFAULT_STORAGE) / sweep):
        if (candidate / SPEC_FILE).is_file():
            return candidate.resolve()
    raise SpecError([f"{sweep}: no sweep here; give a sweep directory (holding {SPEC_FILE}), the name of a "
                     f"sweep under ./{DEFAULT_STORAGE}/, or the sweep's YAML once it has been run"])


def load_sweep_dir(sweep_dir: Path) -> LoadedSpec:
    path = sweep_dir / SPEC_FILE
    return spec_from_yaml_text(path.read_text(), str(path))


def describe_plan(loaded: LoadedSpec) -> str:
    spec = loaded.spec
    cells = expand_cells(spec)
    lines = [f"sweep {spec.name}: {len(cells)} cells x ({spec.search.trials_per_cell} search + "
             f"{len(spec.seeds)} confirmation trials) = {planned_trials(loaded, cells)} trials",
             f"  sweep directory {loaded.sweep_dir}" + (f"; Ray's experiment in {loaded.remote_dir}" if loaded.remote_dir else ""), f"  MLflow {spec.tracking.uri} (experiment {spec.tracking.experiment})"]
    for cell in cells:
        lines.append(f"  {cell.id}  {cell.label}  [{cell.family}]")
    return "\n".join(lines)


def connect_ray(address: Optional[str], verbose: int) -> None:
    import ray

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
    import ray

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
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial_name(trial) -> str:
    return trial.config[SWEEP_KEY]["key"]


def trainable_with_resources(loaded: LoadedSpec):
    from ray import tune

    from orchestrator.trainable_kinds import TRAINABLES

    spec = loaded.spec
    function = TRAINABLES[spec.trainable].load_function()
    return tune.with_resources(function, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def build_tuner(loaded: LoadedSpec, cells: list[Cell], parent: tuple[str, str], verbose: int):
    """The one Tuner of a sweep: per-cell searcher and scheduler, MLflow and scheduler-state callbacks."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from orchestrator.progress import ProgressLog
    from orchestrator.scheduler import CellASHA, SchedulerState
    from orchestrator.search import CellSearcher
    from orchestrator.tracking import MlflowTracking
    from orchestrator.trainable_kinds import TRAINABLES

    spec = loaded.spec
    searcher = CellSearcher(spec, cells, optuna_url(loaded.sweep_dir))
    scheduler = CellASHA(spec.metric, spec.mode, spec.scheduler.grace_period, spec.scheduler.reduction_factor,
                         enabled=spec.scheduler.type == "asha")
    experiment, parent_run = parent
    # The JSON logger writes each trial's result.json, which `status` reads through Ray's ExperimentAnalysis.
    # It comes first so that result.json is complete when MLflow logs the trial's files.
    tracking = MlflowTracking(spec.tracking.uri, experiment, parent_run, TRAINABLES[spec.trainable].checkpoint_artifacts)
    callbacks = [JsonLoggerCallback(), SchedulerState(scheduler), tracking,
                 ProgressLog(spec.metric, planned_trials(loaded, cells))]
    return tune.Tuner(
        trainable_with_resources(loaded),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=planned_trials(loaded, cells),
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


@dataclass
class Outcome:
    trials: int
    errors: int


def tune_path(loaded: LoadedSpec) -> str:
    return f"{loaded.tune_storage}/{TUNE_DIR}"


def ensure_new_sweep(loaded: LoadedSpec) -> None:
    if loaded.remote_dir and read_remote_text(f"{loaded.remote_dir}/{SPEC_FILE}") is not None:
        where = loaded.remote_dir
    elif (loaded.sweep_dir / SPEC_FILE).exists():
        where = str(loaded.sweep_dir)
    else:
        return
    raise SpecError([f"{loaded.source}: name: sweep directory {where} exists already; "
                     f"`dualsweep resume {where}` continues it, or choose another name"])


def run_sweep(loaded: LoadedSpec, address: Optional[str], verbose: int = 0) -> Outcome:
    ensure_new_sweep(loaded)
    sweep_dir = loaded.sweep_dir
    cells = expand_cells(loaded.spec)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SPEC_FILE).write_text(loaded.yaml_text)
    if loaded.remote_dir:
        write_remote_text(f"{loaded.remote_dir}/{SPEC_FILE}", loaded.yaml_text)
    return execute(loaded, cells, address, verbose, restore=False)


def resume_sweep(sweep_dir: Path, address: Optional[str], verbose: int = 0) -> Outcome:
    loaded = load_sweep_dir(sweep_dir)
    # A driver killed before Ray's first snapshot left nothing for Tune to restore: start the Tuner
    # afresh; the searcher takes up the Optuna trials already asked and MLflow runs are found by tag.
    from ray import tune

    restore = tune.Tuner.can_restore(tune_path(loaded))
    return execute(loaded, expand_cells(loaded.spec), address, verbose, restore=restore)


def execute(loaded: LoadedSpec, cells: list[Cell], address: Optional[str], verbose: int, restore: bool) -> Outcome:
    from ray import tune

    from orchestrator.search import create_studies
    from orchestrator.tracking import end_parent_run, start_parent_run

    tune_environment()
    create_studies(loaded.spec, cells, optuna_url(loaded.sweep_dir))
    parent = start_parent_run(loaded, len(cells), planned_trials(loaded, cells))
    connect_ray(address, verbose)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(trial_slots(loaded)))
    if restore:
        tuner = tune.Tuner.restore(tune_path(loaded), trainable_with_resources(loaded),
                                   resume_unfinished=True, resume_errored=False)
    else:
        tuner = build_tuner(loaded, cells, parent, verbose)
    try:
        results = tuner.fit()
    except BaseException:
        end_parent_run(loaded.spec.tracking.uri, parent[1], "KILLED")
        raise
    end_parent_run(loaded.spec.tracking.uri, parent[1], "FINISHED")
    return Outcome(trials=len(results), errors=len(results.errors))


# --- status --------------------------------------------------------------------------------------
@dataclass
class TrialView:
    cell: str
    phase: str
    key: str
    status: str
    value: Optional[float]
    epochs_done: int
    epochs: int


def read_trials(loaded: LoadedSpec) -> list[TrialView]:
    """The trials of Ray's last experiment snapshot (no Ray cluster needed)."""
    from ray import tune
    from ray.tune import ExperimentAnalysis

    if not tune.Tuner.can_restore(tune_path(loaded)):
        return []
    # It warns about every trial without a result file (one that failed before its first epoch).
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    views = []
    metric = loaded.spec.metric
    for trial in ExperimentAnalysis(tune_path(loaded)).trials:
        where = trial.config.get(SWEEP_KEY, {})
        result = trial.last_result or {}
        views.append(TrialView(where.get("cell", "?"), where.get("phase", "?"), where.get("key", trial.trial_id),
                               trial.status, result.get(metric), int(result.get("epoch", 0)), where.get("epochs", 0)))
    return views


def status_table(sweep_dir: Path) -> str:
    loaded = load_sweep_dir(sweep_dir)
    spec = loaded.spec
    cells = expand_cells(spec)
    trials = read_trials(loaded)
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.status] = by_state.get(t.status, 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) or "none started"
    lines = [f"sweep {spec.name}: {len(trials)} of {planned_trials(loaded, cells)} planned trials ({states})",
             f"{'cell':5} {'search ran/stopped/failed':>26} {'best ' + spec.metric:>14} {'confirm mean':>13} "
             f"{'sd':>7} {'n':>3}  label"]
    sign = 1.0 if spec.mode == "max" else -1.0
    for cell in cells:
        search = [t for t in trials if t.cell == cell.id and t.phase == SEARCH]
        ended = [t for t in search if t.status == "TERMINATED"]
        full = [t for t in ended if t.epochs_done >= t.epochs and t.value is not None]
        stopped = len(ended) - len(full)
        failed = sum(t.status == "ERROR" for t in search)
        best = max((t.value for t in full), key=lambda v: sign * v, default=None)
        confirm = [t.value for t in trials if t.cell == cell.id and t.phase == CONFIRM
                   and t.status == "TERMINATED" and t.value is not None]
        mean = statistics.fmean(confirm) if confirm else None
        sd = statistics.stdev(confirm) if len(confirm) > 1 else None
        lines.append(f"{cell.id:5} {f'{len(search)}/{stopped}/{failed}':>26} {fmt(best):>14} {fmt(mean):>13} "
                     f"{fmt(sd):>7} {len(confirm):>3}  {cell.label}")
    lines.append(f"Optuna studies: optuna-dashboard {optuna_url(sweep_dir)}")
    lines.append(f"MLflow runs: dualsweep ui {spec.name}   (store {spec.tracking.uri})")
    return "\n".join(lines)


def fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"
