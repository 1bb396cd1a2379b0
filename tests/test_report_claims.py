"""Claim verdicts (every kind: supported, contradicted, inconclusive, cannot be judged) against
numbers computed by hand, and claim_problems' messages. No Ray, no MLflow."""
from __future__ import annotations

from itertools import product
from typing import Any

import pytest
from omegaconf import OmegaConf

from orchestrator.report.claims import CLAIM_KINDS, ClaimSpec, claim_problems, judge_claims
from orchestrator.report.model import CellInfo, SweepInfo, TrialRecord

FAMILY = {"simclr": "sample_contrastive", "simclr_abs": "sample_contrastive", "vicreg": "dimension_contrastive",
          "byol": "asymmetric"}
# Hand numbers used below. Three seeds with sd 0.01 (e.g. [0.70, 0.71, 0.72]):
#   mean CI half width = t(0.975, 2) * 0.01 / sqrt(3) = 4.302653 * 0.0057735 = 0.0248414
#   Welch of two such samples: se = sqrt(2 * 1e-4 / 3) = 0.0081650, df = 4,
#   half width = t(0.975, 4) * se = 2.776445 * 0.0081650 = 0.0226696
H_MEAN = 0.0248414
H_DIFF = 0.0226696


def sd01(mean: float) -> list[float]:
    """Three seeds around mean with sd 0.01."""
    return [mean - 0.01, mean, mean + 0.01]


def build(grid: dict[str, list], confirm: dict[tuple, list[Any]], claims: list[ClaimSpec], metric: str = "knn_acc",
          mode: str = "max", search: dict[tuple, list[Any]] | None = None) -> tuple[SweepInfo, list[TrialRecord]]:
    """A sweep over `grid` (method defaults to simclr). confirm / search: grid-value tuple -> one entry per
    trial, a number (the sweep's metric) or a dict of metrics. A cell missing from confirm has no
    confirmation trial (a partial sweep); every cell gets one finished search trial unless `search` says."""
    cells, trials = [], []
    for i, combo in enumerate(product(*grid.values())):
        values = dict(zip(grid, combo))
        method = values.get("method", "simclr")
        c = CellInfo(f"c{i:02d}", ",".join(f"{k}={v}" for k, v in values.items()), values, method, FAMILY[method])
        cells.append(c)
        entries = (search or {}).get(combo, [0.5] if search is None else [])
        for k, v in enumerate(entries):
            trials.append(TrialRecord(f"{c.id}-search-{k:03d}", c.id, values, method, c.family, "search", 0,
                                      {"optim.lr": 0.1}, "finished", v if isinstance(v, dict) else {metric: v}))
        for s, v in enumerate(confirm.get(combo, []), 1):
            trials.append(TrialRecord(f"{c.id}-confirm-seed{s}", c.id, values, method, c.family, "confirm", s,
                                      {"optim.lr": 0.1}, "finished", v if isinstance(v, dict) else {metric: v}))
    info = SweepInfo("t", metric, mode, grid, cells, [1, 2, 3], 1, len(trials), False, claims=claims)
    return info, trials


def verdict(grid, confirm, claim, **kw):
    info, trials = build(grid, confirm, [claim], **kw)
    return judge_claims(info, trials)[0]


PAIR = {"method": ["simclr", "vicreg"]}


# --- gap_within -----------------------------------------------------------------------------------

@pytest.mark.parametrize("delta, expected", [(0.03, "supported"), (0.02, "inconclusive")])
def test_gap_within_supported_and_inconclusive(delta: float, expected: str) -> None:
    # simclr - vicreg = 0.71 - 0.715 = -0.005, Welch CI -0.005 +- 0.0226696 = [-0.0276696, 0.0176696]
    # delta 0.03: inside [-0.03, 0.03] -> supported; delta 0.02: straddles -0.02 -> inconclusive
    claim = ClaimSpec(id="G3", kind="gap_within", methods=["simclr", "vicreg"], tolerance=delta)
    v = verdict(PAIR, {("simclr",): sd01(0.71), ("vicreg",): sd01(0.715)}, claim)
    assert v.verdict == expected
    assert v.statistic == pytest.approx(-0.005)
    assert v.interval == pytest.approx((-0.005 - H_DIFF, -0.005 + H_DIFF), abs=1e-6)
    assert v.n == 3 and v.cells_used == ["c00", "c01"]
    assert "simclr - vicreg = -0.005" in v.detail
    assert v.per_group[0]["difference"]["df"] == pytest.approx(4.0)


