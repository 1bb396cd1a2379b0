"""Every loss against a loop-level re-computation of its formula (float64), term by term where the
loss has terms; the terms sum to the total; invariances; inputs checked."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.losses import (
    LossTerms,
    barlow_twins_loss,
    generalized_contrastive_loss,
    info_nce_loss,
    negative_cosine_loss,
    normalized_mse_loss,
    nt_xent_loss,
    simclr_embeddings,
    spectral_contrastive_loss,
    squared_error_loss,
    vicreg_ctr_loss,
    vicreg_exp_loss,
    vicreg_loss,
)

N, D = 7, 5


def views(seed: int = 0, n: int = N, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)


def rows(z: torch.Tensor) -> list[list[float]]:
    return z.tolist()


def transpose(m: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*m)]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def unit(a: list[float]) -> list[float]:
    norm = math.sqrt(dot(a, a))
    return [x / norm for x in a]


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def assert_terms(loss: LossTerms, expected: dict[str, float], rel: float = 1e-12) -> None:
    """The loss's terms equal `expected` and its total their sum."""
    assert set(loss.terms) == set(expected)
    for name, value in expected.items():
        assert loss.terms[name].item() == pytest.approx(value, rel=rel), name
    assert loss.total.item() == pytest.approx(sum(expected.values()), rel=rel)


# --- loop-level references ------------------------------------------------------------------
def info_nce_reference(e1: list, e2: list, tau: float, negatives: str = "plain", decoupled: bool = False) -> dict:
    e = e1 + e2
    n = len(e1)
    transform = {"plain": lambda s: s, "abs": abs, "sq": lambda s: s * s}[negatives]
    alignment = repulsion = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        positive = dot(e[i], e[partner])
        denominator = 0.0
        for k in range(2 * n):
            if k == i or (k == partner and decoupled):
                continue
            s = positive if k == partner else transform(dot(e[i], e[k]))
            denominator += math.exp(s / tau)
        alignment += -positive / tau
        repulsion += math.log(denominator)
    return {"alignment": alignment / (2 * n), "repulsion": repulsion / (2 * n)}


def centered_dims(z: list) -> list:
    cols = transpose(z)
    return transpose([[x - mean(col) for x in col] for col in cols])


def simclr_embeddings_reference(z: list, normalization: str) -> list:
    if normalization == "none":
        return [unit(r) for r in z]
    if normalization == "centering":
        return [unit(r) for r in centered_dims(z)]
    n, d = len(z), len(z[0])
    cols = transpose(centered_dims(z))
    return transpose([[x / math.sqrt(dot(col, col)) * math.sqrt(n / d) for x in col] for col in cols])


def spectral_reference(z1: list, z2: list, mu: float) -> dict:
    n = len(z1)
    e1 = [[math.sqrt(mu) * x for x in unit(r)] for r in z1]
    e2 = [[math.sqrt(mu) * x for x in unit(r)] for r in z2]
    return {"alignment": -2 * mean(dot(e1[i], e2[i]) for i in range(n)),
            "repulsion": sum(dot(e1[i], e2[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))}


def vicreg_reference(z1: list, z2: list, sim, std, cov, eps, tau=None) -> dict:
    """Rows = samples. tau None: squared off-diagonal covariance / D; else c_exp."""
    n, d = len(z1), len(z1[0])
    invariance = mean((a - b) ** 2 for r1, r2 in zip(z1, z2) for a, b in zip(r1, r2))
    variance = covariance = 0.0
    for z in (z1, z2):
        cols = transpose(z)
        means = [mean(c) for c in cols]
        c = [[sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(n)) / (n - 1) for k in range(d)] for j in range(d)]
        variance += mean(max(0.0, 1 - math.sqrt(c[j][j] + eps)) for j in range(d)) / 2
        if tau is None:
            covariance += sum(c[j][k] ** 2 for j in range(d) for k in range(d) if j != k) / d
        else:
            covariance += mean(math.log(sum(math.exp(c[j][k] / tau) for k in range(d) if k != j)) for j in range(d))
    return {"invariance": sim * invariance, "variance": std * variance, "covariance": cov * covariance}


