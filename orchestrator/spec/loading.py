"""Reading a sweep YAML: OmegaConf loads it, merges command-line overrides, resolves interpolations
and types it against the schema, section by section so that one bad section does not hide the
others' problems; then every check runs (checks.py). Nothing here imports Ray."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from orchestrator.messages import Problems, did_you_mean, first_line, unknown_value
from orchestrator.overrides import OverrideError, dotted, parse_overrides
from orchestrator.report.model import percent
from orchestrator.spec.cells import expand_cells
from orchestrator.spec.checks import check_spec
from orchestrator.spec.cost import cost_lines
from orchestrator.spec.plan import max_seeds, planned_trials, sweep_confidence, sweep_looks
from orchestrator.spec.schema import DEFAULT_STORAGE, PARAM_TYPES, SearchParam, SweepSpec, is_uri
from trainables.config import merge_problem, scalar_list_problems


@dataclass
class LoadedSpec:
    spec: SweepSpec
    source: str  # the file (and overrides) it came from, for messages
    yaml_text: str  # the resolved, validated spec as YAML: what the sweep directory keeps
    # A sweep read back from its directory keeps its local files there, whatever its spec says.
    directory: Optional[Path] = None

    @property
    def remote_dir(self) -> Optional[str]:
        """With a storage URI: where Ray keeps the experiment and checkpoints, and a spec copy."""
        return f"{self.spec.storage}/{self.spec.name}" if is_uri(self.spec.storage) else None

    @property
    def sweep_dir(self) -> Path:
        """The sweep's local directory: its spec copy and Optuna studies, and Ray's experiment unless
        the storage is a URI (then under ./sweeps-runs of the directory the command runs in)."""
        if self.directory:
            return self.directory
        local = DEFAULT_STORAGE if is_uri(self.spec.storage) else self.spec.storage or DEFAULT_STORAGE
        return Path(local).resolve() / self.spec.name

    @property
    def tune_storage(self) -> str:
        """Ray Tune's storage_path."""
        return self.remote_dir or str(self.sweep_dir)

    def describe(self) -> str:
        """The plan: cells, trial counts (the worst case with seeds until decided), where everything
        goes, and the expected device-hours per cell and in total."""
        spec = self.spec
        cells = expand_cells(spec)
        most = max_seeds(spec)
        if most is None:
            counts = f"{len(spec.seeds)} confirmation trials) = {planned_trials(spec, cells)} trials"
        else:
            counts = f"{len(spec.seeds)} to {most} confirmation trials) = at most {planned_trials(spec, cells)} trials"
        lines = [f"sweep {spec.name}: {len(cells)} cells x ({spec.search.trials_per_cell} search + {counts}"]
        if most is not None:
            lines.append(f"  seeds until decided: after the first {len(spec.seeds)} seeds, one more per round for the "
                         f"cells of inconclusive claims, at most {most} per cell; each look judges at "
                         f"{percent(sweep_confidence(spec))} (alpha {spec.confirm.alpha:g} over {sweep_looks(spec)} "
                         "looks)")
        lines.append(f"  sweep directory {self.sweep_dir}"
                     + (f"; Ray's experiment in {self.remote_dir}" if self.remote_dir else ""))
        lines.append(f"  MLflow {spec.tracking.uri} (experiment {spec.tracking.experiment})")
        lines += [f"  {cell.id}  {cell.label}  [{cell.family}]" for cell in cells]
        lines += cost_lines(spec, cells)
        return "\n".join(lines)


