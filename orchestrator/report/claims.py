"""Claims as data, and their verdicts.

A sweep's `claims:` list uses a fixed vocabulary of kinds (CLAIM_KINDS); a claim is a ClaimSpec, never
code. Each claim gets one Verdict: "supported", "contradicted", "inconclusive" or "cannot be judged".

Terms
- metric: the claim's `metric`, else the sweep's metric.
- selected cells: the cells whose grid values match `where` (key -> value or list of values; empty:
  every cell), of the claim's `methods` (empty: every method) or `families` (empty: every family).
- comparison group: cells sharing every grid value except the method (see model.py). Along-axis
  kinds group by method and every grid value except the method and `axis`.
- confirmation values: the metric of a cell's confirmation trials that finished, one per seed.
  Level kinds (collapses, no_collapse, threshold, recovers) use every finished trial of the
  selected cells instead when none of them has a finished confirmation trial.
- CI: the t interval of a mean; Welch CI: the Welch interval of a difference of means (stats.py),
  both at the analysis's confidence (95% unless the sweep states another error rate, see rounds.py).
  "Significantly" means the CI excludes the value named. Groups are tested one by one at that
  confidence each, with no correction for multiple comparisons.
- "best" is the sweep's mode for the sweep's metric, and higher for any other metric.

Rules, per group
- gap_within (methods: [A, B] or families: [A, B]; tolerance delta): Welch CI of A - B. Supported
  when it lies within [-delta, delta]; contradicted when it lies entirely outside it (above delta
  or below -delta); else inconclusive. A family stands for its best confirmed method in the group.
- ordering (A >= B + margin, margin = tolerance): Welch CI of A - B; supported when its lower
  bound >= margin; contradicted when its upper bound < margin; else inconclusive. The metric is
  compared as written, whatever the mode.
- flat_along (axis, tolerance delta), per method and group of the other axes: the axis values with
  the highest and lowest confirmation mean; Welch CI of max - min; supported when its upper bound
  <= delta; contradicted when its lower bound > delta; else inconclusive.
- peaks_at (axis, at): the axis value with the best mean. Supported when it is `at` or adjacent
  to `at` on the axis (numeric axes in increasing order, others as the grid lists them);
  otherwise contradicted when the best value is significantly better (Welch CI of the difference
  excludes 0) than every value of that neighbourhood, else inconclusive. The statistic is
  mean(best value) - mean(at).
- monotone_along (axis, direction increasing|decreasing): each successive step along the axis
  gets a Welch CI; contradicted when any step is significantly in the wrong direction; supported
  when no step is and the first -> last difference is significantly in the right direction;
  else inconclusive. Every value needs two seeds. The statistic is last - first (a wrong step's
  difference when contradicted).
- collapses (metric < level) / no_collapse (metric > level) / recovers (metric > level), per cell:
  the CI of the mean; supported when it lies entirely on the claimed side of the level,
  contradicted when entirely on the other side, else inconclusive.
- threshold (axis, at, level, direction), per method and group of the other axes: per axis value
  other than `at`, the CI of the mean; with direction above_below the values before `at` are
  expected above the level and those after it below (below_above: the reverse). Supported when
  every value is significantly on its side, contradicted when any is significantly on the wrong
  side, else inconclusive. The group needs values on both sides of `at`.
- identity_holds (metric, level = epsilon): the largest |metric| over every trial of the selected
  cells that finished or stopped early; supported when <= epsilon, else contradicted (a
  non-finite value contradicts). Deterministic: no interval, n = the number of trials.

Across groups: contradicted when any group is contradicted; else "cannot be judged" when any
group lacks what it needs; else supported when every group is supported; else inconclusive.
A group whose comparison needs an interval but has fewer than two confirmation seeds is
inconclusive with "too few seeds (n=1)". A claim needing cells, methods, axis values or metrics that
the sweep lacks (no trial, or no finished confirmation where one is needed) is "cannot be
judged", its detail naming what it needs.

The Verdict's statistic, interval and detail are those of the deciding group: the first
contradicted one; for supported, the one closest to its bound; for inconclusive, the first with too
few seeds, else the first inconclusive one. n is the fewest seeds behind any mean used (identity_holds:
the number of trials). per_group holds every group's numbers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from omegaconf import MISSING

from orchestrator.report.model import (
    ENDED,
    FAMILY_ORDER,
    METHOD_AXIS,
    SweepInfo,
    TrialRecord,
    axis_order,
    group_key,
    group_label,
    is_number,
    position,
    same_value,
)
from orchestrator.report.stats import Analysis, CellResult, Difference, Estimate, analyze, clean, mean_ci, welch_diff
from trainables.errors import did_you_mean, unknown_value

CLAIM_KINDS = ("gap_within", "ordering", "flat_along", "peaks_at", "monotone_along", "collapses", "no_collapse",
               "threshold", "identity_holds", "recovers")
SUPPORTED, CONTRADICTED, INCONCLUSIVE, CANNOT = "supported", "contradicted", "inconclusive", "cannot be judged"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, CANNOT)
PAIR_KINDS = ("gap_within", "ordering")
AXIS_KINDS = ("flat_along", "peaks_at", "monotone_along", "threshold")
AT_KINDS = ("peaks_at", "threshold")
LEVEL_KINDS = ("collapses", "no_collapse", "threshold", "identity_holds", "recovers")
DIRECTIONS = {"monotone_along": ("increasing", "decreasing"), "threshold": ("above_below", "below_above")}


@dataclass
class ClaimSpec:
    """One entry of a sweep's `claims:` (an OmegaConf structured config)."""

    id: str = MISSING  # "G3"
    kind: str = MISSING  # one of CLAIM_KINDS
    statement: str = ""
    # None: the sweep's metric. For collapses/no_collapse/threshold/identity_holds/recovers usually a
    # diagnostic such as rank_emb, emb_std, weight_norm, garrido_residual, recovery_min.
    metric: Optional[str] = None
    # gap_within/ordering: exactly two, A then B; other kinds: the methods judged (empty: all).
    methods: list[str] = field(default_factory=list)
    # gap_within/ordering: two families instead of methods (each family's best confirmed method per
    # comparison group); other kinds: the families judged (empty: all).
    families: list[str] = field(default_factory=list)
    # Cell selector: grid key -> value or list of values (empty: every cell).
    where: dict[str, Any] = field(default_factory=dict)
    # Grid key for flat_along / peaks_at / monotone_along / threshold.
    axis: Optional[str] = None
    # peaks_at: the value of the peak; threshold: the axis value where the diagnostic crosses the level.
    at: Optional[Any] = None
    # monotone_along: increasing | decreasing; threshold: above_below (above the level before `at`,
    # below it after) | below_above.
    direction: str = "increasing"
    # gap_within: delta; ordering: margin; flat_along: delta.
    tolerance: float = 0.0
    # collapses/no_collapse/threshold/recovers: the level; identity_holds: epsilon.
    level: Optional[float] = None


