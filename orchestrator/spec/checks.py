"""Every check of a sweep spec that can fail before Ray starts: the sweep's own keys, the search
space, the claims, and the trial config of every cell at every search bound, checked by the trial
kind exactly as the trial will check it."""
from __future__ import annotations

import math
import os
import re
from typing import Any

from orchestrator.messages import Problems, did_you_mean, unknown_value
from orchestrator.report.claims import claim_problems
from orchestrator.report.model import is_number
from orchestrator.spec.cells import build_trial_config, cell_params, expand_cells, with_source
from orchestrator.spec.schema import (MODES, NAME_RULE, PARAM_TYPES, SAFE_NAME, SAMPLERS, SCHEDULERS,
                                      STORAGE_SCHEMES, SearchParam, SweepSpec, is_uri)
from trainables import ConfigError
from trainables.contract import FAMILIES, TRIAL_KINDS, method_names

# Claim ids follow docs/claims.md: paper letter + claim number (G3, T1, ...), and a part letter for
# a claim judged in parts (G5a, G5b: the rise to the peak, the plateau after it).
CLAIM_ID = re.compile(r"[GTJCP][0-9]+[a-z]?")


def check_spec(spec: SweepSpec, problems: Problems, local_machine: bool) -> None:
    """Checks of the sweep's own fields, then (when cells can be built) of every cell's trial config."""
    if not SAFE_NAME.fullmatch(spec.name):
        problems.add("name", f"{spec.name!r} is not a safe name: {NAME_RULE}")
    if spec.trainable not in TRIAL_KINDS:
        problems.add("trainable", unknown_value("value", spec.trainable, list(TRIAL_KINDS)))
        return
    kind = TRIAL_KINDS[spec.trainable]
    metrics = [*kind.epoch_metrics, *kind.final_metrics]
    if spec.mode not in MODES:
        problems.add("mode", unknown_value("value", spec.mode, list(MODES)))
    if spec.metric not in metrics:
        problems.add("metric", f"unknown metric {spec.metric!r}{did_you_mean(spec.metric, metrics)}; "
                               f"a {spec.trainable} trial reports: {', '.join(metrics)}")
    elif spec.scheduler.type == "asha" and spec.metric in kind.final_metrics:
        problems.add("metric", f"{spec.metric} is only reported at a trial's last epoch, so ASHA cannot compare "
                               "trials on it; use an epoch metric or scheduler.type=none")
    check_grid(spec, problems)
    check_search(spec, problems)
    check_scheduler(spec, problems)
    if len(set(spec.seeds)) != len(spec.seeds):
        problems.add("seeds", f"repeated seed in {spec.seeds}; each confirmation seed once")
    check_confirm(spec, problems)
    check_resources(spec, problems, local_machine)
    if spec.max_concurrent < 0:
        problems.add("max_concurrent", f"must be >= 0 (0: as many trials as fit), got {spec.max_concurrent}")
    if spec.max_failures < -1:
        problems.add("max_failures", f"must be >= 0 (retries of a failed trial; -1: no limit), got {spec.max_failures}")
    if is_uri(spec.storage):
        scheme, _, rest = spec.storage.partition("://")
        if scheme not in STORAGE_SCHEMES:
            problems.add("storage", unknown_value("URI scheme", scheme, list(STORAGE_SCHEMES)))
        elif not rest.strip("/"):
            problems.add("storage", f"{spec.storage!r} names no bucket or folder")
    check_claims(spec, problems, metrics)
    if all(values and is_scalar_list(values) and not repeated(values) for values in spec.grid.values()):
        check_cells(spec, problems)


def is_scalar_list(values: Any) -> bool:
    return isinstance(values, list) and all(not isinstance(v, (dict, list)) for v in values)


def repeated(values: list) -> list:
    seen: list = []
    return [v for v in values if v in seen or seen.append(v)]


def check_grid(spec: SweepSpec, problems: Problems) -> None:
    for key, values in spec.grid.items():
        if not isinstance(values, list):
            problems.add(f"grid.{key}", f"must be a list of values (one cell per value), got {values!r}")
        elif not values:
            problems.add(f"grid.{key}", "empty axis: give at least one value")
        elif not is_scalar_list(values):
            problems.add(f"grid.{key}", "values must be scalars (numbers, strings, booleans)")
        elif repeated(values):
            problems.add(f"grid.{key}", f"repeated value {repeated(values)[0]!r} in {values}: it would make "
                                        "duplicate cells; give each value once")


def check_search(spec: SweepSpec, problems: Problems) -> None:
    search = spec.search
    if search.sampler not in SAMPLERS:
        problems.add("search.sampler", unknown_value("value", search.sampler, list(SAMPLERS)))
    if search.trials_per_cell < 1:
        problems.add("search.trials_per_cell", f"must be >= 1, got {search.trials_per_cell}")
    for key, p in search.params.items():
        where = f"search.params.{key}"
        if key in spec.grid:
            problems.add(where, f"{key} is also a grid axis; a key is either searched or gridded, not both")
        if p.type not in PARAM_TYPES:
            problems.add(f"{where}.type", unknown_value("value", p.type, list(PARAM_TYPES)))
            continue
        for subkey, message in param_problems(p):
            problems.add(f"{where}{subkey}", message)
        for method in p.methods:
            if method not in method_names():
                problems.add(f"{where}.methods", unknown_value("method", method, method_names()))
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
        problems.add("scheduler.type", unknown_value("value", s.type, list(SCHEDULERS)))
    if s.grace_period < 1:
        problems.add("scheduler.grace_period", f"must be >= 1 epoch, got {s.grace_period}")
    if s.reduction_factor <= 1:
        problems.add("scheduler.reduction_factor", f"must be > 1, got {s.reduction_factor}")