def load_spec(path: str | Path, overrides: list[str] = (), cluster_address: str | None = None) -> LoadedSpec:
    """Read, merge overrides, resolve interpolations, type-check and validate. Raises SpecError."""
    path = Path(path)
    problems = Problems(str(path))
    raw = read_yaml(path, problems)
    problems.raise_if_any()
    try:
        override_raw = parse_overrides(list(overrides), example="search.trials_per_cell=4")
    except OverrideError as exc:
        problems.add("", str(exc))
        problems.raise_if_any()
    try:
        merged = OmegaConf.merge(normalize(raw), normalize(override_raw))
    except TypeError as exc:
        located = merge_problem(OmegaConf.create(normalize(raw)), normalize(override_raw))
        problems.add(*located or ("", first_line(exc)))
        problems.raise_if_any()
    check_scale(merged, problems)
    problems.raise_if_any()
    try:
        resolved = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        problems.add(getattr(exc, "full_key", "") or "", f"cannot resolve: {first_line(exc)}")
        problems.raise_if_any()
    typed = typed_merge(resolved, problems)
    if OmegaConf.missing_keys(typed):
        problems.raise_if_any()
    # A section that failed to merge keeps its (valid) defaults, so the checks still run and report
    # the other sections' problems too.
    spec: SweepSpec = OmegaConf.to_object(typed)
    for key, message in scalar_list_problems(spec):
        problems.add(key, message)
    problems.raise_if_any()
    check_spec(spec, problems, local_machine=not (cluster_address or os.environ.get("RAY_ADDRESS")))
    problems.raise_if_any()
    finalize(spec)
    return LoadedSpec(spec, str(path), OmegaConf.to_yaml(OmegaConf.structured(spec)))


def check_scale(merged, problems: Problems) -> None:
    """`scale` must name one of `sizes` before anything reads `${sizes.${scale}...}`."""
    sizes, scale = merged.get("sizes"), merged.get("scale")
    if not sizes or not OmegaConf.is_dict(sizes):
        if scale is not None:
            problems.add("scale", f"{scale!r} names a size, but the sweep has no sizes: section")
        return
    names = [str(name) for name in sizes]
    if scale is None:
        problems.add("scale", f"required with sizes: one of {', '.join(names)}, e.g. scale={names[0]}")
    elif str(scale) not in names:
        problems.add("scale", unknown_value("size", scale, names))


def spec_from_yaml_text(text: str, source: str) -> LoadedSpec:
    """A sweep directory's saved spec: already validated, so only typed, not re-checked."""
    spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweepSpec), OmegaConf.create(text)))
    return LoadedSpec(spec, source, text)


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


def normalize(raw: dict) -> dict:
    """Grid axes and search parameters may be written nested (`optim: {lr: ...}`) or dotted
    (`optim.lr: ...`), and command-line overrides always arrive nested: bring both to dotted keys."""
    raw = dict(raw)
    if isinstance(raw.get("grid"), dict):
        raw["grid"] = dotted(raw["grid"])
    search = raw.get("search")
    if isinstance(search, dict) and isinstance(search.get("params"), dict):
        param_fields = {f.name for f in dataclasses.fields(SearchParam)}
        raw["search"] = dict(search, params=dotted(
            search["params"], is_leaf=lambda v: not isinstance(v, dict) or bool(param_fields & set(v))
        ))
    return raw


def typed_merge(resolved: dict, problems: Problems):
    """Merge section by section so that one bad section does not hide the errors of the others."""
    config = OmegaConf.structured(SweepSpec)
    allowed = [f.name for f in dataclasses.fields(SweepSpec)]
    for key, value in resolved.items():
        if key not in allowed:
            problems.add(str(key), f"unknown key{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}")
            continue
        try:
            config = OmegaConf.merge(config, {key: value})
        except (OmegaConfBaseException, TypeError) as exc:
            if getattr(exc, "full_key", None):
                problems.add(*omegaconf_problem(exc))
            else:
                problems.add(*merge_problem(config, {key: value}) or (key, first_line(exc)))
    if OmegaConf.is_missing(config, "name"):
        problems.add("name", "required: a short name for the sweep (letters, digits, '.', '_', '-')")
    for index, claim in enumerate(config.claims):
        for required in ("id", "kind"):
            if OmegaConf.is_missing(claim, required):
                problems.add(f"claims[{index}].{required}", "required; see docs/claims.md for claim ids and kinds")
    for key, param in config.search.params.items():
        if OmegaConf.is_missing(param, "type"):
            problems.add(f"search.params.{key}.type", f"required; allowed: {', '.join(PARAM_TYPES)}")
    return config


def omegaconf_problem(exc: OmegaConfBaseException) -> tuple[str, str]:
    key = getattr(exc, "full_key", "") or ""
    parent = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(parent):
        names = [f.name for f in dataclasses.fields(parent)]
        return key, f"unknown key{did_you_mean(exc.key, names)}; allowed here: {', '.join(names)}"
    message = first_line(exc)
    if "could not be converted to" in message or "incompatible with type" in message:
        message = f"wrong type: {message}"
    return key, message


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