def test_gap_within_contradicted() -> None:
    # -0.05 +- 0.0226696 = [-0.0727, -0.0273]: entirely below -0.02
    claim = ClaimSpec(id="G3", kind="gap_within", methods=["simclr", "vicreg"], tolerance=0.02)
    v = verdict(PAIR, {("simclr",): sd01(0.70), ("vicreg",): sd01(0.75)}, claim)
    assert v.verdict == "contradicted" and v.interval[1] == pytest.approx(-0.05 + H_DIFF, abs=1e-6)


def test_gap_within_one_contradicted_group_contradicts_the_claim() -> None:
    grid = {"method": ["simclr", "vicreg"], "batch_size": [64, 256]}
    confirm = {("simclr", 64): sd01(0.71), ("vicreg", 64): sd01(0.71),  # 0 +- 0.0227: within 0.03
               ("simclr", 256): sd01(0.60), ("vicreg", 256): sd01(0.70)}  # -0.1 +- 0.0227: outside
    claim = ClaimSpec(id="G3", kind="gap_within", methods=["simclr", "vicreg"], tolerance=0.03)
    v = verdict(grid, confirm, claim)
    assert v.verdict == "contradicted"
    assert [g["verdict"] for g in v.per_group] == ["supported", "contradicted"]
    assert v.detail.startswith("contradicted in 1 of 2 groups; batch_size=256:")
    # `where` keeps the group that holds
    claim.where = {"batch_size": 64}
    assert verdict(grid, confirm, claim).verdict == "supported"


def test_gap_within_with_one_seed_is_inconclusive() -> None:
    claim = ClaimSpec(id="G3", kind="gap_within", methods=["simclr", "vicreg"], tolerance=0.5)
    v = verdict(PAIR, {("simclr",): [0.7], ("vicreg",): sd01(0.71)}, claim)
    assert v.verdict == "inconclusive" and v.interval is None and v.n == 1
    assert "too few seeds (n=1)" in v.detail


def test_gap_within_lacking_a_confirmed_method_cannot_be_judged() -> None:
    claim = ClaimSpec(id="G3", kind="gap_within", methods=["simclr", "vicreg"], tolerance=0.5)
    v = verdict(PAIR, {("simclr",): sd01(0.7)}, claim)  # vicreg has a search trial but no confirmation
    assert v.verdict == "cannot be judged" and v.statistic is None
    assert v.detail == "needs confirmed results for vicreg in all cells"
    other = ClaimSpec(id="G4", kind="gap_within", methods=["simclr", "byol"], tolerance=0.5)
    v = verdict(PAIR, {("simclr",): sd01(0.7)}, other)
    assert v.verdict == "cannot be judged" and v.detail.startswith("needs cells of byol; the sweep has simclr, vicreg")


def test_gap_within_between_families_takes_each_familys_best_method() -> None:
    grid = {"method": ["simclr", "simclr_abs", "vicreg"]}
    confirm = {("simclr",): sd01(0.60), ("simclr_abs",): sd01(0.70), ("vicreg",): sd01(0.71)}
    claim = ClaimSpec(id="G4", kind="gap_within", families=["sample_contrastive", "dimension_contrastive"], tolerance=0.05)
    v = verdict(grid, confirm, claim)
    # simclr_abs - vicreg = -0.01 +- 0.0226696 = [-0.0327, 0.0127], within 0.05
    assert v.verdict == "supported" and v.statistic == pytest.approx(-0.01)
    assert v.per_group[0]["a"]["method"] == "simclr_abs" and v.cells_used == ["c01", "c02"]


# --- ordering -------------------------------------------------------------------------------------

