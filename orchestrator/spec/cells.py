"""Where a sweep is expanded into grid cells and where each trial's config is built.

A cell is one point of the cartesian product of `grid:`. It owns an Optuna study and its own ASHA
rungs; its search trials vary the `search:` parameters, its confirmation trials re-run its best
search config with every confirmation seed. Tune hands every trial {"trial": <trial config>,
"sweep": <where the trial belongs>}; trainables read only the first."""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Any

from orchestrator.overrides import set_dotted
from orchestrator.spec.schema import SearchParam, SweepSpec
from trainables import ConfigError
from trainables.contract import TRIAL_KINDS, method_family

SEARCH, CONFIRM = "search", "confirm"
# The key of a Tune trial config that says where the trial belongs.
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
    axes = list(spec.grid)
    cells = []
    for index, combo in enumerate(itertools.product(*(spec.grid[axis] for axis in axes))):
        values = dict(zip(axes, combo))
        config = build_trial_config(spec, values, {}, seed=None)
        cells.append(Cell(index, values, config["method"], method_family(config["method"])))
    return cells


def cell_params(spec: SweepSpec, cell: Cell) -> dict[str, SearchParam]:
    """The search parameters that apply to this cell's method."""
    return {key: p for key, p in spec.search.params.items() if not p.methods or cell.method in p.methods}


def build_trial_config(spec: SweepSpec, grid_values: dict[str, Any], params: dict[str, Any], seed: int | None) -> dict:
    """Base trial config + this cell's grid values + searched values (+ a confirmation seed),
    validated and completed with defaults by the trial kind, as the trial itself would."""
    config = copy.deepcopy(spec.trial)
    if spec.resources.workers > 1 and TRIAL_KINDS[spec.trainable].data_parallel:
        config["workers"] = spec.resources.workers
    if seed is not None:
        config["seed"] = seed
    try:
        for key, value in {**grid_values, **params}.items():
            try:
                set_dotted(config, key, value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return TRIAL_KINDS[spec.trainable].validate(config)
    except ConfigError as exc:
        raise ConfigError(with_source(str(exc), grid_values, params)) from None


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
