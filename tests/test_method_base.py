"""The method base class machinery: EMA target and its schedule, predictor groups, stop-gradient."""
import math

import pytest
import torch

from trainables.methods import METHODS, AsymmetricMethod
from trainables.models import build_backbone

ASYMMETRIC = sorted(name for name in METHODS.names() if issubclass(METHODS.get(name), AsymmetricMethod))


def asymmetric(name: str, **kwargs):
    cls = METHODS.get(name)
    backbone, dim = build_backbone("mlp", (1, 8, 8), 16)
    return cls(backbone, dim, "16-8", cls.parse_kwargs(kwargs))


def byol(**kwargs):
    return asymmetric("byol", **kwargs)


@pytest.mark.parametrize("name", ASYMMETRIC)
def test_ema_switch_cosine_schedule_and_target_update(name):
    assert asymmetric(name, ema=False).target is None
    # tau rises from its base to 1 on a cosine over training: 1 - (1 - base) (cos(pi p) + 1) / 2.
    for base in (0.99, 0.9):
        m = asymmetric(name, ema=True, ema_tau=base)
        assert m.ema_tau(0.0) == pytest.approx(base)
        assert m.ema_tau(0.25) == pytest.approx(1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2)
        assert m.ema_tau(0.5) == pytest.approx(1 - (1 - base) * 0.5)
        assert m.ema_tau(1.0) == pytest.approx(1.0)
    # The target is a frozen copy of backbone + projector; each optimizer step moves every target
    # tensor toward its online namesake by 1 - tau(progress).
    assert m.target is not None and not any(p.requires_grad for p in m.target.parameters())
    online = dict(torch.nn.Sequential(m.backbone, m.projector).named_parameters())
    for progress in (0.0, 0.5):
        with torch.no_grad():
            for shift, p in enumerate(online.values(), start=1):
                p.add_(float(shift))  # a different shift per tensor: a mispaired update shows
        before = {k: v.clone() for k, v in m.target.named_parameters()}
        m.after_optimizer_step(progress=progress)
        tau = m.ema_tau(progress)
        for k, t in m.target.named_parameters():
            torch.testing.assert_close(t, tau * before[k] + (1 - tau) * online[k].detach())
            assert not t.requires_grad


def test_stop_gradient_and_no_ema_target():
    x = torch.randn(6, 1, 8, 8)
    for stop in (True, False):
        m = byol(ema=False, stop_gradient=stop)
        assert m.target is None
        _, z = m(x)
        t = m.target_embedding(x, z)
        assert t.requires_grad is (not stop)


def test_predictor_gets_its_own_lr_ratio_and_weight_decay():
    m = byol(predictor_lr_ratio=10.0, predictor_weight_decay=0.0)
    groups = m.param_groups(weight_decay=1e-4, exclude_bias_norm=True)
    predictor_ids = {id(p) for p in m.predictor.parameters()}
    pred_groups = [g for g in groups if {id(p) for p in g["params"]} <= predictor_ids]
    other = [g for g in groups if g not in pred_groups]
    assert pred_groups and all(g["lr_ratio"] == 10.0 and g["weight_decay"] == 0.0 for g in pred_groups)
    assert all(g["lr_ratio"] == 1.0 for g in other)
    counted = sum(len(g["params"]) for g in groups)
    trainable = sum(1 for p in m.parameters() if p.requires_grad)
    assert counted == trainable, "every trainable parameter in exactly one group; EMA target in none"


def test_bias_and_norm_excluded_from_decay_and_lars():
    m = METHODS.get("simclr")(*build_backbone("mlp", (1, 8, 8), 16), "16-8", METHODS.get("simclr").parse_kwargs({}))
    regular, excluded = m.param_groups(weight_decay=1e-4, exclude_bias_norm=True)
    assert all(p.ndim >= 2 for p in regular["params"]) and regular["lars"] and regular["weight_decay"] == 1e-4
    assert all(p.ndim == 1 for p in excluded["params"]) and not excluded["lars"] and excluded["weight_decay"] == 0.0
    assert len(m.param_groups(1e-4, exclude_bias_norm=False)) == 1


def test_byol_loss_is_symmetrized_over_views():
    torch.manual_seed(0)
    m = byol()
    x1, x2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    loss, r1 = m.training_step(x1, x2)
    swapped, _ = m.training_step(x2, x1)
    value = float(loss.total.detach())
    assert r1.shape == (6, 16) and 0 <= value <= 4 and math.isfinite(value)
    assert value == pytest.approx(float(swapped.total.detach()), rel=1e-6)
    assert loss.terms["prediction"].item() == pytest.approx(value)