@dataclass
class Verdict:
    id: str
    kind: str
    statement: str
    verdict: str  # one of VERDICTS
    statistic: Optional[float]
    interval: Optional[tuple[float, float]]
    n: int
    cells_used: list[str]
    detail: str  # one sentence with the numbers
    per_group: list[dict[str, Any]] = field(default_factory=list)
    metric: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "statement": self.statement, "metric": self.metric,
                "verdict": self.verdict, "statistic": self.statistic,
                "interval": list(self.interval) if self.interval else None, "n": self.n,
                "cells_used": self.cells_used, "detail": self.detail, "per_group": self.per_group}


# --- validation ---------------------------------------------------------------------------------

def unknown(what: str, value: Any, allowed: Sequence[Any]) -> str:
    return unknown_value(what, value, [str(a) for a in allowed])


def as_list(value: Any) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]


def claim_problems(claim: ClaimSpec, grid: dict[str, list], methods: list[str], families: list[str],
                   metrics: list[str], default_metric: str) -> list[tuple[str, str]]:
    """Every problem of one claim as (subkey, one-line message): unknown kind, metric, method,
    family; the wrong number of methods for gap_within/ordering; `where` keys that are not grid axes
    or values not on the axis; a missing or unknown axis; `at` not on the axis; a missing level; a
    bad direction. `methods`, `families`, `metrics`: what is allowed (an empty `metrics` skips the
    metric check). The caller prefixes the subkey, e.g. "claims[2]." + "axis"."""
    problems: list[tuple[str, str]] = []

    def add(key: str, message: str) -> None:
        problems.append((key, message))

    kind = claim.kind
    if kind not in CLAIM_KINDS:
        add("kind", unknown("claim kind", kind, CLAIM_KINDS))
    if claim.metric is not None and metrics and claim.metric not in metrics:
        add("metric", unknown("metric", claim.metric, metrics))
    if kind == "identity_holds" and claim.metric is None:
        add("metric", f"identity_holds needs the residual it bounds, such as garrido_residual; without metric "
                      f"it would bound the sweep's metric {default_metric}")
    for method in claim.methods:
        if method not in methods:
            add("methods", unknown("method", method, methods))
    for family in claim.families:
        if family not in families:
            add("families", unknown("family", family, families))
    if kind in PAIR_KINDS:
        if claim.methods and claim.families:
            add("methods", f"{kind} compares two methods or two families, not both; got methods "
                           f"{list(claim.methods)} and families {list(claim.families)}")
        elif claim.families:
            if len(claim.families) != 2:
                add("families", f"{kind} needs exactly two families, A then B; got {len(claim.families)}: "
                                f"{list(claim.families)}")
        elif len(claim.methods) != 2:
            add("methods", f"{kind} needs exactly two methods, A then B (or two families); got "
                           f"{len(claim.methods)}: {list(claim.methods)}")
        pair = claim.families or claim.methods
        if len(pair) == 2 and pair[0] == pair[1]:
            add("families" if claim.families else "methods", f"{kind} compares {pair[0]} with itself; name two different ones")
    axes = list(grid)
    for key, wanted in claim.where.items():
        if key not in grid:
            add(f"where.{key}", f"not a grid axis{did_you_mean(key, axes)}; the grid's axes: {', '.join(axes) or 'none'}")
            continue
        for value in as_list(wanted):
            if not any(same_value(value, v) for v in grid[key]):
                add(f"where.{key}", f"{value!r} is not a value of grid axis {key}{did_you_mean(value, grid[key])}; "
                                    f"its values: {', '.join(str(v) for v in grid[key])}")
    axis_ok = False
    if kind in AXIS_KINDS:
        if claim.axis is None:
            add("axis", f"required for {kind}: a grid axis, one of {', '.join(axes) or '(the grid has none)'}")
        elif claim.axis not in grid:
            add("axis", unknown("grid axis", claim.axis, axes))
        elif claim.axis == METHOD_AXIS:
            add("axis", f"{kind} is judged per method, so its axis cannot be method; "
                        f"compare two methods with gap_within or ordering")
        else:
            axis_ok = True
    if kind in AT_KINDS:
        if claim.at is None:
            add("at", f"required for {kind}: a value of its axis"
                      + (f" {claim.axis}: {', '.join(str(v) for v in grid[claim.axis])}" if axis_ok else ""))
        elif axis_ok and not any(same_value(claim.at, v) for v in grid[claim.axis]):  # type: ignore[index]
            values = grid[claim.axis]  # type: ignore[index]
            add("at", f"{claim.at!r} is not a value of grid axis {claim.axis}{did_you_mean(claim.at, values)}; "
                      f"its values: {', '.join(str(v) for v in values)}")
    if kind in LEVEL_KINDS:
        if claim.level is None:
            what = "epsilon, the largest |metric| allowed" if kind == "identity_holds" else "the level the metric is compared with"
            add("level", f"required for {kind}: {what}")
        elif kind == "identity_holds" and claim.level < 0:
            add("level", f"epsilon must be >= 0, got {claim.level}")
    if kind in DIRECTIONS and claim.direction not in DIRECTIONS[kind]:
        allowed = DIRECTIONS[kind]
        add("direction", f"{kind} needs direction {' or '.join(allowed)}{did_you_mean(claim.direction, allowed)}; "
                         f"got {claim.direction!r}")
    if kind in ("gap_within", "flat_along") and claim.tolerance < 0:
        add("tolerance", f"{kind}'s tolerance (delta) must be >= 0, got {claim.tolerance}")
    return problems


