"""Per-cell search: a Ray Tune Searcher that routes every suggestion and result by grid cell to that
cell's own Optuna study (ask/tell), then schedules each cell's confirmation runs.

Search and confirmation share one Tuner: a cell's confirmation trials (its best search config x every
confirmation seed) are suggested as soon as all of its search trials have ended, while other cells may
still be searching.

A trial that ASHA stops early is told to Optuna as PRUNED: ASHA judged it worse than its cell's peers
at a rung, TPE ranks pruned trials below completed ones, and a partially trained score would not be
comparable with fully trained ones. Only trials that ran every epoch can become a cell's best config.

Seeds until decided (`confirm.until_decided`): once every cell's search and confirmation trials so far
have ended (a round), the searcher judges the claims from the final metrics it kept of each trial and
applies orchestrator.report.rounds: the cells of inconclusive claims get one more seed each (the
next integer after the largest seed used), or the rounds end and the sweep with them. A round waits
for every cell, so that each look sees whole rounds. The rounds, and why they ended, are part of the
searcher's saved state (a resumed sweep continues them) and are written to the sweep directory's
rounds.json for `dualsweep report`.
"""
from __future__ import annotations

import logging
import math
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from ray.tune.search import Searcher

from orchestrator import progress
from orchestrator.report import model as report_model
from orchestrator.report import rounds
from orchestrator.spec import (CONFIRM, SEARCH, SWEEP_KEY, Cell, SearchParam, SweepSpec, build_trial_config,
                               cell_params, sweep_info)
from orchestrator.storage import write_rounds

log = logging.getLogger(__name__)


@dataclass
class TrialRecord:
    cell: str
    phase: str
    key: str
    epochs: int
    params: dict[str, Any] = field(default_factory=dict)
    # Search trials: the trial's number in its cell's Optuna study (= its index in the cell).
    optuna_number: Optional[int] = None
    finished: bool = False
    # Ran every epoch without error; only such trials are candidates for a cell's best config.
    complete: bool = False
    value: Optional[float] = None
    # The trial config's seed (a confirmation trial's confirmation seed).
    seed: Optional[int] = None
    # Once finished: as the report says it (finished, stopped_early, diverged, failed), and every
    # number of the trial's last result, which claims on other metrics than the sweep's are judged on.
    status: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def study_name(spec: SweepSpec, cell: Cell) -> str:
    return f"{spec.name}.{cell.id}"


def create_studies(spec: SweepSpec, cells: list[Cell], storage_url: str) -> None:
    """One study per cell, created once by the driver before any trial (idempotent)."""
    storage = optuna.storages.RDBStorage(storage_url)
    direction = "maximize" if spec.mode == "max" else "minimize"
    for cell in cells:
        study = optuna.create_study(study_name=study_name(spec, cell), storage=storage, direction=direction,
                                    load_if_exists=True)
        study.set_user_attr("cell", cell.label)
        study.set_user_attr("metric", spec.metric)


def sampler_for(spec: SweepSpec, cell: Cell, index: int) -> optuna.samplers.BaseSampler:
    """A fresh sampler per suggestion, seeded from (sweep seed, cell, index): a sampler restored from
    a pickle would replay its random stream, and this makes a re-asked suggestion reproducible."""
    seed = zlib.crc32(f"{spec.seed}/{cell.id}/{index}".encode())
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.search.sampler == "grid":
        space = {key: p.choices for key, p in cell_params(spec, cell).items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    # A cell's budget is small; TPE's default of 10 random start-up trials would use all of it.
    startup = min(10, max(2, spec.search.trials_per_cell // 2))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def distribution(p: SearchParam) -> optuna.distributions.BaseDistribution:
    if p.type == "choice":
        return optuna.distributions.CategoricalDistribution(p.choices)
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high))
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.type == "loguniform")


