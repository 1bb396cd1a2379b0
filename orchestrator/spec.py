"""The sweep YAML: a typed schema (OmegaConf structured configs), loading with CLI overrides, and
validation that finds every user error before Ray starts. Nothing here imports Ray."""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

SAMPLERS = ("tpe", "random", "grid")
PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
SCHEDULERS = ("asha", "none")
MODES = ("max", "min")
# Sweep names become directory names, MLflow experiment names and Optuna study names.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# Claim ids follow /work/shared/CLAIMS.md: paper letter + claim number (G3, T1, ...).
CLAIM_ID = re.compile(r"[GTJCP][0-9]+")
DEFAULT_STORAGE = "sweeps-runs"
# Storage URIs that Ray Tune reaches through pyarrow's filesystems (file:// is the local one).
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")


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


@dataclass
class ResourcesSpec:
    # Per trial; fractions are allowed (e.g. gpu: 0.25 lets four small trials share a GPU).
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass
class TrackingSpec:
    # MLflow store; None: MLFLOW_TRACKING_URI, else sqlite:///<working dir>/mlflow.db.
    uri: Optional[str] = None
    # None: the sweep's name.
    experiment: Optional[str] = None


@dataclass
class ClaimSpec:
    id: str = MISSING
    statement: str = ""
    # Methods the claim compares; the report issue decides how a verdict is computed.
    methods: list[str] = field(default_factory=list)


@dataclass
class SweepSpec:
    name: str = MISSING
    description: str = ""
    # What one trial runs: ssl (trainables.train) or synthetic (a cheap analytic stand-in for tests
    # and overhead benchmarks).
    trainable: str = "ssl"
    # The base trial config; grid and search keys are set on top of it.
    trial: dict[str, Any] = field(default_factory=dict)
    # Dotted trial-config keys -> lists; their cartesian product is the set of cells.
    grid: dict[str, Any] = field(default_factory=dict)
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    # Confirmation runs: each cell's best search config is re-run with every one of these seeds.
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    metric: str = "knn_acc"
    mode: str = "max"
    # Seeds the Optuna samplers (reseeded per suggestion from this, the cell and the index).
    seed: int = 0
    # Trials running at once; 0: as many as the cluster's resources fit.
    max_concurrent: int = 0
    # Folder (local or shared, e.g. NFS) under which the sweep directory <name>/ is made, or a
    # storage URI such as s3://bucket/sweeps; None: ./sweeps-runs.
    storage: Optional[str] = None
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    claims: list[ClaimSpec] = field(default_factory=list)


class SpecError(Exception):
    """Every problem found in a sweep file, one line each; the CLI prints them and exits 2."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class LoadedSpec:
    spec: SweepSpec
    source: str  # the file (and overrides) it came from, for messages
    yaml_text: str  # the resolved, validated spec as YAML: what the sweep directory keeps

    @property
    def remote_dir(self) -> Optional[str]:
        """With a storage URI: where Ray keeps the experiment and checkpoints, and a spec copy."""
        return f"{self.spec.storage}/{self.spec.name}" if is_uri(self.spec.storage) else None

    @property
    def sweep_dir(self) -> Path:
        """The sweep's local directory: its spec copy and Optuna studies, and Ray's experiment unless
        the storage is a URI (then under ./sweeps-runs of the directory the command runs in)."""
        local = DEFAULT_STORAGE if is_uri(self.spec.storage) else self.spec.storage or DEFAULT_STORAGE
        return Path(local).resolve() / self.spec.name

    @property
    def tune_storage(self) -> str:
        """Ray Tune's storage_path."""
        return self.remote_dir or str(self.sweep_dir)


def is_uri(storage: Optional[str]) -> bool:
    return bool(storage) and "://" in storage


class Problems:
    """Collects one-line problems as `<source>: <key>: <what is allowed>`."""

    def __init__(self, source: str):
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        line = f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}"
        if line not in self.lines:
            self.lines.append(line)

    def raise_if_any(self) -> None:
        if self.lines:
            raise SpecError(self.lines)