# --- judging -------------------------------------------------------------------------------------

def num(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def ci_text(interval: Optional[tuple[float, float]]) -> str:
    return f" [{num(interval[0])}, {num(interval[1])}]" if interval else ""


@dataclass
class Outcome:
    """One group's verdict and its numbers."""

    label: str
    verdict: str
    statistic: Optional[float] = None
    interval: Optional[tuple[float, float]] = None
    n: int = 0
    cells: list[str] = field(default_factory=list)
    detail: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    slack: float = math.inf  # supported: how far inside its bound (the smallest decides)
    needs: list[tuple[str, str]] = field(default_factory=list)  # cannot be judged: (what, where) it lacks
    too_few: bool = False

    @property
    def missing(self) -> str:
        return "; ".join(f"{what} in {where}" for what, where in self.needs)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.label, "verdict": self.verdict, "statistic": self.statistic,
                "interval": list(self.interval) if self.interval else None, "n": self.n, "cells": self.cells,
                "detail": self.detail if self.verdict != CANNOT else f"needs {self.missing}", **self.numbers}


def lacking(label: str, *needs: tuple[str, str]) -> Outcome:
    return Outcome(label, CANNOT, needs=list(needs))


def needs_text(outcomes: list[Outcome], noun: str) -> str:
    """What the groups lack, each thing once: "confirmed results for vicreg in 5 groups (e.g. batch_size=64)"."""
    wheres: dict[str, list[str]] = {}
    for o in outcomes:
        for what, where in o.needs:
            wheres.setdefault(what, [])
            if where not in wheres[what]:
                wheres[what].append(where)
    parts = [f"{what} in {' and '.join(places)}" if len(places) <= 2 else f"{what} in {len(places)} {noun} (e.g. {places[0]})"
             for what, places in wheres.items()]
    more = f"; and {len(parts) - 6} more" if len(parts) > 6 else ""
    return "needs " + "; ".join(parts[:6]) + more


def est_numbers(estimate: Optional[Estimate]) -> dict[str, Any]:
    return estimate.to_dict() if estimate else {"mean": None, "n": 0, "sd": None, "lo": None, "hi": None}


def few_seeds(n: int) -> str:
    return f"too few seeds (n={n})"


@dataclass
class Context:
    claim: ClaimSpec
    analysis: Analysis
    metric: str
    selected: list[CellResult]

    @property
    def info(self) -> SweepInfo:
        return self.analysis.info

    @property
    def mode(self) -> str:
        return self.info.better(self.metric)

    def mean(self, values: list[float]) -> Optional[Estimate]:
        return mean_ci(values, self.analysis.confidence)

    def diff(self, a: list[float], b: list[float]) -> Optional[Difference]:
        return welch_diff(a, b, self.analysis.confidence)


