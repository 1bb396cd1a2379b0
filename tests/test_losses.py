"""NT-Xent and VICReg against direct loop-level re-computations of their formulas (float64)."""
import math

import torch

from trainables.losses import normalized_mse_loss, nt_xent_loss, vicreg_loss


def random_views(n=12, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def nt_xent_by_loops(z1, z2, tau):
    z = torch.cat([z1, z2])
    n2 = len(z)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        denominator = sum(math.exp(cos(z[i], z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(cos(z[i], z[pos]) / tau) / denominator)
    return total / n2


def test_nt_xent_matches_formula():
    for tau in (0.1, 0.5, 1.0):
        z1, z2 = random_views(seed=int(tau * 10))
        assert math.isclose(float(nt_xent_loss(z1, z2, tau)), nt_xent_by_loops(z1, z2, tau), rel_tol=1e-10)


def test_nt_xent_invariances():
    z1, z2 = random_views()
    base = nt_xent_loss(z1, z2, 0.2)
    perm = torch.randperm(len(z1), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(nt_xent_loss(z1[perm], z2[perm], 0.2), base)
    # Cosine similarity ignores each embedding's norm.
    scales = torch.rand(len(z1), 1, dtype=torch.float64) * 5 + 0.1
    torch.testing.assert_close(nt_xent_loss(z1 * scales, z2 * 3.0, 0.2), base)
    torch.testing.assert_close(nt_xent_loss(z2, z1, 0.2), base)


def test_nt_xent_lower_for_aligned_views():
    z1, z2 = random_views()
    assert nt_xent_loss(z1, z1 + 0.01 * z2, 0.1) < nt_xent_loss(z1, z2, 0.1)


def vicreg_by_loops(z1, z2, lam, mu, nu, eps):
    n, d = z1.shape
    invariance = sum(float((z1[i, j] - z2[i, j]) ** 2) for i in range(n) for j in range(d)) / (n * d)
    variance = covariance = 0.0
    for z in (z1, z2):
        mean = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        cov = [[sum((float(z[i, a]) - mean[a]) * (float(z[i, b]) - mean[b]) for i in range(n)) / (n - 1)
                for b in range(d)] for a in range(d)]
        variance += sum(max(0.0, 1 - math.sqrt(cov[j][j] + eps)) for j in range(d)) / d / 2
        covariance += sum(cov[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
    return lam * invariance + mu * variance + nu * covariance


def test_vicreg_matches_formula():
    for scale, coeffs in ((0.3, (25.0, 25.0, 1.0, 1e-4)), (2.0, (1.0, 3.0, 0.5, 1e-2))):
        z1, z2 = random_views(n=9, d=5, seed=3)
        z1, z2 = z1 * scale, z2 * scale
        got = float(vicreg_loss(z1, z2, *coeffs))
        assert math.isclose(got, vicreg_by_loops(z1, z2, *coeffs), rel_tol=1e-10)


def test_vicreg_official_defaults_and_permutation_invariance():
    z1, z2 = random_views()
    assert math.isclose(float(vicreg_loss(z1, z2)), vicreg_by_loops(z1, z2, 25.0, 25.0, 1.0, 1e-4), rel_tol=1e-10)
    perm = torch.randperm(len(z1), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(vicreg_loss(z1[perm], z2[perm]), vicreg_loss(z1, z2))


def test_vicreg_variance_term_penalizes_collapse():
    z1, _ = random_views()
    collapsed = torch.zeros_like(z1)
    # Invariance 0, covariance 0, variance hinge at its maximum: 25 * (1 - sqrt(eps)).
    assert math.isclose(float(vicreg_loss(collapsed, collapsed)), 25 * (1 - math.sqrt(1e-4)), rel_tol=1e-12)


def test_normalized_mse_is_two_minus_two_cosine():
    p, z = random_views()
    expected = sum(2 - 2 * float(p[i] @ z[i] / (p[i].norm() * z[i].norm())) for i in range(len(p))) / len(p)
    assert math.isclose(float(normalized_mse_loss(p, z)), expected, rel_tol=1e-12)
