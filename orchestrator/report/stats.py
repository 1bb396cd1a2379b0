"""The statistics of a report: means over seeds, Welch differences, best-of-cell selection and the
duality gap.

- Confidence c: 0.95 unless the sweep states another (SweepInfo.confidence: 1 - alpha, divided over
  the looks of seeds until decided); `analyze` and every interval of an analysis use one c.
- `mean_ci(values, c)`: the mean with a Student t interval, mean +- t((1+c)/2, n-1) * sd / sqrt(n),
  sd with n-1 in the denominator; n < 2 has no interval.
- `welch_diff(a, b, c)`: mean(a) - mean(b) with a Welch interval: se = sqrt(va/na + vb/nb),
  df = se^4 / ((va/na)^2/(na-1) + (vb/nb)^2/(nb-1)) (Welch-Satterthwaite), diff +- t((1+c)/2, df) * se.
  None of it when either side has n < 2. Two samples without spread give a zero-width interval.
- Best of a cell (per cell and method): among the cell's SEARCH trials that ran every epoch
  (status "finished"; stopped_early, diverged, failed, running and pending trials are excluded),
  the one with the best value of the sweep's metric (max or min per the sweep's mode). Its params
  are the cell's best config. The cell's CONFIRM trials with status "finished" give the
  confirmation mean, its interval and n. The search spread is the min, median and max of the
  metric over the finished search trials.
- Comparison groups: cells that share every grid value except the method's (see model.py).
- Family gap, per comparison group: for each family present, its best confirmed method (the best
  confirmation mean of the sweep's metric, per the mode); for each pair of families (in the order
  sample_contrastive, dimension_contrastive, asymmetric) the Welch difference of their best
  methods, first family minus second.
- Pair gap, per comparison group: the Welch difference A - B of two named methods.

Non-finite values (a NaN of a diverged epoch) never enter a mean.
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Iterable, Optional

from orchestrator.report.model import (
    CONFIDENCE,
    CONFIRM,
    SEARCH,
    CellInfo,
    SweepInfo,
    TrialRecord,
    family_rank,
    finite,
    group_key,
    group_label,
)


@dataclass(frozen=True)
class Estimate:
    """A mean over n values with its t interval (lo, hi); no interval (None) when n < 2."""

    mean: float
    n: int
    sd: Optional[float] = None
    lo: Optional[float] = None
    hi: Optional[float] = None

    @property
    def interval(self) -> Optional[tuple[float, float]]:
        return None if self.lo is None or self.hi is None else (self.lo, self.hi)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "n": self.n, "sd": self.sd, "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class Difference:
    """mean(A) - mean(B) with its Welch interval; lo/hi/df/se are None when either n < 2."""

    diff: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    se: Optional[float] = None
    df: Optional[float] = None
    lo: Optional[float] = None
    hi: Optional[float] = None

    @property
    def interval(self) -> Optional[tuple[float, float]]:
        return None if self.lo is None or self.hi is None else (self.lo, self.hi)

    @property
    def n(self) -> int:
        return min(self.n_a, self.n_b)

    def to_dict(self) -> dict[str, Any]:
        return {"diff": self.diff, "lo": self.lo, "hi": self.hi, "df": self.df, "se": self.se,
                "mean_a": self.mean_a, "mean_b": self.mean_b, "n_a": self.n_a, "n_b": self.n_b}


def clean(values: Iterable[Any]) -> list[float]:
    return [v for v in (finite(x) for x in values) if v is not None]


@functools.lru_cache(maxsize=4096)
def t_quantile(confidence: float, df: float) -> float:
    # Cached: a report asks for the same (confidence, n - 1) once per mean, and a sweep with seeds until
    # decided judges its claims after every round.
    from scipy import stats as scipy_stats  # imported here: the spec schema imports ClaimSpec cheaply

    return float(scipy_stats.t.ppf(0.5 + confidence / 2, df))


def mean_ci(values: Iterable[Any], confidence: float = CONFIDENCE) -> Optional[Estimate]:
    """Mean and t interval of the finite values; None when there are none."""
    xs = clean(values)
    n = len(xs)
    if n == 0:
        return None
    mean = math.fsum(xs) / n
    if n < 2:
        return Estimate(mean, n)
    sd = statistics.stdev(xs)
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, n, sd, mean - half, mean + half)


def welch_diff(a: Iterable[Any], b: Iterable[Any], confidence: float = CONFIDENCE) -> Optional[Difference]:
    """mean(a) - mean(b) with a Welch-Satterthwaite t interval; None when either side is empty."""
    xa, xb = clean(a), clean(b)
    if not xa or not xb:
        return None
    na, nb = len(xa), len(xb)
    ma, mb = math.fsum(xa) / na, math.fsum(xb) / nb
    diff = ma - mb
    if na < 2 or nb < 2:
        return Difference(diff, na, nb, ma, mb)
    qa, qb = statistics.variance(xa) / na, statistics.variance(xb) / nb
    se2 = qa + qb
    if se2 == 0.0:  # no spread on either side: the difference is exact
        return Difference(diff, na, nb, ma, mb, 0.0, None, diff, diff)
    df = se2 ** 2 / (qa ** 2 / (na - 1) + qb ** 2 / (nb - 1))
    se = math.sqrt(se2)
    half = t_quantile(confidence, df) * se
    return Difference(diff, na, nb, ma, mb, se, df, diff - half, diff + half)


def better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def best_search_trial(trials: Iterable[TrialRecord], metric: str, mode: str) -> Optional[TrialRecord]:
    """The search trial with the best final metric among those that ran every epoch (status
    finished); ties go to the first in key order."""
    best: Optional[TrialRecord] = None
    for trial in sorted(trials, key=lambda t: t.key):
        value = trial.value(metric)
        if trial.phase != SEARCH or not trial.finished or value is None:
            continue
        if best is None or better(value, best.value(metric), mode):  # type: ignore[arg-type]
            best = trial
    return best


@dataclass
class CellResult:
    """One cell and method: its best searched config, confirmation and search spread."""

    cell: CellInfo
    method: str
    family: str
    group: tuple  # the comparison group's key (grid values without the method)
    metric: str
    trials: list[TrialRecord]  # every trial of this cell and method
    best_trial: Optional[str] = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_value: Optional[float] = None
    confirm: Optional[Estimate] = None  # of the sweep's metric over finished confirmation trials
    confirmed_params: Optional[dict[str, Any]] = None  # what the confirmation trials ran
    spread: Optional[tuple[float, float, float]] = None  # min, median, max of finished search trials
    counts: dict[str, int] = field(default_factory=dict)  # search trials by status
    confidence: float = CONFIDENCE  # of `confirm` and estimate()

    @property
    def group_label(self) -> str:
        return group_label(self.group)

    @property
    def confirm_trials(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.phase == CONFIRM and t.finished]

    def samples(self, metric: str) -> list[float]:
        """The metric over the finished confirmation trials (one value per seed)."""
        return clean(t.metrics.get(metric) for t in self.confirm_trials)

    def estimate(self, metric: str) -> Optional[Estimate]:
        return mean_ci(self.samples(metric), self.confidence)

    def to_dict(self) -> dict[str, Any]:
        return {"cell": self.cell.id, "label": self.cell.label, "group": self.group_label,
                "values": self.cell.values, "method": self.method, "family": self.family,
                "metric": self.metric, "best_trial": self.best_trial, "best_params": self.best_params,
                "best_search_value": self.best_value,
                "confirm": self.confirm.to_dict() if self.confirm else None,
                "confirmed_params": self.confirmed_params,
                "search_spread": list(self.spread) if self.spread else None, "search_counts": self.counts}


def cell_result(cell: CellInfo, method: str, family: str, trials: list[TrialRecord], metric: str, mode: str,
                confidence: float = CONFIDENCE) -> CellResult:
    result = CellResult(cell, method, family, group_key(cell.values), metric, trials, confidence=confidence)
    best = best_search_trial(trials, metric, mode)
    if best is not None:
        result.best_trial, result.best_params, result.best_value = best.key, dict(best.params), best.value(metric)
    result.confirm = result.estimate(metric)
    confirmed = [t for t in trials if t.phase == CONFIRM]
    if confirmed:
        result.confirmed_params = dict(confirmed[0].params)
    finished = clean(t.metrics.get(metric) for t in trials if t.phase == SEARCH and t.finished)
    if finished:
        result.spread = (min(finished), statistics.median(finished), max(finished))
    for trial in trials:
        if trial.phase == SEARCH:
            result.counts[trial.status] = result.counts.get(trial.status, 0) + 1
    return result


@dataclass
class Gap:
    """A Welch difference A - B within one comparison group: between two families' best
    confirmed methods (kind "family") or two named methods (kind "pair")."""

    group: str
    kind: str  # "family" | "pair"
    a: str  # family or method name
    b: str
    method_a: str
    method_b: str
    cell_a: str
    cell_b: str
    difference: Optional[Difference]

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "kind": self.kind, "a": self.a, "b": self.b, "method_a": self.method_a,
                "method_b": self.method_b, "cell_a": self.cell_a, "cell_b": self.cell_b,
                **(self.difference.to_dict() if self.difference else {"diff": None})}


@dataclass
class Analysis:
    info: SweepInfo
    trials: list[TrialRecord]
    results: list[CellResult]  # in cell order
    groups: dict[tuple, list[CellResult]]  # comparison group -> its cells' results
    family_best: dict[tuple, dict[str, CellResult]]  # group -> family -> best confirmed method
    family_gaps: list[Gap]
    pair_gaps: list[Gap]
    confidence: float = CONFIDENCE  # of every interval in it, and of the verdicts judged on it

    @property
    def gaps(self) -> list[Gap]:
        return self.family_gaps + self.pair_gaps

    def result(self, cell_id: str, method: Optional[str] = None) -> Optional[CellResult]:
        return next((r for r in self.results if r.cell.id == cell_id and (method is None or r.method == method)), None)


def cells_of(info: SweepInfo, trials: list[TrialRecord]) -> list[CellInfo]:
    """The sweep's cells, plus any cell a trial names that the plan lacks."""
    cells = list(info.cells)
    known = {c.id for c in cells}
    for trial in trials:
        if trial.cell not in known:
            label = ",".join(f"{k}={v}" for k, v in trial.cell_values.items()) or "all"
            cells.append(CellInfo(trial.cell, label, dict(trial.cell_values), trial.method, trial.family))
            known.add(trial.cell)
    return cells


