"""The driver killed with SIGKILL at random moments and resumed each time, against one uninterrupted
run of the same sweep: the same trials with the same configs, the same best config per cell, every
trial ended once with one MLflow run, no epoch lost beyond the last checkpoint, progress never going
backwards, no traceback, and the wall time within Ray Tune's own restore bound (1.5x the
uninterrupted run, plus the restarts).

Each test draws its kill moments from its seed: one in the search phase, one at the switch to
confirmation (the first confirmation epoch of the sweep), one in the confirmation phase."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.spec import load_spec
from orchestrator.storage import load_sweep_dir
from orchestrator.sweep_report import read_trials
from trainables.stand_in import read_epoch_log

pytestmark = [pytest.mark.ray, pytest.mark.faults, pytest.mark.usefixtures("ray_cluster")]

EPOCHS = 4
CLI = [sys.executable, "-m", "orchestrator.cli"]


def write_sweep(directory: Path, epoch_log: Path) -> Path:
    path = directory / "kills.yaml"
    path.write_text(
        f"name: kills\ntrainable: stand_in\nstorage: {directory / 'runs'}\n"
        f"tracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\n"
        f"trial: {{epochs: {EPOCHS}, seconds_per_epoch: 0.5, noise: 0.01, epoch_log: '{epoch_log}'}}\n"
        "grid: {offset: [0.0, 10.0]}\n"
        # Random search and no early stopping: TPE's suggestion and ASHA's decision depend on which
        # trials have reported when they are made, which no two runs share, killed or not.
        "search: {sampler: random, trials_per_cell: 3, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\n"
        "scheduler: {type: none}\nseeds: [1, 2]\n")
    return path


def epoch_rows(path: Path) -> list[tuple[str, str, int, int]]:
    """(trial key, Ray job, epoch, resumed-from epoch) per epoch the stand-in ran."""
    return [(line.key, line.job, line.epoch, line.start) for line in read_epoch_log(path)]


def configs(sweep_dir: Path) -> dict[str, float]:
    """Each trial's searched value, by trial key."""
    return {t.key: t.params["x"] for t in read_trials(load_sweep_dir(sweep_dir))}


def run_driver(args: list[str], cwd: Path, epoch_log: Path, kill_when=None) -> tuple[float, float, str]:
    """Runs `dualsweep <args>`; with kill_when(rows of this driver's job), SIGKILLs it once that holds.
    Returns the wall time, the restart cost (start to this driver's first epoch) and stderr."""
    seen = len(epoch_rows(epoch_log))
    start = time.monotonic()
    driver = subprocess.Popen([*CLI, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_epoch = None
    deadline = start + 300
    while driver.poll() is None:
        assert time.monotonic() < deadline, "the driver did not end"
        rows = epoch_rows(epoch_log)[seen:]
        if rows and first_epoch is None:
            first_epoch = time.monotonic()
        if kill_when is not None and kill_when(rows):
            driver.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    _, err = driver.communicate()
    wall = time.monotonic() - start
    return wall, (first_epoch or time.monotonic()) - start, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, ray_cluster):
    directory = tmp_path_factory.mktemp("uninterrupted")
    epoch_log = directory / "epochs.log"
    path = write_sweep(directory, epoch_log)
    wall, restart, err = run_driver(["run", str(path), "--address", ray_cluster], directory, epoch_log)
    assert "Traceback" not in err, err[-3000:]
    sweep_dir = directory / "runs" / "kills"
    return {"wall": wall - restart, "configs": configs(sweep_dir)}


def in_phase(phase: str, epochs: int):
    """Kill once `epochs` epochs of `phase` trials have run in this driver."""
    return lambda rows: sum(f"-{phase}-" in key for key, *_ in rows) >= epochs


def assert_same_as_uninterrupted(sweep_dir: Path, path: Path, rows: list, uninterrupted: dict) -> None:
    """The same trials with the same configs (hence the same best config per cell), all finished,
    each epoch run once but the one after a trial's last checkpoint at a kill, and in MLflow one
    FINISHED run per trial with every epoch logged once."""
    trials = read_trials(load_sweep_dir(sweep_dir))
    assert configs(sweep_dir) == uninterrupted["configs"]
    assert all(t.status == "finished" for t in trials), [(t.key, t.status) for t in trials]

    # Each trial ran its epochs once, but for the epoch after its last checkpoint at a kill.
    runs_of: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for key, job, epoch, start in rows:
        runs_of[(key, job)].append((epoch, start))
    last_epoch: dict[str, int] = defaultdict(int)
    for (key, job), epochs in runs_of.items():  # in the order the drivers ran
        start = epochs[0][1]
        assert start >= last_epoch[key] - 1, (key, job, epochs, last_epoch[key])
        assert [e for e, _ in epochs] == list(range(start + 1, start + 1 + len(epochs))), (key, job, epochs)
        last_epoch[key] = max(last_epoch[key], epochs[-1][0])
    runs_per_trial = defaultdict(int)
    for key, *_ in rows:
        runs_per_trial[key] += 1
    assert all(n <= EPOCHS + 3 for n in runs_per_trial.values()), dict(runs_per_trial)

    # MLflow: one run per trial, none RUNNING, every epoch logged once.
    spec = load_spec(path).spec
    client = MlflowClient(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment).experiment_id
    runs = client.search_runs([experiment], "tags.role = 'trial'")
    assert sorted(r.data.tags["trial_key"] for r in runs) == sorted(uninterrupted["configs"])
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "knn_acc")]
        assert steps == list(range(1, EPOCHS + 1)), (run.info.run_name, steps)


