"""Sweep schema, validation and grid expansion: no Ray."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.spec import build_trial_config, cell_params, expand_cells
from orchestrator.cli import main
from orchestrator.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted((ROOT / "tests" / "sweep_corpus").glob("*.yaml"))
QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"


def expected_fragment(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message fragment>'"
    return first.removeprefix("# expect: ")


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 25


@pytest.fixture
def no_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("validation must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_malformed_sweep_is_rejected_with_one_line(path, capsys, no_ray):
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert expected_fragment(path) in lines[0]
    assert lines[0].startswith(f"dualsweep: error: {path}: ")
    assert "Traceback" not in err


def test_messages_are_distinct():
    assert len({expected_fragment(p) for p in CORPUS}) == len(CORPUS)


def test_cli_rejects_without_importing_ray(tmp_path):
    """In a fresh interpreter validate, run and run --dry-run stop before Ray is even imported."""
    bad = CORPUS[0]
    code = (
        "import sys; from orchestrator.cli import main\n"
        f"codes = [main(['validate', {str(bad)!r}]), main(['run', {str(bad)!r}]),\n"
        f"         main(['run', {str(QUICKSTART)!r}, 'search.trials_per_cell=2', '--dry-run'])]\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print(codes)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[2, 2, 0]")
    assert "3 cells x (2 search + 2 confirmation trials) = 12 trials" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2
    assert not (tmp_path / "sweeps-runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_every_problem_is_reported():
    with pytest.raises(SpecError) as info:
        load_spec(QUICKSTART, ["mode=maximum", "search.sampler=cmaes", "grid.batch_size=[]"])
    keys = sorted(line.split(": ")[1] for line in info.value.problems)
    assert keys == ["grid.batch_size", "mode", "search.sampler"]


def test_quickstart_expands_into_cells():
    loaded = load_spec(QUICKSTART)
    cells = expand_cells(loaded.spec)
    assert len(cells) == 3
    assert {c.family for c in cells} == {"sample_contrastive", "dimension_contrastive", "asymmetric"}
    assert len({c.id for c in cells}) == 3
    simclr, vicreg, byol = (next(c for c in cells if c.method == m) for m in ("simclr", "vicreg", "byol"))
    assert "method_kwargs.temperature" in cell_params(loaded.spec, simclr)
    assert "method_kwargs.temperature" not in cell_params(loaded.spec, vicreg)
    # The asymmetric method tunes its own EMA and predictor lr ratio; the others do not.
    assert {"method_kwargs.ema_tau", "method_kwargs.predictor_lr_ratio"} <= set(cell_params(loaded.spec, byol))
    assert "method_kwargs.ema_tau" not in cell_params(loaded.spec, simclr)
    assert loaded.spec.claims


def test_overrides_nested_and_dotted_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: ${oc.env:DUALSWEEP_TEST_NAME,fallback}\n"
        "trial: {data: {name: digits}, epochs: 4}\n"
        "grid:\n  method: [simclr]\n  model:\n    projector: [64-32, 64-16]\n"
        "search:\n  params:\n    optim:\n      lr: {type: loguniform, low: 1e-2, high: 1}\n"
    )
    loaded = load_spec(sweep, ["grid.batch_size=[32,64]", "search.params.optim.lr.high=2", "seeds=[5]"])
    spec = loaded.spec
    assert spec.name == "fallback"
    assert list(spec.grid) == ["method", "model.projector", "batch_size"]
    assert spec.search.params["optim.lr"].low == 0.01
    assert spec.search.params["optim.lr"].high == 2.0
    assert spec.seeds == [5]
    assert len(expand_cells(spec)) == 4
    assert loaded.sweep_dir == tmp_path.resolve() / "sweeps-runs" / "fallback"
    assert spec.tracking.uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_trial_config_is_built_from_base_grid_and_search():
    spec = load_spec(QUICKSTART).spec
    cell = expand_cells(spec)[0]
    config = build_trial_config(spec, cell.values, {"optim.lr": 0.3, "method_kwargs.temperature": 0.2}, seed=7)
    assert config["method"] == "simclr" and config["batch_size"] == 64
    assert config["model"]["projector"] == "512-512-128"
    assert config["optim"]["lr"] == 0.3 and config["method_kwargs"] == {"temperature": 0.2}
    assert config["seed"] == 7 and config["epochs"] == 35


def test_storage_uri_keeps_rays_experiment_in_the_bucket_and_the_studies_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = load_spec(QUICKSTART, ["storage=s3://bucket/sweeps/"])
    assert loaded.spec.storage == "s3://bucket/sweeps"
    assert loaded.remote_dir == loaded.tune_storage == "s3://bucket/sweeps/quickstart"
    assert loaded.sweep_dir == tmp_path / "sweeps-runs" / "quickstart"
    local = load_spec(QUICKSTART, [f"storage={tmp_path / 'shared'}"])
    assert local.remote_dir is None and local.tune_storage == str(tmp_path / "shared" / "quickstart")


def test_one_definition_two_sizes_through_the_scale_switch(tmp_path):
    """`sizes` holds named sets of values that the file reads through interpolation; `scale` picks one."""
    path = tmp_path / "sized.yaml"
    path.write_text(
        "name: sized\nscale: cpu\n"
        "sizes:\n  cpu: {epochs: 4, batch_sizes: [64, 128]}\n  cluster: {epochs: 100, batch_sizes: [256, 512, 1024]}\n"
        "trial: {data: {name: digits}, epochs: '${sizes.${scale}.epochs}'}\n"
        "grid: {method: [simclr, vicreg], batch_size: '${sizes.${scale}.batch_sizes}'}\n"
        "search: {trials_per_cell: 1, params: {optim.lr: {type: loguniform, low: 0.1, high: 1.0}}}\n"
        "scheduler: {type: none}\n"
    )
    cpu, cluster = load_spec(path), load_spec(path, ["scale=cluster"])
    assert [len(expand_cells(s.spec)) for s in (cpu, cluster)] == [4, 6]
    assert cpu.spec.trial["epochs"] == 4 and cluster.spec.trial["epochs"] == 100
    assert "${" not in cluster.yaml_text  # the sweep directory keeps the resolved values
    with pytest.raises(SpecError, match="scale: unknown size 'gpu'"):
        load_spec(path, ["scale=gpu"])


def test_an_mlflow_server_that_is_down_is_one_line_before_anything_is_written(tmp_path, capsys, no_ray):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    path = tmp_path / "down.yaml"
    path.write_text(
        f"name: down\nstorage: {tmp_path / 'runs'}\ntracking: {{uri: 'http://127.0.0.1:{port}'}}\n"
        "trial: {data: {name: digits}, epochs: 2}\ngrid: {method: [simclr]}\n"
        "search: {trials_per_cell: 1, params: {optim.lr: {type: loguniform, low: 0.1, high: 1.0}}}\n"
        "scheduler: {type: none}\n"
    )
    start = time.monotonic()
    assert main(["run", str(path)]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"tracking.uri: the MLflow server http://127.0.0.1:{port} does not answer" in err[0]
    assert not (tmp_path / "runs").exists()