def load_spec(path: str | Path, overrides: list[str] = (), cluster_address: str | None = None) -> LoadedSpec:
    """Read, merge overrides, resolve interpolations, type-check and validate. Raises SpecError."""
    path = Path(path)
    problems = Problems(str(path))
    raw = read_yaml(path, problems)
    problems.raise_if_any()
    override_raw = parse_overrides(overrides, problems)
    problems.raise_if_any()
    merged = OmegaConf.merge(normalize(raw), normalize(override_raw))
    try:
        resolved = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        problems.add(getattr(exc, "full_key", "") or "", f"cannot resolve: {first_line(exc)}")
        problems.raise_if_any()
    typed = typed_merge(resolved, problems)
    if OmegaConf.missing_keys(typed):
        problems.raise_if_any()
    # A section that failed to merge keeps its (valid) defaults, so the checks below still run
    # and report the other sections' problems too.
    spec: SweepSpec = OmegaConf.to_object(typed)
    check_spec(spec, problems, local_machine=not (cluster_address or os.environ.get("RAY_ADDRESS")))
    if cells_can_be_expanded(spec):
        from orchestrator.cells import check_cells

        check_cells(spec, problems)
    problems.raise_if_any()
    finalize(spec)
    return LoadedSpec(spec, str(path), OmegaConf.to_yaml(OmegaConf.structured(spec)))


def spec_from_yaml_text(text: str, source: str) -> LoadedSpec:
    """A sweep directory's saved spec: already validated, so only typed, not re-checked."""
    spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweepSpec), OmegaConf.create(text)))
    return LoadedSpec(spec, source, text)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read_yaml(path: Path, problems: Problems) -> dict:
    if not path.is_file():
        problems.add("", "no such file")
        return {}
    try:
        # OmegaConf's YAML loader, unlike PyYAML's, reads 1e-3 as a float.
        loaded = OmegaConf.load(path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problems.add("", f"not valid YAML: {where}{exc.problem}")
        return {}
    except (yaml.YAMLError, UnicodeDecodeError, OmegaConfBaseException) as exc:
        problems.add("", f"not valid YAML: {first_line(exc)}")
        return {}
    if not OmegaConf.is_dict(loaded):
        problems.add("", "the top level must be a mapping of keys (name, trial, grid, search, ...), got a list")
        return {}
    return OmegaConf.to_container(loaded, resolve=False)


def parse_overrides(pairs: list[str], problems: Problems) -> dict:
    for pair in pairs:
        if "=" not in pair or pair.startswith("="):
            problems.add(f"override {pair!r}", "expected key=value with a dotted key, e.g. search.trials_per_cell=4")
    if problems.lines:
        return {}
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(pairs)))
    except OmegaConfBaseException as exc:
        problems.add("overrides", first_line(exc))
        return {}


def normalize(raw: dict) -> dict:
    """Grid axes and search parameters may be written nested (`optim: {lr: ...}`) or dotted
    (`optim.lr: ...`), and CLI overrides always arrive nested: bring both to dotted keys."""
    raw = dict(raw)
    if isinstance(raw.get("grid"), dict):
        raw["grid"] = dotted(raw["grid"], is_leaf=lambda v: not isinstance(v, dict))
    search = raw.get("search")
    if isinstance(search, dict) and isinstance(search.get("params"), dict):
        param_fields = {f.name for f in dataclasses.fields(SearchParam)}
        raw["search"] = dict(search, params=dotted(
            search["params"], is_leaf=lambda v: not isinstance(v, dict) or bool(param_fields & set(v))
        ))
    return raw


