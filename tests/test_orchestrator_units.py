"""Per-cell routing pieces without a Ray cluster: ASHA rungs, scheduler state, search routing."""
from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import optuna
import pytest

from orchestrator.spec import expand_cells
from orchestrator.scheduler import CellASHA, SchedulerState, milestones
from orchestrator.search import CellSearcher, create_studies
from orchestrator.spec import load_spec
from orchestrator.storage import newest_experiment_state, reads_whole, snapshot_to_restore
from trainables.contract import REPORTED_FILE


def fake_trial(trial_id: str, cell: str, phase: str = "search", epochs: int = 8):
    return SimpleNamespace(trial_id=trial_id, config={"sweep": {"cell": cell, "phase": phase, "key": trial_id, "epochs": epochs}})


def test_milestones():
    assert milestones(1, 2, 8) == [1, 2, 4]
    assert milestones(2, 3, 8) == [2, 6]


def test_asha_compares_a_trial_only_with_its_own_cell():
    asha = CellASHA("knn_acc", "max", grace_period=1, reduction_factor=2)
    # The high cell records far better scores at every rung first.
    for i in range(3):
        assert asha.on_trial_result(None, fake_trial(f"high{i}", "c01"), {"epoch": 1, "knn_acc": 10 + i}) == "CONTINUE"
    # The low cell's first trial is judged against nothing but its own cell.
    assert asha.on_trial_result(None, fake_trial("low0", "c00"), {"epoch": 1, "knn_acc": 0.5}) == "CONTINUE"
    assert asha.on_trial_result(None, fake_trial("low1", "c00"), {"epoch": 1, "knn_acc": 0.6}) == "CONTINUE"
    assert asha.on_trial_result(None, fake_trial("low2", "c00"), {"epoch": 1, "knn_acc": 0.1}) == "STOP"
    assert "cell c00" in asha.stopped["low2"]
    assert set(asha.rungs) == {"c00", "c01"}


def test_asha_never_stops_confirmation_runs_or_when_disabled():
    asha = CellASHA("loss", "min", grace_period=1, reduction_factor=2)
    asha.on_trial_result(None, fake_trial("a", "c00"), {"epoch": 1, "loss": 0.1})
    assert asha.on_trial_result(None, fake_trial("b", "c00", phase="confirm"), {"epoch": 1, "loss": 9.0}) == "CONTINUE"
    off = CellASHA("loss", "min", grace_period=1, reduction_factor=2, enabled=False)
    off.on_trial_result(None, fake_trial("a", "c00"), {"epoch": 1, "loss": 0.1})
    assert off.on_trial_result(None, fake_trial("b", "c00"), {"epoch": 1, "loss": 9.0}) == "CONTINUE"


def test_scheduler_state_survives_tuner_pickling():
    """Tune pickles scheduler and callbacks together (tuner.pkl) and restores the callback's saved
    state into what it unpickled: the rungs must come back into the Tuner's scheduler."""
    asha = CellASHA("knn_acc", "max", grace_period=1, reduction_factor=2)
    asha.on_trial_result(None, fake_trial("a", "c00"), {"epoch": 1, "knn_acc": 0.9})
    saved = pickle.loads(pickle.dumps(SchedulerState(asha).get_state()))
    fresh = CellASHA("knn_acc", "max", grace_period=1, reduction_factor=2)
    scheduler, callback = pickle.loads(pickle.dumps((fresh, SchedulerState(fresh))))
    callback.set_state(saved)
    assert callback.scheduler is scheduler
    assert scheduler.rungs == {"c00": {1.0: {"a": 0.9}}}
    assert scheduler.on_trial_result(None, fake_trial("b", "c00"), {"epoch": 1, "knn_acc": 0.1}) == "STOP"


@pytest.fixture
def searcher(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: unit\ntrainable: stand_in\ntrial: {epochs: 4}\ngrid: {offset: [0.0, 10.0]}\n"
        "search: {trials_per_cell: 2, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\nseeds: [1, 2]\n"
        f"storage: {tmp_path}\n"
    )
    spec = load_spec(sweep).spec
    cells = expand_cells(spec)
    url = f"sqlite:///{tmp_path}/optuna.db"
    create_studies(spec, cells, url)
    return CellSearcher(spec, cells, url), url