def matches(values: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, wanted in where.items():
        if key not in values or not any(same_value(values[key], w) for w in as_list(wanted)):
            return False
    return True


def select(claim: ClaimSpec, analysis: Analysis) -> list[CellResult]:
    chosen = [r for r in analysis.results if matches(r.cell.values, dict(claim.where))]
    if claim.methods:
        chosen = [r for r in chosen if r.method in claim.methods]
    if claim.families and not (claim.kind in PAIR_KINDS and claim.methods):
        chosen = [r for r in chosen if r.family in claim.families]
    return chosen


def selection_text(claim: ClaimSpec) -> str:
    parts = []
    if claim.where:
        parts.append("where " + ", ".join(f"{k}={v}" for k, v in claim.where.items()))
    if claim.methods:
        parts.append("of methods " + ", ".join(claim.methods))
    elif claim.families:
        parts.append("of families " + ", ".join(claim.families))
    return " ".join(parts)


def combine(ctx: Context, outcomes: list[Outcome], noun: str = "groups") -> Verdict:
    claim = ctx.claim

    def verdict(kind: str, decide: Optional[Outcome], detail: str) -> Verdict:
        judged = [o for o in outcomes if o.verdict != CANNOT]
        ns = [o.n for o in judged if o.n > 0]
        cells = sorted({c for o in judged for c in o.cells})
        return Verdict(claim.id, claim.kind, claim.statement, kind,
                       decide.statistic if decide else None, decide.interval if decide else None,
                       min(ns) if ns else 0, cells, detail, [o.to_dict() for o in outcomes], ctx.metric)

    if not outcomes:
        return verdict(CANNOT, None, f"needs cells {selection_text(claim) or 'in the sweep'} with results")
    total = len(outcomes)

    def where(o: Outcome) -> str:
        return f"{o.label}: " if total > 1 or o.label not in ("all cells", "") else ""

    contra = [o for o in outcomes if o.verdict == CONTRADICTED]
    if contra:
        decide = contra[0]
        head = f"contradicted in {len(contra)} of {total} {noun}; " if total > 1 else ""
        return verdict(CONTRADICTED, decide, f"{head}{where(decide)}{decide.detail}")
    missing = [o for o in outcomes if o.verdict == CANNOT]
    if missing:
        return verdict(CANNOT, None, needs_text(missing, noun))
    if all(o.verdict == SUPPORTED for o in outcomes):
        decide = min(outcomes, key=lambda o: o.slack)
        head = f"supported in all {total} {noun}; closest to its bound: " if total > 1 else ""
        return verdict(SUPPORTED, decide, f"{head}{where(decide)}{decide.detail}")
    open_ = [o for o in outcomes if o.verdict == INCONCLUSIVE]
    few = [o for o in open_ if o.too_few]
    decide = few[0] if few else open_[0]
    head = ""
    if total > 1:  # a single group's detail already says why
        head = (f"{few_seeds(min(o.n for o in few))}; " if few else "") + f"inconclusive in {len(open_)} of {total} {noun}; "
    return verdict(INCONCLUSIVE, decide, f"{head}{where(decide)}{decide.detail}")


def cannot(claim: ClaimSpec, metric: str, detail: str) -> Verdict:
    return Verdict(claim.id, claim.kind, claim.statement, CANNOT, None, None, 0, [], detail, [], metric)


def by_group(results: list[CellResult], without: tuple[str, ...] = (METHOD_AXIS,)) -> dict[tuple, list[CellResult]]:
    groups: dict[tuple, list[CellResult]] = {}
    for r in results:
        groups.setdefault(group_key(r.cell.values, without), []).append(r)
    return groups


# pair kinds: gap_within, ordering

def pick_side(ctx: Context, members: list[CellResult], name: str, by_family: bool,
              label: str) -> tuple[Optional[CellResult], Optional[tuple[str, str]]]:
    what = "family" if by_family else "method"
    candidates = [r for r in members if (r.family if by_family else r.method) == name]
    if not candidates:
        return None, (f"a cell of {what} {name}", label)
    if by_family:
        confirmed = [r for r in candidates if r.confirm is not None and r.samples(ctx.metric)]
        if not confirmed:
            return None, (f"confirmed results for {what} {name} ({', '.join(r.method for r in candidates)})", label)
        sign = 1.0 if ctx.info.mode == "max" else -1.0
        return max(confirmed, key=lambda r: sign * r.confirm.mean), None  # type: ignore[union-attr]
    chosen = candidates[0]
    if not chosen.samples(ctx.metric):
        return None, (f"confirmed results for {name}", label)
    return chosen, None


def side_numbers(r: CellResult, metric: str) -> dict[str, Any]:
    return {"method": r.method, "family": r.family, "cell": r.cell.id, **est_numbers(r.estimate(metric))}


def judge_pair(ctx: Context) -> Verdict:
    claim = ctx.claim
    by_family = not claim.methods
    a_name, b_name = (claim.families if by_family else claim.methods)[:2]
    delta = float(claim.tolerance)
    outcomes = []
    for key, members in by_group(ctx.selected).items():
        label = group_label(key)
        ra, miss_a = pick_side(ctx, members, a_name, by_family, label)
        rb, miss_b = pick_side(ctx, members, b_name, by_family, label)
        if ra is None or rb is None:
            outcomes.append(lacking(label, *[m for m in (miss_a, miss_b) if m]))
            continue
        d = ctx.diff(ra.samples(ctx.metric), rb.samples(ctx.metric))
        assert d is not None
        numbers = {"a": side_numbers(ra, ctx.metric), "b": side_numbers(rb, ctx.metric), "difference": d.to_dict(),
                   "tolerance": delta}
        text = f"{ra.method} - {rb.method} = {num(d.diff)}{ci_text(d.interval)} (n={d.n_a} vs {d.n_b})"
        o = Outcome(label, INCONCLUSIVE, d.diff, d.interval, d.n, [ra.cell.id, rb.cell.id], numbers=numbers)
        if d.interval is None:
            o.too_few, o.detail = True, f"{text}: {few_seeds(d.n)}"
        elif claim.kind == "gap_within":
            lo, hi = d.interval
            if lo >= -delta and hi <= delta:
                o.verdict, o.slack, o.detail = SUPPORTED, delta - max(abs(lo), abs(hi)), f"{text} lies within +-{num(delta)}"
            elif hi < -delta or lo > delta:
                o.verdict, o.detail = CONTRADICTED, f"{text} lies outside +-{num(delta)}"
            else:
                o.detail = f"{text} straddles +-{num(delta)}"
        else:
            lo, hi = d.interval
            if lo >= delta:
                o.verdict, o.slack, o.detail = SUPPORTED, lo - delta, f"{text} is at least the margin {num(delta)}"
            elif hi < delta:
                o.verdict, o.detail = CONTRADICTED, f"{text} is below the margin {num(delta)}"
            else:
                o.detail = f"{text} straddles the margin {num(delta)}"
        outcomes.append(o)
    return combine(ctx, outcomes)


# along-axis kinds: flat_along, peaks_at, monotone_along, threshold

@dataclass
class AxisGroup:
    label: str
    method: str
    rest: str  # the other axes' values
    order: list[Any]  # the axis values present in this group, in axis order
    results: dict[int, CellResult]  # position in `order` -> result


def axis_groups(ctx: Context) -> list[AxisGroup]:
    axis = ctx.claim.axis
    assert axis is not None
    full = axis_order(list(ctx.info.grid.get(axis, [])))
    groups: dict[tuple, dict[int, CellResult]] = {}
    labels: dict[tuple, tuple[str, str, str]] = {}
    for r in ctx.selected:
        if axis not in r.cell.values:
            continue
        key = (r.method,) + group_key(r.cell.values, (METHOD_AXIS, axis))
        rest = group_label(group_key(r.cell.values, (METHOD_AXIS, axis)))
        labels[key] = (r.method if rest == "all cells" else f"{r.method}, {rest}", r.method, "" if rest == "all cells" else rest)
        pos = position(r.cell.values[axis], full)
        if pos is None:
            full.append(r.cell.values[axis])
            pos = len(full) - 1
        groups.setdefault(key, {}).setdefault(pos, r)
    out = []
    for key, by_pos in groups.items():
        positions = sorted(by_pos)
        out.append(AxisGroup(*labels[key], [full[p] for p in positions],
                             {i: by_pos[p] for i, p in enumerate(positions)}))
    return out


def value_rows(ctx: Context, group: AxisGroup, samples: Callable[[CellResult], list[float]]) -> list[dict[str, Any]]:
    rows = []
    for i, value in enumerate(group.order):
        r = group.results[i]
        rows.append({"value": value, "cell": r.cell.id, **est_numbers(ctx.mean(samples(r)))})
    return rows


def confirmed(ctx: Context) -> Callable[[CellResult], list[float]]:
    return lambda r: r.samples(ctx.metric)


def missing_values(ctx: Context, group: AxisGroup, samples: Callable[[CellResult], list[float]],
                   kind: str = "confirmed results") -> list[tuple[str, str]]:
    return [(f"{kind} for {group.method}", f"{ctx.claim.axis}={v}" + (f", {group.rest}" if group.rest else ""))
            for i, v in enumerate(group.order) if not samples(group.results[i])]


def lacking_along(ctx: Context, group: AxisGroup, samples: Callable[[CellResult], list[float]]) -> Optional[Outcome]:
    """What an along-axis judgement of this group cannot do without: a confirmed result at every
    axis value, and at least two values."""
    need = missing_values(ctx, group, samples)
    if need:
        return lacking(group.label, *need)
    if len(group.order) < 2:
        return lacking(group.label, (f"at least two values of {ctx.claim.axis}", group.label))
    return None


def judge_flat(ctx: Context) -> Verdict:
    delta = float(ctx.claim.tolerance)
    samples = confirmed(ctx)
    outcomes = []
    for g in axis_groups(ctx):
        lack = lacking_along(ctx, g, samples)
        if lack:
            outcomes.append(lack)
            continue
        rows = value_rows(ctx, g, samples)
        hi_i = max(range(len(rows)), key=lambda i: rows[i]["mean"])
        lo_i = min(range(len(rows)), key=lambda i: rows[i]["mean"])
        d = ctx.diff(samples(g.results[hi_i]), samples(g.results[lo_i]))
        assert d is not None
        text = (f"max - min = {num(d.diff)}{ci_text(d.interval)} ({ctx.claim.axis}={g.order[hi_i]} vs "
                f"{g.order[lo_i]}, n={d.n_a} vs {d.n_b})")
        o = Outcome(g.label, INCONCLUSIVE, d.diff, d.interval, min(r["n"] for r in rows),
                    [r["cell"] for r in rows], numbers={"values": rows, "difference": d.to_dict(), "tolerance": delta,
                                                        "max_at": g.order[hi_i], "min_at": g.order[lo_i]})
        if d.interval is None:
            o.too_few, o.detail = True, f"{text}: {few_seeds(o.n)}"
        elif d.interval[1] <= delta:
            o.verdict, o.slack, o.detail = SUPPORTED, delta - d.interval[1], f"{text} is within {num(delta)}"
        elif d.interval[0] > delta:
            o.verdict, o.detail = CONTRADICTED, f"{text} exceeds {num(delta)}"
        else:
            o.detail = f"{text} straddles {num(delta)}"
        outcomes.append(o)
    return combine(ctx, outcomes)


def significantly_better(d: Optional[Difference], mode: str) -> bool:
    """d = best - other: its interval excludes 0 on the better side."""
    if d is None or d.interval is None:
        return False
    return d.interval[0] > 0 if mode == "max" else d.interval[1] < 0


def judge_peak(ctx: Context) -> Verdict:
    claim = ctx.claim
    samples = confirmed(ctx)
    full = axis_order(list(ctx.info.grid.get(claim.axis, [])))  # type: ignore[arg-type]
    at_full = position(claim.at, full)
    outcomes = []
    for g in axis_groups(ctx):
        need = missing_values(ctx, g, samples)
        at_i = position(claim.at, g.order)
        if need or at_i is None:
            outcomes.append(lacking(g.label, *(need or [(f"a cell at {claim.axis}={claim.at}", g.label)])))
            continue
        rows = value_rows(ctx, g, samples)
        sign = 1.0 if ctx.mode == "max" else -1.0
        best_i = max(range(len(rows)), key=lambda i: sign * rows[i]["mean"])
        places = [position(v, full) for v in g.order]
        neighbours = [i for i, p in enumerate(places) if p is not None and at_full is not None and abs(p - at_full) <= 1]
        d = ctx.diff(samples(g.results[best_i]), samples(g.results[at_i]))
        assert d is not None
        n = min(r["n"] for r in rows)
        numbers = {"values": rows, "best_at": g.order[best_i], "at": claim.at,
                   "neighbourhood": [g.order[i] for i in neighbours], "difference": d.to_dict()}
        o = Outcome(g.label, INCONCLUSIVE, d.diff, d.interval, n, [r["cell"] for r in rows], numbers=numbers)
        best_text = f"best {claim.axis}={g.order[best_i]} ({num(rows[best_i]['mean'])}, n={rows[best_i]['n']})"
        if best_i in neighbours:
            o.verdict, o.slack = SUPPORTED, 0.0
            if best_i == at_i:
                o.statistic, o.interval = 0.0, None
            o.detail = (f"{best_text} is at {claim.at}" if best_i == at_i else
                        f"{best_text} is next to {claim.at} ({num(rows[at_i]['mean'])}); difference "
                        f"{num(d.diff)}{ci_text(d.interval)}")
        else:
            diffs = [ctx.diff(samples(g.results[best_i]), samples(g.results[i])) for i in neighbours]
            numbers["vs_neighbourhood"] = [{"value": g.order[i], **(x.to_dict() if x else {})} for i, x in zip(neighbours, diffs)]
            text = (f"{best_text} is outside {claim.at} and its neighbours; best - at = {num(d.diff)}"
                    f"{ci_text(d.interval)}")
            if any(x is None or x.interval is None for x in diffs):
                o.too_few, o.detail = True, f"{text}: {few_seeds(n)}"
            elif neighbours and all(significantly_better(x, ctx.mode) for x in diffs):
                o.verdict, o.detail = CONTRADICTED, f"{text}, significantly better than every neighbour"
            else:
                o.detail = f"{text}, not significantly better than every neighbour"
        outcomes.append(o)
    return combine(ctx, outcomes)


def judge_monotone(ctx: Context) -> Verdict:
    claim = ctx.claim
    up = claim.direction == "increasing"
    samples = confirmed(ctx)
    outcomes = []
    for g in axis_groups(ctx):
        lack = lacking_along(ctx, g, samples)
        if lack:
            outcomes.append(lack)
            continue
        rows = value_rows(ctx, g, samples)
        n = min(r["n"] for r in rows)
        steps = [ctx.diff(samples(g.results[i + 1]), samples(g.results[i])) for i in range(len(rows) - 1)]
        total = ctx.diff(samples(g.results[len(rows) - 1]), samples(g.results[0]))
        assert total is not None and all(s is not None for s in steps)
        step_rows = [{"from": g.order[i], "to": g.order[i + 1], **s.to_dict()} for i, s in enumerate(steps)]  # type: ignore[union-attr]
        numbers = {"values": rows, "steps": step_rows, "first_to_last": total.to_dict(), "direction": claim.direction}
        o = Outcome(g.label, INCONCLUSIVE, total.diff, total.interval, n, [r["cell"] for r in rows], numbers=numbers)
        text = (f"{claim.axis} {g.order[0]} -> {g.order[-1]}: {num(total.diff)}{ci_text(total.interval)}")
        if n < 2:  # every step needs its interval
            o.too_few, o.detail = True, f"{text}: {few_seeds(n)}"
            outcomes.append(o)
            continue

        def wrong(s: Difference) -> bool:
            return s.interval is not None and (s.interval[1] < 0 if up else s.interval[0] > 0)

        bad = [(i, s) for i, s in enumerate(steps) if wrong(s)]  # type: ignore[arg-type]
        if bad:
            i, s = bad[0]
            o.verdict, o.statistic, o.interval = CONTRADICTED, s.diff, s.interval
            o.detail = (f"step {claim.axis} {g.order[i]} -> {g.order[i + 1]} goes the wrong way: "
                        f"{num(s.diff)}{ci_text(s.interval)} (expected {claim.direction})")
        elif (total.interval[0] > 0) if up else (total.interval[1] < 0):
            o.verdict, o.slack = SUPPORTED, total.interval[0] if up else -total.interval[1]
            o.detail = f"{text} is significantly {claim.direction} and no step goes the wrong way"
        else:
            o.detail = f"{text} is not significantly {claim.direction}"
        outcomes.append(o)
    return combine(ctx, outcomes)


# level kinds: collapses, no_collapse, recovers, threshold

def level_samples(ctx: Context) -> tuple[Callable[[CellResult], list[float]], str]:
    """Confirmation values when any selected cell has a finished confirmation trial, else every
    finished trial of the cell."""
    if any(r.samples(ctx.metric) for r in ctx.selected):
        return confirmed(ctx), "confirmation trials"
    return (lambda r: clean(t.metrics.get(ctx.metric) for t in r.trials if t.finished)), "finished trials"


def cell_text(r: CellResult) -> str:
    return f"{r.cell.id} ({r.cell.label})" if r.cell.label else r.cell.id


def judge_level(ctx: Context) -> Verdict:
    claim = ctx.claim
    level = float(claim.level)  # type: ignore[arg-type]
    below = claim.kind == "collapses"
    samples, source = level_samples(ctx)
    outcomes = []
    for r in ctx.selected:
        label = cell_text(r)
        values = samples(r)
        if not values:
            outcomes.append(lacking(label, (f"{source} reporting {ctx.metric}", label)))
            continue
        e = ctx.mean(values)
        assert e is not None
        text = f"{ctx.metric} = {num(e.mean)}{ci_text(e.interval)} (n={e.n}, {source})"
        o = Outcome(label, INCONCLUSIVE, e.mean, e.interval, e.n, [r.cell.id],
                    numbers={"method": r.method, "estimate": e.to_dict(), "level": level, "source": source})
        side = "below" if below else "above"
        if e.interval is None:
            o.too_few, o.detail = True, f"{text}: {few_seeds(e.n)}"
        elif (e.interval[1] < level) if below else (e.interval[0] > level):
            o.verdict, o.slack = SUPPORTED, (level - e.interval[1]) if below else (e.interval[0] - level)
            o.detail = f"{text} is {side} {num(level)}"
        elif (e.interval[0] > level) if below else (e.interval[1] < level):
            o.verdict, o.detail = CONTRADICTED, f"{text} is not {side} {num(level)}"
        else:
            o.detail = f"{text} straddles {num(level)}"
        outcomes.append(o)
    return combine(ctx, outcomes, "cells")


def judge_threshold(ctx: Context) -> Verdict:
    claim = ctx.claim
    level = float(claim.level)  # type: ignore[arg-type]
    samples, source = level_samples(ctx)
    full = axis_order(list(ctx.info.grid.get(claim.axis, [])))  # type: ignore[arg-type]
    at_pos = position(claim.at, full)
    first_above = claim.direction == "above_below"
    outcomes = []
    for g in axis_groups(ctx):
        need = missing_values(ctx, g, samples, source)
        if need:
            outcomes.append(lacking(g.label, *need))
            continue
        rows = []
        for i, value in enumerate(g.order):
            if same_value(value, claim.at):
                continue
            if is_number(value) and is_number(claim.at):
                before = float(value) < float(claim.at)
            else:
                before = (position(value, full) or 0) < (at_pos or 0)
            e = ctx.mean(samples(g.results[i]))
            assert e is not None
            expected = "above" if before == first_above else "below"
            ok = e.interval is not None and (e.interval[0] > level if expected == "above" else e.interval[1] < level)
            bad = e.interval is not None and (e.interval[1] < level if expected == "above" else e.interval[0] > level)
            slack = (e.interval[0] - level if expected == "above" else level - e.interval[1]) if e.interval else -math.inf
            rows.append({"value": value, "cell": g.results[i].cell.id, "expected": expected, "ok": ok, "wrong": bad,
                         "slack": slack, **e.to_dict()})
        sides = {row["expected"] for row in rows}
        if len(sides) < 2:
            outcomes.append(lacking(g.label, (f"values of {claim.axis} on both sides of {claim.at}", g.label)))
            continue
        n = min(row["n"] for row in rows)
        cells = [row["cell"] for row in rows]

        def text(row: dict) -> str:
            return (f"at {claim.axis}={row['value']} {ctx.metric} = {num(row['mean'])}"
                    f"{ci_text((row['lo'], row['hi']) if row['lo'] is not None else None)} (n={row['n']}), "
                    f"expected {row['expected']} {num(level)}")

        numbers = {"values": rows, "level": level, "at": claim.at, "source": source}
        wrong = [row for row in rows if row["wrong"]]
        if wrong:
            row = wrong[0]
            o = Outcome(g.label, CONTRADICTED, row["mean"], (row["lo"], row["hi"]), n, cells, text(row), numbers)
        elif all(row["ok"] for row in rows):
            row = min(rows, key=lambda r: r["slack"])
            o = Outcome(g.label, SUPPORTED, row["mean"], (row["lo"], row["hi"]), n, cells,
                        f"every value is on its side; closest: {text(row)}", numbers, slack=row["slack"])
        else:
            row = next(r for r in rows if not r["ok"])
            few = row["lo"] is None
            interval = None if few else (row["lo"], row["hi"])
            o = Outcome(g.label, INCONCLUSIVE, row["mean"], interval, n, cells,
                        text(row) + (f": {few_seeds(row['n'])}" if few else ": not significantly on its side"),
                        numbers, too_few=few)
        outcomes.append(o)
    return combine(ctx, outcomes)


def judge_identity(ctx: Context) -> Verdict:
    claim = ctx.claim
    eps = float(claim.level)  # type: ignore[arg-type]
    outcomes = []
    for r in ctx.selected:
        label = cell_text(r)
        trials = [t for t in r.trials if t.status in ("finished", "stopped_early") and ctx.metric in t.metrics]
        if not trials:
            outcomes.append(lacking(label, (f"finished trials reporting {ctx.metric}", label)))
            continue
        worst, worst_key = -1.0, ""
        for t in trials:
            try:
                v = abs(float(t.metrics[ctx.metric]))
            except (TypeError, ValueError):
                v = math.inf
            v = v if math.isfinite(v) else math.inf
            if v > worst:
                worst, worst_key = v, t.key
        ok = worst <= eps
        stat = worst if math.isfinite(worst) else None
        detail = (f"max |{ctx.metric}| = {num(worst)} over {len(trials)} trials (worst {worst_key}) "
                  f"{'<=' if ok else '>'} epsilon {num(eps)}")
        outcomes.append(Outcome(label, SUPPORTED if ok else CONTRADICTED, stat, None, len(trials), [r.cell.id], detail,
                                {"method": r.method, "max_abs": stat, "worst_trial": worst_key, "epsilon": eps,
                                 "trials": len(trials)}, slack=eps - worst))
    verdict = combine(ctx, outcomes, "cells")
    judged = [o for o in outcomes if o.verdict != CANNOT]
    if verdict.verdict in (SUPPORTED, CONTRADICTED):
        verdict.n = sum(o.n for o in judged)
        worst = max(judged, key=lambda o: math.inf if o.statistic is None else o.statistic)
        verdict.statistic = worst.statistic
        if verdict.verdict == SUPPORTED:
            verdict.detail = f"max |{ctx.metric}| = {num(worst.statistic)} over {verdict.n} trials <= epsilon {num(eps)}"
    return verdict


JUDGES: dict[str, Callable[[Context], Verdict]] = {
    "gap_within": judge_pair, "ordering": judge_pair, "flat_along": judge_flat, "peaks_at": judge_peak,
    "monotone_along": judge_monotone, "collapses": judge_level, "no_collapse": judge_level, "recovers": judge_level,
    "threshold": judge_threshold, "identity_holds": judge_identity,
}


def judge_claim(claim: ClaimSpec, analysis: Analysis) -> Verdict:
    """The verdict of one claim on an analysed sweep (see the rules in this module's docstring)."""
    info = analysis.info
    metric = claim.metric or info.metric
    methods = list(dict.fromkeys(r.method for r in analysis.results))
    families = sorted({r.family for r in analysis.results}, key=lambda f: (f not in FAMILY_ORDER, f))
    absent = [m for m in claim.methods if m not in methods] + [f for f in claim.families if f not in families]
    if absent:
        return cannot(claim, metric, f"needs cells of {', '.join(absent)}; the sweep has "
                                     f"{', '.join(methods + [f for f in families if f in claim.families])}")
    problems = claim_problems(claim, info.grid, methods, families, [], info.metric)
    if problems:
        return cannot(claim, metric, "; ".join(f"{key}: {message}" for key, message in problems))
    selected = select(claim, analysis)
    if not selected:
        return cannot(claim, metric, f"needs cells {selection_text(claim) or 'in the sweep'}; the sweep has none")
    trials = [t for r in selected for t in r.trials]
    if not any(t.status in ENDED for t in trials):
        where_ = f"in the cells {selection_text(claim)}" if selection_text(claim) else "in any cell"
        return cannot(claim, metric, f"needs trials that ended {where_}; none has yet")
    if not any(metric in t.metrics for t in trials):
        seen = sorted({m for t in trials for m in t.metrics})
        return cannot(claim, metric, f"needs metric {metric!r} in the trials' results{did_you_mean(metric, seen)}; "
                                     f"they report {', '.join(seen) or 'nothing'}")
    return JUDGES[claim.kind](Context(claim, analysis, metric, selected))


def judge_claims(info: SweepInfo, trials: list[TrialRecord], analysis: Optional[Analysis] = None,
                 confidence: Optional[float] = None) -> list[Verdict]:
    """One verdict per claim of the sweep, in the order the sweep declares them, at the confidence of
    `analysis`; without one, of a new analysis at `confidence` (default: the sweep's, info.confidence)."""
    analysis = analysis or analyze(info, trials, confidence=confidence)
    return [judge_claim(claim, analysis) for claim in info.claims]