@pytest.mark.parametrize("seed", [11, 29])
def test_random_kills_then_resume_match_an_uninterrupted_run(tmp_path, ray_cluster, uninterrupted, seed):
    draw = random.Random(seed)
    epoch_log = tmp_path / "epochs.log"
    path = write_sweep(tmp_path, epoch_log)
    sweep_dir = tmp_path / "runs" / "kills"
    kills = [("search", in_phase("search", draw.randint(2, 8))),
             ("switch", in_phase("confirm", 1)),
             ("confirm", in_phase("confirm", draw.randint(2, 6)))]
    walls, restarts, ended_after_kill = [], [], []
    args = ["run", str(path), "--address", ray_cluster]
    for phase, kill_when in kills:
        wall, restart, err = run_driver(args, tmp_path, epoch_log, kill_when)
        walls.append(wall)
        restarts.append(restart)
        assert "Traceback" not in err, (phase, err[-3000:])
        ended_after_kill.append(sum(t.ended for t in read_trials(load_sweep_dir(sweep_dir))))
        args = ["resume", str(sweep_dir), "--address", ray_cluster]
    wall, restart, err = run_driver(args, tmp_path, epoch_log)
    walls.append(wall)
    restarts.append(restart)
    assert "Traceback" not in err, err[-3000:]

    # Progress never went backwards, and each kill came in the phase it was drawn for.
    assert ended_after_kill == sorted(ended_after_kill), ended_after_kill
    rows = epoch_rows(epoch_log)
    jobs = list(dict.fromkeys(job for _, job, _, _ in rows))
    assert len(jobs) == 4, jobs
    phases_run = [{key.split("-")[1] for key, job, *_ in rows if job == j} for j in jobs[:3]]
    assert "search" in phases_run[0] and "confirm" in phases_run[1] and "confirm" in phases_run[2], phases_run

    assert_same_as_uninterrupted(sweep_dir, path, rows, uninterrupted)

    working = sum(walls) - sum(restarts)
    print(f"kill suite seed {seed}: uninterrupted {uninterrupted['wall']:.1f} s; with 3 kills {working:.1f} s of "
          f"work + {sum(restarts):.1f} s of restarts ({working / uninterrupted['wall']:.2f}x)")
    assert working <= 1.5 * uninterrupted["wall"], (walls, restarts, uninterrupted["wall"])


@pytest.mark.parametrize("drivers_killed", [1, 2])
def test_kill_in_the_upload_of_tunes_snapshot_loses_nothing(tmp_path, ray_cluster, uninterrupted, drivers_killed):
    """Tune copies its snapshot files into the sweep's storage in place, so a kill in the middle of a
    copy leaves a file cut short (CI met one: Tune could not read its callbacks' state and started
    the experiment over). The kill here is timed by the epoch log, not by the copy, so the cut is made
    after it, as the copy would have left it: the newest callback state's first half. With an older
    driver's snapshot, the resume starts from that; with none, its Tuner starts afresh."""
    epoch_log = tmp_path / "epochs.log"
    path = write_sweep(tmp_path, epoch_log)
    sweep_dir = tmp_path / "runs" / "kills"
    args = ["run", str(path), "--address", ray_cluster]
    for _ in range(drivers_killed):
        run_driver(args, tmp_path, epoch_log, in_phase("search", 4))
        args = ["resume", str(sweep_dir), "--address", ray_cluster]
    tune_dir = sweep_dir / "tune"
    newest = max(tune_dir.glob("callback-states-*.pkl"))
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])

    _, _, err = run_driver(args, tmp_path, epoch_log)
    assert "Traceback" not in err, err[-3000:]
    said = [line for line in err.splitlines() if "left incomplete by a kill" in line]
    assert len(said) == 1 and newest.name in said[0], err[-3000:]
    assert (tune_dir / "cut" / newest.stem.removeprefix("callback-states-") / newest.name).is_file()
    assert_same_as_uninterrupted(sweep_dir, path, epoch_rows(epoch_log), uninterrupted)