@pytest.mark.parametrize("margin, expected", [(0.02, "supported"), (0.1, "contradicted"), (0.05, "inconclusive")])
def test_ordering(margin: float, expected: str) -> None:
    # vicreg - simclr = 0.76 - 0.71 = 0.05, CI [0.0273304, 0.0726696]
    # margin 0.02: lower bound >= 0.02 -> supported; 0.1: upper bound < 0.1 -> contradicted; 0.05: inside
    claim = ClaimSpec(id="G6", kind="ordering", methods=["vicreg", "simclr"], tolerance=margin)
    v = verdict(PAIR, {("simclr",): sd01(0.71), ("vicreg",): sd01(0.76)}, claim)
    assert v.verdict == expected
    assert v.interval == pytest.approx((0.05 - H_DIFF, 0.05 + H_DIFF), abs=1e-6)


# --- flat_along -----------------------------------------------------------------------------------

BS = {"batch_size": [64, 128, 256]}


@pytest.mark.parametrize("delta, expected", [(0.05, "supported"), (0.01, "inconclusive")])
def test_flat_along(delta: float, expected: str) -> None:
    # means 0.71, 0.72, 0.73: max - min = 0.73 - 0.71 = 0.02, CI 0.02 +- 0.0226696 = [-0.0026696, 0.0426696]
    # delta 0.05: upper <= 0.05 -> supported; delta 0.01: neither upper <= 0.01 nor lower > 0.01
    confirm = {(64,): sd01(0.71), (128,): sd01(0.72), (256,): sd01(0.73)}
    v = verdict(BS, confirm, ClaimSpec(id="G7", kind="flat_along", axis="batch_size", tolerance=delta))
    assert v.verdict == expected
    assert v.statistic == pytest.approx(0.02)
    assert v.interval == pytest.approx((0.02 - H_DIFF, 0.02 + H_DIFF), abs=1e-6)
    group = v.per_group[0]
    assert (group["max_at"], group["min_at"]) == (256, 64) and group["group"] == "simclr"


def test_flat_along_contradicted_and_missing_value() -> None:
    # max - min = 0.81 - 0.71 = 0.1, CI [0.0773, 0.1227]: lower > 0.05
    confirm = {(64,): sd01(0.71), (128,): sd01(0.72), (256,): sd01(0.81)}
    claim = ClaimSpec(id="G7", kind="flat_along", axis="batch_size", tolerance=0.05)
    assert verdict(BS, confirm, claim).verdict == "contradicted"
    del confirm[(128,)]
    v = verdict(BS, confirm, claim)
    assert v.verdict == "cannot be judged" and v.detail == "needs confirmed results for simclr in batch_size=128"


# --- peaks_at -------------------------------------------------------------------------------------

BS4 = {"batch_size": [64, 128, 256, 512]}
PEAK = {(64,): sd01(0.70), (128,): sd01(0.72), (256,): sd01(0.75), (512,): sd01(0.73)}


@pytest.mark.parametrize("at", [256, 128, 512])
def test_peaks_at_supported_at_or_next_to_the_value(at: int) -> None:
    # the best mean is at 256 (0.75): at 256, or next to 128 or 512 -> supported
    v = verdict(BS4, PEAK, ClaimSpec(id="G5", kind="peaks_at", axis="batch_size", at=at))
    assert v.verdict == "supported"
    assert v.per_group[0]["best_at"] == 256
    assert v.statistic == pytest.approx(0.75 - {256: 0.75, 128: 0.72, 512: 0.73}[at])


def test_peaks_at_contradicted_and_inconclusive() -> None:
    # at 64: neighbourhood {64, 128}; best 256 - 64 = 0.05 +- 0.0227 and 256 - 128 = 0.03 +- 0.0227 = [0.0073, 0.0527]:
    # both exclude 0 -> contradicted
    claim = ClaimSpec(id="G5", kind="peaks_at", axis="batch_size", at=64)
    v = verdict(BS4, PEAK, claim)
    assert v.verdict == "contradicted"
    assert v.statistic == pytest.approx(0.05)  # mean(best) - mean(at)
    assert [x["diff"] for x in v.per_group[0]["vs_neighbourhood"]] == pytest.approx([0.05, 0.03])
    # 128 at 0.74: 256 - 128 = 0.01 +- 0.0227 includes 0 -> inconclusive
    close = dict(PEAK)
    close[(128,)] = sd01(0.74)
    assert verdict(BS4, close, claim).verdict == "inconclusive"


