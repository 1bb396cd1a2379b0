"""The sweep YAML's schema: OmegaConf structured configs with their defaults, and the closed sets
of values its keys take. Loading is in loading.py, the checks in checks.py."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from orchestrator.report.claims import ClaimSpec

SAMPLERS = ("tpe", "random", "grid")
PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
SCHEDULERS = ("asha", "none")
MODES = ("max", "min")
# Sweep names become directory names, MLflow experiment names and Optuna study names.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
NAME_RULE = ("a letter or digit, then letters, digits, '.', '_', '-' (no path separators, spaces or control "
             "characters), at most 100 characters")
DEFAULT_STORAGE = "sweeps-runs"
# Storage URIs that Ray Tune reaches through pyarrow's filesystems (file:// is the local one).
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")


def is_uri(storage: Optional[str]) -> bool:
    return bool(storage) and "://" in storage


@dataclass
class SearchParam:
    # uniform | loguniform | int (low..high inclusive) | choice
    type: str = MISSING
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Optional[list[Any]] = None
    # Only cells whose method is listed search this parameter; empty: every cell.
    methods: list[str] = field(default_factory=list)


@dataclass
class SearchSpec:
    sampler: str = "tpe"
    trials_per_cell: int = 8
    # Dotted trial-config keys ("optim.lr") -> distribution.
    params: dict[str, SearchParam] = field(default_factory=dict)


@dataclass
class SchedulerSpec:
    # asha: early stopping within a cell during the search phase; none: every trial runs to the end.
    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0


# What the Tune trial of a data-parallel trial asks for itself: it only waits for its workers and
# hands their reports to Tune.
TRIAL_DRIVER_CPU = 0.1


@dataclass
class ResourcesSpec:
    # Per trial, or per worker of a data-parallel trial; fractions are allowed (e.g. gpu: 0.25 lets
    # four small trials share a GPU).
    cpu: float = 1.0
    gpu: float = 0.0
    # Data-parallel processes per trial (a Ray Train run inside the Tune trial), each with `cpu`
    # and `gpu`; sets the trial config's `workers`.
    workers: int = 1

    def per_trial(self) -> tuple[float, float]:
        """(CPUs, GPUs) that one trial holds: its own, or its workers' and its driver's."""
        if self.workers == 1:
            return self.cpu, self.gpu
        return TRIAL_DRIVER_CPU + self.workers * self.cpu, self.workers * self.gpu


@dataclass
class ConfirmSpec:
    # Seeds until decided: after the first confirmation round (`seeds`), the cells of every claim still
    # inconclusive get one more seed per round until each claim is decided or max_seeds is reached
    # (orchestrator.report.rounds). False: every cell runs exactly `seeds`.
    until_decided: bool = False
    # With until_decided: the most confirmation seeds per cell, the first round's included (required).
    max_seeds: Optional[int] = None
    # The stated error rate of each verdict; with until_decided it is divided over the possible looks.
    alpha: float = 0.05


@dataclass
class TrackingSpec:
    # MLflow store; None: MLFLOW_TRACKING_URI, else sqlite:///<working dir>/mlflow.db.
    uri: Optional[str] = None
    # None: the sweep's name.
    experiment: Optional[str] = None


@dataclass
class SweepSpec:
    name: str = MISSING
    description: str = ""
    # One definition, several sizes: `sizes` holds named sets of values (cpu: {epochs: 20, ...},
    # cluster: {...}) that the rest of the file reads through interpolation, e.g.
    # `epochs: ${sizes.${scale}.epochs}`; `scale` picks one (`dualsweep run x.yaml scale=cluster`).
    scale: Optional[str] = None
    sizes: dict[str, Any] = field(default_factory=dict)
    # What one trial runs: a kind of trainables.contract.TRIAL_KINDS (ssl, or stand_in: a cheap
    # analytic trial for orchestrator tests and overhead benchmarks).
    trainable: str = "ssl"
    # The base trial config; grid and search keys are set on top of it.
    trial: dict[str, Any] = field(default_factory=dict)
    # Dotted trial-config keys -> lists; their cartesian product is the set of cells.
    grid: dict[str, Any] = field(default_factory=dict)
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    # Confirmation runs: each cell's best search config is re-run with every one of these seeds (with
    # confirm.until_decided: the first round).
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    confirm: ConfirmSpec = field(default_factory=ConfirmSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    metric: str = "knn_acc"
    mode: str = "max"
    # Seeds the Optuna samplers (reseeded per suggestion from this, the cell and the index).
    seed: int = 0
    # Trials running at once; 0: as many as the cluster's resources fit.
    max_concurrent: int = 0
    # Retries of a trial that raised (or whose worker died), each from its last checkpoint; after
    # that it is FAILED and the sweep goes on. -1: retry without limit.
    max_failures: int = 1
    # Folder (local or shared, e.g. NFS) under which the sweep directory <name>/ is made, or a
    # storage URI such as s3://bucket/sweeps; None: ./sweeps-runs.
    storage: Optional[str] = None
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    # What the sweep tests: claims as data (orchestrator.report.claims), judged by `dualsweep report`.
    claims: list[ClaimSpec] = field(default_factory=list)
