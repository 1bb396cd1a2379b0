"""trainables.contract, what the orchestrator relies on: names and families of methods, the datasets
that need a root, and per trial kind its validation, entry point, metrics and artifacts; and the
analytic stand-in trial behind the `stand_in` kind."""
import importlib
import json
from pathlib import Path

import pytest

from trainables import ConfigError
from trainables.contract import (FAMILIES, PROVENANCE_KEY, TRIAL_KINDS, datasets_needing_root, method_family,
                                 method_names)
from trainables.data import DATASETS
from trainables.methods import METHODS
from trainables.stand_in import STATE_FILE, train_stand_in


def test_methods_and_families():
    assert method_names() == METHODS.names() and "vicreg_ctr" in method_names()
    assert {method_family(name) for name in method_names()} == set(FAMILIES)
    assert method_family("vicreg_ctr") == "sample_contrastive" and method_family("barlow_twins") == "dimension_contrastive"
    with pytest.raises(ConfigError, match=r"method: unknown value 'vicrag' \(did you mean vicreg"):
        method_family("vicrag")


def test_datasets_needing_root_come_from_the_registry():
    assert datasets_needing_root() == ["cifar10", "cifar100", "imagefolder", "stl10"]
    assert datasets_needing_root() == [name for name, entry in DATASETS.items() if entry.needs_root]


@pytest.mark.parametrize("name", datasets_needing_root())
def test_ssl_validation_asks_each_of_them_for_its_root(name):
    with pytest.raises(ConfigError, match=f"data.root: {name} needs data.root"):
        TRIAL_KINDS["ssl"].validate({"data": {"name": name}})


def test_ssl_validation_fills_defaults_and_makes_the_root_absolute(tmp_path, monkeypatch):
    (tmp_path / "cifar").mkdir()
    monkeypatch.chdir(tmp_path)
    config = TRIAL_KINDS["ssl"].validate({"data": {"name": "cifar10", "root": "cifar"}})
    assert config["data"]["root"] == str(tmp_path / "cifar") and config["epochs"] == 30 and config["method"] == "simclr"
    with pytest.raises(ConfigError, match="data.root: .*nowhere does not exist"):
        TRIAL_KINDS["ssl"].validate({"data": {"name": "cifar10", "root": "nowhere"}})


@pytest.mark.parametrize("kind", sorted(TRIAL_KINDS))
def test_entry_points_name_functions(kind):
    module, _, function = TRIAL_KINDS[kind].entry_point.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_ssl_metric_names():
    ssl = TRIAL_KINDS["ssl"]
    assert {"epoch", "loss", "knn_acc", "loss_invariance", "loss_on_diagonal", "loss_alignment", "loss_repulsion",
            "loss_distribution", "loss_prediction", "recovery_min", "diverged"} <= set(ssl.epoch_metrics)
    assert ssl.final_metrics == ("linear_acc",) and not set(ssl.final_metrics) & set(ssl.epoch_metrics)
    assert len(set(ssl.epoch_metrics)) == len(ssl.epoch_metrics) and ssl.artifacts == ("spectra.json",)


# --- the stand-in -----------------------------------------------------------------------------------
def test_stand_in_validation():
    validate = TRIAL_KINDS["stand_in"].validate
    assert validate({"x": 0.3, "epoch_log": "log.txt"})["epoch_log"] == str(Path("log.txt").resolve())
    for config, fragment in [({"epoch": 3}, "epoch: unknown key (did you mean epochs"), ({"epochs": 0}, "epochs: must be"),
                             ({"method": "simclrr"}, "method: unknown value 'simclrr'")]:
        with pytest.raises(ConfigError) as info:
            validate(config)
        assert fragment in str(info.value)


def test_stand_in_scores_checkpoints_and_resumes(tmp_path):
    log = tmp_path / "epochs.log"
    config = {"epochs": 4, "x": 0.3, "offset": 1.0, "epoch_log": str(log)}
    reports = []

    def keep(metrics, checkpoint_dir):
        reports.append(metrics)
        assert sorted(p.name for p in Path(checkpoint_dir).iterdir()) == list(TRIAL_KINDS["stand_in"].artifacts)
        if metrics["epoch"] == 2:
            (tmp_path / "epoch2").mkdir()
            (tmp_path / "epoch2" / STATE_FILE).write_text((Path(checkpoint_dir) / STATE_FILE).read_text())

    final = train_stand_in(config, keep, trial_name="cell0 job1")
    assert [m["knn_acc"] for m in reports] == pytest.approx([1.25, 1.5, 1.75, 2.0]) and final["loss"] == -2.0
    assert set(final) - {PROVENANCE_KEY} <= set(TRIAL_KINDS["stand_in"].epoch_metrics)
    assert json.loads((tmp_path / "epoch2" / STATE_FILE).read_text()) == {"epoch": 2}
    resumed = []
    train_stand_in(config, lambda m, d: resumed.append(m["epoch"]), resume_from=str(tmp_path / "epoch2"), trial_name="cell0 job2")
    assert resumed == [3, 4]
    # "<trial name> <epoch> <resumed from> <pid>"
    assert [line.rsplit(" ", 1)[0] for line in log.read_text().splitlines()[-3:]] == [
        "cell0 job1 4 0", "cell0 job2 3 2", "cell0 job2 4 2"]
