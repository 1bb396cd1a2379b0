"""orchestrator.report.stats against numbers computed by hand (no Ray, no MLflow)."""
from __future__ import annotations

import math

import pytest

from orchestrator.report.claims import ClaimSpec
from orchestrator.report.model import CellInfo, SweepInfo, TrialRecord, axis_order, group_key, group_label
from orchestrator.report.stats import analyze, best_search_trial, default_pairs, mean_ci, welch_diff

FAMILY = {"simclr": "sample_contrastive", "simclr_abs": "sample_contrastive", "vicreg": "dimension_contrastive",
          "byol": "asymmetric"}
# Student t quantiles t(0.975, df), from a table (scipy.stats.t.ppf gives the same).
T_2 = 4.302652729749462
T_4 = 2.7764451051977934


def trial(cell: CellInfo, phase: str, k: int, value: float, status: str = "finished", params: dict | None = None) -> TrialRecord:
    key = f"{cell.id}-{phase}-{k:03d}" if phase == "search" else f"{cell.id}-confirm-seed{k}"
    return TrialRecord(key, cell.id, cell.values, cell.method, cell.family, phase, k, params or {"optim.lr": 0.1 * (k + 1)},
                       status, {"knn_acc": value, "epoch": 8.0}, epochs_planned=8)


def cell(index: int, **values) -> CellInfo:
    method = values["method"]
    return CellInfo(f"c{index:02d}", ",".join(f"{k}={v}" for k, v in values.items()), values, method, FAMILY[method])


def info(cells: list[CellInfo], grid: dict, mode: str = "max", claims: list | None = None) -> SweepInfo:
    return SweepInfo("t", "knn_acc", mode, grid, cells, [1, 2, 3], 5, 100, False, claims=claims or [])


def test_mean_ci_by_hand() -> None:
    # [1, 2, 3]: mean 2, sd 1 (n-1), half width t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    e = mean_ci([1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.n == 3 and e.sd == pytest.approx(1.0)
    assert e.interval == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    assert 2.484138 == pytest.approx(T_2 / math.sqrt(3), abs=1e-6)


def test_mean_ci_without_interval_and_non_finite_values() -> None:
    one = mean_ci([0.5])
    assert one.mean == 0.5 and one.n == 1 and one.interval is None and one.sd is None
    assert mean_ci([]) is None
    # NaN (a diverged epoch) and None never enter a mean: [1, 3] -> mean 2, sd sqrt(2), half 12.7062 * 1.4142 / 1.4142
    e = mean_ci([1.0, float("nan"), None, 3.0])
    assert e.n == 2 and e.mean == 2.0
    assert e.interval == pytest.approx((2 - 12.706205, 2 + 12.706205), abs=1e-5)


def test_welch_by_hand() -> None:
    # a = [1, 2, 3]: mean 2, var 1; b = [2, 4, 6, 8]: mean 5, var 20/3.
    # va/na = 1/3, vb/nb = 5/3; se^2 = 2, se = 1.414214
    # df = 2^2 / ((1/3)^2/2 + (5/3)^2/3) = 4 / (1/18 + 25/27) = 4 / (53/54) = 216/53 = 4.075472
    # t(0.975, 4.075472) = 2.756285; half = 2.756285 * 1.414214 = 3.897975
    d = welch_diff([1, 2, 3], [2, 4, 6, 8])
    assert d.diff == -3.0 and (d.n_a, d.n_b) == (3, 4) and (d.mean_a, d.mean_b) == (2.0, 5.0)
    assert d.se == pytest.approx(1.414214, abs=1e-6)
    assert d.df == pytest.approx(216 / 53) and d.df == pytest.approx(4.075472, abs=1e-6)
    assert d.interval == pytest.approx((-3 - 3.897975, -3 + 3.897975), abs=1e-6)


def test_welch_equal_variances_has_df_2n_minus_2() -> None:
    # a = [0.75, 0.76, 0.77], b = [0.70, 0.71, 0.72]: both var 1e-4, n 3: se^2 = 2e-4/3, se = 0.0081650
    # df = (2q)^2 / (2 q^2 / 2) = 4; half = 2.776445 * 0.0081650 = 0.0226696
    d = welch_diff([0.75, 0.76, 0.77], [0.70, 0.71, 0.72])
    assert d.diff == pytest.approx(0.05)
    assert d.df == pytest.approx(4.0)
    assert d.interval == pytest.approx((0.05 - 0.0226696, 0.05 + 0.0226696), abs=1e-6)
    assert T_4 * math.sqrt(2e-4 / 3) == pytest.approx(0.0226696, abs=1e-7)


