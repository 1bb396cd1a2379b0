"""Sweeps on real multi-node Ray clusters started on this machine (loopback): trials placed on two
nodes, a node lost in the middle, the whole cluster lost and the sweep resumed on a new one from S3
storage (moto's server), `ray job submit`, and the deploy files. Each test starts its own cluster
with `ray start --block` processes (never the shared `ray_cluster` fixture) with token
authentication on, and stops it in a finally block; drivers are `dualsweep` subprocesses.

`make test-cluster` runs these (they need the `cluster` extra); `make test` leaves them out."""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.storage import load_sweep_dir
from orchestrator.sweep_report import read_trials
from trainables.stand_in import read_epoch_log

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY, DUALSWEEP = str(BIN / "ray"), str(BIN / "dualsweep")
# The working directory `ray job submit` uploads is the repository, without what is no source.
JOB_EXCLUDES = [".venv", ".git", ".hypothesis", ".pytest_cache", "sweeps-runs", "mlruns", "mlflow.db"]
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_command(port: int, dashboard_port: int, resource: str) -> list[str]:
    """`ray start --head` as the README and deploy/ray-cluster.yaml give it, on loopback."""
    return [RAY, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            "--num-cpus=1", f"--resources={json.dumps({resource: 1})}"]


def worker_command(address: str, resource: str) -> list[str]:
    return [RAY, "start", f"--address={address}", "--num-cpus=1", f"--resources={json.dumps({resource: 1})}"]


def job_submit_command(dashboard_port: int, sweep: Path) -> list[str]:
    return [RAY, "job", "submit", f"--address=http://127.0.0.1:{dashboard_port}", f"--working-dir={REPO}",
            f"--runtime-env-json={json.dumps({'excludes': JOB_EXCLUDES})}", "--",
            "dualsweep", "run", str(sweep)]


def node_ports() -> list[str]:
    """Every node of a cluster on one machine needs its own ports (and other Ray clusters may run here)."""
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


class LoopbackCluster:
    """A head and worker nodes on this machine, each a `ray start --block` process in its own process
    group with its own temp dir, so that a test can lose one node (its group killed) or all."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}  # custom resource -> its `ray start`
        self.temp_dirs: list[str] = []

    def start(self, resource: str, head: bool) -> None:
        command = (head_command(self.port, self.dashboard_port, resource) + [f"--ray-client-server-port={free_port()}"]
                   if head else worker_command(self.address, resource))
        # Ray's socket paths must stay short.
        temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
        self.temp_dirs.append(temp_dir)
        log = self.logs / f"{resource}.log"
        with open(log, "w") as out:
            self.nodes[resource] = subprocess.Popen(
                [*command, "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--block", *node_ports()],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while STARTED not in log.read_text():
            assert self.nodes[resource].poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)

    def node_ids(self, resources: set[str], timeout_s: float = 90) -> dict[str, str]:
        """Custom resource -> Ray node id, once every node holding one of `resources` has joined."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = subprocess.run([RAY, "status", "-v", f"--address={self.address}"], env=self.env,
                                    capture_output=True, text=True).stdout
            ids = {resource: node for node, usage in re.findall(r"^Node: (\w+) .*?\n((?: .*\n)+)", status, re.M)
                   for resource in resources if f"/1.0 {resource}" in usage}
            if set(ids) == resources:
                return ids
            assert time.monotonic() < deadline, status
            time.sleep(1)

    def lose(self, resource: str) -> None:
        """The node is gone at once, as when its machine fails."""
        process = self.nodes.pop(resource)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for resource in list(self.nodes):
            self.lose(resource)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)

    def node_of(self, pid: int) -> Optional[str]:
        """The node (its custom resource) whose `ray start` this process descends from; None once it ended."""
        starts = {process.pid: resource for resource, process in self.nodes.items()}
        while pid > 1 and pid not in starts:
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                return None
        return starts.get(pid)


