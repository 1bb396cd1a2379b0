"""Shared test set-up: offline settings, and ONE local Ray cluster for every integration test."""
from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Unix socket paths must stay short: Ray keeps its sockets under this directory.
RAY_TEMP_DIR = "/tmp/rayds"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: integration test on the shared local Ray cluster (ray_cluster fixture)")
    config.addinivalue_line("markers", "slow: a claim reproduction of several seconds of whole trials; "
                                       "`make test` runs it, `-m 'not slow'` skips it in a quick loop")
    config.addinivalue_line("markers", "faults: kills, signals and outages of whole sweeps; run by `make test-faults`, "
                                       "not `make test`")
    config.addinivalue_line("markers", "scale: data-parallel trials (issue 12), being built; run by `make test-scale`")
    config.addinivalue_line("markers", "browser: rendered in headless Chromium; run by `make test-ui`, not `make test`")
    config.addinivalue_line("markers", "cluster: starts its own multi-node Ray cluster; run by `make test-cluster`, "
                                       "not `make test`")


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """Starts Ray once per test session (2 CPUs, no dashboard); yields its address so that
    subprocess drivers (`dualsweep run --address ...`) can join the same cluster."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=RAY_TEMP_DIR, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
