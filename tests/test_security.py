"""What a sweep file, a dataset folder, a checkpoint or a sweep directory could make dualsweep do:
nothing evaluates config strings as code; checkpoints are read as tensors only; sweep names cannot
leave the storage folder; Ray's and the searcher's pickles are read only from sweep directories
that dualsweep made; `ui` listens on loopback unless told otherwise."""
from __future__ import annotations

import ast
import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import build_parser, main
from orchestrator.spec import SWEEP_KEY, expand_cells, load_spec

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("orchestrator", "trainables") for p in (ROOT / package).rglob("*.py"))


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node


def called_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def test_sources_are_found():
    assert len(SOURCES) > 40


def test_no_eval_or_exec_anywhere():
    found = [f"{p.relative_to(ROOT)}:{c.lineno}" for p in SOURCES for c in calls(p)
             if called_name(c) in ("eval", "exec", "builtins.eval", "builtins.exec", "compile")]
    assert not found, found


def test_torch_load_reads_tensors_only():
    loads = [(p, c) for p in SOURCES for c in calls(p) if called_name(c) == "torch.load"]
    assert loads, "the trial's checkpoints are read with torch.load"
    for path, call in loads:
        weights_only = [k for k in call.keywords if k.arg == "weights_only"]
        assert weights_only and isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value is True, \
            f"{path.relative_to(ROOT)}:{call.lineno}: torch.load without weights_only=True"


def test_plain_pickle_load_is_not_used_on_user_files():
    """Ray's and the searcher's own state aside (orchestrator/search.py), nothing unpickles with the
    unrestricted loader; CIFAR batches go through trainables.data.disk.CifarUnpickler."""
    found = [f"{p.relative_to(ROOT)}:{c.lineno}" for p in SOURCES for c in calls(p)
             if called_name(c) in ("pickle.load", "pickle.loads") and p.name != "search.py"]
    assert not found, found


# --- sweep names and sweep directories ---------------------------------------------------------------
UNSAFE_NAMES = ["../x", "/abs", "a/b", "..", ".", ".hidden", "a\x00b", "a\nb", "a\rb", "a b", "a\\b", "~", "",
                "x" * 101, "naïve", "-rf"]


def stand_in_sweep(directory: Path, name: str, storage: str) -> Path:
    """A small valid sweep (the cheap stand-in trial); `name` is written as a YAML string."""
    path = directory / "sweep-file.yaml"
    path.write_text(
        f"name: {json.dumps(name)}\ntrainable: stand_in\nstorage: {storage}\n"
        f"tracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\ntrial: {{epochs: 2}}\ngrid: {{offset: [0.0]}}\n"
        "search: {trials_per_cell: 1, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\nscheduler: {type: none}\n"
    )
    return path


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()