def test_welch_too_few_and_no_spread() -> None:
    d = welch_diff([0.7], [0.6, 0.65])
    assert d.diff == pytest.approx(0.075) and d.interval is None and d.n == 1
    assert welch_diff([], [1.0, 2.0]) is None
    exact = welch_diff([1.0, 1.0], [0.25, 0.25])  # no spread on either side: the difference is exact
    assert exact.interval == (0.75, 0.75)


def test_best_of_cell_skips_trials_that_did_not_run_every_epoch() -> None:
    c = cell(0, method="simclr")
    trials = [
        trial(c, "search", 0, 0.60),
        trial(c, "search", 1, 0.90, "stopped_early"),  # better, but stopped by ASHA: excluded
        trial(c, "search", 2, float("nan"), "diverged"),
        trial(c, "search", 3, 0.99, "failed"),
        trial(c, "search", 4, 0.70, params={"optim.lr": 0.3, "method_kwargs.temperature": 0.15}),
        trial(c, "search", 5, 0.65),
        trial(c, "search", 6, 0.95, "running"),
        # confirmation: [0.70, 0.72, 0.74]: mean 0.72, sd 0.02, half 4.302653 * 0.02 / sqrt(3) = 0.049683
        trial(c, "confirm", 1, 0.70), trial(c, "confirm", 2, 0.72), trial(c, "confirm", 3, 0.74),
        trial(c, "confirm", 4, 0.10, "running"),  # not finished: not in the mean
    ]
    result = analyze(info([c], {"method": ["simclr"]}), trials).results[0]
    assert result.best_trial == "c00-search-004"
    assert result.best_params == {"optim.lr": 0.3, "method_kwargs.temperature": 0.15}
    assert result.best_value == 0.70
    assert result.spread == pytest.approx((0.60, 0.65, 0.70))  # min, median, max of the finished search trials
    assert result.counts == {"finished": 3, "stopped_early": 1, "diverged": 1, "failed": 1, "running": 1}
    assert result.confirm.n == 3 and result.confirm.mean == pytest.approx(0.72)
    assert result.confirm.interval == pytest.approx((0.72 - 0.049683, 0.72 + 0.049683), abs=1e-6)


def test_best_of_cell_in_min_mode() -> None:
    c = cell(0, method="simclr")
    trials = [trial(c, "search", 0, 2.0), trial(c, "search", 1, 1.5), trial(c, "search", 2, 1.0, "stopped_early")]
    assert best_search_trial(trials, "knn_acc", "min").key == "c00-search-001"
    assert best_search_trial(trials, "knn_acc", "max").key == "c00-search-000"
    assert best_search_trial([], "knn_acc", "max") is None


