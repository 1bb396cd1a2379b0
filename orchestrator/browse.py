"""`dualsweep ui`: the sweep's MLflow UI and optuna-dashboard side by side, each on a free port of
the loopback interface unless told otherwise, until Ctrl-C or SIGTERM stops both."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class Servers:
    mlflow_url: str
    runs_url: Optional[str]  # the sweep's runs page, where the parent run holds its trials
    dashboard_url: Optional[str]
    processes: list[subprocess.Popen]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(tracking_uri: str, host: str, mlflow_port: int, experiment_id: Optional[str],
          optuna_url: Optional[str], dashboard_port: int) -> Servers:
    """Starts the servers (a port of 0: a free one) and returns their URLs at once."""
    mlflow_port = mlflow_port or free_port(host)
    bin_dir = Path(sys.executable).parent
    # One worker: a personal UI; MLflow's default of 4 takes a minute to start on a small machine.
    processes = [subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
                                   "--host", host, "--port", str(mlflow_port), "--workers", "1"])]
    mlflow_url = f"http://{host}:{mlflow_port}"
    runs_url = f"{mlflow_url}/#/experiments/{experiment_id}/runs" if experiment_id else None
    dashboard_url = None
    if optuna_url:
        dashboard_port = dashboard_port or free_port(host)
        processes.append(subprocess.Popen([str(bin_dir / "optuna-dashboard"), optuna_url, "--host", host,
                                           "--port", str(dashboard_port), "--quiet"]))
        dashboard_url = f"http://{host}:{dashboard_port}"
    return Servers(mlflow_url, runs_url, dashboard_url, processes)


def serve_until_stopped(servers: Servers) -> int:
    """Waits until a server exits or this process is asked to stop; then stops the others."""
    stop = {"asked": False}

    def ask(signum, frame) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGTERM, ask)
    try:
        while not stop["asked"] and all(p.poll() is None for p in servers.processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for process in servers.processes:
        if process.poll() is None:
            process.terminate()
    for process in servers.processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0