@pytest.mark.parametrize("name", UNSAFE_NAMES, ids=[repr(n)[:20] for n in UNSAFE_NAMES])
def test_a_sweep_name_that_is_not_a_plain_directory_name_is_one_line_at_validate(tmp_path, capsys, name):
    path = stand_in_sweep(tmp_path, name, str(tmp_path / "runs"))
    assert main(["validate", str(path)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and f"name: {name!r} is not a safe name: a letter or digit, then" in lines[0], lines
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override", ["name=../../etc", "name=/tmp/x", "name=a/b", "name=.."])
def test_a_name_given_as_an_override_is_checked_the_same(tmp_path, capsys, override):
    path = stand_in_sweep(tmp_path, "fine", str(tmp_path / "runs"))
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    assert main(["validate", str(path), override]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "is not a safe name" in lines[0], lines


def test_trial_keys_and_figure_names_are_plain_file_names(tmp_path):
    """A trial's directory, MLflow run and artifacts are named by its key (cell index, phase, number,
    seed), never by text from the sweep file; figure files by a slug of their title."""
    from orchestrator.report.figures import slug
    from orchestrator.search import CellSearcher, create_studies

    loaded = load_spec(stand_in_sweep(tmp_path, "a..b", str(tmp_path / "runs")), ["seeds=[-3,4]"])
    cells = expand_cells(loaded.spec)
    loaded.sweep_dir.mkdir(parents=True)
    url = f"sqlite:///{loaded.sweep_dir}/optuna.db"
    create_studies(loaded.spec, cells, url)
    searcher = CellSearcher(loaded.spec, cells, url, str(loaded.sweep_dir))
    keys = []
    while (config := searcher.suggest(f"t{len(keys)}")) not in (None, "FINISHED"):
        keys.append(config[SWEEP_KEY]["key"])
        searcher.on_trial_complete(f"t{len(keys) - 1}", {"epoch": 2, "knn_acc": 0.5, "loss": 0.1})
    assert keys == ["c00-search-000", "c00-confirm-seed-3", "c00-confirm-seed4"]
    assert slug("../../etc/passwd") == "etc_passwd" and slug("..") == "figure"


# --- only sweep directories that dualsweep made are read ------------------------------------------------
def plant_pickle(tune_dir: Path, sentinel: Path) -> None:
    """Ray's experiment files, with a payload that creates `sentinel` when Ray unpickles the state."""

    class Payload:
        def __reduce__(self):
            return open, (str(sentinel), "w")

    tune_dir.mkdir(parents=True)
    (tune_dir / "tuner.pkl").write_bytes(pickle.dumps(Payload()))
    hostile = {"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps(Payload()).hex()}
    (tune_dir / "experiment_state-2024-01-01_00-00-00.json").write_text(json.dumps({"trial_data": [], "x": hostile}))


@pytest.fixture
def made_sweep(tmp_path, monkeypatch):
    """A sweep directory as `dualsweep run` makes it (before Ray starts), with a hostile tune/."""
    from orchestrator.storage import create_sweep_dir

    monkeypatch.chdir(tmp_path)
    loaded = load_spec(stand_in_sweep(tmp_path, "made", str(tmp_path / "runs")))
    create_sweep_dir(loaded)
    plant_pickle(loaded.sweep_dir / "tune", tmp_path / "pwned")
    return loaded.sweep_dir


def refused_everywhere(sweep: str, capsys, sentinel: Path) -> None:
    for command in ("status", "report", "resume", "ui"):
        assert main([command, sweep]) == 2, command
        lines = error_lines(capsys)
        assert len(lines) == 1 and "not created by dualsweep, or its sweep.yaml changed since" in lines[0], lines
    assert not sentinel.exists(), "Ray's state was unpickled"


def test_a_sweep_directory_made_by_hand_is_refused_before_anything_is_unpickled(made_sweep, capsys, tmp_path):
    (made_sweep / ".dualsweep").unlink()
    refused_everywhere(str(made_sweep), capsys, tmp_path / "pwned")
    # The payload is live: Ray's own reader runs it, which is what the refusal prevents.
    from ray.tune import ExperimentAnalysis

    ExperimentAnalysis(str(made_sweep / "tune"))
    assert (tmp_path / "pwned").exists()


def change_seed(spec_file: Path) -> None:
    text = spec_file.read_text()
    assert "\nseed: 0\n" in text
    spec_file.write_text(text.replace("\nseed: 0\n", "\nseed: 1\n"))


@pytest.mark.parametrize("tamper", ["changed sweep.yaml", "garbage marker", "empty marker"])
def test_a_changed_sweep_yaml_or_marker_is_refused(made_sweep, capsys, tmp_path, tamper):
    if tamper == "changed sweep.yaml":
        change_seed(made_sweep / "sweep.yaml")
    else:
        (made_sweep / ".dualsweep").write_bytes(b"\xff{not json" if tamper == "garbage marker" else b"")
    refused_everywhere(str(made_sweep), capsys, tmp_path / "pwned")


def test_a_sweep_directory_dualsweep_made_is_read_and_keeps_its_files_inside(made_sweep, tmp_path):
    from orchestrator.storage import load_sweep_dir, tune_path

    marker = json.loads((made_sweep / ".dualsweep").read_text())
    assert marker["sweep_yaml_sha256"] == hashlib.sha256((made_sweep / "sweep.yaml").read_bytes()).hexdigest()
    assert marker["dualsweep"]
    assert load_sweep_dir(made_sweep).sweep_dir == made_sweep
    # Moved elsewhere, it is read where it now is: nothing goes back to the old place.
    moved = tmp_path / "elsewhere" / "made"
    shutil.copytree(made_sweep, moved)
    loaded = load_sweep_dir(moved)
    assert loaded.sweep_dir == moved and tune_path(loaded) == f"{moved}/tune"


def test_a_sweep_yaml_whose_name_is_a_path_is_refused_even_with_a_matching_marker(made_sweep, capsys):
    from orchestrator.storage import marker

    text = (made_sweep / "sweep.yaml").read_text().replace("name: made", "name: ../../escape")
    (made_sweep / "sweep.yaml").write_text(text)
    (made_sweep / ".dualsweep").write_bytes(marker(text.encode()))
    assert main(["status", str(made_sweep)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "name: '../../escape' is not a safe name" in lines[0], lines


@pytest.fixture
def uri_sweep(tmp_path, monkeypatch):
    """A sweep kept at a file:// storage URI, made in one folder and read from another."""
    from orchestrator.storage import create_sweep_dir

    monkeypatch.chdir(tmp_path)
    loaded = load_spec(stand_in_sweep(tmp_path, "far", f"file://{tmp_path / 'bucket'}"))
    create_sweep_dir(loaded)
    assert (tmp_path / "bucket" / "far" / ".dualsweep").is_file()
    elsewhere = tmp_path / "other-machine"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return loaded.remote_dir


def test_a_sweep_at_a_uri_is_read_with_its_marker(uri_sweep, capsys, tmp_path):
    assert main(["status", uri_sweep]) == 0
    assert "sweep far: 0 of" in capsys.readouterr().out
    local = tmp_path / "other-machine" / "sweeps-runs" / "far"
    assert (local / "sweep.yaml").read_bytes() == (tmp_path / "bucket" / "far" / "sweep.yaml").read_bytes()
    assert main(["status", str(local)]) == 0


@pytest.mark.parametrize("tamper", ["no marker", "changed sweep.yaml"])
def test_a_sweep_at_a_uri_without_its_marker_is_refused_and_nothing_is_fetched(uri_sweep, capsys, tmp_path, tamper):
    remote = tmp_path / "bucket" / "far"
    if tamper == "no marker":
        (remote / ".dualsweep").unlink()
    else:
        change_seed(remote / "sweep.yaml")
    plant_pickle(remote / "tune", tmp_path / "pwned")
    refused_everywhere(uri_sweep, capsys, tmp_path / "pwned")
    assert not (tmp_path / "other-machine" / "sweeps-runs").exists()


def test_a_remote_sweep_yaml_cannot_send_dualsweep_elsewhere(uri_sweep, capsys, tmp_path):
    from orchestrator.storage import marker

    remote = tmp_path / "bucket" / "far"
    # Copied to another place of the bucket: its spec still names the first.
    shutil.copytree(remote, tmp_path / "bucket" / "copy")
    assert main(["status", f"file://{tmp_path / 'bucket' / 'copy'}"]) == 2
    assert f"places the sweep at {uri_sweep}; give that URI" in error_lines(capsys)[0]
    # A name that is a path, with a marker to match: refused before any local folder is made.
    text = (remote / "sweep.yaml").read_text().replace("name: far", "name: ../../escape")
    (remote / "sweep.yaml").write_text(text)
    (remote / ".dualsweep").write_bytes(marker(text.encode()))
    assert main(["status", uri_sweep]) == 2
    assert "name: '../../escape' is not a safe name" in error_lines(capsys)[0]
    assert not (tmp_path / "other-machine" / "sweeps-runs").exists() and not (tmp_path / "escape").exists()


def test_a_local_folder_of_another_sweep_with_the_same_name_is_not_taken_over(uri_sweep, capsys, tmp_path):
    local = tmp_path / "other-machine" / "sweeps-runs" / "far"
    local.mkdir(parents=True)
    (local / "sweep.yaml").write_text("name: far\n")
    assert main(["status", uri_sweep]) == 2
    assert f"{local}: holds another sweep named far" in error_lines(capsys)[0]
    assert (local / "sweep.yaml").read_text() == "name: far\n"


# --- dualsweep ui ------------------------------------------------------------------------------------------
def test_ui_binds_the_loopback_interface_unless_told_otherwise():
    """The servers get the parser's host (test_orchestrator_ray checks what they listen on)."""
    parser = build_parser()
    assert parser.parse_args(["ui"]).host == "127.0.0.1"
    assert parser.parse_args(["ui", "some-sweep"]).host == "127.0.0.1"
    assert parser.parse_args(["ui", "--host", "0.0.0.0"]).host == "0.0.0.0"
