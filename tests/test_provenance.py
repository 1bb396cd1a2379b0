"""A trial's provenance: the code's git state and versions, the device, the data's fingerprint, and
that every epoch's report carries them."""
import subprocess

import numpy as np
import torch

from trainables import train
from trainables.config import trial_config
from trainables.contract import PROVENANCE_KEY
from trainables.data import load_data
from trainables.provenance import code_provenance, data_fingerprint, git_state, package_version, trial_provenance


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_of_a_checkout_holding_the_package(tmp_path):
    package = tmp_path / "trainables"
    package.mkdir()
    (package / "__init__.py").write_text("")
    assert git_state(package) == ("unknown", "unknown"), "not a git checkout"
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "package")
    assert git_state(package) == (git(tmp_path, "rev-parse", "HEAD"), "false")
    (package / "__init__.py").write_text("x = 1\n")
    assert git_state(package) == (git(tmp_path, "rev-parse", "HEAD"), "true")
    # An installed copy inside some other repository (e.g. a virtual environment in a checkout)
    # does not take that repository's commit.
    installed = tmp_path / "venv" / "site-packages" / "trainables"
    installed.mkdir(parents=True)
    assert git_state(installed) == ("unknown", "unknown")


def test_code_provenance_is_strings_with_versions_read_without_importing():
    provenance = code_provenance()
    assert all(isinstance(v, str) for v in provenance.values())
    assert torch.__version__.startswith(provenance["torch_version"])
    assert {"dualsweep_version", "git_commit", "git_dirty", "ray_version", "optuna_version", "mlflow_version"} <= provenance.keys()
    assert package_version("no-such-distribution-here") == "not installed"
    assert code_provenance() is provenance, "computed once per process"


def test_data_fingerprint_follows_the_data():
    digits = load_data(trial_config({}).data)
    assert data_fingerprint(digits) == data_fingerprint(load_data(trial_config({"seed": 5}).data))
    assert data_fingerprint(digits) != data_fingerprint(load_data(trial_config({"data": {"split_seed": 1}}).data))
    cfg = trial_config({"data": {"name": "isotropic", "options": {"n": 64, "n_test": 16}}})
    provenance = trial_provenance(cfg, load_data(cfg.data), torch.device("cpu"))
    assert provenance["data_name"] == "isotropic" and provenance["data_split_seed"] == "0"
    assert len(provenance["data_sha256"]) == 16 and provenance["device"] == "cpu" and provenance["device_name"]


def test_image_folder_fingerprint_is_its_file_list_with_sizes(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / split / cls / "0.png")
    cfg = trial_config({"data": {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "loader_workers": 0}}).data
    before = data_fingerprint(load_data(cfg))
    Image.fromarray(np.full((9, 8, 3), 7, dtype=np.uint8)).save(tmp_path / "train" / "a" / "1.png")
    assert data_fingerprint(load_data(cfg)) != before


def test_every_epoch_reports_the_same_provenance():
    reports = []
    config = {"epochs": 2, "batch_size": 256, "model": {"width": 32, "projector": "32-16"}, "eval": {"linear_probe_steps": 5}}
    train(config, report=lambda metrics, checkpoint_dir: reports.append(metrics))
    first, second = (m[PROVENANCE_KEY] for m in reports)
    assert first == second and first["data_name"] == "digits" and first.keys() >= code_provenance().keys()
