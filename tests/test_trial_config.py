"""The trial config and `dualsweep train`: defaults, one-line errors, exit code 2."""
import subprocess
import sys

import pytest

from orchestrator.cli import main
from trainables import ConfigError, train
from trainables.config import trial_config, warmup_epochs
from trainables.contract import TRIAL_KINDS
from trainables.data import DATASETS, dataset_options, load_data


def test_defaults_and_merge():
    cfg = trial_config({"method": "vicreg", "optim": {"lr": 0.1}})
    assert cfg.method == "vicreg" and cfg.optim.lr == 0.1 and cfg.optim.name == "sgd" and cfg.data.name == "digits"


@pytest.mark.parametrize("config,fragment", [
    ({"epochz": 3}, "epochz: unknown key (did you mean epochs?)"),
    ({"data": {"nme": "x"}}, "data.nme: unknown key (did you mean name?)"),
    ({"epochs": "many"}, "epochs:"),
    ({"epochs": 0}, "epochs: must be a positive integer"),
    ({"optim": {"lr": 0}}, "optim.lr: must be > 0"),
    ({"optim": {"name": "adam"}}, "optim.name: unknown value 'adam'; allowed: sgd, adamw, lars"),
    ({"data": {"test_fraction": 1.5}}, "data.test_fraction"),
    ({"optim": {"warmup_epochs": 100}}, "optim.warmup_epochs: must be in [0, epochs=30] (or null: min(2, epochs))"),
    ({"precision": "fp8"}, "precision: unknown value"),
    ({"batch_size": 1}, "batch_size: must be >= 2"),
    ({"model": {"init": "dictionary"}}, "model.init: dictionary starts a symrelu encoder on sparse_coding's dictionary; got backbone mlp on digits"),
    ({"model": {"init": "warm"}}, "model.init: unknown value 'warm'; allowed: random, dictionary"),
    ({"model": {"warm_start_noise": -1}}, "model.warm_start_noise: must be >= 0"),
])
def test_bad_values_name_the_key(config, fragment):
    with pytest.raises(ConfigError) as info:
        trial_config(config)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_default_warmup_adapts_to_a_short_trial():
    """`dualsweep train method=simclr data.name=sparse_coding epochs=1` was refused: the default warmup
    (2 epochs) exceeded the epochs asked for. A default adapts; a value set is checked as it is."""
    config = {"method": "simclr", "data": {"name": "sparse_coding"}, "epochs": 1, "eval": {"linear_probe_steps": 5},
              "model": {"width": 32, "projector": "32-16"}, "cpus": 1}
    assert train(config, report=lambda metrics, checkpoint_dir: None)["epoch"] == 1
    assert warmup_epochs(trial_config({"epochs": 1})) == 1.0 and warmup_epochs(trial_config({"epochs": 5})) == 2.0
    assert warmup_epochs(trial_config({"epochs": 5, "optim": {"warmup_epochs": 0}})) == 0.0
    with pytest.raises(ConfigError, match=r"optim.warmup_epochs: must be in \[0, epochs=1\]"):
        trial_config({"epochs": 1, "optim": {"warmup_epochs": 2}})


def test_batch_of_one_is_a_config_error_not_a_batch_norm_traceback():
    """`dualsweep train method=vicreg data.name=digits batch_size=1` ended in BatchNorm's ValueError."""
    with pytest.raises(ConfigError, match="batch_size: must be >= 2"):
        train({"method": "vicreg", "data": {"name": "digits"}, "batch_size": 1, "epochs": 1})


@pytest.mark.parametrize("config,fragment", [
    ({"batch_size": 1}, "batch_size: must be >= 2"),
    ({"epochs": 0}, "epochs: must be a positive integer, got 0"),
    ({"epochs": -5}, "epochs: must be a positive integer, got -5"),
    ({"model": {"projector": "0"}}, "model.projector: '0' is not a layer spec"),
    ({"model": {"projector": "512-0-128"}}, "model.projector: '512-0-128' is not a layer spec"),
    ({"batch_size": 1439}, "batch_size: 1439 is larger than the 1438 training samples of digits"),
    ({"batch_size": 1134, "data": {"test_fraction": 0.37}}, "larger than the 1133 training samples of digits"),
    ({"batch_size": 128, "data": {"name": "sparse_coding", "options": {"n": 100}}},
     "batch_size: 128 is larger than the 100 training samples of sparse_coding"),
    ({"batch_size": 1500, "data": {"name": "digits_clutter"}},
     "larger than the 1438 training samples of digits_clutter"),
    ({"batch_size": 5000, "data": {"name": "digits_clutter", "options": {"composites": 3, "pair_views": False}}},
     "larger than the 4314 training samples of digits_clutter"),
    ({"batch_size": 2000, "data": {"name": "randbit", "options": {"base": "digits"}}},
     "larger than the 1438 training samples of randbit"),
])
def test_degenerate_trials_are_refused_at_validation(config, fragment):
    """Settings that cannot train (a batch of one, no epochs, a zero-width projector layer, a batch
    larger than the training split) are refused by the validation a sweep runs before Ray starts,
    which loads no data; not by BatchNorm or an empty epoch later."""
    with pytest.raises(ConfigError) as info:
        TRIAL_KINDS["ssl"].validate(config)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_cli_train_refuses_a_batch_larger_than_the_data_before_loading_it(capsys):
    assert main(["train", "data.name=sparse_coding", "data.options.n=64", "batch_size=65"]) == 2
    err = capsys.readouterr().err
    assert err == ("dualsweep: error: batch_size: 65 is larger than the 64 training samples of sparse_coding with "
                   "these data settings; allowed: 2 to 64\n")


