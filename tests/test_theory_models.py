"""The theory backbones, the diagnostics that inspect them, fewshot evaluation, and Tian et al.'s
per-mode ODE, each checked against what it must compute."""
import math

import pytest
import torch

from trainables.diagnostics import (covariance_eigenvalues, layer_alignment, model_diagnostics, n_collapsed,
                                    predictor_diagnostics, recovery)
from trainables.evaluate import fewshot_accuracy, fewshot_indices
from trainables.methods import METHODS
from trainables.errors import ConfigError
from trainables.models import DeepLinear, SymReLU, build_backbone, start_at_dictionary
from trainables.theory import ModeDynamics, collapse_threshold, fixed_points, flow_time


def orthonormal(rows, cols, seed=0):
    return torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)))[0]


# --- backbones ---------------------------------------------------------------------------------
def test_linear_and_deep_linear_are_bias_free_products():
    torch.manual_seed(0)
    net, dim = build_backbone("deep_linear", (12,), 8, depth=3)
    assert dim == 8 and isinstance(net, DeepLinear) and len(net.layers) == 3
    assert all(layer.bias is None for layer in net.layers)
    x = torch.randn(5, 12)
    torch.testing.assert_close(net(x), x @ net.end_to_end().T)
    w1, w2, w3 = net.layer_weights()
    assert w1.shape == (8, 12) and w3.shape == (8, 8)
    torch.testing.assert_close(net.end_to_end(), w3 @ w2 @ w1)
    linear, _ = build_backbone("linear", (1, 4, 3), 6)
    assert len(linear.layers) == 1 and linear(torch.randn(2, 1, 4, 3)).shape == (2, 6)


def test_init_spectrum_decays_exponentially():
    torch.manual_seed(0)
    net, _ = build_backbone("deep_linear", (16,), 16, depth=2, init_spectrum_decay=0.35)
    expected = torch.exp(-0.35 * torch.arange(16.0))
    for w in net.layer_weights():
        torch.testing.assert_close(torch.linalg.svdvals(w), expected, atol=1e-5, rtol=0)
    orthogonal, _ = build_backbone("linear", (16,), 8, init_spectrum_decay=0.0)
    w = orthogonal.end_to_end()
    torch.testing.assert_close(w @ w.T, torch.eye(8), atol=1e-5, rtol=0)


def test_symrelu_is_odd_with_a_dead_zone():
    torch.manual_seed(0)
    net, dim = build_backbone("symrelu", (10,), 6)
    assert isinstance(net, SymReLU) and dim == 6
    net.eval()  # batch norm with its initial running statistics: the identity
    x = torch.randn(7, 10)
    torch.testing.assert_close(net(-x), -net(x))
    with torch.no_grad():
        net.bias.fill_(-0.5)
        h = net.linear(x)
        expected = torch.sign(h) * (h.abs() - 0.5).clamp_min(0)
    torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=0)


def test_warm_start_puts_the_first_units_on_the_dictionary():
    torch.manual_seed(0)
    net, _ = build_backbone("symrelu", (50,), 12)
    norms = net.linear.weight.norm(dim=1)
    dictionary = orthonormal(50, 10)
    assert recovery(net.linear.weight, dictionary)["recovery_min"] < 0.8  # random init
    start_at_dictionary(net, dictionary, noise_std=0.0)
    assert recovery(net.linear.weight, dictionary)["recovery_min"] > 0.999
    torch.testing.assert_close(net.linear.weight.norm(dim=1), norms)  # the init's scale is kept
    start_at_dictionary(net, dictionary, noise_std=0.03)
    assert 0.9 < recovery(net.linear.weight, dictionary)["recovery_min"] < 0.999
    with pytest.raises(ConfigError, match="width >= d=10"):
        start_at_dictionary(build_backbone("symrelu", (50,), 8)[0], dictionary, 0.0)


