"""Garrido et al.'s criteria: the exact identity and the unit-norm bounds, on random matrices and
on the embeddings of a trained trial. Embeddings are (N, M), rows = samples; K = embeddings.T."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables.diagnostics import (
    garrido_identity_sides,
    garrido_metrics,
    garrido_residual,
    garrido_unit_norm_bounds,
    l_c,
    l_nc,
)
from trainables.train import Trial

SHAPES = [(1, 4), (4, 1), (5, 5), (7, 3), (3, 11), (64, 16), (40, 200)]


def random_embeddings(n: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Non-zero mean and uneven scales: the identity needs no assumption on K.
    return (torch.randn(n, m, generator=g, dtype=torch.float64) + 0.3) * torch.rand(1, m, generator=g, dtype=torch.float64) * 4


def test_criteria_match_loops_with_columns_as_samples():
    z = random_embeddings(5, 3, 0)
    k = z.T.tolist()  # CLAIMS.md's K: M x N, column i = sample i
    m, n = len(k), len(k[0])
    column = lambda i: [k[r][i] for r in range(m)]  # noqa: E731
    expected_c = sum(sum(a * b for a, b in zip(column(i), column(j))) ** 2 for i in range(n) for j in range(n) if i != j)
    expected_nc = sum(sum(a * b for a, b in zip(k[r], k[s])) ** 2 for r in range(m) for s in range(m) if r != s)
    assert l_c(z).item() == pytest.approx(expected_c, rel=1e-12)
    assert l_nc(z).item() == pytest.approx(expected_nc, rel=1e-12)


@pytest.mark.parametrize("n,m", SHAPES)
def test_identity_holds_on_random_k(n, m):
    z = random_embeddings(n, m, n * 100 + m)
    lhs, rhs = garrido_identity_sides(z)
    assert abs(lhs - rhs) / rhs < 1e-9
    assert garrido_residual(z) < 1e-9
    if n > 1 and m > 1:
        # Not trivially equal: the two criteria themselves differ.
        assert abs(l_c(z) - l_nc(z)) / rhs > 1e-3


@pytest.mark.parametrize("n,m", SHAPES)
def test_unit_norm_bounds_hold_on_random_k(n, m):
    z = F.normalize(random_embeddings(n, m, n + m), dim=1)
    lower, upper = garrido_unit_norm_bounds(n, m, l_nc(z).item())
    assert lower - 1e-9 <= l_c(z).item() <= upper + 1e-9


def test_bounds_are_attained_by_the_collapsed_extremes():
    """Lemma 3.4: a constant matrix of spread-out unit vectors attains the lower bound, a constant
    one-hot matrix the upper one: the bounds are tight, so an off-by-one would show."""
    n, m = 6, 4
    for column, which in ((torch.full((m,), m ** -0.5), 0), (torch.eye(m)[0], 1)):
        z = column.double().expand(n, m).clone()
        bounds = garrido_unit_norm_bounds(n, m, l_nc(z).item())
        assert l_c(z).item() == pytest.approx(bounds[which], rel=1e-12)


@pytest.fixture(scope="module")
def trained_trial() -> tuple[Trial, list[dict]]:
    trial = Trial(dict(method="vicreg", epochs=2, batch_size=256, seed=0, cpus=1,
                       model=dict(backbone="mlp", width=64, projector="64-32"),
                       optim=dict(lr=0.2, warmup_epochs=1.0), eval=dict(linear_probe_steps=10)))
    reports: list[dict] = []
    trial.run(lambda metrics, _: reports.append(metrics))
    return trial, reports


def test_identity_and_bounds_hold_on_trained_embeddings(trained_trial):
    trial, _ = trained_trial
    _, (_, z_test, _) = trial.features()
    z = z_test.double()
    assert garrido_residual(z) < 1e-9
    unit = F.normalize(z, dim=1)
    n, m = unit.shape
    lower, upper = garrido_unit_norm_bounds(n, m, l_nc(unit).item())
    assert lower <= l_c(unit).item() <= upper
    # Trained embeddings sit well inside the bounds, far from both collapsed extremes.
    assert lower < l_c(unit).item() < upper / 2


def test_trial_reports_the_criteria_of_its_held_out_embeddings(trained_trial):
    trial, reports = trained_trial
    final = reports[-1]
    _, (_, z_test, _) = trial.features()
    expected = garrido_metrics(z_test)
    assert final["l_c"] == pytest.approx(expected["l_c"], rel=1e-9)
    assert final["l_nc"] == pytest.approx(expected["l_nc"], rel=1e-9)
    assert final["garrido_residual"] < 1e-9
    assert all(m["l_c"] > 0 for m in reports)