def barlow_reference(z1: list, z2: list, lam: float, scale: float, eps: float) -> dict:
    n, d = len(z1), len(z1[0])

    def bn(z):
        cols = transpose(z)
        out = []
        for col in cols:
            m = mean(col)
            var = mean((x - m) ** 2 for x in col)
            out.append([(x - m) / math.sqrt(var + eps) for x in col])
        return transpose(out)

    a, b = bn(z1), bn(z2)
    c = [[sum(a[i][j] * b[i][k] for i in range(n)) / n for k in range(d)] for j in range(d)]
    return {"on_diagonal": scale * sum((1 - c[j][j]) ** 2 for j in range(d)),
            "off_diagonal": scale * lam * sum(c[j][k] ** 2 for j in range(d) for k in range(d) if j != k)}


def generalized_lse_reference(z1: list, z2: list, lam: float, tau: float) -> dict:
    e1, e2 = [unit(r) for r in z1], [unit(r) for r in z2]
    alignment = mean(sum((a - b) ** 2 for a, b in zip(r1, r2)) for r1, r2 in zip(e1, e2)) / (2 * tau)
    e = e1 + e2
    distribution = mean(math.log(sum(math.exp(dot(e[i], e[k]) / tau) for k in range(len(e)) if k != i)) for i in range(len(e)))
    return {"alignment": alignment, "distribution": lam * distribution}


def generalized_sw_reference(z1: torch.Tensor, z2: torch.Tensor, prior: str, lam: float, tau: float, projections: int, seed: int) -> dict:
    """The documented draw order: 2N prior samples, then the directions, from one generator."""
    g = torch.Generator().manual_seed(seed)
    n, d = z1.shape
    if prior == "gaussian":
        target = rows(torch.randn(2 * n, d, generator=g, dtype=torch.float64) / math.sqrt(d))
    else:
        target = rows((2 * torch.rand(2 * n, d, generator=g, dtype=torch.float64) - 1) * math.sqrt(3 / d))
    directions = transpose(rows(torch.randn(d, projections, generator=g, dtype=torch.float64)))
    a, b = rows(z1), rows(z2)
    alignment = mean(sum((x - y) ** 2 for x, y in zip(r1, r2)) for r1, r2 in zip(a, b)) / (2 * tau)
    points = a + b
    distances = []
    for direction in directions:
        u = unit(direction)
        px = sorted(dot(p, u) for p in points)
        py = sorted(dot(t, u) for t in target)
        distances.append(mean((x - y) ** 2 for x, y in zip(px, py)))
    return {"alignment": alignment, "distribution": lam * mean(distances)}


# --- formula tests -----------------------------------------------------------------------------
INFO_NCE_VARIANTS = [(neg, dec) for dec in (False, True) for neg in ("plain", "abs", "sq")]


@pytest.mark.parametrize("negatives,decoupled", INFO_NCE_VARIANTS)
@pytest.mark.parametrize("normalization", ["none", "centering", "dimension_standardization"])
def test_info_nce_family_matches_loops(negatives, decoupled, normalization):
    z1, z2 = views(1)
    got = info_nce_loss(simclr_embeddings(z1, normalization), simclr_embeddings(z2, normalization), 0.5, negatives, decoupled)
    e1 = simclr_embeddings_reference(rows(z1), normalization)
    e2 = simclr_embeddings_reference(rows(z2), normalization)
    assert_terms(got, info_nce_reference(e1, e2, 0.5, negatives, decoupled))


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nt_xent_matches_loops_at_every_temperature(tau):
    z1, z2 = views(seed=int(tau * 10), n=12, d=7)
    expected = info_nce_reference([unit(r) for r in rows(z1)], [unit(r) for r in rows(z2)], tau)
    assert_terms(nt_xent_loss(z1, z2, tau), expected, rel=1e-10)