def test_family_gap_uses_each_familys_best_confirmed_method_per_comparison_group() -> None:
    grid = {"method": ["simclr", "simclr_abs", "vicreg"], "batch_size": [64, 256]}
    cells = [cell(i, method=m, batch_size=b) for i, (b, m) in enumerate((b, m) for b in (64, 256) for m in grid["method"])]
    confirm = {  # per batch size: simclr beats simclr_abs, so it stands for the sample-contrastive family
        ("simclr", 64): [0.60, 0.62, 0.64], ("simclr_abs", 64): [0.50, 0.52, 0.54], ("vicreg", 64): [0.70, 0.71, 0.72],
        ("simclr", 256): [0.80, 0.81, 0.82], ("simclr_abs", 256): [0.85, 0.86, 0.87], ("vicreg", 256): [0.70, 0.71, 0.72],
    }
    trials = [trial(c, "confirm", s, v) for c in cells for s, v in enumerate(confirm[(c.method, c.values["batch_size"])], 1)]
    a = analyze(info(cells, grid), trials)
    assert [group_label(k) for k in a.groups] == ["batch_size=64", "batch_size=256"]
    assert [r.method for r in a.groups[(("batch_size", 64),)]] == ["simclr", "simclr_abs", "vicreg"]
    best64 = a.family_best[(("batch_size", 64),)]
    assert {f: r.method for f, r in best64.items()} == {"sample_contrastive": "simclr", "dimension_contrastive": "vicreg"}
    assert a.family_best[(("batch_size", 256),)]["sample_contrastive"].method == "simclr_abs"
    gap64 = next(g for g in a.family_gaps if g.group == "batch_size=64")
    assert (gap64.a, gap64.b, gap64.method_a, gap64.method_b) == ("sample_contrastive", "dimension_contrastive", "simclr", "vicreg")
    # simclr [0.60, 0.62, 0.64] (var 4e-4) - vicreg [0.70, 0.71, 0.72] (var 1e-4) = -0.09
    # qa = 4e-4/3, qb = 1e-4/3, se^2 = 5e-4/3, se = 0.0129099; df = (5/3)^2 / ((16/9 + 1/9) / 2) = 50/17 = 2.941176
    # t(0.975, 2.941176) = 3.218759; half = 3.218759 * 0.0129099 = 0.0415540
    d = gap64.difference
    assert d.diff == pytest.approx(-0.09)
    assert d.df == pytest.approx(50 / 17)
    assert d.interval == pytest.approx((-0.09 - 0.041554, -0.09 + 0.041554), abs=1e-6)
    gap256 = next(g for g in a.family_gaps if g.group == "batch_size=256")
    assert gap256.method_a == "simclr_abs" and gap256.difference.diff == pytest.approx(0.15)


def test_family_gap_in_min_mode_picks_the_lowest_mean() -> None:
    grid = {"method": ["simclr", "simclr_abs", "vicreg"]}
    cells = [cell(i, method=m) for i, m in enumerate(grid["method"])]
    values = {"simclr": [3.0, 3.1], "simclr_abs": [2.0, 2.1], "vicreg": [1.0, 1.1]}
    trials = [trial(c, "confirm", s, v) for c in cells for s, v in enumerate(values[c.method], 1)]
    a = analyze(info(cells, grid, mode="min"), trials)
    assert a.family_best[()]["sample_contrastive"].method == "simclr_abs"
    assert a.family_gaps[0].difference.diff == pytest.approx(1.0)


def test_pair_gaps_named_by_claims_and_every_pair_of_few_methods() -> None:
    methods = ["simclr", "simclr_abs", "vicreg", "byol"]
    gap = ClaimSpec(id="G3", kind="gap_within", methods=["vicreg", "simclr"], tolerance=0.01)
    sweep = info([], {"method": methods}, claims=[gap])
    assert default_pairs(sweep, methods) == [("vicreg", "simclr")]
    assert default_pairs(info([], {}), ["simclr", "vicreg", "byol"]) == [("simclr", "vicreg"), ("simclr", "byol"), ("vicreg", "byol")]
    cells = [cell(i, method=m) for i, m in enumerate(methods)]
    trials = [trial(c, "confirm", s, 0.5 + 0.1 * i + 0.01 * s) for i, c in enumerate(cells) for s in (1, 2)]
    a = analyze(info(cells, {"method": methods}, claims=[gap]), trials)
    assert [(g.a, g.b) for g in a.pair_gaps] == [("vicreg", "simclr")]
    assert a.pair_gaps[0].difference.diff == pytest.approx(0.2)
    assert {(g.a, g.b) for g in a.family_gaps} == {("sample_contrastive", "dimension_contrastive"),
                                                   ("sample_contrastive", "asymmetric"), ("dimension_contrastive", "asymmetric")}


def test_trials_of_cells_missing_from_the_plan_still_count() -> None:
    c = cell(3, method="vicreg")
    a = analyze(info([], {"method": ["vicreg"]}), [trial(c, "confirm", 1, 0.5), trial(c, "confirm", 2, 0.7)])
    assert a.results[0].cell.id == "c03" and a.results[0].confirm.mean == pytest.approx(0.6)


def test_axis_order_and_group_keys() -> None:
    assert axis_order([256, 64, 128]) == [64, 128, 256]
    assert axis_order(["8192-8192-256", "2048-256"]) == ["8192-8192-256", "2048-256"]
    assert group_key({"method": "simclr", "batch_size": 64}) == (("batch_size", 64),)
    assert group_label(()) == "all cells"