def dotted(tree: dict, is_leaf, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if is_leaf(value) or not value:
            flat[name] = value
        else:
            flat.update(dotted(value, is_leaf, name + "."))
    return flat


def typed_merge(resolved: dict, problems: Problems):
    """Merge section by section so that one bad section does not hide the errors of the others."""
    config = OmegaConf.structured(SweepSpec)
    allowed = [f.name for f in dataclasses.fields(SweepSpec)]
    for key, value in resolved.items():
        if key not in allowed:
            problems.add(str(key), f"unknown key{suggest(str(key), allowed)}; allowed: {', '.join(allowed)}")
            continue
        try:
            config = OmegaConf.merge(config, {key: value})
        except OmegaConfBaseException as exc:
            problems.add(*omegaconf_problem(exc))
    if OmegaConf.is_missing(config, "name"):
        problems.add("name", "required: a short name for the sweep (letters, digits, '.', '_', '-')")
    for index, claim in enumerate(config.claims):
        if OmegaConf.is_missing(claim, "id"):
            problems.add(f"claims[{index}].id", "required: a claim id from CLAIMS.md such as G3")
    for key, param in config.search.params.items():
        if OmegaConf.is_missing(param, "type"):
            problems.add(f"search.params.{key}.type", f"required; allowed: {', '.join(PARAM_TYPES)}")
    return config


def omegaconf_problem(exc: OmegaConfBaseException) -> tuple[str, str]:
    key = getattr(exc, "full_key", "") or ""
    parent = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(parent):
        names = [f.name for f in dataclasses.fields(parent)]
        return key, f"unknown key{suggest(str(exc.key), names)}; allowed here: {', '.join(names)}"
    message = first_line(exc)
    if "could not be converted to" in message or "incompatible with type" in message:
        message = f"wrong type: {message}"
    return key, message


def suggest(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown(what: str, value: str, allowed: list[str]) -> str:
    return f"unknown {what} {value!r}{suggest(value, allowed)}; allowed: {', '.join(allowed)}"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_spec(spec: SweepSpec, problems: Problems, local_machine: bool) -> None:
    """Checks of the sweep's own fields; the trial configs of the cells are checked in cells.py."""
    from orchestrator.trainable_kinds import TRAINABLES

    if not SAFE_NAME.fullmatch(spec.name) or spec.name in (".", ".."):
        problems.add("name", f"{spec.name!r} is not a safe name: use letters, digits, '.', '_', '-' "
                             "(no path separators or spaces), at most 100 characters")
    if spec.trainable not in TRAINABLES:
        problems.add("trainable", unknown("value", spec.trainable, list(TRAINABLES)))
        return
    kind = TRAINABLES[spec.trainable]
    if spec.mode not in MODES:
        problems.add("mode", unknown("value", spec.mode, list(MODES)))
    if spec.metric not in kind.metrics:
        problems.add("metric", f"unknown metric {spec.metric!r}{suggest(spec.metric, list(kind.metrics))}; "
                               f"a {spec.trainable} trial reports: {', '.join(kind.metrics)}")
    elif spec.scheduler.type == "asha" and spec.metric in kind.final_only_metrics:
        problems.add("metric", f"{spec.metric} is only reported at a trial's last epoch, so ASHA cannot compare "
                               "trials on it; use an epoch metric or scheduler.type=none")
    check_grid(spec, problems)
    check_search(spec, problems)
    check_scheduler(spec, problems)
    if len(set(spec.seeds)) != len(spec.seeds):
        problems.add("seeds", f"repeated seed in {spec.seeds}; each confirmation seed once")
    check_resources(spec, problems, local_machine)
    if spec.max_concurrent < 0:
        problems.add("max_concurrent", f"must be >= 0 (0: as many trials as fit), got {spec.max_concurrent}")
    if is_uri(spec.storage):
        scheme, _, rest = spec.storage.partition("://")
        if scheme not in STORAGE_SCHEMES:
            problems.add("storage", unknown("URI scheme", scheme, list(STORAGE_SCHEMES)))
        elif not rest.strip("/"):
            problems.add("storage", f"{spec.storage!r} names no bucket or folder")
    check_claims(spec, problems)


def check_grid(spec: SweepSpec, problems: Problems) -> None:
    for key, values in spec.grid.items():
        if not isinstance(values, list):
            problems.add(f"grid.{key}", f"must be a list of values (one cell per value), got {values!r}")
        elif not values:
            problems.add(f"grid.{key}", "empty axis: give at least one value")
        elif not is_scalar_list(values):
            problems.add(f"grid.{key}", "values must be scalars (numbers, strings, booleans)")


def is_scalar_list(values: Any) -> bool:
    return isinstance(values, list) and all(not isinstance(v, (dict, list)) for v in values)


def cells_can_be_expanded(spec: SweepSpec) -> bool:
    """Cells (and so their trial configs) exist only for a known trainable and non-empty scalar axes."""
    from orchestrator.trainable_kinds import TRAINABLES

    return spec.trainable in TRAINABLES and all(values and is_scalar_list(values) for values in spec.grid.values())


def check_search(spec: SweepSpec, problems: Problems) -> None:
    from trainables.methods import METHODS

    search = spec.search
    if search.sampler not in SAMPLERS:
        problems.add("search.sampler", unknown("value", search.sampler, list(SAMPLERS)))
    if search.trials_per_cell < 1:
        problems.add("search.trials_per_cell", f"must be >= 1, got {search.trials_per_cell}")
    for key, p in search.params.items():
        where = f"search.params.{key}"
        if key in spec.grid:
            problems.add(where, f"{key} is also a grid axis; a key is either searched or gridded, not both")
        if p.type not in PARAM_TYPES:
            problems.add(f"{where}.type", unknown("value", p.type, list(PARAM_TYPES)))
            continue
        for subkey, message in param_problems(p):
            problems.add(f"{where}{subkey}", message)
        for method in p.methods:
            if method not in METHODS:
                problems.add(f"{where}.methods", unknown("method", method, METHODS.names()))
    if search.sampler == "grid":
        not_choice = [k for k, p in search.params.items() if p.type != "choice"]
        if not_choice:
            problems.add("search.sampler", f"grid needs every search parameter to be a choice; not: {', '.join(not_choice)}")
        elif search.params:
            size = math.prod(len(p.choices or []) for p in search.params.values())
            if search.trials_per_cell > size:
                problems.add("search.trials_per_cell", f"{search.trials_per_cell} exceeds the {size} points of the grid sampler")


def param_problems(p: SearchParam) -> list[tuple[str, str]]:
    """(".low" or "", message) for each problem of one search parameter's distribution."""
    if p.type == "choice":
        found = []
        if not p.choices:
            found.append((".choices", "a choice parameter needs a non-empty list of choices"))
        if p.low is not None or p.high is not None:
            found.append(("", "a choice parameter takes choices, not low/high"))
        return found
    if p.choices is not None:
        return [("", f"a {p.type} parameter takes low and high, not choices")]
    if p.low is None or p.high is None:
        return [("", f"a {p.type} parameter needs both low and high")]
    if not (is_number(p.low) and is_number(p.high)):
        return [("", "low and high must be finite numbers")]
    if p.low >= p.high:
        return [("", f"low must be < high, got low={p.low} high={p.high}")]
    if p.type == "loguniform" and p.low <= 0:
        return [(".low", f"loguniform needs low > 0, got {p.low}")]
    if p.type == "int" and (p.low != int(p.low) or p.high != int(p.high)):
        return [("", f"an int parameter needs whole-number low and high, got {p.low}, {p.high}")]
    return []


def check_scheduler(spec: SweepSpec, problems: Problems) -> None:
    s = spec.scheduler
    if s.type not in SCHEDULERS:
        problems.add("scheduler.type", unknown("value", s.type, list(SCHEDULERS)))
    if s.grace_period < 1:
        problems.add("scheduler.grace_period", f"must be >= 1 epoch, got {s.grace_period}")
    if s.reduction_factor <= 1:
        problems.add("scheduler.reduction_factor", f"must be > 1, got {s.reduction_factor}")


def check_resources(spec: SweepSpec, problems: Problems, local_machine: bool) -> None:
    r = spec.resources
    if r.cpu <= 0:
        problems.add("resources.cpu", f"must be > 0 (fractions allowed), got {r.cpu}")
    if r.gpu < 0:
        problems.add("resources.gpu", f"must be >= 0, got {r.gpu}")
    elif r.gpu > 1 and r.gpu != int(r.gpu):
        problems.add("resources.gpu", f"above 1 a trial takes whole GPUs, got {r.gpu}")
        return
    if not local_machine:
        return  # a cluster's resources are only known once connected
    cpus = os.cpu_count() or 1
    if r.cpu > cpus:
        problems.add("resources.cpu", f"{r.cpu} CPUs per trial, but this machine has {cpus}; "
                                      "use --address to run on a cluster")
    if r.gpu > 0:
        import torch

        gpus = torch.cuda.device_count()
        if r.gpu > gpus:
            problems.add("resources.gpu", f"{r.gpu} GPUs per trial, but this machine has {gpus}; "
                                          "use resources.gpu=0 or --address to run on a cluster")


def check_claims(spec: SweepSpec, problems: Problems) -> None:
    from trainables.methods import METHODS

    seen: set[str] = set()
    for index, claim in enumerate(spec.claims):
        if not CLAIM_ID.fullmatch(claim.id):
            problems.add(f"claims[{index}].id", f"{claim.id!r} is not a claim id: a paper letter (G, T, J, C, P) "
                                                "and a number, as in CLAIMS.md")
        if claim.id in seen:
            problems.add(f"claims[{index}].id", f"{claim.id} is declared twice")
        seen.add(claim.id)
        for method in claim.methods:
            if method not in METHODS:
                problems.add(f"claims[{index}].methods", unknown("method", method, METHODS.names()))


def finalize(spec: SweepSpec) -> None:
    """Pin everything that depends on where the command runs, so that a resume elsewhere uses the
    same sweep directory and MLflow store."""
    if is_uri(spec.storage):
        spec.storage = spec.storage.rstrip("/")
    else:
        spec.storage = str(Path(spec.storage or DEFAULT_STORAGE).resolve())
    spec.tracking.uri = tracking_uri(spec.tracking.uri)
    spec.tracking.experiment = spec.tracking.experiment or spec.name


def tracking_uri(uri: str | None) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        # MLflow resolves a relative sqlite path against each process's working directory.
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri
