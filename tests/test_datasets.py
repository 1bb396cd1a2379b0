"""Datasets from a local root, written by the tests in the real on-disk formats."""
import os
import pickle

import numpy as np
import pytest
import torch

from orchestrator.cli import main
from trainables import ConfigError, train
from trainables.config import trial_config
from trainables.data import load_data
from trainables.data.digit_worlds import sklearn_digits, stratified_split


def write_cifar10(root, per_batch=16, test=16, seed=0):
    """CIFAR-10's python version: pickled dicts with a (N, 3072) uint8 'data' row-major by
    channel, and 'labels', in cifar-10-batches-py/."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(name, n):
        labels = rng.integers(0, 10, n).tolist()
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{name}_{i}.png" for i in range(n)]}, f)
        return data, labels

    train_batches = [batch(f"data_batch_{i}", per_batch) for i in range(1, 6)]
    test_batch = batch("test_batch", test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, f)
    return train_batches, test_batch


def test_cifar10_reads_pickle_batches(tmp_path):
    train_batches, (test_data, test_labels) = write_cifar10(tmp_path)
    bundle = load_data(trial_config({"data": {"name": "cifar10", "root": str(tmp_path)}}).data)
    assert len(bundle.train) == 80 and len(bundle.test) == 16
    assert bundle.train.samples.shape == (80, 3, 32, 32) and bundle.train.samples.dtype == torch.uint8
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major.
    first = train_batches[0][0][0]
    assert torch.equal(bundle.train.samples[0, 1], torch.from_numpy(first[1024:2048].reshape(32, 32)))
    assert bundle.test.labels.tolist() == test_labels


class RunsCode:
    """What a hostile pickle does: call a function of its choice while it is read."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_hostile_cifar_batch_runs_no_code(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": RunsCode(), "labels": [0]}, f)
    with pytest.raises(ConfigError, match="refused global (posix|os).system"):
        load_data(trial_config({"data": {"name": "cifar10", "root": str(tmp_path)}}).data)
    assert not (tmp_path / "pwned").exists()


def test_cifar10_trains_one_epoch_of_resnet18(tmp_path):
    write_cifar10(tmp_path)
    config = {"data": {"name": "cifar10", "root": str(tmp_path)}, "model": {"backbone": "resnet18", "projector": "64-32"},
              "epochs": 1, "batch_size": 32, "optim": {"warmup_epochs": 0}}
    final = train(config, report=lambda m, d: None)
    assert final["epoch"] == 1 and np.isfinite(final["loss"]) and 0 <= final["knn_acc"] <= 1
    assert final["rank_repr"] > 1


def test_missing_root_is_one_line_error(tmp_path, capsys):
    code = main(["train", "data.name=cifar10", f"data.root={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "data.root" in err and "nowhere" in err


def test_root_without_cifar_files_names_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="data_batch_1"):
        load_data(trial_config({"data": {"name": "cifar10", "root": str(tmp_path)}}).data)


def test_imagefolder_decodes_and_resizes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    bundle = load_data(trial_config({"data": {"name": "imagefolder", "root": str(tmp_path), "image_size": 16,
                                              "loader_workers": 0}}).data)
    images, labels = next(bundle.train.batches(6))
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.uint8
    assert bundle.num_classes == 2 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_digits_split_is_stratified_and_fixed_by_split_seed():
    a = load_data(trial_config({"seed": 1}).data)
    b = load_data(trial_config({"seed": 2}).data)
    assert torch.equal(a.test.samples, b.test.samples), "trial seed must not move the held-out split"
    c = load_data(trial_config({"data": {"split_seed": 1}}).data)
    assert not torch.equal(a.test.samples, c.test.samples)
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 359 test digits, ~36 per class
    assert len(a.train) + len(a.test) == 1797


def test_digits_are_scikit_learns_digits():
    from sklearn.datasets import load_digits

    x, y = sklearn_digits()
    expected_x, expected_y = load_digits(return_X_y=True)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)


def test_digits_split_keeps_every_sample_once_and_each_class_share():
    x, y = sklearn_digits()
    train_index, test_index = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([train_index, test_index])) == list(range(len(y)))
    for label in range(10):
        in_class = (y == label).sum()
        assert (y[test_index] == label).sum() == round(in_class * 0.2)
