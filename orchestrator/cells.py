"""Where a sweep is expanded into grid cells and where each trial's config is built.

A cell is one point of the cartesian product of `grid:`. It owns an Optuna study and its own ASHA
rungs; its search trials vary the `search:` parameters, its confirmation trials re-run its best
search config with every confirmation seed."""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables import ConfigError

if TYPE_CHECKING:
    from orchestrator.spec import Problems, SearchParam, SweepSpec

SEARCH, CONFIRM = "search", "confirm"
# The key of a Tune trial config that says where the trial belongs; the trainable reads only "trial".
SWEEP_KEY = "sweep"
# The key a trial config error starts with, e.g. "optim.lr: must be > 0".
ERROR_KEY = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


@dataclass(frozen=True)
class Cell:
    index: int
    # This cell's value of every grid axis, by dotted trial-config key.
    values: dict[str, Any]
    method: str
    family: str

    @property
    def id(self) -> str:
        return f"c{self.index:02d}"

    @property
    def label(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.values.items()) or "all"


def expand_cells(spec: SweepSpec) -> list[Cell]:
    """The cartesian product of the grid axes, in the order they are written. Raises ConfigError
    (naming the grid or trial key) when a cell's trial config is invalid."""
    from trainables.methods import METHODS

    axes = list(spec.grid)
    cells = []
    for index, combo in enumerate(itertools.product(*(spec.grid[axis] for axis in axes))):
        values = dict(zip(axes, combo))
        config = build_trial_config(spec, values, {}, seed=None)
        cells.append(Cell(index, values, config["method"], METHODS.get(config["method"]).family))
    return cells


def cell_params(spec: SweepSpec, cell: Cell) -> dict[str, SearchParam]:
    """The search parameters that apply to this cell's method."""
    return {key: p for key, p in spec.search.params.items() if not p.methods or cell.method in p.methods}


def build_trial_config(spec: SweepSpec, grid_values: dict[str, Any], params: dict[str, Any], seed: int | None) -> dict:
    """Base trial config + this cell's grid values + searched values (+ a confirmation seed),
    validated and completed with defaults by the trainable kind."""
    from orchestrator.trainable_kinds import TRAINABLES

    config = copy.deepcopy(spec.trial)
    if seed is not None:
        config["seed"] = seed
    try:
        for key, value in {**grid_values, **params}.items():
            set_dotted(config, key, value)
        return TRAINABLES[spec.trainable].trial_config(config)
    except ConfigError as exc:
        raise ConfigError(with_source(str(exc), grid_values, params)) from None


def set_dotted(config: dict, key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section of the trial config")
    node[parts[-1]] = value


def with_source(message: str, grid_values: dict, params: dict) -> str:
    """Prefix a trial config error's key with the part of the sweep file it came from."""
    match = ERROR_KEY.match(message)
    if not match:
        return f"trial: {message}"
    return f"{source_key(match.group(1), grid_values, params)}: {message[match.end():]}"


def source_key(key: str, grid_values: dict, params: dict) -> str:
    def from_(section: dict) -> bool:
        return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in section)

    if from_(params):
        return f"search.params.{key}"
    if from_(grid_values):
        return f"grid.{key}"
    return f"trial.{key}"


def probe_values(p: SearchParam) -> list[Any]:
    """The values a validation tries for one search parameter: its bounds, or every choice."""
    if p.type == "choice":
        return list(p.choices or [])
    if p.type == "int":
        return [int(p.low), int(p.high)]
    return [p.low, p.high]


def check_cells(spec: SweepSpec, problems: Problems) -> None:
    """Validate the trial config of every cell, at the bounds of every search parameter."""
    try:
        cells = expand_cells(spec)
    except ConfigError as exc:
        problems.add("", str(exc))
        return
    if not cells:
        return  # an empty grid axis, reported by the spec checks
    from orchestrator.spec import PARAM_TYPES, param_problems
    from trainables.methods import METHODS

    well_formed = {key for key, p in spec.search.params.items() if p.type in PARAM_TYPES and not param_problems(p)}
    for key, p in spec.search.params.items():
        known = [m for m in p.methods if m in METHODS]
        if known and not any(cell.method in known for cell in cells):
            problems.add(f"search.params.{key}.methods", f"no cell runs {', '.join(known)}; "
                                                         f"the grid's methods are {', '.join(sorted({c.method for c in cells}))}")
    failed: set[str] = set()  # one problem per parameter is enough, not one per cell
    for cell in cells:
        for key, p in cell_params(spec, cell).items():
            if key not in well_formed or key in failed:
                continue
            for value in probe_values(p):
                try:
                    build_trial_config(spec, cell.values, {key: value}, seed=None)
                except ConfigError as exc:
                    only_some = key.startswith("method_kwargs.") and not p.methods
                    hint = "; a method's hyperparameter can be limited to it with methods: [...]" if only_some else ""
                    problems.add("", f"{exc} (cell {cell.label}, {key}={value}){hint}")
                    failed.add(key)
                    break
        epochs = build_trial_config(spec, cell.values, {}, seed=None)["epochs"]
        if spec.scheduler.type == "asha" and spec.scheduler.grace_period >= epochs:
            problems.add("scheduler.grace_period", f"{spec.scheduler.grace_period} must be below the trials' "
                                                   f"{epochs} epochs, or ASHA never stops anything; or use scheduler.type=none")