@pytest.fixture
def env() -> dict[str, str]:
    """Every process of a test (nodes, drivers, `ray job submit`) holds the cluster's token, as a
    driver on another machine must: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or the token file)."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture
def clusters(env, tmp_path) -> Iterator[Callable[..., LoopbackCluster]]:
    """Starts clusters on demand (a test may need a second one); stops every one at the end."""
    started: list[LoopbackCluster] = []

    def start(*workers: str, head: str = "node_a", environment: Optional[dict] = None) -> LoopbackCluster:
        logs = tmp_path / f"cluster{len(started)}"
        logs.mkdir()
        cluster = LoopbackCluster(environment or env, logs)
        started.append(cluster)
        cluster.start(head, head=True)
        for resource in workers:
            cluster.start(resource, head=False)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


def write_sweep(directory: Path, name: str, trial: str, storage: Optional[str] = None, extra: str = "") -> Path:
    """One cell of stand-in trials, each run to its last epoch: 3 searched, 1 confirmation seed."""
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntrainable: stand_in\nstorage: {storage or directory / 'runs'}\n"
        f"tracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\n"
        f"trial: {{{trial}}}\n"
        "search: {trials_per_cell: 3, params: {x: {type: uniform, low: 0.0, high: 1.0}}}\n"
        f"scheduler: {{type: none}}\nseeds: [1]\n{extra}")
    return path


PLANNED = {"c00-search-000", "c00-search-001", "c00-search-002", "c00-confirm-seed1"}


def dualsweep(*args: str, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([DUALSWEEP, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def trial_runs(tmp_path: Path, sweep: str) -> dict[str, object]:
    """The sweep's MLflow child runs by trial key; fails on a key with two runs."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(sweep)  # named after the sweep
    runs = client.search_runs([experiment.experiment_id], f"tags.sweep = '{sweep}' and tags.role = 'trial'")
    keys = [run.data.tags["trial_key"] for run in runs]
    assert len(keys) == len(set(keys)), sorted(keys)
    return {run.data.tags["trial_key"]: run for run in runs}


def test_trials_land_on_both_nodes(clusters, env, tmp_path):
    cluster = clusters("node_b")
    nodes = cluster.node_ids({"node_a", "node_b"})
    sweep = write_sweep(tmp_path, "two_nodes", "epochs: 8, seconds_per_epoch: 1.0")
    dualsweep("run", str(sweep), "--address", cluster.address, env=env, cwd=tmp_path)
    runs = trial_runs(tmp_path, "two_nodes")
    assert set(runs) == PLANNED
    placed = {key: run.data.tags.get("provenance.ray_node_id") for key, run in runs.items()}
    assert set(placed.values()) == set(nodes.values()), (placed, nodes)


