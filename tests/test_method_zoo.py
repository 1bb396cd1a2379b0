"""The method zoo: every method trains on digits and reports its loss terms; the asymmetric ablation
switches; collapse. The losses themselves are tested in test_losses.py."""
from __future__ import annotations

import math

import pytest
import torch

from trainables import ConfigError, train
from trainables.contract import PROVENANCE_KEY, TRIAL_KINDS
from trainables.losses import nt_xent_loss
from trainables.methods import METHODS, AsymmetricMethod, describe_methods
from trainables.models import build_backbone

STANDARD_METRICS = ("epoch", "loss", "knn_acc", "online_acc", "linear_acc", "rank_repr", "rank_emb", "emb_std", "samples_per_s")
FAMILIES = {
    "sample_contrastive": {"simclr", "simclr_abs", "simclr_sq", "dcl", "dcl_abs", "dcl_sq", "spectral", "vicreg_ctr", "directclr", "generalized"},
    "dimension_contrastive": {"vicreg", "vicreg_exp", "barlow_twins"},
    "asymmetric": {"byol", "simsiam", "directpred"},
}


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
            assert entry["loss_terms"] == list(METHODS.get(name).loss_terms)
            assert entry["hyperparameters"] == METHODS.get(name).parse_kwargs({}).__dict__
    assert described["barlow_twins"]["hyperparameters"]["redundancy_weight"] == 5e-3
    assert described["directpred"]["hyperparameters"]["predictor"] == "directpred"
    assert described["directpred"]["hyperparameters"]["directpred_rho"] == 0.3
    assert described["simsiam"]["hyperparameters"]["ema"] is False


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_every_method_steps_with_the_loss_terms_it_declares(name):
    torch.manual_seed(0)
    cls = METHODS.get(name)
    backbone, repr_dim = build_backbone("mlp", (1, 8, 8), 32)
    method = cls(backbone, repr_dim, "32-16", cls.parse_kwargs({"d0": 8} if name == "directclr" else {}))
    loss, _ = method.training_step(*torch.randn(2, 16, 1, 8, 8))
    assert tuple(loss.terms) == cls.loss_terms
    assert loss.total.item() == pytest.approx(sum(t.item() for t in loss.terms.values()), rel=1e-5)


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_every_method_trains_three_epochs_on_digits(name):
    kwargs = {"d0": 32} if name == "directclr" else {}
    reports = []
    final = train(tiny_config(name, **kwargs), report=lambda metrics, _: reports.append(metrics))
    assert [m["epoch"] for m in reports] == [1, 2, 3]
    for key in STANDARD_METRICS + ("l_c", "l_nc", "garrido_residual"):
        assert key in final, key
        assert math.isfinite(final[key]), (key, final[key])
    terms = [f"loss_{term}" for term in METHODS.get(name).loss_terms]
    ssl = TRIAL_KINDS["ssl"]
    for m in reports:
        assert math.isfinite(m["loss"])
        # The epoch's mean terms add up to its mean loss.
        assert sum(m[t] for t in terms) == pytest.approx(m["loss"], rel=1e-4, abs=1e-5)
        assert not {t for t in m if t.startswith("loss_")} - set(terms)
        assert set(m) - {PROVENANCE_KEY} <= set(ssl.epoch_metrics) | set(ssl.final_metrics)
    assert "diverged" not in final
    # Three tiny epochs need not beat the random encoder (kNN 0.93 on digits; 11 of the 16 methods
    # end 0.008..0.075 below it), but must not wreck its representation: within 0.15 of it.
    assert final["knn_acc"] > final["knn_acc_random_init"] - 0.15
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
    expected = nt_xent_loss(r1[:, :6], r2[:, :6], 0.5)
    assert loss.total.item() == pytest.approx(expected.total.item(), rel=1e-10)
    assert loss.terms.keys() == expected.terms.keys()
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
    loss.total.backward()
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


def test_symmetric_linear_predictor_stays_symmetric_under_sgd():
    method = build("byol", predictor="linear", predictor_symmetric=True)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    for _ in range(3):
        x1, x2 = torch.randn(2, 16, 1, 8, 8)
        optimizer.zero_grad()
        method.training_step(x1, x2)[0].total.backward()
        optimizer.step()
    w = method.predictor.weight
    assert torch.allclose(w, w.T) and not torch.allclose(w, torch.diag(w.diagonal()))


# --- collapse, as the theory says ---------------------------------------------------------------------
# Healthy embeddings have emb_std near 1/sqrt(D) (D = 32 here); collapsed ones go to 0 and their
# effective rank to 1.
COLLAPSED_STD = 0.1 / math.sqrt(32)
HEALTHY_STD = 0.6 / math.sqrt(32)


@pytest.mark.slow
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