def test_peaks_at_on_a_projector_axis_uses_the_grid_order() -> None:
    grid = {"model.projector": ["8192-8192-256", "8192-8192-1024", "8192-8192-8192"]}
    confirm = {("8192-8192-256",): sd01(0.60), ("8192-8192-1024",): sd01(0.70), ("8192-8192-8192",): sd01(0.71)}
    v = verdict(grid, confirm, ClaimSpec(id="G5", kind="peaks_at", axis="model.projector", at="8192-8192-1024"))
    assert v.verdict == "supported" and v.per_group[0]["best_at"] == "8192-8192-8192"


def test_peaks_at_in_min_mode_looks_for_the_lowest_mean() -> None:
    v = verdict(BS4, PEAK, ClaimSpec(id="G5", kind="peaks_at", axis="batch_size", at=64), mode="min")
    assert v.verdict == "supported" and v.per_group[0]["best_at"] == 64


# --- monotone_along -------------------------------------------------------------------------------

@pytest.mark.parametrize("means, direction, expected", [
    # steps +0.02 ([-0.0027, 0.0427]) and +0.03; first -> last 0.05 +- 0.0227 > 0 -> supported
    ((0.70, 0.72, 0.75), "increasing", "supported"),
    ((0.75, 0.72, 0.70), "decreasing", "supported"),
    # step 128 -> 256 = -0.05 +- 0.0227 = [-0.0727, -0.0273]: significantly down -> contradicted
    ((0.70, 0.75, 0.70), "increasing", "contradicted"),
    # first -> last 0.015 +- 0.0227 includes 0, no step significantly down -> inconclusive
    ((0.70, 0.71, 0.715), "increasing", "inconclusive"),
])
def test_monotone_along(means: tuple, direction: str, expected: str) -> None:
    confirm = {(b,): sd01(m) for b, m in zip(BS["batch_size"], means)}
    v = verdict(BS, confirm, ClaimSpec(id="G8", kind="monotone_along", axis="batch_size", direction=direction))
    assert v.verdict == expected
    if expected == "contradicted":
        assert v.statistic == pytest.approx(-0.05)
        assert v.interval == pytest.approx((-0.05 - H_DIFF, -0.05 + H_DIFF), abs=1e-6)
        assert "step batch_size 128 -> 256 goes the wrong way" in v.detail
    else:
        assert v.statistic == pytest.approx(means[-1] - means[0])


def test_monotone_along_with_one_seed_anywhere_is_inconclusive() -> None:
    claim = ClaimSpec(id="G8", kind="monotone_along", axis="batch_size")
    # 0.1 -> 0.9 is significant, but the steps from and to 128 (one seed) have no interval
    v = verdict(BS, {(64,): sd01(0.1), (128,): [0.5], (256,): sd01(0.9)}, claim)
    assert v.verdict == "inconclusive" and v.n == 1 and "too few seeds (n=1)" in v.detail
    # the same sweep with three seeds at 128 is supported
    assert verdict(BS, {(64,): sd01(0.1), (128,): sd01(0.5), (256,): sd01(0.9)}, claim).verdict == "supported"


# --- collapses / no_collapse / recovers ------------------------------------------------------------

ONE = {"method": ["simclr"]}


@pytest.mark.parametrize("values, level, expected", [
    # [0.01, 0.02, 0.03]: mean 0.02, CI 0.02 +- 0.0248414 = [-0.0048, 0.0448]
    ([0.01, 0.02, 0.03], 0.05, "supported"),
    ([0.01, 0.02, 0.03], 0.03, "inconclusive"),
    ([0.50, 0.51, 0.52], 0.05, "contradicted"),  # [0.4852, 0.5348] entirely above
])
def test_collapses(values: list, level: float, expected: str) -> None:
    confirm = {("simclr",): [{"emb_std": x, "knn_acc": 0.5} for x in values]}
    v = verdict(ONE, confirm, ClaimSpec(id="T1", kind="collapses", metric="emb_std", level=level))
    assert v.verdict == expected and v.metric == "emb_std"
    assert v.interval == pytest.approx((sum(values) / 3 - H_MEAN, sum(values) / 3 + H_MEAN), abs=1e-6)