def test_lost_node_trials_retried_on_the_other(clusters, env, tmp_path):
    cluster = clusters("node_b")
    cluster.node_ids({"node_a", "node_b"})
    epoch_log = tmp_path / "epochs.log"
    sweep = write_sweep(tmp_path, "lost_node", f"epochs: 8, seconds_per_epoch: 1.0, epoch_log: '{epoch_log}'",
                        extra="max_failures: 2\n")
    driver = subprocess.Popen([DUALSWEEP, "run", str(sweep), "--address", cluster.address], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Each epoch's process, by node, while it lives; node_b is lost once a trial there has checkpointed twice.
        node_of: dict[int, Optional[str]] = {}
        lost: Optional[str] = None
        deadline = time.monotonic() + 240
        while driver.poll() is None:
            assert time.monotonic() < deadline, "the sweep did not end"
            rows = read_epoch_log(epoch_log)
            for *_, pid in rows:
                if pid not in node_of:
                    node_of[pid] = cluster.node_of(pid)
            on_b = [(key, epoch) for key, _, epoch, _, pid in rows if node_of[pid] == "node_b"]
            if lost is None and on_b and on_b[-1][1] >= 2:
                lost = on_b[-1][0]
                cluster.lose("node_b")
            time.sleep(0.2)
    finally:
        driver.kill()
    assert driver.returncode == 0
    assert lost, "no trial ran on node_b"
    rows = [(epoch, start, node_of[pid]) for key, _, epoch, start, pid in read_epoch_log(epoch_log) if key == lost]
    last_on_b = max(epoch for epoch, _, node in rows if node == "node_b")
    retried = [(epoch, start, node) for epoch, start, node in rows if node != "node_b"]
    # Retried on node_a, from its last checkpoint (which may lag the last epoch by one), to the end.
    assert retried and {node for *_, node in retried} == {"node_a"}, rows
    assert retried[0][1] >= last_on_b - 1 and retried[-1][0] == 8, rows

    trials = read_trials(load_sweep_dir(tmp_path / "runs" / "lost_node"))
    assert sorted(t.key for t in trials) == sorted(PLANNED)
    assert all(t.status in ("finished", "stopped_early") for t in trials), [(t.key, t.status) for t in trials]
    assert {t.key: t.retries for t in trials if t.retries} == {lost: 1}
    assert set(trial_runs(tmp_path, "lost_node")) == PLANNED
    status = dualsweep("status", str(tmp_path / "runs" / "lost_node"), env=env, cwd=tmp_path).stdout
    assert f"retries after failures: 1 ({lost} 1)" in status, status


@pytest.fixture
def s3(env, monkeypatch) -> Iterator[str]:
    """An S3-compatible server on loopback (moto's), reached by every process of the test (this one
    too) through the standard AWS variables; yields the sweeps' storage URI."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        aws = dict(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        env.update(aws)
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.3)
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="lab")
        yield "s3://lab/sweeps"
    finally:
        server.kill()
        server.wait()


def test_cluster_lost_then_resumed_on_a_new_cluster_from_s3(clusters, env, s3, tmp_path):
    """The driver and every node are killed mid-sweep; the sweep's local files are deleted too (as
    on another machine); `dualsweep resume s3://...` on a fresh cluster ends every trial once."""
    epoch_log = tmp_path / "epochs.log"
    sweep = write_sweep(tmp_path, "moved", f"epochs: 6, seconds_per_epoch: 1.0, epoch_log: '{epoch_log}'", storage=s3)
    first = clusters("node_b")
    first.node_ids({"node_a", "node_b"})
    driver = subprocess.Popen([DUALSWEEP, "run", str(sweep), "--address", first.address], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Lost once a trial has finished (long enough ago for Ray's 1 s snapshot) while another runs.
        finished_at: dict[str, float] = {}
        progressed_at: dict[str, tuple[int, float]] = {}
        deadline = time.monotonic() + 240
        while True:
            assert driver.poll() is None, "the sweep ended before the cluster could be lost"
            assert time.monotonic() < deadline, "no moment to lose the cluster came"
            now = time.monotonic()
            for key, _, epoch, _, _ in read_epoch_log(epoch_log):
                if epoch == 6:
                    finished_at.setdefault(key, now)
                if epoch > progressed_at.get(key, (0, 0.0))[0]:
                    progressed_at[key] = (epoch, now)
            running = {k for k, (epoch, at) in progressed_at.items() if epoch >= 2 and now - at < 1.5} - set(finished_at)
            if finished_at and running and now - max(finished_at.values()) > 2.5:
                break
            time.sleep(0.2)
    finally:
        driver.kill()
        driver.wait()
        first.stop()
    before = read_epoch_log(epoch_log)
    shutil.rmtree(tmp_path / "sweeps-runs")

    second = clusters()  # a new cluster, of another shape: one node
    dualsweep("resume", f"{s3}/moved", "--address", second.address, env=env, cwd=tmp_path)

    after = read_epoch_log(epoch_log)[len(before):]
    trials = read_trials(load_sweep_dir(tmp_path / "sweeps-runs" / "moved"))
    assert sorted(t.key for t in trials) == sorted(PLANNED)
    assert all(t.status == "finished" for t in trials), [(t.key, t.status) for t in trials]
    # Finished trials are not run again; interrupted ones go on from their last checkpoint.
    assert not {key for key, *_ in after} & set(finished_at)
    last_before = defaultdict(int)
    for key, _, epoch, _, _ in before:
        last_before[key] = max(last_before[key], epoch)
    continued = {key for key, *_ in after} & set(last_before)
    assert running & continued, (running, continued)
    for key in continued:
        assert min(start for k, _, _, start, _ in after if k == key) >= last_before[key] - 1, (key, after)
    for key in PLANNED:
        assert {epoch for k, _, epoch, _, _ in before + after if k == key} == set(range(1, 7)), key
    assert set(trial_runs(tmp_path, "moved")) == PLANNED
    status = dualsweep("status", f"{s3}/moved", env=env, cwd=tmp_path).stdout
    assert "sweep moved: 4 of 4 planned trials (4 finished)" in status, status


def test_ray_job_submit_runs_a_sweep(clusters, env, tmp_path):
    """`ray job submit --working-dir <repo>` to the head's job server: the job runs `dualsweep run`
    to the end, and `dualsweep status` here finds the sweep in its (shared) storage."""
    cluster = clusters()
    sweep = write_sweep(tmp_path, "submitted", "epochs: 2, seconds_per_epoch: 0.5")
    deadline = time.monotonic() + 120
    while True:  # the head's job agent comes up a little after `ray start` returns
        done = subprocess.run(job_submit_command(cluster.dashboard_port, sweep), env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=400)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    status = dualsweep("status", str(tmp_path / "runs" / "submitted"), env=env, cwd=tmp_path).stdout
    assert "sweep submitted: 4 of 4 planned trials (4 finished)" in status, status


def command_form(command: str) -> tuple[tuple[str, ...], set[str]]:
    """A command's words before its first option, and the names of its options (values left out)."""
    words = shlex.split(command)
    head = tuple(w for w in words[:next((i for i, w in enumerate(words) if w.startswith("-")), len(words))])
    return head, {w.split("=", 1)[0] for w in words if w.startswith("--")}