def best_of_family(results: Iterable[CellResult], mode: str) -> dict[str, CellResult]:
    """family -> its method with the best confirmation mean (results without confirmation skipped)."""
    best: dict[str, CellResult] = {}
    for r in results:
        if r.confirm is None:
            continue
        current = best.get(r.family)
        if current is None or better(r.confirm.mean, current.confirm.mean, mode):  # type: ignore[union-attr]
            best[r.family] = r
    return dict(sorted(best.items(), key=lambda item: family_rank(item[0])))


def default_pairs(info: SweepInfo, methods: list[str]) -> list[tuple[str, str]]:
    """The method pairs whose gap is tabulated: those a gap_within or ordering claim names, and
    every pair when the sweep has at most three methods."""
    pairs: list[tuple[str, str]] = []
    for claim in info.claims:
        if claim.kind in ("gap_within", "ordering") and len(claim.methods) == 2:
            pairs.append((claim.methods[0], claim.methods[1]))
    if len(methods) <= 3:
        pairs += list(combinations(methods, 2))
    unique: list[tuple[str, str]] = []
    for pair in pairs:
        if pair[0] != pair[1] and pair not in unique and (pair[1], pair[0]) not in unique:
            unique.append(pair)
    return unique


def analyze(info: SweepInfo, trials: list[TrialRecord], pairs: Optional[list[tuple[str, str]]] = None,
            confidence: Optional[float] = None) -> Analysis:
    """Best-of-cell results, comparison groups, family and pair gaps. `pairs`: the method pairs to
    tabulate (default: default_pairs); `confidence`: of every interval (default: the sweep's,
    info.confidence)."""
    metric, mode = info.metric, info.mode
    confidence = info.confidence if confidence is None else confidence
    results: list[CellResult] = []
    for cell in cells_of(info, trials):
        mine = [t for t in trials if t.cell == cell.id]
        methods = {cell.method: cell.family}
        for t in mine:
            methods.setdefault(t.method, t.family)
        for method, family in methods.items():
            results.append(cell_result(cell, method, family, [t for t in mine if t.method == method], metric, mode,
                                       confidence))
    groups: dict[tuple, list[CellResult]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    family_best = {key: best_of_family(members, mode) for key, members in groups.items()}
    family_gaps = []
    for key, best in family_best.items():
        for fa, fb in combinations(list(best), 2):
            ra, rb = best[fa], best[fb]
            family_gaps.append(Gap(group_label(key), "family", fa, fb, ra.method, rb.method, ra.cell.id, rb.cell.id,
                                   welch_diff(ra.samples(metric), rb.samples(metric), confidence)))
    methods_all = list(dict.fromkeys(r.method for r in results))
    if pairs is None:
        pairs = default_pairs(info, methods_all)
    pair_gaps = []
    for key, members in groups.items():
        for a, b in pairs:
            ra = next((r for r in members if r.method == a), None)
            rb = next((r for r in members if r.method == b), None)
            if ra is None or rb is None:
                continue
            pair_gaps.append(Gap(group_label(key), "pair", a, b, a, b, ra.cell.id, rb.cell.id,
                                 welch_diff(ra.samples(metric), rb.samples(metric), confidence)))
    return Analysis(info, trials, results, groups, family_best, family_gaps, pair_gaps, confidence)
