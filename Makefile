# `make test` and `make demo` work on a fresh machine: they create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/dualsweep run sweeps/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/trial_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
