"""Integration tests on the shared local Ray cluster, with the cheap synthetic trainable: per-cell
independence, MLflow contents, `status`, `dualsweep ui`, and kill -9 of the driver then resume."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import matplotlib.image
import optuna
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.spec import load_spec
from orchestrator.runner import run_sweep
from orchestrator.sweep_report import read_trials
from orchestrator.storage import OPTUNA_FILE, SPEC_FILE, load_sweep_dir
from trainables.stand_in import read_epoch_log

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]

TRIALS_PER_CELL = 4
SEEDS = (1, 2)


def write_sweep(directory: Path, name: str, body: str, storage: str | None = None) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntrainable: stand_in\nstorage: {storage or directory / 'runs'}\n"
        f"tracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\n{body}"
    )
    return path


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """Two cells, one scoring ten times higher than the other, run in this process."""
    directory = tmp_path_factory.mktemp("independence")
    path = write_sweep(directory, "independence", (
        "trial: {epochs: 6, seconds_per_epoch: 0.1}\n"
        "grid: {offset: [0.0, 10.0]}\n"
        f"search: {{trials_per_cell: {TRIALS_PER_CELL}, params: {{x: {{type: uniform, low: 0.0, high: 1.0}}}}}}\n"
        "scheduler: {type: asha, grace_period: 1, reduction_factor: 2}\n"
        f"seeds: {list(SEEDS)}\n"
    ))
    loaded = load_spec(path)
    outcome = run_sweep(loaded, address=None, verbose=0)
    assert outcome.errors == 0
    return loaded


def metric_histories(client: MlflowClient, runs: list) -> dict[str, dict[int, float]]:
    return {r.data.tags["trial_key"]: {int(m.step): m.value for m in client.get_metric_history(r.info.run_id, "knn_acc")}
            for r in runs}


def child_runs(client: MlflowClient, experiment: str, sweep: str) -> list:
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              filter_string=f"tags.sweep = '{sweep}' and tags.role = 'trial'", max_results=1000)


def test_each_cell_is_searched_and_stopped_on_its_own(finished_sweep):
    spec = finished_sweep.spec
    client = MlflowClient(spec.tracking.uri)
    runs = child_runs(client, spec.tracking.experiment, spec.name)
    histories = metric_histories(client, runs)
    search = {r.data.tags["trial_key"]: r for r in runs if r.data.tags["phase"] == "search"}
    low = sorted(k for k in search if k.startswith("c00-"))
    assert len(low) == TRIALS_PER_CELL
    # The low cell scores ~1 and the high cell ~11 at the end: a global ASHA would stop every low
    # trial that reached a rung after a high one. Here the low cell's best runs to the end, and a
    # stopped low trial was always behind an earlier low trial at the rung where it stopped.
    assert any(len(histories[k]) == 6 for k in low)
    for key in low:
        if search[key].data.tags["stopped_early"] == "true":
            epoch = max(histories[key])
            peers = [h[epoch] for other, h in histories.items() if other in low and other != key and epoch in h]
            assert peers and max(peers) > histories[key][epoch], key
    # Each cell's Optuna study holds exactly its own search trials.
    storage = f"sqlite:///{finished_sweep.sweep_dir / OPTUNA_FILE}"
    for cell in ("c00", "c01"):
        trials = optuna.load_study(study_name=f"{spec.name}.{cell}", storage=storage).trials
        assert sorted(t.user_attrs["trial_key"] for t in trials) == sorted(k for k in search if k.startswith(cell))
        assert all(t.state.is_finished() for t in trials)
    # Confirmation: the cell's best full-length config, once per seed, never stopped.
    for cell in ("c00", "c01"):
        confirm = [r for r in runs if r.data.tags["cell"] == cell and r.data.tags["phase"] == "confirm"]
        assert sorted(r.data.tags["seed"] for r in confirm) == [str(s) for s in SEEDS]
        assert all(len(histories[r.data.tags["trial_key"]]) == 6 for r in confirm)
        full = [k for k in search if k.startswith(cell) and len(histories[k]) == 6]
        best = max(full, key=lambda k: histories[k][6])
        assert {r.data.params["x"] for r in confirm} == {search[best].data.params["x"]}


def test_mlflow_holds_parent_and_child_runs(finished_sweep):
    spec = finished_sweep.spec
    client = MlflowClient(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment).experiment_id
    parents = client.search_runs([experiment], filter_string=f"tags.sweep = '{spec.name}' and tags.role = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "sweep.yaml" in [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    runs = child_runs(client, spec.tracking.experiment, spec.name)
    assert len(runs) == 2 * (TRIALS_PER_CELL + len(SEEDS))
    for run in runs:
        tags, params = run.data.tags, run.data.params
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"
        assert {"sweep", "cell", "method", "family", "seed", "phase"} <= set(tags)
        assert tags["method"] == "simclr" and tags["family"] == "sample_contrastive"
        assert params["epochs"] == "6" and "x" in params and "offset" in params
        history = client.get_metric_history(run.info.run_id, "knn_acc")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"trial_config.yaml", "final_result.json", "trial"} <= artifacts
        trial_artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "trial")}
        # The Tune result log, and the state file of the trial's last checkpoint.
        assert {"trial/result.json", "trial/stand_in_state.json"} <= trial_artifacts
        state = json.loads(Path(client.download_artifacts(run.info.run_id, "trial/stand_in_state.json")).read_text())
        assert state["epoch"] == len(history)


def test_status_reads_the_sweep_directory(finished_sweep, capsys):
    assert main(["status", str(finished_sweep.sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "12 of 12 planned trials (" in out
    states = out.split("12 of 12 planned trials (")[1].split(")")[0]
    assert set(re.findall(r"\d+ (\w+)", states)) <= {"finished", "stopped_early"}, states
    assert "offset=0.0" in out and "offset=10.0" in out


def test_report_in_a_new_process_reads_every_trials_results(finished_sweep, tmp_path):
    """As a user runs `report` (or `status`, which reads the trials alike) once the sweep is over: in
    a process without Ray, which cannot name the Ray session folder that held the driver's copy of
    each trial's results."""
    out = tmp_path / "report"
    report = subprocess.run([str(Path(sys.executable).with_name("dualsweep")), "report", str(finished_sweep.sweep_dir),
                             "--out", str(out)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("report of 12 trials"), report.stdout
    # Drawn from every confirmation trial's per-epoch results (result.json in the sweep's storage).
    assert (out / "learning_curves.png").is_file(), sorted(p.name for p in out.iterdir())


def test_ssl_sweep_then_report(tmp_path, capsys):
    """The real SSL trainable through Tune (digits, a sample- and a dimension-contrastive method, one
    search trial and two seeds each), then `dualsweep report` from the sweep's storage."""
    path = tmp_path / "ssl.yaml"
    path.write_text(
        f"name: ssl\nstorage: {tmp_path / 'runs'}\ntracking: {{uri: 'sqlite:///{tmp_path / 'mlflow.db'}'}}\n"
        "trial: {data: {name: digits}, epochs: 2, batch_size: 128, model: {width: 64, projector: 64-32}}\n"
        "grid: {method: [simclr, vicreg]}\n"
        "search: {trials_per_cell: 1, params: {optim.lr: {type: loguniform, low: 0.05, high: 0.5}}}\n"
        "scheduler: {type: none}\nseeds: [1, 2]\nmetric: fewshot_acc\n"
        "claims:\n"
        "  - {id: G2, kind: gap_within, methods: [simclr, vicreg], tolerance: 0.5}\n"
        "  - {id: J1, kind: no_collapse, metric: rank_emb, level: 1.0}\n"
    )
    loaded = load_spec(path)
    assert run_sweep(loaded, address=None, verbose=0).errors == 0
    client = MlflowClient(loaded.spec.tracking.uri)
    runs = child_runs(client, loaded.spec.tracking.experiment, "ssl")
    assert sorted(r.data.tags["method"] for r in runs) == ["simclr"] * 3 + ["vicreg"] * 3
    terms = {"simclr": {"loss_alignment"}, "vicreg": {"loss_invariance", "loss_variance", "loss_covariance"}}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "fewshot_acc")] == [1, 2]
        assert 0.1 < run.data.metrics["knn_acc"] <= 1.0 and "n_collapsed" in run.data.metrics
        # Each loss term of the method is an MLflow metric of every epoch.
        for term in terms[run.data.tags["method"]]:
            assert [m.step for m in client.get_metric_history(run.info.run_id, term)] == [1, 2], term
        tags = run.data.tags
        for key in ("dualsweep_version", "git_commit", "git_dirty", "torch_version", "ray_version", "optuna_version",
                    "mlflow_version", "device", "data_name", "data_split_seed", "data_sha256"):
            assert tags.get(f"provenance.{key}"), key
        spectra = json.loads(Path(client.download_artifacts(run.info.run_id, "trial/spectra.json")).read_text())
        assert spectra["epoch"] == 2 and len(spectra["embedding_covariance"]) == 32
    experiment = client.get_experiment_by_name("ssl")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    out = tmp_path / "report"
    assert main(["report", str(loaded.sweep_dir), "--out", str(out)]) == 0
    assert "partial" not in capsys.readouterr().out
    verdicts = json.loads((out / "claims.json").read_text())
    assert verdicts["partial"] is False and not verdicts["provenance_warnings"]
    by_id = {v["id"]: v for v in verdicts["verdicts"]}
    assert set(by_id) == {"G2", "J1"}
    assert by_id["G2"]["n"] >= 2 and by_id["G2"]["interval"] is not None
    assert by_id["J1"]["verdict"] == "supported"  # 2 epochs of training do not collapse a 32-d embedding
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["key"] for r in rows) == sorted(r.data.tags["trial_key"] for r in runs)
    assert {r["run_id"] for r in rows} == {r.info.run_id for r in runs}
    pngs = sorted(out.glob("*.png"))
    assert pngs
    for png in pngs:
        pixels = matplotlib.image.imread(png)
        assert pixels.ndim == 3 and pixels.std() > 0.01, png.name
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.role = 'sweep'")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/results.csv", "report/claims.json"} <= logged

    assert main(["status", str(loaded.sweep_dir)]) == 0
    status = capsys.readouterr().out
    assert "family gap" in status and "sample_contrastive (simclr) - dimension_contrastive (vicreg)" in status

    # A trial whose data differs from the others' is reported, not averaged in silently.
    client.set_tag(runs[0].info.run_id, "provenance.data_sha256", "0000000000000000")
    assert main(["report", str(loaded.sweep_dir), "--out", str(out)]) == 0
    warnings = json.loads((out / "claims.json").read_text())["provenance_warnings"]
    assert any("data_sha256" in w for w in warnings), warnings
    assert "data_sha256" in (out / "report.html").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The addresses that TCP sockets listen on at `port`, from the kernel's tables."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                found.add(socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))
    return found