def check_confirm(spec: SweepSpec, problems: Problems) -> None:
    confirm = spec.confirm
    if not 0 < confirm.alpha < 0.5:
        problems.add("confirm.alpha", f"the error rate of a verdict must be between 0 and 0.5 (exclusive), "
                                      f"e.g. 0.05; got {confirm.alpha}")
    if confirm.max_seeds is not None and confirm.max_seeds < len(spec.seeds):
        problems.add("confirm.max_seeds", f"{confirm.max_seeds} is fewer than the {len(spec.seeds)} seeds of the "
                                          f"first round (seeds: {spec.seeds}); max_seeds counts them too")
    if not confirm.until_decided:
        return
    if not spec.seeds:
        problems.add("seeds", "until_decided adds seeds to a first round of confirmation seeds; give at least "
                              "one, e.g. seeds: [1, 2]")
    if confirm.max_seeds is None:
        problems.add("confirm.max_seeds", f"required with until_decided: the most confirmation seeds per cell, "
                                          f"e.g. {len(spec.seeds) + 4}")
    if not spec.claims:
        problems.add("confirm.until_decided", "until_decided needs claims: it adds seeds until the sweep's claims "
                                              "are decided, and this sweep declares none (claims: ..., see "
                                              "docs/claims.md)")


def check_resources(spec: SweepSpec, problems: Problems, local_machine: bool) -> None:
    r = spec.resources
    if r.cpu <= 0:
        problems.add("resources.cpu", f"must be > 0 (fractions allowed), got {r.cpu}")
    if r.gpu < 0:
        problems.add("resources.gpu", f"must be >= 0, got {r.gpu}")
    elif r.gpu > 1 and r.gpu != int(r.gpu):
        problems.add("resources.gpu", f"above 1 a trial takes whole GPUs, got {r.gpu}")
        return
    for section, keys in (("trial", spec.trial), ("grid", spec.grid), ("search.params", spec.search.params)):
        if "workers" in keys:
            problems.add(f"{section}.workers", "a sweep sets the processes of its trials with resources.workers")
    if r.workers < 1:
        problems.add("resources.workers", f"must be >= 1 (data-parallel processes per trial), got {r.workers}")
        return
    if r.workers > 1:
        data_parallel = [name for name, kind in TRIAL_KINDS.items() if kind.data_parallel]
        if not TRIAL_KINDS[spec.trainable].data_parallel:
            problems.add("resources.workers", f"a {spec.trainable} trial runs as one process; trials that run "
                                              f"data-parallel: {', '.join(data_parallel)}")
        if r.gpu not in (0, 1):
            problems.add("resources.gpu", f"each worker of a data-parallel trial takes one whole GPU or none "
                                          f"(one process per device), got {r.gpu}")
    if not local_machine:
        return  # a cluster's resources are only known once connected
    # Rounded: a sum of fractions (0.1 + 3 x 0.3) reads as written.
    cpu, gpu = (round(amount, 6) for amount in r.per_trial())
    held = f" ({r.workers} workers and the trial's driver)" if r.workers > 1 else ""
    cpus = os.cpu_count() or 1
    if cpu > cpus:
        problems.add("resources.cpu", f"{cpu} CPUs per trial{held}, but this machine has {cpus}; "
                                      "use --address to run on a cluster")
    if gpu > 0:
        import torch  # only a sweep asking for GPUs pays for importing torch here

        gpus = torch.cuda.device_count()
        if gpu > gpus:
            problems.add("resources.gpu", f"{gpu} GPUs per trial{held}, but this machine has {gpus}; "
                                          "use resources.gpu=0 or --address to run on a cluster")


def check_claims(spec: SweepSpec, problems: Problems, metrics: list[str]) -> None:
    seen: set[str] = set()
    grid = {key: list(values) for key, values in spec.grid.items() if is_scalar_list(values)}
    for index, claim in enumerate(spec.claims):
        where = f"claims[{index}]"
        if not CLAIM_ID.fullmatch(claim.id):
            problems.add(f"{where}.id", f"{claim.id!r} is not a claim id: a paper letter (G, T, J, C, P), a number "
                                        "and an optional part letter (G5, G5a), as listed in docs/claims.md")
        if claim.id in seen:
            problems.add(f"{where}.id", f"{claim.id} is declared twice")
        seen.add(claim.id)
        for subkey, message in claim_problems(claim, grid, method_names(), list(FAMILIES), metrics, spec.metric):
            problems.add(f"{where}.{subkey}" if subkey else where, message)


def probe_values(p: SearchParam) -> list[Any]:
    """The values a validation tries for one search parameter: its bounds, or every choice."""
    if p.type == "choice":
        return list(p.choices or [])
    if p.type == "int":
        return [int(p.low), int(p.high)]
    return [p.low, p.high]


def check_cells(spec: SweepSpec, problems: Problems) -> None:
    """The base `trial:` section on its own (a key a grid axis or search parameter overrides is still
    checked there), then every cell's trial config at the bounds of every search parameter."""
    try:
        TRIAL_KINDS[spec.trainable].validate(spec.trial)
    except ConfigError as exc:
        problems.add("", with_source(str(exc), {}, {}))
    try:
        cells = expand_cells(spec)
    except ConfigError as exc:
        problems.add("", str(exc))
        return
    well_formed = {key for key, p in spec.search.params.items() if p.type in PARAM_TYPES and not param_problems(p)}
    for key, p in spec.search.params.items():
        known = [m for m in p.methods if m in method_names()]
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