def test_searcher_routes_by_cell_then_confirms(searcher):
    searcher, url = searcher
    first = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [c["sweep"]["key"] for c in first] == ["c00-search-000", "c01-search-000", "c00-search-001", "c01-search-001"]
    assert searcher.suggest("t4") is None  # budget used; waiting for results
    for i, config in enumerate(first):
        epochs = 4 if i != 2 else 2  # t2 was stopped early
        searcher.on_trial_complete(f"t{i}", {"epoch": epochs, "knn_acc": config["trial"]["offset"] + i})
    confirm = [searcher.suggest(f"c{i}") for i in range(4)]
    assert [c["sweep"]["key"] for c in confirm] == ["c00-confirm-seed1", "c00-confirm-seed2", "c01-confirm-seed1", "c01-confirm-seed2"]
    # c00's best is t0: t2 scored higher but ran only 2 of 4 epochs.
    assert confirm[0]["trial"]["x"] == first[0]["trial"]["x"] and confirm[0]["trial"]["seed"] == 1
    assert confirm[2]["trial"]["x"] == first[3]["trial"]["x"]
    assert searcher.suggest("done") == "FINISHED"
    states = {s.study_name: [t.state.name for t in optuna.load_study(study_name=s.study_name, storage=url).trials]
              for s in optuna.get_all_study_summaries(url)}
    assert states == {"unit.c00": ["COMPLETE", "PRUNED"], "unit.c01": ["COMPLETE", "COMPLETE"]}


def test_cell_without_a_complete_search_trial_is_skipped_with_one_warning(searcher, caplog):
    searcher, url = searcher
    first = [searcher.suggest(f"t{i}") for i in range(4)]
    for i, config in enumerate(first):
        if config["sweep"]["cell"] == "c00":  # both c00 trials diverge at epoch 1
            searcher.on_trial_complete(f"t{i}", {"epoch": 1, "knn_acc": float("nan"), "diverged": 1.0})
        else:
            searcher.on_trial_complete(f"t{i}", {"epoch": 4, "knn_acc": 1.0})
    confirm = [searcher.suggest(f"c{i}") for i in range(3)]
    assert [c["sweep"]["key"] for c in confirm[:2]] == ["c01-confirm-seed1", "c01-confirm-seed2"]
    assert confirm[2] == "FINISHED"
    warnings = [r.getMessage() for r in caplog.records if "no search trial ran to the end" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("cell c00")
    assert [t.state.name for t in optuna.load_study(study_name="unit.c00", storage=url).trials] == ["FAIL", "FAIL"]


def test_searcher_takes_up_optuna_trials_forgotten_by_a_restore(searcher, tmp_path):
    searcher, url = searcher
    snapshot = tmp_path / "searcher.pkl"
    searcher.save(str(snapshot))
    forgotten = searcher.suggest("t0")  # asked from Optuna after Ray's last snapshot
    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(snapshot))
    again = restored.suggest("t0-new")
    assert again["trial"]["x"] == forgotten["trial"]["x"]
    assert len(optuna.load_study(study_name="unit.c00", storage=url).trials) == 1


def test_restore_on_a_machine_without_the_studies_rebuilds_them(searcher, tmp_path):
    """A sweep in a storage URI resumed elsewhere: Ray's saved searcher state is all there is."""
    searcher, url = searcher
    first = [searcher.suggest(f"t{i}") for i in range(3)]  # c00-000, c01-000, c00-001
    searcher.on_trial_complete("t0", {"epoch": 4, "knn_acc": 0.5})
    searcher.on_trial_complete("t1", {"epoch": 2, "knn_acc": 10.2})  # stopped early
    snapshot = tmp_path / "searcher.pkl"
    searcher.save(str(snapshot))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    new_url = f"sqlite:///{elsewhere}/optuna.db"
    create_studies(searcher.spec, searcher.cells, new_url)
    restored = CellSearcher(searcher.spec, searcher.cells, new_url)
    restored.restore(str(snapshot))
    for cell, expected in (("c00", [("COMPLETE", 0.5), ("RUNNING", None)]), ("c01", [("PRUNED", None)])):
        trials = optuna.load_study(study_name=f"unit.{cell}", storage=new_url).trials
        assert [(t.state.name, t.value) for t in trials] == expected
        assert [t.params["x"] for t in trials] == [c["trial"]["x"] for c in first if c["sweep"]["cell"] == cell]
    restored.on_trial_complete("t2", {"epoch": 4, "knn_acc": 0.7})
    assert optuna.load_study(study_name="unit.c00", storage=new_url).trials[1].value == 0.7
    keys = [restored.suggest(f"t{i}")["sweep"]["key"] for i in range(3, 6)]
    assert keys == ["c00-confirm-seed1", "c00-confirm-seed2", "c01-search-001"]
    assert len(optuna.load_study(study_name="unit.c01", storage=new_url).trials) == 2