def test_ui_serves_the_runs_on_loopback(finished_sweep):
    spec = finished_sweep.spec
    port, dashboard_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", str(finished_sweep.sweep_dir), "--port", str(port),
         "--dashboard-port", str(dashboard_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        experiment = MlflowClient(spec.tracking.uri).get_experiment_by_name(spec.tracking.experiment).experiment_id
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment], "max_results": 100}).encode(),
            headers={"Content-Type": "application/json"},
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    runs = json.load(response)["runs"]
                break
            except OSError:
                assert server.poll() is None, "dualsweep ui exited"
                assert time.monotonic() < deadline, "MLflow UI did not answer within 90 s"
                time.sleep(1)
        names = {r["info"]["run_name"]: r["info"]["run_id"] for r in runs}
        assert {"independence", "c00-search-000", "c01-confirm-seed2"} <= set(names)
        listing = f"http://127.0.0.1:{port}/api/2.0/mlflow/artifacts/list?run_id={names['c00-search-000']}"
        with urllib.request.urlopen(listing, timeout=10) as response:
            files = {f["path"] for f in json.load(response)["files"]}
        assert {"trial_config.yaml", "final_result.json", "trial"} <= files
        while not listening_addresses(dashboard_port):
            assert server.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not start"
            time.sleep(1)
        # Without --host both servers listen on loopback only, not on every interface.
        assert listening_addresses(port) == listening_addresses(dashboard_port) == {"127.0.0.1"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


# --- kill -9 of the driver, then resume ------------------------------------------------------------
EPOCHS = 6


def epoch_rows(path: Path) -> list[tuple[str, str, int, int]]:
    """(trial key, Ray job, epoch, resumed-from epoch) per epoch actually run."""
    return [(line.key, line.job, line.epoch, line.start) for line in read_epoch_log(path)]


@pytest.mark.faults
@pytest.mark.parametrize("phase,storage", [("search", "folder"), ("confirm", "folder"), ("search", "uri")])
def test_kill_driver_then_resume(tmp_path, ray_cluster, phase, storage, monkeypatch, capsys):
    """The driver is killed while a trial of `phase` is running. With a storage URI (file://, which
    Ray reaches through pyarrow like s3://), the local sweep directory is then deleted and the sweep
    resumed from its URI, as on another machine."""
    epoch_log = tmp_path / "epochs.log"
    uri = f"file://{tmp_path / 'remote'}" if storage == "uri" else None
    sweep_dir = tmp_path / ("sweeps-runs" if uri else "runs") / "killed"
    path = write_sweep(tmp_path, "killed", (
        f"trial: {{epochs: {EPOCHS}, seconds_per_epoch: 1.0, epoch_log: '{epoch_log}'}}\n"
        "grid: {offset: [0.0, 10.0]}\n"
        "search: {trials_per_cell: 3, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\n"
        "scheduler: {type: asha, grace_period: 2, reduction_factor: 2}\n"
        "seeds: [1]\n"
    ), storage=uri)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "orchestrator.cli"]
    driver = subprocess.Popen([*cli, "run", str(path), "--address", ray_cluster, "--verbose", "0"], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once a trial has finished (long enough ago for Ray's 1 s snapshot to know it) while
    # another, of the phase under test, is running past its first epochs.
    finished_at: dict[str, float] = {}
    progressed_at: dict[str, tuple[int, float]] = {}
    deadline = time.monotonic() + 180
    while True:
        assert driver.poll() is None, "the driver ended before it could be killed"
        assert time.monotonic() < deadline, "no moment to kill the driver came"
        now = time.monotonic()
        for key, _, epoch, _ in epoch_rows(epoch_log):
            if epoch == EPOCHS:
                finished_at.setdefault(key, now)
            if epoch > progressed_at.get(key, (0, 0.0))[0]:
                progressed_at[key] = (epoch, now)
        running = {k for k, (epoch, at) in progressed_at.items()
                   if f"-{phase}-" in k and epoch >= 2 and now - at < 1.5} - set(finished_at)
        if finished_at and running and now - max(finished_at.values()) > 2.5:
            break
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = epoch_rows(epoch_log)
    finished_before = set(finished_at)
    first_job = before[0][1]

    if uri:
        shutil.rmtree(sweep_dir)
    else:  # the killed sweep's report, from storage alone: partial, and says so; no Ray started
        import ray

        monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("report must not start Ray"))
        assert main(["report", str(sweep_dir), "--out", str(tmp_path / "partial")]) == 0
        assert "partial report" in capsys.readouterr().out
        assert json.loads((tmp_path / "partial" / "claims.json").read_text())["partial"] is True
        assert "partial report" in (tmp_path / "partial" / "report.html").read_text()
        monkeypatch.undo()
    resumed = subprocess.run([*cli, "resume", f"{uri}/killed" if uri else str(sweep_dir), "--address", ray_cluster,
                              "--verbose", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Conditions the resume handles (e.g. an older checkpoint deleted before the kill) print no traceback.
    assert "Traceback" not in resumed.stderr, resumed.stderr[-3000:]

    rows = epoch_rows(epoch_log)
    after = [r for r in rows if r[1] != first_job]
    planned = {f"c0{c}-search-00{i}" for c in range(2) for i in range(3)} | {"c00-confirm-seed1", "c01-confirm-seed1"}
    # Every trial ends exactly once, in Ray's final state.
    trials = read_trials(load_sweep_dir(sweep_dir))
    assert sorted(t.key for t in trials) == sorted(planned)
    assert all(t.status in ("finished", "stopped_early") for t in trials), [(t.key, t.status) for t in trials]
    # Finished trials are not re-executed.
    assert not {key for key, *_ in after} & finished_before
    # Unfinished ones continue from their last checkpoint (which may lag the last epoch by one).
    last_before: dict[str, int] = defaultdict(int)
    for key, _, epoch, _ in before:
        last_before[key] = max(last_before[key], epoch)
    continued = {k for k, *_ in after} & set(last_before)
    assert running & continued, "no trial interrupted by the kill was continued"
    for key in continued:
        first = min(epoch for k, _, epoch, _ in after if k == key)
        assert first >= last_before[key], (key, first, last_before[key])
        assert min(start for k, _, _, start in after if k == key) >= last_before[key] - 1
    epochs_run = defaultdict(int)
    for key, *_ in rows:
        epochs_run[key] += 1
    assert all(count <= EPOCHS + 2 for count in epochs_run.values()), epochs_run
    print(f"kill test: finished before the kill {sorted(finished_before)}; continued {sorted(continued)}; "
          f"epochs run {dict(epochs_run)}")

    # MLflow: exactly one run per trial, none left RUNNING.
    spec = load_spec(path).spec
    client = MlflowClient(spec.tracking.uri)
    runs = child_runs(client, spec.tracking.experiment, spec.name)
    assert sorted(r.data.tags["trial_key"] for r in runs) == sorted(planned)
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:  # epochs run again from an older checkpoint are not logged twice
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "knn_acc")]
        assert steps == list(range(1, len(steps) + 1)), (run.info.run_name, steps)
    assert (sweep_dir / SPEC_FILE).is_file()
    # Optuna: each study holds its trials once, all finished.
    for cell in ("c00", "c01"):
        trials = optuna.load_study(study_name=f"killed.{cell}", storage=f"sqlite:///{sweep_dir / OPTUNA_FILE}").trials
        assert sorted(t.user_attrs["trial_key"] for t in trials) == [f"{cell}-search-00{i}" for i in range(3)]
        assert all(t.state.is_finished() for t in trials)
    if uri:  # status straight from the URI, in a directory that has never seen the sweep
        monkeypatch.chdir(tmp_path / "remote")
        assert main(["status", f"{uri}/killed"]) == 0
        out = capsys.readouterr().out
        assert f"{len(planned)} of {len(planned)} planned trials (" in out
        assert "running" not in out and "pending" not in out