def test_nt_xent_keeps_the_cross_entropy_behaviour():
    z1, z2 = views(2)
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / 0.2).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    expected = F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))
    assert nt_xent_loss(z1, z2, 0.2).total.item() == pytest.approx(expected.item(), rel=1e-12)


def test_nt_xent_ignores_each_views_scales_and_their_order():
    z1, z2 = views(3, n=12, d=7)
    base = nt_xent_loss(z1, z2, 0.2).total
    # Cosine similarity ignores each embedding's norm, whatever the scale of the other view.
    scales = torch.rand(len(z1), 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5 + 0.1
    torch.testing.assert_close(nt_xent_loss(z1 * scales, z2 * 3.0, 0.2).total, base)
    torch.testing.assert_close(nt_xent_loss(z2, z1, 0.2).total, base)


def test_nt_xent_lower_for_aligned_views():
    z1, z2 = views(4)
    noise = torch.randn(z1.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert nt_xent_loss(z1, z1 + 0.01 * noise, 0.1).total < nt_xent_loss(z1, noise, 0.1).total


def test_variants_differ_from_simclr():
    z1, z2 = views(3)
    values = {v: nt_xent_loss(z1, z2, 0.5, *v).total.item() for v in INFO_NCE_VARIANTS}
    assert len({round(v, 9) for v in values.values()}) == len(INFO_NCE_VARIANTS)


def test_spectral_matches_loops():
    z1, z2 = views(4)
    assert_terms(spectral_contrastive_loss(z1, z2, 2.0), spectral_reference(rows(z1), rows(z2), 2.0))


@pytest.mark.parametrize("scale,coeffs", [(1.0, (25.0, 25.0, 1.0, 1e-4)), (0.3, (25.0, 25.0, 1.0, 1e-4)),
                                          (2.0, (1.0, 3.0, 0.5, 1e-2))])
def test_vicreg_matches_loops(scale, coeffs):
    # Scale 0.3 keeps every std under the hinge at 1, scale 2 most of them above it.
    z1, z2 = (z * scale for z in views(5))
    assert_terms(vicreg_loss(z1, z2, *coeffs), vicreg_reference(rows(z1), rows(z2), *coeffs))


def test_vicreg_defaults_are_the_official_ones():
    z1, z2 = views(5)
    assert_terms(vicreg_loss(z1, z2), vicreg_reference(rows(z1), rows(z2), 25.0, 25.0, 1.0, 1e-4))


def test_vicreg_variance_term_penalizes_collapse():
    collapsed = torch.zeros(N, D, dtype=torch.float64)
    # Invariance 0, covariance 0, variance hinge at its maximum: 25 * (1 - sqrt(eps)).
    assert_terms(vicreg_loss(collapsed, collapsed), {"invariance": 0.0, "variance": 25 * (1 - math.sqrt(1e-4)),
                                                     "covariance": 0.0})


def test_vicreg_exp_matches_loops():
    z1, z2 = views(6)
    got = vicreg_exp_loss(z1, z2, 20.0, 30.0, 2.0, 0.3, 1e-4)
    assert_terms(got, vicreg_reference(rows(z1), rows(z2), 20.0, 30.0, 2.0, 1e-4, tau=0.3))


def test_vicreg_ctr_is_vicreg_exp_on_the_transposed_embeddings():
    z1, z2 = views(7)
    got = vicreg_ctr_loss(z1, z2, 20.0, 30.0, 2.0, 0.3, 1e-4)
    assert_terms(got, vicreg_reference(transpose(rows(z1)), transpose(rows(z2)), 20.0, 30.0, 2.0, 1e-4, tau=0.3))
    assert got.total.item() != pytest.approx(vicreg_exp_loss(z1, z2, 20.0, 30.0, 2.0, 0.3, 1e-4).total.item(), rel=1e-3)


def test_barlow_twins_matches_loops():
    z1, z2 = views(8)
    assert_terms(barlow_twins_loss(z1, z2, 5e-3, 0.5, 1e-5), barlow_reference(rows(z1), rows(z2), 5e-3, 0.5, 1e-5))


def test_generalized_lse_matches_loops_and_is_nt_xent_at_lambda_one():
    z1, z2 = views(9)
    assert_terms(generalized_contrastive_loss(z1, z2, "lse", 0.7, 0.4), generalized_lse_reference(rows(z1), rows(z2), 0.7, 0.4))
    at_one = generalized_contrastive_loss(z1, z2, "lse", 1.0, 0.4)
    assert at_one.total.item() == pytest.approx(nt_xent_loss(z1, z2, 0.4).total.item() + 1 / 0.4, rel=1e-12)


@pytest.mark.parametrize("prior", ["uniform_cube", "gaussian"])
def test_generalized_sliced_wasserstein_matches_loops(prior):
    z1, z2 = views(10)
    got = generalized_contrastive_loss(z1, z2, prior, 3.0, 0.5, 16, torch.Generator().manual_seed(11))
    assert_terms(got, generalized_sw_reference(z1, z2, prior, 3.0, 0.5, 16, 11))


def test_prediction_losses_match_loops():
    p, z = views(12)
    cosines = [dot(unit(a), unit(b)) for a, b in zip(rows(p), rows(z))]
    assert_terms(normalized_mse_loss(p, z), {"prediction": mean(2 - 2 * c for c in cosines)})
    assert_terms(negative_cosine_loss(p, z), {"prediction": -mean(cosines)})
    squared = [sum((a - b) ** 2 for a, b in zip(r1, r2)) for r1, r2 in zip(rows(p), rows(z))]
    assert_terms(squared_error_loss(p, z), {"prediction": 0.5 * mean(squared)})


# --- every loss: terms, invariances ---------------------------------------------------------------
SW_SEED = 13
LOSSES = {
    **{f"info_nce_{neg}_{'dcl' if dec else 'simclr'}": (lambda a, b, neg=neg, dec=dec: nt_xent_loss(a, b, 0.5, neg, dec))
       for neg, dec in INFO_NCE_VARIANTS},
    "simclr_centering": lambda a, b: info_nce_loss(simclr_embeddings(a, "centering"), simclr_embeddings(b, "centering"), 0.5),
    "simclr_dim_std": lambda a, b: info_nce_loss(
        simclr_embeddings(a, "dimension_standardization"), simclr_embeddings(b, "dimension_standardization"), 0.5),
    "spectral": lambda a, b: spectral_contrastive_loss(a, b, 1.0),
    "vicreg": lambda a, b: vicreg_loss(a, b),
    "vicreg_exp": lambda a, b: vicreg_exp_loss(a, b, temperature=0.3),
    "vicreg_ctr": lambda a, b: vicreg_ctr_loss(a, b, temperature=0.3),
    "barlow_twins": lambda a, b: barlow_twins_loss(a, b, bn_eps=0.0),
    "generalized_lse": lambda a, b: generalized_contrastive_loss(a, b, "lse", 0.7, 0.4),
    "generalized_cube": lambda a, b: generalized_contrastive_loss(
        a, b, "uniform_cube", 2.0, 0.5, 16, torch.Generator().manual_seed(SW_SEED)),
    "generalized_gaussian": lambda a, b: generalized_contrastive_loss(
        a, b, "gaussian", 2.0, 0.5, 16, torch.Generator().manual_seed(SW_SEED)),
    "normalized_mse": normalized_mse_loss,
    "negative_cosine": negative_cosine_loss,
    "squared_error": squared_error_loss,
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_terms_sum_to_the_total_and_carry_gradients(name):
    z1, z2 = (z.requires_grad_() for z in views(17, n=9, d=6))
    loss = LOSSES[name](z1, z2)
    assert loss.terms and loss.total.item() == pytest.approx(sum(t.item() for t in loss.terms.values()), rel=1e-12)
    loss.total.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_batch_permutation_invariance(name):
    z1, z2 = views(14, n=9, d=6)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    loss = LOSSES[name]
    assert loss(z1[perm], z2[perm]).total.item() == pytest.approx(loss(z1, z2).total.item(), rel=1e-12)


def per_sample_scale(n: int) -> torch.Tensor:
    return torch.rand(n, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5 + 0.1


def per_dimension_scale(d: int) -> torch.Tensor:
    return torch.rand(1, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 5 + 0.1


# (loss, transform of both views under which it is invariant)
INVARIANCES = {
    **{f"info_nce_{neg}_{dec}/per_sample_scale": (lambda a, b, neg=neg, dec=dec: nt_xent_loss(a, b, 0.5, neg, dec),
                                                  lambda z: z * per_sample_scale(len(z)))
       for neg, dec in INFO_NCE_VARIANTS},
    "simclr_centering/global_scale_and_shift": (LOSSES["simclr_centering"], lambda z: 3.7 * z + 2.0),
    "simclr_dim_std/per_dimension_scale_and_shift": (LOSSES["simclr_dim_std"], lambda z: z * per_dimension_scale(z.shape[1]) - 1.5),
    "spectral/per_sample_scale": (LOSSES["spectral"], lambda z: z * per_sample_scale(len(z))),
    "generalized_lse/per_sample_scale": (LOSSES["generalized_lse"], lambda z: z * per_sample_scale(len(z))),
    "barlow_twins/per_dimension_scale_and_shift": (LOSSES["barlow_twins"], lambda z: z * per_dimension_scale(z.shape[1]) + 4.0),
    # VICReg's terms are not scale-invariant (the hinge sits at std 1); they are shift-invariant
    # along the axis they center.
    "vicreg/per_dimension_shift": (LOSSES["vicreg"], lambda z: z + torch.arange(z.shape[1], dtype=z.dtype)),
    "vicreg_exp/per_dimension_shift": (LOSSES["vicreg_exp"], lambda z: z + torch.arange(z.shape[1], dtype=z.dtype)),
    "vicreg_ctr/per_sample_shift": (LOSSES["vicreg_ctr"], lambda z: z + torch.arange(len(z), dtype=z.dtype)[:, None]),
    "vicreg_exp/dimension_permutation": (LOSSES["vicreg_exp"], lambda z: z[:, torch.tensor([3, 0, 5, 1, 4, 2])]),
    "vicreg_ctr/dimension_permutation": (LOSSES["vicreg_ctr"], lambda z: z[:, torch.tensor([3, 0, 5, 1, 4, 2])]),
}


@pytest.mark.parametrize("name", sorted(INVARIANCES))
def test_invariance(name):
    loss, transform = INVARIANCES[name]
    z1, z2 = views(15, n=9, d=6)
    assert loss(transform(z1), transform(z2)).total.item() == pytest.approx(loss(z1, z2).total.item(), rel=1e-9)


@pytest.mark.parametrize("name", ["vicreg", "vicreg_exp", "vicreg_ctr", "generalized_cube", "generalized_gaussian"])
def test_losses_that_are_not_scale_invariant_do_change(name):
    """Guards the invariance tests above against a transform that does nothing."""
    z1, z2 = views(16, n=9, d=6)
    assert LOSSES[name](3 * z1, 3 * z2).total.item() != pytest.approx(LOSSES[name](z1, z2).total.item(), rel=1e-3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mismatched_or_single_sample_views_name_their_shapes(name):
    z1, _ = views(18, n=9, d=6)
    with pytest.raises(ValueError, match=r"\(9, 6\) and \(9, 5\)"):
        LOSSES[name](z1, z1[:, :5])
    with pytest.raises(ValueError, match=r"N >= 2"):
        LOSSES[name](z1[:1], z1[:1])
