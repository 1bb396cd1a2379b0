"""The method zoo: every loss against a loop-level re-computation of its formula (float64) and its
invariances; every method trains on digits; the asymmetric ablation switches; collapse."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables import ConfigError, train
from trainables.losses import (
    barlow_twins_loss,
    generalized_contrastive_loss,
    info_nce_loss,
    negative_cosine_loss,
    nt_xent_loss,
    simclr_embeddings,
    spectral_contrastive_loss,
    vicreg_ctr_loss,
    vicreg_exp_loss,
    vicreg_loss,
)
from trainables.methods import METHODS, AsymmetricMethod, describe_methods
from trainables.models import build_backbone

N, D = 7, 5
STANDARD_METRICS = ("epoch", "loss", "knn_acc", "online_acc", "linear_acc", "rank_repr", "rank_emb", "emb_std", "samples_per_s")
FAMILIES = {
    "sample_contrastive": {"simclr", "simclr_abs", "simclr_sq", "dcl", "dcl_abs", "dcl_sq", "spectral", "vicreg_ctr", "directclr", "generalized"},
    "dimension_contrastive": {"vicreg", "vicreg_exp", "barlow_twins"},
    "asymmetric": {"byol", "simsiam", "directpred"},
}


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


# --- loop-level references ------------------------------------------------------------------
def info_nce_reference(e1: list, e2: list, tau: float, negatives: str, decoupled: bool) -> float:
    e = e1 + e2
    n = len(e1)
    transform = {"plain": lambda s: s, "abs": abs, "sq": lambda s: s * s}[negatives]
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        positive = dot(e[i], e[partner])
        denominator = 0.0
        for k in range(2 * n):
            if k == i or (k == partner and decoupled):
                continue
            s = positive if k == partner else transform(dot(e[i], e[k]))
            denominator += math.exp(s / tau)
        total += -positive / tau + math.log(denominator)
    return total / (2 * n)


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


def spectral_reference(z1: list, z2: list, mu: float) -> float:
    n = len(z1)
    e1 = [[math.sqrt(mu) * x for x in unit(r)] for r in z1]
    e2 = [[math.sqrt(mu) * x for x in unit(r)] for r in z2]
    attraction = -2 * mean(dot(e1[i], e2[i]) for i in range(n))
    repulsion = sum(dot(e1[i], e2[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return attraction + repulsion


def vicreg_reference(z1: list, z2: list, sim, std, cov, eps, tau=None) -> float:
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
    return sim * invariance + std * variance + cov * covariance


def barlow_reference(z1: list, z2: list, lam: float, scale: float, eps: float) -> float:
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
    on = sum((1 - c[j][j]) ** 2 for j in range(d))
    off = sum(c[j][k] ** 2 for j in range(d) for k in range(d) if j != k)
    return scale * (on + lam * off)


def generalized_lse_reference(z1: list, z2: list, lam: float, tau: float) -> float:
    e1, e2 = [unit(r) for r in z1], [unit(r) for r in z2]
    alignment = mean(sum((a - b) ** 2 for a, b in zip(r1, r2)) for r1, r2 in zip(e1, e2)) / (2 * tau)
    e = e1 + e2
    distribution = mean(math.log(sum(math.exp(dot(e[i], e[k]) / tau) for k in range(len(e)) if k != i)) for i in range(len(e)))
    return alignment + lam * distribution


def generalized_sw_reference(z1: torch.Tensor, z2: torch.Tensor, prior: str, lam: float, tau: float, projections: int, seed: int) -> float:
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
    return alignment + lam * mean(distances)


# --- formula tests -----------------------------------------------------------------------------
INFO_NCE_VARIANTS = [(neg, dec) for dec in (False, True) for neg in ("plain", "abs", "sq")]


@pytest.mark.parametrize("negatives,decoupled", INFO_NCE_VARIANTS)
@pytest.mark.parametrize("normalization", ["none", "centering", "dimension_standardization"])
def test_info_nce_family_matches_loops(negatives, decoupled, normalization):
    z1, z2 = views(1)
    got = info_nce_loss(simclr_embeddings(z1, normalization), simclr_embeddings(z2, normalization), 0.5, negatives, decoupled)
    e1 = simclr_embeddings_reference(rows(z1), normalization)
    e2 = simclr_embeddings_reference(rows(z2), normalization)
    assert got.item() == pytest.approx(info_nce_reference(e1, e2, 0.5, negatives, decoupled), rel=1e-12)


def test_nt_xent_keeps_the_cross_entropy_behaviour():
    z1, z2 = views(2)
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / 0.2).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    expected = F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))
    assert nt_xent_loss(z1, z2, 0.2).item() == pytest.approx(expected.item(), rel=1e-12)


def test_variants_differ_from_simclr():
    z1, z2 = views(3)
    values = {v: nt_xent_loss(z1, z2, 0.5, *v).item() for v in INFO_NCE_VARIANTS}
    assert len({round(v, 9) for v in values.values()}) == len(INFO_NCE_VARIANTS)


def test_spectral_matches_loops():
    z1, z2 = views(4)
    assert spectral_contrastive_loss(z1, z2, 2.0).item() == pytest.approx(spectral_reference(rows(z1), rows(z2), 2.0), rel=1e-12)


def test_vicreg_matches_loops():
    z1, z2 = views(5)
    got = vicreg_loss(z1, z2, 25.0, 25.0, 1.0, 1e-4)
    assert got.item() == pytest.approx(vicreg_reference(rows(z1), rows(z2), 25.0, 25.0, 1.0, 1e-4), rel=1e-12)


def test_vicreg_exp_matches_loops():
    z1, z2 = views(6)
    got = vicreg_exp_loss(z1, z2, 20.0, 30.0, 2.0, 0.3, 1e-4)
    assert got.item() == pytest.approx(vicreg_reference(rows(z1), rows(z2), 20.0, 30.0, 2.0, 1e-4, tau=0.3), rel=1e-12)


def test_vicreg_ctr_is_vicreg_exp_on_the_transposed_embeddings():
    z1, z2 = views(7)
    got = vicreg_ctr_loss(z1, z2, 20.0, 30.0, 2.0, 0.3, 1e-4)
    expected = vicreg_reference(transpose(rows(z1)), transpose(rows(z2)), 20.0, 30.0, 2.0, 1e-4, tau=0.3)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert got.item() != pytest.approx(vicreg_exp_loss(z1, z2, 20.0, 30.0, 2.0, 0.3, 1e-4).item(), rel=1e-3)


def test_barlow_twins_matches_loops():
    z1, z2 = views(8)
    got = barlow_twins_loss(z1, z2, 5e-3, 0.5, 1e-5)
    assert got.item() == pytest.approx(barlow_reference(rows(z1), rows(z2), 5e-3, 0.5, 1e-5), rel=1e-12)


def test_generalized_lse_matches_loops_and_is_nt_xent_at_lambda_one():
    z1, z2 = views(9)
    got = generalized_contrastive_loss(z1, z2, "lse", 0.7, 0.4)
    assert got.item() == pytest.approx(generalized_lse_reference(rows(z1), rows(z2), 0.7, 0.4), rel=1e-12)
    at_one = generalized_contrastive_loss(z1, z2, "lse", 1.0, 0.4)
    assert at_one.item() == pytest.approx(nt_xent_loss(z1, z2, 0.4).item() + 1 / 0.4, rel=1e-12)


@pytest.mark.parametrize("prior", ["uniform_cube", "gaussian"])
def test_generalized_sliced_wasserstein_matches_loops(prior):
    z1, z2 = views(10)
    got = generalized_contrastive_loss(z1, z2, prior, 3.0, 0.5, 16, torch.Generator().manual_seed(11))
    assert got.item() == pytest.approx(generalized_sw_reference(z1, z2, prior, 3.0, 0.5, 16, 11), rel=1e-12)


def test_negative_cosine_matches_loops():
    p, z = views(12)
    expected = -mean(dot(unit(a), unit(b)) for a, b in zip(rows(p), rows(z)))
    assert negative_cosine_loss(p, z).item() == pytest.approx(expected, rel=1e-12)


# --- invariances ---------------------------------------------------------------------------------
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
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_batch_permutation_invariance(name):
    z1, z2 = views(14, n=9, d=6)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    loss = LOSSES[name]
    assert loss(z1[perm], z2[perm]).item() == pytest.approx(loss(z1, z2).item(), rel=1e-12)


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
    assert loss(transform(z1), transform(z2)).item() == pytest.approx(loss(z1, z2).item(), rel=1e-9)


@pytest.mark.parametrize("name", ["vicreg", "vicreg_exp", "vicreg_ctr", "generalized_cube", "generalized_gaussian"])
def test_losses_that_are_not_scale_invariant_do_change(name):
    """Guards the invariance tests above against a transform that does nothing."""
    z1, z2 = views(16, n=9, d=6)
    assert LOSSES[name](3 * z1, 3 * z2).item() != pytest.approx(LOSSES[name](z1, z2).item(), rel=1e-3)


# --- methods ---------------------------------------------------------------------------------------
def tiny_config(method: str, epochs: int = 3, **method_kwargs) -> dict:
    return dict(
        method=method, method_kwargs=method_kwargs, epochs=epochs, batch_size=256, seed=0, cpus=1,
        model=dict(backbone="mlp", width=64, projector="64-32"),
        optim=dict(lr=0.2, warmup_epochs=1.0), eval=dict(linear_probe_steps=10),
    )


def test_describe_methods_lists_every_method_with_family_defaults_and_source():
    described = {d["name"]: d for d in describe_methods()}
    assert set(described) == set(METHODS.names()) == set().union(*FAMILIES.values())
    for family, names in FAMILIES.items():
        for name in names:
            entry = described[name]
            assert entry["family"] == family
            assert entry["source"]
            assert entry["hyperparameters"] == METHODS.get(name).parse_kwargs({}).__dict__
    assert described["barlow_twins"]["hyperparameters"]["redundancy_weight"] == 5e-3
    assert described["directpred"]["hyperparameters"]["predictor"] == "directpred"
    assert described["directpred"]["hyperparameters"]["directpred_rho"] == 0.3
    assert described["simsiam"]["hyperparameters"]["ema"] is False


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_every_method_trains_three_epochs_on_digits(name):
    kwargs = {"d0": 32} if name == "directclr" else {}
    reports = []
    final = train(tiny_config(name, **kwargs), report=lambda metrics, _: reports.append(metrics))
    assert [m["epoch"] for m in reports] == [1, 2, 3]
    for key in STANDARD_METRICS + ("l_c", "l_nc", "garrido_residual"):
        assert key in final, key
        assert math.isfinite(final[key]), (key, final[key])
    assert all(math.isfinite(m["loss"]) for m in reports)
    assert "diverged" not in final
    assert final["knn_acc"] > 0.5
    assert final["garrido_residual"] < 1e-9


def test_unknown_method_is_one_line_with_nearest_names():
    with pytest.raises(ConfigError) as exc:
        train(tiny_config("simclr_ab"))
    message = str(exc.value)
    assert "\n" not in message and "simclr_abs" in message.split("allowed")[0]


@pytest.mark.parametrize("method,kwargs,key", [
    ("simclr", {"normalization": "center"}, "normalization"),
    ("generalized", {"prior": "sphere"}, "prior"),
    ("byol", {"stop_gradient": False}, "stop_gradient"),
    ("byol", {"predictor": "mlp", "predictor_symmetric": True}, "predictor_symmetric"),
    ("simsiam", {"predictor": "deep"}, "predictor"),
    ("directpred", {"directpred_freq": 0}, "directpred_freq"),
    ("directclr", {"d0": 65}, "d0"),
])
def test_bad_method_kwargs_are_one_line_config_errors(method, kwargs, key):
    with pytest.raises(ConfigError) as exc:
        train(tiny_config(method, **kwargs))
    assert str(exc.value).startswith(f"method_kwargs.{key}:") and "\n" not in str(exc.value)


def test_directclr_loss_is_info_nce_on_the_leading_representation_coordinates():
    torch.manual_seed(0)
    cls = METHODS.get("directclr")
    backbone, repr_dim = build_backbone("mlp", (1, 8, 8), 16)
    method = cls(backbone, repr_dim, "64-32", cls.parse_kwargs({"d0": 6, "temperature": 0.5})).double()
    assert not any(p.requires_grad for p in method.projector.parameters())
    x1, x2 = torch.randn(2, 10, 1, 8, 8, dtype=torch.float64)
    loss, r1 = method.training_step(x1, x2)
    r1, r2 = backbone(x1), backbone(x2)
    expected = info_nce_reference([unit(r[:6]) for r in rows(r1)], [unit(r[:6]) for r in rows(r2)], 0.5, "plain", False)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert method(x1)[1].shape == (10, 6)


# --- asymmetric ablation switches, on every asymmetric method ------------------------------------
ASYMMETRIC = sorted(FAMILIES["asymmetric"])


def build(name: str, **kwargs) -> AsymmetricMethod:
    torch.manual_seed(0)
    cls = METHODS.get(name)
    backbone, repr_dim = build_backbone("mlp", (1, 8, 8), 32)
    return cls(backbone, repr_dim, "32-16", cls.parse_kwargs(kwargs))


def backbone_grads(method: AsymmetricMethod, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    method.zero_grad()
    loss, _ = method.training_step(x1, x2)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in method.backbone.parameters()])


@pytest.mark.parametrize("name", ASYMMETRIC)
@pytest.mark.parametrize("predictor,symmetric", [
    ("none", False), ("linear", False), ("linear", True), ("mlp", False), ("directpred", False), ("directpred", True),
])
def test_every_predictor_works_on_every_asymmetric_method(name, predictor, symmetric):
    method = build(name, predictor=predictor, predictor_symmetric=symmetric, predictor_lr_ratio=10.0, predictor_weight_decay=0.0)
    x1, x2 = torch.randn(2, 16, 1, 8, 8)
    grads = backbone_grads(method, x1, x2)
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    groups = method.param_groups(weight_decay=1e-4, exclude_bias_norm=True)
    predictor_params = {id(p) for p in method.predictor.parameters() if p.requires_grad} if method.predictor else set()
    for g in groups:
        in_predictor = {id(p) in predictor_params for p in g["params"]}
        assert len(in_predictor) == 1, "a group mixes predictor and other parameters"
        if in_predictor == {True}:
            assert g["lr_ratio"] == 10.0 and g["weight_decay"] == 0.0
        else:
            assert g["lr_ratio"] == 1.0
    if predictor in ("none", "directpred"):
        # DirectPred's predictor is set, not trained (unless directpred_sgd).
        assert not predictor_params
    if symmetric:
        w = method.predictor.weight
        assert torch.allclose(w, w.T)


@pytest.mark.parametrize("name", ASYMMETRIC)
def test_stop_gradient_halves_the_symmetric_gradient(name):
    """With a symmetric distance and no predictor, L = (D(z1, sg z2) + D(z2, sg z1)) / 2 has half the
    gradient of D(z1, z2): a switch that did nothing would leave them equal."""
    x1, x2 = torch.randn(2, 16, 1, 8, 8)
    with_sg = backbone_grads(build(name, predictor="none", ema=False, stop_gradient=True), x1, x2)
    without = backbone_grads(build(name, predictor="none", ema=False, stop_gradient=False), x1, x2)
    assert torch.allclose(with_sg, without / 2, atol=1e-7)


@pytest.mark.parametrize("name", ASYMMETRIC)
def test_ema_switch_and_schedule(name):
    ema = build(name, ema=True, ema_tau=0.9)
    assert ema.target is not None and not any(p.requires_grad for p in ema.target.parameters())
    assert ema.ema_tau(0.0) == pytest.approx(0.9) and ema.ema_tau(1.0) == pytest.approx(1.0)
    before = [p.clone() for p in ema.target.parameters()]
    with torch.no_grad():
        for p in ema.backbone.parameters():
            p.add_(1.0)
    ema.after_optimizer_step(0.0)
    online = list(ema.backbone.parameters()) + list(ema.projector.parameters())
    for t, b, o in zip(ema.target.parameters(), before, online):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    assert build(name, ema=False).target is None


def test_symmetric_linear_predictor_stays_symmetric_under_sgd():
    method = build("byol", predictor="linear", predictor_symmetric=True)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    for _ in range(3):
        x1, x2 = torch.randn(2, 16, 1, 8, 8)
        optimizer.zero_grad()
        method.training_step(x1, x2)[0].backward()
        optimizer.step()
    w = method.predictor.weight
    assert torch.allclose(w, w.T) and not torch.allclose(w, torch.diag(w.diagonal()))


# --- collapse, as the theory says ---------------------------------------------------------------------
# Healthy embeddings have emb_std near 1/sqrt(D) (D = 32 here); collapsed ones go to 0 and their
# effective rank to 1.
COLLAPSED_STD = 0.1 / math.sqrt(32)
HEALTHY_STD = 0.6 / math.sqrt(32)


@pytest.mark.parametrize("name,ablation", [("simsiam", {"stop_gradient": False}), ("byol", {"predictor": "none"})])
def test_collapse_without_stop_gradient_or_predictor(name, ablation):
    # 15 epochs of 23 steps. BYOL's target must follow the online network within those few hundred
    # steps, as tau = 0.996 does within BYOL's ~10^5: tau = 0.9. With 0.996 the target stays near
    # its random init, which does not collapse (BYOL's fixed random target, Grill et al. table 5).
    kwargs = {"ema_tau": 0.9} if name == "byol" else {}

    def run(**switches):
        config = tiny_config(name, epochs=15, **kwargs, **switches)
        config.update(batch_size=64, optim=dict(lr=1.0, warmup_epochs=1.0))
        return train(config, report=lambda *_: None)

    healthy, collapsed = run(), run(**ablation)
    assert healthy["emb_std"] > HEALTHY_STD and healthy["rank_emb"] > 8
    assert collapsed["emb_std"] < COLLAPSED_STD and collapsed["rank_emb"] < 4