# --- diagnostics -----------------------------------------------------------------------------------
def test_recovery_is_one_for_the_dictionary_itself_and_low_for_random_rows():
    m = orthonormal(50, 10)
    # Rows = the dictionary's columns, shuffled, sign-flipped and rescaled, plus unrelated rows.
    rows = torch.cat([-3 * m.T[[4, 1, 9, 0, 2, 3, 5, 6, 7, 8]], torch.randn(20, 50)])
    r = recovery(rows, m)
    assert r["recovery_min"] == pytest.approx(1.0) and r["recovery_median"] == pytest.approx(1.0)
    random_rows = recovery(torch.randn(50, 50, generator=torch.Generator().manual_seed(1)), m)
    assert random_rows["recovery_max"] < 0.7 and random_rows["recovery_min"] < random_rows["recovery_median"]


def test_n_collapsed_counts_missing_dimensions():
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(2000, 3, generator=g) @ torch.randn(3, 8, generator=g)
    eigenvalues = covariance_eigenvalues(low_rank)
    assert n_collapsed(eigenvalues, 1e-4) == 5
    assert n_collapsed(covariance_eigenvalues(torch.randn(2000, 8, generator=g)), 1e-4) == 0
    assert n_collapsed(covariance_eigenvalues(torch.zeros(50, 4)), 1e-4) == 4


def test_predictor_symmetry_and_eigen_alignment():
    g = torch.Generator().manual_seed(0)
    u = orthonormal(6, 6)
    z = torch.randn(4000, 6, generator=g) * torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, 0.2]) @ u.T
    # Eigenvectors of F = E[z z^T] are the columns of u: W_p = u diag(p) u^T is aligned and symmetric.
    gains = torch.tensor([0.9, 0.7, 0.5, 0.4, 0.3, 0.2])
    aligned, spectra = predictor_diagnostics(u @ torch.diag(gains) @ u.T, z, 1e-4)
    assert aligned["predictor_asymmetry"] == pytest.approx(0.0, abs=1e-6)
    assert aligned["predictor_alignment"] == pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(torch.tensor(spectra["predictor_gains"], dtype=torch.float64), gains.double(), atol=0.02, rtol=0)
    skew = torch.randn(6, 6, generator=g)
    antisymmetric, _ = predictor_diagnostics(skew - skew.T, z, 1e-4)
    assert antisymmetric["predictor_asymmetry"] == pytest.approx(2.0)
    assert abs(antisymmetric["predictor_alignment"]) < 1e-6


def test_layer_alignment_of_aligned_and_random_layers():
    u, v, w = orthonormal(16, 16, 1), orthonormal(16, 16, 2), orthonormal(16, 16, 3)
    s = torch.exp(-0.35 * torch.arange(16.0))
    lower, upper = u @ torch.diag(s) @ v.T, w @ torch.diag(s) @ u.T
    matrix, score = layer_alignment(lower, upper)
    torch.testing.assert_close(matrix, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0)
    assert score == pytest.approx(1.0, abs=1e-6)
    random_upper = orthonormal(16, 16, 4) @ torch.diag(s) @ orthonormal(16, 16, 5).T
    assert layer_alignment(lower, random_upper)[1] < 0.7
    # A flat spectrum has no preferred basis: any upper layer is aligned with it, whatever |V2^T U1| shows.
    matrix, score = layer_alignment(u @ v.T, random_upper)
    assert score == pytest.approx(1.0, abs=1e-6) and matrix.diagonal().mean() < 0.5


def test_model_diagnostics_pick_what_applies():
    torch.manual_seed(0)
    cls = METHODS.get("byol")
    backbone, dim = build_backbone("deep_linear", (10,), 10, depth=2)
    method = cls(backbone, dim, "none", cls.parse_kwargs({"predictor": "linear"}))
    z = torch.randn(300, 10)
    metrics, spectra = model_diagnostics(method, orthonormal(10, 4), z, z, 1e-4)
    assert {"n_collapsed", "weight_norm", "layer_alignment", "recovery_median", "predictor_asymmetry"} <= metrics.keys()
    assert metrics["weight_norm"] == pytest.approx(float(torch.linalg.matrix_norm(backbone.end_to_end().detach())), rel=1e-5)
    assert len(spectra["layer_singular_values"]) == 2 and len(spectra["layer_alignment"]) == 1
    mlp_method = METHODS.get("simclr")(*build_backbone("mlp", (10,), 16), "16-8", METHODS.get("simclr").parse_kwargs({}))
    plain, _ = model_diagnostics(mlp_method, None, torch.randn(300, 16), torch.randn(300, 8), 1e-4)
    assert plain.keys() == {"n_collapsed"}


