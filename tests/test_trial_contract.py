"""The orchestrator takes a trial's facts from trainables.contract and copies none of them: a metric
or a dataset added on the trainables side is known to `validate` with no change in orchestrator/,
and `dualsweep train` shows every loss term of the method each epoch."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.spec import SpecError, build_trial_config, expand_cells, load_spec
from trainables.contract import TRIAL_KINDS
from trainables.data import DATASETS


def write_sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text("name: contract\ngrid: {method: [simclr]}\n"
                    "search: {trials_per_cell: 1, params: {optim.lr: {type: loguniform, low: 0.1, high: 1.0}}}\n"
                    "scheduler: {type: none}\n" + body)
    return path


def test_a_metric_added_to_the_trial_kind_is_a_valid_sweep_metric(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, "trial: {data: {name: digits}, epochs: 2}\nmetric: alignment_score\n")
    with pytest.raises(SpecError, match="unknown metric 'alignment_score'"):
        load_spec(path)
    ssl = TRIAL_KINDS["ssl"]
    monkeypatch.setitem(TRIAL_KINDS, "ssl", dataclasses.replace(ssl, epoch_metrics=(*ssl.epoch_metrics, "alignment_score")))
    assert load_spec(path).spec.metric == "alignment_score"


@pytest.fixture
def registered_dataset(monkeypatch):
    """A dataset registered the way trainables registers its own, reading data.root."""
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))

    @DATASETS.register_dataset("lab_images", needs_root=True)
    def lab_images(cfg, options):
        raise AssertionError("validation must not load the data")

    return "lab_images"


def test_a_dataset_registered_with_a_root_gets_the_root_check(tmp_path, registered_dataset, monkeypatch):
    path = write_sweep(tmp_path, f"trial: {{data: {{name: {registered_dataset}}}, epochs: 2}}\n")
    with pytest.raises(SpecError, match=f"trial.data.root: {registered_dataset} needs data.root"):
        load_spec(path)
    missing = tmp_path / "nowhere"
    path = write_sweep(tmp_path, f"trial: {{data: {{name: {registered_dataset}, root: '{missing}'}}, epochs: 2}}\n")
    with pytest.raises(SpecError, match=f"data.root: {missing} does not exist"):
        load_spec(path)
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, f"trial: {{data: {{name: {registered_dataset}, root: images}}, epochs: 2}}\n")
    loaded = load_spec(path)
    # Made absolute when a trial's config is built: a trial runs in a working directory of Ray's.
    cell = expand_cells(loaded.spec)[0]
    config = build_trial_config(loaded.spec, cell.values, {"optim.lr": 0.5}, seed=None)
    assert config["data"]["root"] == str(tmp_path / "images")


def test_train_prints_every_loss_term_each_epoch(capsys):
    assert main(["train", "method=vicreg", "data.name=digits", "epochs=2", "batch_size=128",
                 "model.width=32", "model.projector=32-16"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    assert len(rows) == 2
    for row in rows:
        for term in ("loss_invariance", "loss_variance", "loss_covariance"):
            assert f"{term}=" in row, row
