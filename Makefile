# `make test` and `make demo` work on a fresh machine: they create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install demo test test-ui test-faults test-scale test-cluster bench load clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A fresh sweep name each time, so that the demo can be run again; `dualsweep status <name>` reads it.
demo: install
	$(BIN)/dualsweep run sweeps/quickstart.yaml name=quickstart-$$(date +%Y%m%d-%H%M%S)

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not browser and not cluster and not faults and not scale" tests

# The pages in a real browser: Debian's Chromium and ChromeDriver, installed when missing.
test-ui: install
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && apt-get install -y -q chromium chromium-driver)
	$(BIN)/python -m pytest -q -m browser tests

# Kills, signals, failing and corrupt trials, an MLflow outage: real Ray, MLflow and Optuna, minutes.
test-faults: install
	$(BIN)/python -m pytest -q -m faults tests

# Data-parallel trials (Ray Train inside Tune trials, gloo on CPU): 2-process equivalence, a sweep
# of 2-worker trials with a worker killed; a few minutes.
test-scale: install
	$(BIN)/python -m pytest -q -m scale tests

# Multi-node Ray clusters started on this machine (loopback), job submission and S3 storage (moto):
# needs the `cluster` extra (ray[default], moto).
test-cluster: install
	$(BIN)/python -m pip install -q -e '.[dev,cluster]'
	$(BIN)/python -m pytest -q -m cluster tests/test_cluster.py

bench: install
	$(BIN)/python benchmarks/trial_throughput.py
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/input_pipeline.py

# A 1,000-trial sweep of a trivial trial against a 20-trial one (real Ray, MLflow, Optuna); fails
# when a trial of the large sweep costs more than twice as much as one of the small sweep.
load: install
	$(BIN)/python benchmarks/load_test.py

clean:
	rm -rf $(VENV) .pytest_cache