def form_of_tested(command: list[str]) -> tuple[tuple[str, ...], set[str]]:
    return command_form(shlex.join([Path(command[0]).name, *command[1:]]))


def test_deploy_files_run_the_tested_commands():
    """deploy/ray-cluster.yaml (`ray up`) and deploy/rayjob.yaml (KubeRay) hold the keys their tools
    require, and start Ray and run sweeps with the commands (and options) these tests run."""
    cluster = yaml.safe_load((REPO / "deploy" / "ray-cluster.yaml").read_text())
    assert {"cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands"} <= set(cluster)
    assert cluster["provider"]["type"] and cluster["head_node_type"] in cluster["available_node_types"]
    assert all("node_config" in node and "resources" in node for node in cluster["available_node_types"].values())
    assert any("pip install -e '.[cluster]'" in command for command in cluster["setup_commands"])
    # Ray ships the schema `ray up` validates a cluster YAML against.
    import jsonschema
    import ray.autoscaler

    jsonschema.validate(cluster, json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text()))
    head = form_of_tested(head_command(6379, 8265, "node_a"))
    worker = form_of_tested(worker_command("127.0.0.1:6379", "node_b"))
    for command in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]:
        if command == "ray stop":
            continue
        words, options = command_form(command)
        tested = head if "--head" in options else worker
        # --autoscaling-config is what `ray up` passes its own head; every other option was tested.
        assert words == tested[0] and options - {"--autoscaling-config"} <= tested[1], command

    job = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert {"headGroupSpec", "workerGroupSpecs"} <= set(spec["rayClusterSpec"])
    for group in [spec["rayClusterSpec"]["headGroupSpec"], *spec["rayClusterSpec"]["workerGroupSpecs"]]:
        assert "rayStartParams" in group and group["template"]["spec"]["containers"][0]["image"]
    submitted = job_submit_command(8265, Path("sweeps/quickstart.yaml"))
    entry_words, entry_options = command_form(spec["entrypoint"])
    assert entry_words[:2] == tuple(submitted[submitted.index("--") + 1:][:2]) == ("dualsweep", "run")
    assert (REPO / entry_words[2]).is_file() and entry_options <= {"--storage", "--address"}