@pytest.mark.parametrize("values, expected", [
    ([30, 31, 32], "supported"),  # 31 +- 2.48414 (sd 1) = [28.52, 33.48] > 10
    ([3, 4, 5], "contradicted"),  # [1.52, 6.48] < 10
    ([8, 10, 12], "inconclusive"),  # sd 2: 10 +- 4.96828 straddles 10
])
def test_no_collapse(values: list, expected: str) -> None:
    confirm = {("simclr",): [{"rank_emb": float(x)} for x in values]}
    v = verdict(ONE, confirm, ClaimSpec(id="J1", kind="no_collapse", metric="rank_emb", level=10.0))
    assert v.verdict == expected


@pytest.mark.parametrize("values, expected", [
    ([0.95, 0.96, 0.97], "supported"),  # 0.96 +- 0.0248 = [0.9352, 0.9848] > 0.9
    ([0.5, 0.6, 0.7], "contradicted"),  # sd 0.1: 0.6 +- 0.248414 = [0.3516, 0.8484] < 0.9
    ([0.95], "inconclusive"),  # one seed
])
def test_recovers(values: list, expected: str) -> None:
    confirm = {("simclr",): [{"recovery_min": x} for x in values]}
    v = verdict(ONE, confirm, ClaimSpec(id="P1", kind="recovers", metric="recovery_min", level=0.9))
    assert v.verdict == expected
    if len(values) == 1:
        assert v.detail.endswith("too few seeds (n=1)")


def test_level_kinds_fall_back_to_finished_trials_without_confirmation() -> None:
    search = {("simclr",): [{"recovery_min": 0.95}, {"recovery_min": 0.96}, {"recovery_min": 0.97}]}
    v = verdict(ONE, {}, ClaimSpec(id="P1", kind="recovers", metric="recovery_min", level=0.9), search=search)
    assert v.verdict == "supported" and v.n == 3
    assert v.per_group[0]["source"] == "finished trials"


# --- threshold ------------------------------------------------------------------------------------

WD = {"optim.weight_decay": [0.0001, 0.001, 0.01, 0.1]}


def wd_sweep(v_low: list, v_high: list) -> dict:
    return {(0.0001,): [{"weight_norm": x} for x in v_low], (0.001,): [{"weight_norm": 3.0}] * 3,
            (0.01,): [{"weight_norm": x} for x in v_high], (0.1,): [{"weight_norm": 0.0}] * 3}


@pytest.mark.parametrize("high, expected", [
    ([0.01, 0.02, 0.03], "supported"),  # 0.02 +- 0.0248 < 1 (and 0.1: exactly 0, no spread)
    ([5.0, 6.0, 7.0], "contradicted"),  # 6 +- 2.484: expected below 1, significantly above
    ([0.5, 1.0, 1.5], "inconclusive"),  # sd 0.5: 1 +- 1.242 straddles 1
])
def test_threshold(high: list, expected: str) -> None:
    # weight decay 0.0001 (before at=0.001): [5, 6, 7] = 6 +- 2.484 = [3.516, 8.484], expected above 1 -> on its side
    claim = ClaimSpec(id="T3", kind="threshold", metric="weight_norm", axis="optim.weight_decay", at=0.001, level=1.0,
                      direction="above_below")
    v = verdict(WD, wd_sweep([5.0, 6.0, 7.0], high), claim)
    assert v.verdict == expected
    rows = v.per_group[0]["values"]
    assert [r["value"] for r in rows] == [0.0001, 0.01, 0.1]  # the value at `at` is ignored
    assert [r["expected"] for r in rows] == ["above", "below", "below"]


def test_threshold_needs_values_on_both_sides() -> None:
    claim = ClaimSpec(id="T3", kind="threshold", metric="weight_norm", axis="optim.weight_decay", at=0.001, level=1.0,
                      direction="above_below", where={"optim.weight_decay": [0.001, 0.01, 0.1]})
    v = verdict(WD, wd_sweep([5.0, 6.0, 7.0], [0.0, 0.0, 0.0]), claim)
    assert v.verdict == "cannot be judged"
    assert "values of optim.weight_decay on both sides of 0.001" in v.detail


