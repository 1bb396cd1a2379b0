"""Faults inside a sweep, on the shared local Ray cluster with the stand-in trial: a trial that
raises (retried from its checkpoint, then FAILED with its message), one that diverges, a corrupt
checkpoint, a worker process killed from outside, and SIGTERM / Ctrl-C of the driver."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import EXIT_STOPPED, main
from orchestrator.runner import run_sweep
from orchestrator.spec import expand_cells, load_spec
from orchestrator.storage import load_sweep_dir
from orchestrator.sweep_report import read_trials
from trainables.stand_in import read_epoch_log

pytestmark = [pytest.mark.ray, pytest.mark.faults, pytest.mark.usefixtures("ray_cluster")]


def write_sweep(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"name: {name}\ntrainable: stand_in\nstorage: {directory / 'runs'}\n"
                    f"tracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\n{body}")
    return path


def epoch_rows(path: Path) -> list[tuple[str, int, int, int]]:
    """(trial key, epoch, resumed-from epoch, worker pid) per epoch the stand-in ran."""
    return [(line.key, line.epoch, line.start, line.pid) for line in read_epoch_log(path)]


def trial_runs(path: Path) -> dict[str, object]:
    spec = load_spec(path).spec
    client = MlflowClient(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment).experiment_id
    runs = client.search_runs([experiment], f"tags.sweep = '{spec.name}' and tags.role = 'trial'")
    assert len({r.data.tags["trial_key"] for r in runs}) == len(runs), "a trial has two MLflow runs"
    return {r.data.tags["trial_key"]: r for r in runs}


def parent_status(path: Path) -> str:
    spec = load_spec(path).spec
    client = MlflowClient(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment).experiment_id
    [parent] = client.search_runs([experiment], f"tags.sweep = '{spec.name}' and tags.role = 'sweep'")
    return parent.info.status


def test_failing_diverging_and_corrupt_trials(tmp_path, capsys):
    """Cells: plain; diverging at epoch 2; raising at epoch 3 after a corrupt epoch-2 checkpoint;
    diverging before it could raise. max_failures 1: the raising trial runs twice, the second time
    from the epoch-1 checkpoint because the epoch-2 one cannot be read, then is FAILED; the sweep
    goes on and confirms only the plain cell."""
    epoch_log = tmp_path / "epochs.log"
    path = write_sweep(tmp_path, "faults", (
        f"trial: {{epochs: 4, seconds_per_epoch: 0.2, corrupt_checkpoint_at_epoch: 2, epoch_log: '{epoch_log}'}}\n"
        "grid: {fail_at_epoch: [0, 3], diverge_at_epoch: [0, 2]}\n"
        "search: {trials_per_cell: 1, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\n"
        "scheduler: {type: none}\nseeds: [1]\nmax_failures: 1\n"))
    loaded = load_spec(path)
    cell = {(c.values["fail_at_epoch"], c.values["diverge_at_epoch"]): c.id for c in expand_cells(loaded.spec)}
    failing = f"{cell[(3, 0)]}-search-000"
    outcome = run_sweep(loaded, address=None)
    assert (outcome.errors, outcome.stopped) == (1, False)

    # Two attempts, the retry from the epoch-1 checkpoint (the epoch-2 one is corrupt).
    attempts = [(epoch, start) for key, epoch, start, _ in epoch_rows(epoch_log) if key == failing]
    assert attempts == [(1, 0), (2, 0), (3, 0), (2, 1), (3, 1)], attempts

    trials = {t.key: t for t in read_trials(load_sweep_dir(loaded.sweep_dir))}
    statuses = {key: t.status for key, t in trials.items()}
    assert statuses == {f"{cell[(0, 0)]}-search-000": "finished", f"{cell[(0, 0)]}-confirm-seed1": "finished",
                      f"{cell[(0, 2)]}-search-000": "diverged", failing: "failed",
                      f"{cell[(3, 2)]}-search-000": "diverged"}, statuses
    message = "RuntimeError: stand-in failure at epoch 3"
    assert trials[failing].error == message

    runs = trial_runs(path)
    assert runs[failing].info.status == "FAILED" and runs[failing].data.tags["error"] == message
    assert {k: r.info.status for k, r in runs.items() if k != failing} == {k: "FINISHED" for k in statuses if k != failing}
    assert runs[f"{cell[(0, 2)]}-search-000"].data.metrics["diverged"] == 1.0

    # In a new process, as a user reads it: no Ray there.
    status = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(loaded.sweep_dir)],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-3000:]
    out = status.stdout
    assert "(2 diverged, 1 failed, 2 finished)" in out, out
    assert f"failed {failing}: {message}" in out
    row = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("c0")}
    assert row[cell[(0, 2)]] == "1/0/1/0" and row[cell[(3, 0)]] == "1/0/0/1", row

    assert main(["report", str(loaded.sweep_dir)]) == 0
    report = loaded.sweep_dir / "report"
    claims = json.loads((report / "claims.json").read_text())
    assert claims["trials_by_status"] == {"finished": 2, "diverged": 2, "failed": 1}
    with open(report / "results.csv") as f:
        errors = {r["key"]: r["error"] for r in csv.DictReader(f)}
    assert errors[failing] == message and not errors[f"{cell[(0, 2)]}-search-000"]
    assert "Failed trials" in (report / "report.html").read_text()


def test_worker_killed_from_outside_is_retried_from_its_checkpoint(tmp_path):
    epoch_log = tmp_path / "epochs.log"
    path = write_sweep(tmp_path, "worker", (
        f"trial: {{epochs: 5, seconds_per_epoch: 0.5, epoch_log: '{epoch_log}'}}\n"
        "search: {trials_per_cell: 1, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\n"
        "scheduler: {type: none}\nseeds: []\n"))
    loaded = load_spec(path)
    killed: list[int] = []

    def kill_worker_at_epoch_3() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = epoch_rows(epoch_log)
            if rows and rows[-1][1] >= 3:
                killed.append(rows[-1][3])
                os.kill(rows[-1][3], signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_worker_at_epoch_3)
    killer.start()
    outcome = run_sweep(loaded, address=None)
    killer.join()
    assert killed and (outcome.errors, outcome.stopped) == (0, False)
    rows = epoch_rows(epoch_log)
    after = [(epoch, start) for _, epoch, start, pid in rows if pid != killed[0]]
    # The new worker went on from a checkpoint the dead one had made (epoch 2 or 3), to the end, once.
    assert after and after[0][1] >= 2 and [e for e, _ in after] == list(range(after[0][1] + 1, 6)), rows
    [trial] = read_trials(load_sweep_dir(loaded.sweep_dir))
    assert trial.status == "finished" and trial.metrics["epoch"] == 5
    [run] = trial_runs(path).values()
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopped_driver_marks_killed_and_resumes(tmp_path, ray_cluster, stop):
    """SIGTERM or Ctrl-C: each running trial goes on to its next checkpoint, the driver ends with 130,
    the unfinished trials' runs and the parent are KILLED; `resume` finishes from those checkpoints."""
    epoch_log = tmp_path / "epochs.log"
    path = write_sweep(tmp_path, "stopped", (
        f"trial: {{epochs: 6, seconds_per_epoch: 1.5, epoch_log: '{epoch_log}'}}\n"
        "grid: {offset: [0.0, 10.0]}\n"
        "search: {trials_per_cell: 2, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\n"
        "scheduler: {type: none}\nseeds: [1]\n"))
    sweep_dir = tmp_path / "runs" / "stopped"
    cli = [sys.executable, "-m", "orchestrator.cli"]
    driver = subprocess.Popen([*cli, "run", str(path), "--address", ray_cluster], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Where each running trial stood: the last epoch the driver logged to MLflow at least 0.5 s ago
    # (its checkpoint is registered just after), so the trial must checkpoint once more after the
    # signal. An epoch logged since may be the one that counts as the next checkpoint.
    client = MlflowClient(load_spec(path).spec.tracking.uri)
    first_seen: dict[tuple[str, int], float] = {}
    deadline = time.monotonic() + 120
    while True:
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        experiment = client.get_experiment_by_name("stopped")
        runs = client.search_runs([experiment.experiment_id], "tags.role = 'trial' and attributes.status = 'RUNNING'") \
            if experiment else []
        now = time.monotonic()
        at_signal = {}
        for run in runs:
            key, epoch = run.data.tags["trial_key"], int(run.data.metrics.get("epoch", 0))
            settled = now - first_seen.setdefault((key, epoch), now) >= 0.5
            at_signal[key] = epoch if settled else epoch - 1
        if any(2 <= epoch < 6 for epoch in at_signal.values()):
            break
        time.sleep(0.1)
    running = set(at_signal)
    driver.send_signal(stop)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == EXIT_STOPPED, err[-3000:]
    assert "Traceback" not in err and "Tuner.restore" not in err, err[-3000:]
    assert f"`dualsweep resume {sweep_dir}` continues" in err
    before_resume = epoch_rows(epoch_log)
    runs = trial_runs(path)
    assert {runs[key].info.status for key in running} == {"KILLED"}
    assert parent_status(path) == "KILLED"

    resumed = subprocess.run([*cli, "resume", str(sweep_dir), "--address", ray_cluster], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = epoch_rows(epoch_log)[len(before_resume):]
    for key in running:
        starts = [start for k, _, start, _ in after if k == key]
        if at_signal[key] <= 0:
            continue  # no checkpoint yet when the signal came: nothing to keep
        # Each trial running at the signal checkpointed once more before the driver ended.
        assert starts and min(starts) >= at_signal[key] + 1, (key, at_signal[key], starts)
    trials = read_trials(load_sweep_dir(sweep_dir))
    assert len(trials) == 6 and {t.status for t in trials} == {"finished"}
    assert {r.info.status for r in trial_runs(path).values()} == {"FINISHED"} and len(trial_runs(path)) == 6
    assert parent_status(path) == "FINISHED"


# --- the MLflow tracking server goes away mid-sweep --------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(directory: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{directory / 'server.db'}",
         "--artifacts-destination", (directory / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.5)


def stop_mlflow_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


class Outage:
    """The tracking server as the driver reaches it, through a loopback relay that can go away
    (connections refused, open ones cut) and come back at once on the same port."""

    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.up()

    def up(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self.accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        # close() alone leaves a socket that another thread blocks on (accept, recv) open in the
        # kernel, still listening or connected: shutdown() wakes those threads and ends it.
        for sock in (self.listener, *self.connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # a connection the other side had closed already
            sock.close()
        self.connections.clear()

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            backend = socket.create_connection(("127.0.0.1", self.backend_port))
            self.connections += [client, backend]
            for source, target in ((client, backend), (backend, client)):
                threading.Thread(target=self.pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.close()
                except OSError:
                    pass


@pytest.mark.parametrize("back", ["while running", "at resume"])
def test_mlflow_server_down_mid_sweep_loses_nothing(tmp_path, ray_cluster, back):
    """The tracking server stops while trials run: the sweep goes on with one warning; what it could
    not write is written once the server is back, by the same driver or by `resume` after a kill."""
    server = start_mlflow_server(tmp_path, free_port())
    outage = Outage(int(server.args[server.args.index("--port") + 1]))
    epoch_log = tmp_path / "epochs.log"
    path = tmp_path / "outage.yaml"
    path.write_text(
        f"name: outage\ntrainable: stand_in\nstorage: {tmp_path / 'runs'}\n"
        f"tracking: {{uri: 'http://127.0.0.1:{outage.port}'}}\n"
        f"trial: {{epochs: 5, seconds_per_epoch: 0.5, epoch_log: '{epoch_log}'}}\n"
        "grid: {offset: [0.0, 10.0]}\n"
        "search: {trials_per_cell: 2, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\n"
        "scheduler: {type: none}\nseeds: [1]\n")
    cli = [sys.executable, "-m", "orchestrator.cli"]
    driver = subprocess.Popen([*cli, "run", str(path), "--address", ray_cluster], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(epoch_rows(epoch_log)) < 4:
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
            time.sleep(0.1)
        outage.down()
        down_at = len(epoch_rows(epoch_log))
        # The sweep goes on: a trial ends and others run while the server cannot be reached.
        while len(epoch_rows(epoch_log)) < down_at + 8:
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
            time.sleep(0.1)
        if back == "at resume":
            driver.kill()
            driver.communicate()
            outage.up()
            resumed = subprocess.run([*cli, "resume", str(tmp_path / "runs" / "outage"), "--address", ray_cluster],
                                     cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert resumed.returncode == 0, resumed.stderr[-3000:]
        else:
            outage.up()
            _, err = driver.communicate(timeout=300)
            assert driver.returncode == 0, err[-3000:]
            assert err.count("cannot be reached") == 1 and "Traceback" not in err, err[-3000:]
            assert "MLflow writes wait" not in err, err[-3000:]

        client = MlflowClient(f"http://127.0.0.1:{outage.port}")
        experiment = client.get_experiment_by_name("outage").experiment_id
        runs = client.search_runs([experiment], "tags.role = 'trial'")
        assert sorted(r.data.tags["trial_key"] for r in runs) == sorted(
            f"c0{c}-{t}" for c in (0, 1) for t in ("search-000", "search-001", "confirm-seed1"))
        assert {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:  # every epoch logged once
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "knn_acc")]
            assert sorted(steps) == [1, 2, 3, 4, 5], (run.info.run_name, steps)
        [parent] = client.search_runs([experiment], "tags.role = 'sweep'")
        assert parent.info.status == "FINISHED"
    finally:
        if driver.poll() is None:
            driver.kill()
        stop_mlflow_server(server)