@pytest.mark.parametrize("data", [
    {"name": "digits"},
    {"name": "digits", "test_fraction": 0.37},
    {"name": "digits_clutter", "options": {"composites": 2, "lines": 0}},
    {"name": "digits_clutter", "options": {"composites": 3, "pair_views": False, "lines": 0}},
    {"name": "randbit", "options": {"base": "digits", "bits": 2}},
    {"name": "sparse_coding", "options": {"n": 100, "n_test": 10}},
    {"name": "gaussian_aug", "options": {"n": 64, "n_test": 8}},
    {"name": "isotropic", "options": {"n": 50, "n_test": 8}},
])
def test_stated_train_size_is_the_loaded_one(data):
    cfg = trial_config({"data": data}).data
    assert dataset_options(cfg).train_size(cfg) == len(load_data(cfg).train)


def test_only_datasets_on_disk_leave_the_batch_check_to_load_time():
    """Every generated dataset states its training split's size from the config; only those read from
    data.root learn it by loading (trainables.train checks the batch there)."""
    for name, entry in DATASETS.items():
        cfg = trial_config({"data": {"name": name}}).data
        assert (entry.options().train_size(cfg) is None) == entry.needs_root, name


@pytest.mark.parametrize("config,fragment", [
    ({"method": "byol", "method_kwargs": {"predictor": "deep"}}, "method_kwargs.predictor: unknown value 'deep'"),
    ({"model": {"projector": "64-abc"}}, "model.projector: '64-abc' is not a layer spec"),
    ({"model": {"backbone": "resnet"}}, "model.backbone: unknown value 'resnet' (did you mean resnet18?)"),
    ({"data": {"name": "sparse_coding", "options": {"d": 60}}}, "data.options.d: need 0 < d <= p"),
])
def test_ssl_validation_checks_what_the_trial_would_refuse(config, fragment):
    """A sweep's validation refuses these before Ray starts, exactly as the trial would."""
    with pytest.raises(ConfigError) as info:
        TRIAL_KINDS["ssl"].validate(config)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("argv,fragment", [
    (["method=simclrr"], "method: unknown value 'simclrr' (did you mean simclr,"),
    (["method_kwargs.tau=0.2"], "method_kwargs.tau: not a hyperparameter of simclr; allowed: temperature"),
    (["method_kwargs.temperature=warm"], "method_kwargs.temperature"),
    (["model.backbone=vit"], "model.backbone: unknown value 'vit'"),
    (["model.projector=big"], "model.projector"),
    (["data.name=imagenet"], "data.name: unknown value 'imagenet'"),
    (["device=cuda"], "device: cuda requested"),
    (["epochs"], "expected key=value"),
])
def test_cli_train_one_line_errors(argv, fragment, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_cli_train_runs_and_keeps_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    args = ["train", "epochs=2", "batch_size=256", "model.width=32", "model.projector=32-16", "--checkpoint-dir", str(ckpt)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch=1" in out and "epoch=2" in out and "knn_acc: random init" in out
    assert (ckpt / "trial_state.pt").is_file()
    assert main(["train", "epochs=3", "batch_size=256", "model.width=32", "model.projector=32-16", "--resume", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "epoch=3" in out and "epoch=1 " not in out


def test_cli_error_has_no_traceback_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", "optim.name=adam"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "dualsweep: error: optim.name: unknown value 'adam'; allowed: sgd, adamw, lars"


def test_cli_methods_lists_every_method_with_family_and_defaults(capsys):
    from trainables.methods import METHODS

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in METHODS.names():
        row = next(line for line in lines if line.split()[0] == name)
        assert METHODS.get(name).family in row
    assert any("temperature=0.1" in line for line in lines)
    assert len(METHODS.names()) >= 16