# --- identity_holds -------------------------------------------------------------------------------

def test_identity_holds() -> None:
    confirm = {("simclr",): [{"garrido_residual": 1e-9}, {"garrido_residual": -3e-9}],
               ("vicreg",): [{"garrido_residual": 2e-9}]}
    search = {("simclr",): [{"garrido_residual": 1e-10}], ("vicreg",): [{"garrido_residual": 0.0}]}
    claim = ClaimSpec(id="G1", kind="identity_holds", metric="garrido_residual", level=1e-6)
    v = verdict(PAIR, confirm, claim, search=search)
    assert v.verdict == "supported" and v.statistic == pytest.approx(3e-9) and v.n == 5 and v.interval is None
    confirm[("vicreg",)].append({"garrido_residual": 1e-3})
    v = verdict(PAIR, confirm, claim, search=search)
    assert v.verdict == "contradicted" and v.statistic == pytest.approx(1e-3)
    assert "c01-confirm-seed2" in v.detail
    confirm[("vicreg",)][-1] = {"garrido_residual": float("nan")}  # a residual that could not be computed
    assert verdict(PAIR, confirm, claim, search=search).verdict == "contradicted"


# --- cannot be judged -----------------------------------------------------------------------------

def test_a_metric_no_trial_reports_cannot_be_judged() -> None:
    v = verdict(ONE, {("simclr",): sd01(0.5)}, ClaimSpec(id="J1", kind="collapses", metric="rank_embb", level=3.0))
    assert v.verdict == "cannot be judged"
    assert v.detail == "needs metric 'rank_embb' in the trials' results; they report knn_acc"


def test_a_sweep_without_ended_trials_cannot_be_judged() -> None:
    v = verdict(ONE, {}, ClaimSpec(id="J1", kind="collapses", metric="emb_std", level=3.0), search={})
    assert v.verdict == "cannot be judged" and "none has yet" in v.detail


def test_an_invalid_claim_cannot_be_judged_and_says_why() -> None:
    v = verdict(BS, {(64,): sd01(0.5)}, ClaimSpec(id="G7", kind="flat_along", axis="batchsize"))
    assert v.verdict == "cannot be judged" and "axis: unknown grid axis 'batchsize' (did you mean batch_size?)" in v.detail


# --- claim_problems -------------------------------------------------------------------------------

GRID = {"method": ["simclr", "vicreg"], "batch_size": [64, 256], "model.projector": ["2048-256", "8192-8192-256"]}
METHODS = ["byol", "simclr", "vicreg"]
FAMILIES = ["sample_contrastive", "dimension_contrastive", "asymmetric"]
METRICS = ["knn_acc", "rank_emb", "emb_std"]


def problems(**fields: Any) -> dict[str, str]:
    claim = ClaimSpec(**{"id": "G3", **fields})
    found = claim_problems(claim, GRID, METHODS, FAMILIES, METRICS, "knn_acc")
    return dict(found)


def test_claim_problems_accepts_a_valid_claim_of_every_kind() -> None:
    valid = {
        "gap_within": dict(methods=["simclr", "vicreg"], tolerance=0.01),
        "ordering": dict(families=["dimension_contrastive", "sample_contrastive"]),
        "flat_along": dict(axis="batch_size", tolerance=0.01, where={"method": "vicreg"}),
        "peaks_at": dict(axis="model.projector", at="8192-8192-256"),
        "monotone_along": dict(axis="batch_size", direction="decreasing"),
        "collapses": dict(metric="emb_std", level=0.01),
        "no_collapse": dict(metric="rank_emb", level=4),
        "threshold": dict(axis="batch_size", at=64, level=0.5, direction="below_above", where={"batch_size": [64, 256]}),
        "identity_holds": dict(metric="emb_std", level=1e-6),
        "recovers": dict(level=0.9),
    }
    assert set(valid) == set(CLAIM_KINDS)
    for kind, fields in valid.items():
        assert problems(kind=kind, **fields) == {}, kind