def record_state(record: TrialRecord) -> optuna.trial.TrialState:
    """How Optuna sees a search trial: still running, complete, stopped early (PRUNED) or failed."""
    if not record.finished:
        return optuna.trial.TrialState.RUNNING
    if record.complete:
        return optuna.trial.TrialState.COMPLETE
    return optuna.trial.TrialState.FAIL if record.value is None else optuna.trial.TrialState.PRUNED


class CellSearcher(Searcher):
    def __init__(self, spec: SweepSpec, cells: list[Cell], optuna_url: str, sweep_dir: Optional[str] = None,
                 experiment_path: Optional[str] = None):
        super().__init__(metric=spec.metric, mode=spec.mode)
        self.spec = spec
        self.cells = cells
        self.optuna_url = optuna_url
        # Where rounds.json goes (None: nowhere, e.g. in unit tests).
        self.sweep_dir = sweep_dir
        # Ray's experiment (a path or URI): a trial's checkpoints are in <experiment_path>/<key>/.
        self.experiment_path = experiment_path
        self.max_concurrent = 0
        # Ray trial id -> record; saved with Ray's experiment snapshots (save/restore below), as are
        # the two fields after it.
        self.trials: dict[str, TrialRecord] = {}
        # Cell id -> that cell's records of self.trials: a cell's counts and best config are read on
        # every suggestion, and scanning every trial of the sweep each time grows with the sweep.
        self.by_cell: dict[str, list[TrialRecord]] = {cell.id: [] for cell in cells}
        # Cell id -> the seeds of its confirmation trials: `seeds`, then one per round that grew it.
        self.confirm_seeds: dict[str, list[int]] = {cell.id: list(spec.seeds) for cell in cells}
        # Seeds until decided: each look (rounds.Look.to_dict()); the rounds have ended when the last
        # one grows nothing.
        self.looks: list[dict] = []
        self._storage: Optional[optuna.storages.RDBStorage] = None
        self._studies: dict[str, optuna.Study] = {}

    def __getstate__(self) -> dict:
        # The storage holds a database engine; it is reopened after unpickling.
        return {**self.__dict__, "_storage": None, "_studies": {}}

    # --- Tune's Searcher interface ------------------------------------------------------------
    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        # Metric and mode come from the sweep spec; Tune does not call this again on restore.
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        # Taken here rather than by a ConcurrencyLimiter, which drops completions of trials it
        # no longer tracks after a restore.
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> Optional[dict]:
        if self.max_concurrent and sum(not r.finished for r in self.trials.values()) >= self.max_concurrent:
            return None
        if not self.rounds_ended() and self.round_ended():
            self.look()  # seeds until decided: every trial of the round has ended
        for cell in self.cells:
            config = self.next_confirmation(trial_id, cell)
            if config is not None:
                return config
        searching = [c for c in self.cells if self.count(c, SEARCH) < self.spec.search.trials_per_cell]
        if searching:
            # The cell with the fewest suggestions so far: cells advance together.
            cell = min(searching, key=lambda c: (self.count(c, SEARCH), c.index))
            return self.next_search(trial_id, cell)
        if all(self.cell_done(cell) for cell in self.cells) and self.rounds_ended():
            return Searcher.FINISHED
        return None  # waiting for trials to end: a cell's search before its confirmation, or a round

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        record = self.trials.get(trial_id)
        if record is None:
            log.warning("trial %s ended but the searcher never suggested it; ignored", trial_id)
            return
        result = result or {}
        value = result.get(self.spec.metric)
        record.finished = True
        record.value = None if error or value is None or not math.isfinite(value) else float(value)
        record.complete = record.value is not None and result.get("epoch", 0) >= record.epochs
        record.status = report_model.ended_status(error, result, record.epochs)
        record.metrics = report_model.numeric(result)
        if record.phase == SEARCH:
            self.tell(record)

    def tell(self, record: TrialRecord) -> None:
        study = self.study(record.cell)
        study.tell(record.optuna_number, record.value if record.complete else None, state=record_state(record),
                   skip_if_finished=True)
        cell = self.cell(record.cell)
        if self.search_ended(cell) and self.best_search_record(cell) is None:
            log.warning("cell %s (%s): no search trial ran to the end (stopped early, diverged or failed); "
                        "no confirmation runs", cell.id, cell.label)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"trials": self.trials, "max_concurrent": self.max_concurrent,
                         "confirm_seeds": self.confirm_seeds, "looks": self.looks}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.trials = state["trials"]
        self.by_cell = {cell.id: [] for cell in self.cells}
        for record in self.trials.values():
            self.by_cell[record.cell].append(record)
        self.max_concurrent = state["max_concurrent"]
        # A state saved before seeds until decided existed has neither: every cell runs `seeds`.
        self.confirm_seeds = state.get("confirm_seeds", self.confirm_seeds)
        self.looks = state.get("looks", [])
        self.rebuild_studies()

    def rebuild_studies(self) -> None:
        """A sweep resumed from a storage URI on another machine starts with empty Optuna studies:
        each cell's search trials are added again from the saved records, numbered as before."""
        for cell in self.cells:
            study = self.study(cell.id)
            known = len(study.get_trials(deepcopy=False))
            records = sorted((r for r in self.by_cell[cell.id] if r.phase == SEARCH),
                             key=lambda r: r.optuna_number)
            for record in records[known:]:
                study.add_trial(optuna.trial.create_trial(
                    state=record_state(record), value=record.value if record.complete else None,
                    params=record.params, distributions=self.distributions(cell), user_attrs={"trial_key": record.key}))

    # --- routing by cell --------------------------------------------------------------------
    def count(self, cell: Cell, phase: str, finished_only: bool = False) -> int:
        return sum(r.phase == phase and (r.finished or not finished_only) for r in self.by_cell[cell.id])

    def search_ended(self, cell: Cell) -> bool:
        return self.count(cell, SEARCH, finished_only=True) == self.spec.search.trials_per_cell

    def best_search_record(self, cell: Cell) -> Optional[TrialRecord]:
        candidates = [r for r in self.by_cell[cell.id] if r.phase == SEARCH and r.complete]
        if not candidates:
            return None
        sign = 1.0 if self.spec.mode == "max" else -1.0
        return max(candidates, key=lambda r: sign * r.value)

    def cell_done(self, cell: Cell) -> bool:
        """Every trial this cell has so far been planned has been suggested."""
        if not self.search_ended(cell):
            return False
        return self.best_search_record(cell) is None or self.count(cell, CONFIRM) == len(self.confirm_seeds[cell.id])

    def next_confirmation(self, trial_id: str, cell: Cell) -> Optional[dict]:
        done = self.count(cell, CONFIRM)
        seeds = self.confirm_seeds[cell.id]
        if not self.search_ended(cell) or done == len(seeds):
            return None
        best = self.best_search_record(cell)
        if best is None:
            return None
        seed = seeds[done]
        config = build_trial_config(self.spec, cell.values, best.params, seed=seed)
        record = TrialRecord(cell.id, CONFIRM, f"{cell.id}-confirm-seed{seed}", config["epochs"], dict(best.params),
                             seed=seed)
        return self.register(trial_id, cell, record, config, seed)

    def next_search(self, trial_id: str, cell: Cell) -> dict:
        index = self.count(cell, SEARCH)
        key = f"{cell.id}-search-{index:03d}"
        number, params = self.ask(cell, index, key)
        config = build_trial_config(self.spec, cell.values, params, seed=None)
        record = TrialRecord(cell.id, SEARCH, key, config["epochs"], params, optuna_number=number, seed=config["seed"])
        return self.register(trial_id, cell, record, config, config["seed"])

    def register(self, trial_id: str, cell: Cell, record: TrialRecord, config: dict, seed: int) -> dict:
        self.trials[trial_id] = record
        self.by_cell[cell.id].append(record)
        where = {"sweep": self.spec.name, "cell": cell.id, "cell_label": cell.label, "phase": record.phase,
                 "key": record.key, "method": cell.method, "family": cell.family, "seed": seed,
                 "epochs": record.epochs}
        if self.experiment_path:
            # A trial that Ray's last snapshot before a kill did not know yet is suggested again under
            # a new id: its entry point finds the checkpoints it had made here.
            where["checkpoints"] = f"{self.experiment_path}/{record.key}"
        return {"trial": config, SWEEP_KEY: where}

    # --- seeds until decided -------------------------------------------------------------------
    def rounds_ended(self) -> bool:
        """No round of seeds is to come: the seeds are fixed, or the last look grew no cell."""
        return not self.spec.confirm.until_decided or bool(self.looks and not self.looks[-1]["grow"])

    def round_ended(self) -> bool:
        """Every trial planned so far, search and confirmation, has been suggested and has ended."""
        return all(self.cell_done(c) for c in self.cells) and all(r.finished for r in self.trials.values())

    def look(self) -> None:
        """Judge the claims on every trial so far; grow the cells of the inconclusive ones by one seed,
        or end the rounds. Says which, on the progress log and in rounds.json."""
        growable = {c.id: len(self.confirm_seeds[c.id]) for c in self.cells if self.best_search_record(c) is not None}
        seed = 1 + max(s for seeds in self.confirm_seeds.values() for s in seeds)
        info = sweep_info(self.spec, self.cells, partial=True)
        decision = rounds.look(info, self.report_trials(), len(self.looks) + 1, growable, self.spec.confirm.max_seeds,
                               seed)
        for cell_id in decision.grow:
            self.confirm_seeds[cell_id].append(seed)
        self.looks.append(decision.to_dict())
        progress.log.info("seeds until decided: %s", decision.reason)
        self.write_rounds()

    @property
    def stopped(self) -> Optional[str]:
        """Why the rounds of seeds ended; None while they go on (or with fixed seeds)."""
        return self.looks[-1]["reason"] if self.spec.confirm.until_decided and self.rounds_ended() else None

    def report_trials(self) -> list[report_model.TrialRecord]:
        """The trials so far as the report sees them."""
        cells = {c.id: c for c in self.cells}
        return [report_model.TrialRecord(
            key=r.key, cell=r.cell, cell_values=dict(cells[r.cell].values), method=cells[r.cell].method,
            family=cells[r.cell].family, phase=r.phase, seed=r.seed, params=dict(r.params),
            status=r.status if r.finished else "running", metrics=dict(r.metrics), epochs_planned=r.epochs,
        ) for r in self.trials.values()]

    def write_rounds(self) -> None:
        if self.sweep_dir is not None:
            write_rounds(Path(self.sweep_dir), {"looks": self.looks, "stopped": self.stopped})

    def ask(self, cell: Cell, index: int, key: str) -> tuple[int, dict[str, Any]]:
        """The cell's index-th Optuna trial. Optuna's database runs ahead of Ray's snapshots: after a
        restore, a trial asked but forgotten by Ray is taken up again rather than asked anew, so that
        the study holds each search trial once."""
        study = self.study(cell.id)
        existing = study.get_trials(deepcopy=False)
        if index < len(existing):
            log.info("%s: taking up Optuna trial %d of a run forgotten by the last snapshot", key, index)
            return existing[index].number, dict(existing[index].params)
        study.sampler = sampler_for(self.spec, cell, index)
        trial = study.ask(self.distributions(cell))
        trial.set_user_attr("trial_key", key)
        return trial.number, dict(trial.params)

    def distributions(self, cell: Cell) -> dict[str, optuna.distributions.BaseDistribution]:
        return {key: distribution(p) for key, p in cell_params(self.spec, cell).items()}

    def study(self, cell_id: str) -> optuna.Study:
        if self._storage is None:
            self._storage = optuna.storages.RDBStorage(self.optuna_url)
        if cell_id not in self._studies:
            self._studies[cell_id] = optuna.load_study(study_name=study_name(self.spec, self.cell(cell_id)),
                                                       storage=self._storage)
        return self._studies[cell_id]

    def cell(self, cell_id: str) -> Cell:
        return next(c for c in self.cells if c.id == cell_id)