def test_a_checkpoint_deleted_before_the_kill_is_no_traceback_at_restore():
    import logging
    import sys

    from orchestrator.runner import DeletedCheckpointFilter

    def record(message: str, exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("ray.tune.execution.tune_controller", logging.ERROR, __file__, 1, message,
                                 ("c00-search-001", "checkpoint_000002"), info)

    keep = DeletedCheckpointFilter()
    assert not keep.filter(record("Trial %s: Error handling checkpoint %s", FileNotFoundError("Path not found")))
    assert keep.filter(record("Trial %s: Error handling checkpoint %s", PermissionError("denied")))
    assert keep.filter(record("Trial %s failed %s", FileNotFoundError("data.root")))


def test_one_driver_per_sweep_and_a_killed_driver_leaves_no_stuck_lock(tmp_path, capsys):
    import subprocess
    import sys

    from orchestrator.cli import main
    from orchestrator.storage import create_sweep_dir, driver_lock

    sweep = tmp_path / "locked.yaml"
    sweep.write_text(
        f"name: locked\ntrainable: stand_in\nstorage: {tmp_path / 'runs'}\n"
        f"tracking: {{uri: 'sqlite:///{tmp_path / 'mlflow.db'}'}}\ntrial: {{epochs: 4}}\ngrid: {{offset: [0.0]}}\n"
        "search: {trials_per_cell: 1, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\nscheduler: {type: none}\n"
    )
    loaded = load_spec(sweep)
    create_sweep_dir(loaded)
    with driver_lock(loaded.sweep_dir):
        assert main(["resume", str(loaded.sweep_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the sweep is being run by process" in err[0], err
    # A driver killed with SIGKILL while it holds the lock: the next one gets it.
    code = ("import os, signal; from pathlib import Path; from orchestrator.storage import driver_lock\n"
            f"with driver_lock(Path({str(loaded.sweep_dir)!r})): os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    with driver_lock(loaded.sweep_dir):
        pass


# --- Tune's snapshot files, cut short by a kill in their upload -------------------------------------------
def write_snapshot(tune_dir, session: str) -> dict[str, bytes]:
    """One driver session's snapshot files as Tune names them (search_gen_state is a pickle too)."""
    ended = [json.dumps({"status": "TERMINATED", "relative_logdir": "c00-search-000"}), json.dumps({"last_result": {}})]
    files = {f"experiment_state-{session}.json": json.dumps({"trial_data": [ended] * 50}).encode(),
             f"searcher-state-{session}.pkl": pickle.dumps({"asked": list(range(200))}),
             f"search_gen_state-{session}.json": pickle.dumps({"counter": 10}),
             f"callback-states-{session}.pkl": pickle.dumps([{"rungs": list(range(100))}])}
    tune_dir.mkdir(exist_ok=True)
    for name, data in files.items():
        (tune_dir / name).write_bytes(data)
    return files


@pytest.mark.parametrize("name, data", [
    ("experiment_state-s.json", json.dumps({"trial_data": list(range(300))}).encode()),
    ("callback-states-s.pkl", pickle.dumps({"state": [1.5] * 300}, protocol=5)),
    ("search_gen_state-s.json", pickle.dumps({"counter": "x" * 300}))])
def test_every_cut_of_a_snapshot_file_reads_as_cut(name, data):
    assert reads_whole(name, data)
    assert not any(reads_whole(name, data[:cut]) for cut in range(len(data)))


def test_a_whole_newest_snapshot_is_restored(tmp_path):
    tune_dir = tmp_path / "tune"
    write_snapshot(tune_dir, "2026-01-01_10-00-00")
    (tune_dir / "callback-states-2026-01-01_10-00-00.pkl").write_bytes(b"cut")  # an older set is not read
    write_snapshot(tune_dir, "2026-01-01_11-00-00")
    (tune_dir / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    assert snapshot_to_restore(str(tune_dir)) == (True, [])
    assert not (tune_dir / "cut").exists()


@pytest.mark.parametrize("damage", ["callback-states-2026-01-01_11-00-00.pkl cut short",
                                    "experiment_state-2026-01-01_11-00-00.json cut short",
                                    "tuner.pkl cut short", "no searcher-state of 2026-01-01_11-00-00"])
def test_a_kill_in_the_upload_sets_the_whole_snapshot_aside(tmp_path, damage):
    """An older driver's snapshot names checkpoints deleted since: the Tuner starts afresh instead."""
    tune_dir = tmp_path / "tune"
    write_snapshot(tune_dir, "2026-01-01_10-00-00")
    write_snapshot(tune_dir, "2026-01-01_11-00-00")
    (tune_dir / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    if damage.startswith("no "):
        (tune_dir / "searcher-state-2026-01-01_11-00-00.pkl").unlink()
    else:
        damaged = tune_dir / damage.split()[0]
        damaged.write_bytes(damaged.read_bytes()[:-1])
    assert newest_experiment_state(str(tune_dir)).endswith(
        "10-00-00.json" if damage.startswith("experiment_state") else "11-00-00.json")

    restore, said = snapshot_to_restore(str(tune_dir))
    assert not restore and len(said) == 1 and f"({damage})" in said[0], said
    assert sorted(p.name for p in tune_dir.iterdir()) == ["cut"]
    assert len(list((tune_dir / "cut" / "2026-01-01_11-00-00").iterdir())) == 9 - damage.startswith("no ")
    assert newest_experiment_state(str(tune_dir)) is None


def test_no_tune_folder_yet_means_nothing_to_restore(tmp_path):
    assert snapshot_to_restore(str(tmp_path / "tune")) == (False, [])
    assert newest_experiment_state(str(tmp_path / "tune")) is None


def test_a_checkpoint_the_snapshot_names_but_tune_deleted_since_gets_a_stand_in(tmp_path):
    """Tune's restore fails a trial whose snapshot checkpoint is gone; a folder holding the epoch Tune
    knows lets it start and take up its newest checkpoint (tests/test_tune_entry.py). Ended trials are
    not restored."""
    tune_dir = tmp_path / "tune"
    write_snapshot(tune_dir, "2026-01-01_10-00-00")
    (tune_dir / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))

    def trial(status: str, folder: str, checkpoint: str) -> list[str]:
        runtime = {"last_result": {"epoch": 1, "checkpoint_dir_name": checkpoint}, "checkpoint_manager": {}}
        return [json.dumps({"status": status, "relative_logdir": folder}), json.dumps(runtime)]

    state = {"trial_data": [trial("RUNNING", "c00-search-000", "checkpoint_000000"),
                            trial("PENDING", "c00-search-001_ab12", "checkpoint_000003"),
                            trial("TERMINATED", "c01-search-000", "checkpoint_000000")]}
    (tune_dir / "experiment_state-2026-01-01_10-00-00.json").write_text(json.dumps(state))
    for folder, name in [("c00-search-000", "checkpoint_000002"), ("c00-search-001_ab12", "checkpoint_000003"),
                         ("c01-search-000", "checkpoint_000004")]:
        (tune_dir / folder / name).mkdir(parents=True)
        (tune_dir / folder / name / "state.json").write_text("{}")

    assert snapshot_to_restore(str(tune_dir)) == (True, [])
    stand_in = tune_dir / "c00-search-000" / "checkpoint_000000"
    assert [p.name for p in stand_in.iterdir()] == [REPORTED_FILE]
    assert json.loads((stand_in / REPORTED_FILE).read_text()) == [{"epoch": 1}]
    assert [p.name for p in (tune_dir / "c00-search-001_ab12" / "checkpoint_000003").iterdir()] == ["state.json"]
    assert not (tune_dir / "c01-search-000" / "checkpoint_000000").exists()