def test_claim_problems_messages() -> None:
    assert problems(kind="gap_witin", methods=["simclr", "vicreg"]) == {
        "kind": "unknown claim kind 'gap_witin' (did you mean gap_within?); allowed: " + ", ".join(CLAIM_KINDS)}
    assert problems(kind="collapses", metric="rank_em", level=1) == {
        "metric": "unknown metric 'rank_em' (did you mean rank_emb?); allowed: knn_acc, rank_emb, emb_std"}
    assert problems(kind="gap_within", methods=["simclr", "vicrag"])["methods"] == \
        "unknown method 'vicrag' (did you mean vicreg?); allowed: byol, simclr, vicreg"
    assert problems(kind="ordering", families=["sample", "asymmetric"])["families"].startswith(
        "unknown family 'sample'")
    assert problems(kind="gap_within", methods=["simclr", "vicreg", "byol"])["methods"] == \
        "gap_within needs exactly two methods, A then B (or two families); got 3: ['simclr', 'vicreg', 'byol']"
    assert "needs exactly two methods" in problems(kind="ordering")["methods"]
    assert "not both" in problems(kind="ordering", methods=["simclr", "vicreg"], families=FAMILIES[:2])["methods"]
    assert problems(kind="no_collapse", metric="rank_emb", level=1, where={"batchsize": 64}) == {
        "where.batchsize": "not a grid axis (did you mean batch_size?); the grid's axes: method, batch_size, model.projector"}
    assert problems(kind="no_collapse", metric="rank_emb", level=1, where={"batch_size": [64, 128]}) == {
        "where.batch_size": "128 is not a value of grid axis batch_size; its values: 64, 256"}
    assert problems(kind="flat_along", tolerance=0.1)["axis"] == \
        "required for flat_along: a grid axis, one of method, batch_size, model.projector"
    assert problems(kind="flat_along", axis="batch", tolerance=0.1)["axis"].startswith(
        "unknown grid axis 'batch' (did you mean batch_size?)")
    assert "judged per method" in problems(kind="monotone_along", axis="method")["axis"]
    assert problems(kind="peaks_at", axis="model.projector", at="8192-8192-265")["at"] == \
        ("'8192-8192-265' is not a value of grid axis model.projector (did you mean 8192-8192-256?); "
         "its values: 2048-256, 8192-8192-256")
    assert problems(kind="peaks_at", axis="batch_size")["at"] == "required for peaks_at: a value of its axis batch_size: 64, 256"
    assert problems(kind="collapses", metric="emb_std")["level"] == \
        "required for collapses: the level the metric is compared with"
    assert problems(kind="identity_holds", level=1e-6)["metric"].startswith("identity_holds needs the residual")
    assert problems(kind="threshold", axis="batch_size", at=64, level=1)["direction"] == \
        "threshold needs direction above_below or below_above; got 'increasing'"
    assert problems(kind="monotone_along", axis="batch_size", direction="increasin")["direction"] == \
        "monotone_along needs direction increasing or decreasing (did you mean increasing, decreasing?); got 'increasin'"
    assert "must be >= 0" in problems(kind="gap_within", methods=["simclr", "vicreg"], tolerance=-1)["tolerance"]


def test_claim_problems_lists_every_problem_and_skips_the_metric_check_without_metrics() -> None:
    claim = ClaimSpec(id="T3", kind="threshold", metric="weight_norm", where={"bs": 1})
    found = claim_problems(claim, GRID, METHODS, FAMILIES, [], "knn_acc")
    assert [key for key, _ in found] == ["where.bs", "axis", "at", "level", "direction"]


def test_claim_spec_is_an_omegaconf_structured_config() -> None:
    schema = OmegaConf.structured(ClaimSpec)
    merged = OmegaConf.merge(schema, {"id": "G5", "kind": "peaks_at", "axis": "model.projector", "at": "8192-8192-1024",
                                      "where": {"batch_size": [256, 512]}, "level": 1})
    claim = OmegaConf.to_object(merged)
    assert isinstance(claim, ClaimSpec) and claim.at == "8192-8192-1024" and claim.level == 1.0
    assert claim.where == {"batch_size": [256, 512]} and claim.methods == [] and claim.direction == "increasing"
    assert OmegaConf.is_missing(OmegaConf.structured(ClaimSpec), "kind")