# --- fewshot evaluation ----------------------------------------------------------------------------
def test_fewshot_takes_k_per_class_always_the_same():
    labels = torch.arange(5).repeat_interleave(30)
    idx = fewshot_indices(labels, 4)
    assert torch.equal(torch.bincount(labels[idx]), torch.full((5,), 4))
    assert torch.equal(idx, fewshot_indices(labels, 4)) and not torch.equal(idx, fewshot_indices(labels, 4, seed=1))
    assert len(fewshot_indices(torch.tensor([0, 0, 1]), 5)) == 3


def test_fewshot_probe_needs_few_labels_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(4, 16, generator=g)
    labels = torch.arange(4).repeat(200)
    feats = centres[labels] + torch.randn(800, 16, generator=g)
    assert fewshot_accuracy(feats[:400], labels[:400], feats[400:], labels[400:], 4, k=5) > 0.95
    noise = torch.randn(800, 16, generator=g)
    assert fewshot_accuracy(noise[:400], labels[:400], noise[400:], labels[400:], 4, k=5) < 0.45


# --- Tian et al.'s per-mode dynamics -----------------------------------------------------------------
def test_fixed_points_are_roots_and_vanish_above_the_threshold():
    sigma, tau = 0.8, 0.9
    threshold = collapse_threshold(sigma, tau)
    assert threshold == pytest.approx(tau**2 / (4 * (1 + sigma**2)))
    p_minus, p_plus = fixed_points(0.5 * threshold, sigma, tau)
    for p in (p_minus, p_plus):
        assert p * (tau - (1 + sigma**2) * p) == pytest.approx(0.5 * threshold)
    assert fixed_points(1.01 * threshold, sigma, tau) is None
    assert flow_time(100, 0.05, momentum=0.9) == pytest.approx(50.0)


@pytest.mark.parametrize("ema_rate", [None, 0.5])
def test_ode_modes_survive_below_and_collapse_above_the_threshold(ema_rate):
    sigma, alpha_p = 1.0, 2.0
    threshold = collapse_threshold(sigma)
    below = ModeDynamics(0.8 * threshold, sigma, alpha_p, ema_rate)
    p, s, tau = below.integrate(torch.full((3,), 0.5), torch.tensor([1.0, 0.5, 2.0]), t_end=400)
    _, p_plus = fixed_points(0.8 * threshold, sigma)
    torch.testing.assert_close(p, torch.full((3,), p_plus, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(s, torch.full((3,), p_plus**2 / alpha_p, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(tau, torch.ones(3, dtype=torch.float64), atol=1e-3, rtol=0)
    above = ModeDynamics(1.2 * threshold, sigma, alpha_p, ema_rate)
    assert not above.survivors(torch.full((3,), 0.5), torch.tensor([1.0, 0.5, 2.0]), t_end=400).any()


def test_ode_basin_small_modes_and_no_predictor_collapse():
    sigma = 1.0
    dynamics = ModeDynamics(0.5 * collapse_threshold(sigma), sigma)
    # Weight decay sets the basin: a mode starting too weak dies even below the threshold.
    alive = dynamics.survivors(torch.zeros(3), torch.tensor([1.0, 0.1, 1e-3]), t_end=300)
    assert alive.tolist() == [True, True, False]
    no_predictor = ModeDynamics(0.0, sigma, predictor=False)
    assert not no_predictor.survivors(torch.ones(2), torch.ones(2), t_end=300).any()
    assert math.isclose(float(no_predictor.integrate(torch.ones(1), torch.ones(1), 5.0)[0]), 1.0)
