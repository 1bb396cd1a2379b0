"""The method base class machinery: EMA target and its schedule, predictor groups, stop-gradient."""
import math

import pytest
import torch

from trainables.methods import METHODS
from trainables.models import build_backbone


def byol(**kwargs):
    cls = METHODS.get("byol")
    backbone, dim = build_backbone("mlp", (1, 8, 8), 16)
    return cls(backbone, dim, "16-8", cls.parse_kwargs(kwargs))


def test_ema_tau_cosine_schedule_from_base_to_one():
    m = byol(ema_tau=0.99)
    assert m.ema_tau(0.0) == pytest.approx(0.99)
    assert m.ema_tau(0.5) == pytest.approx(1 - 0.01 * 0.5)
    assert m.ema_tau(1.0) == pytest.approx(1.0)


def test_ema_update_moves_target_toward_online():
    m = byol(ema_tau=0.9)
    online = dict(torch.nn.Sequential(m.backbone, m.projector).named_parameters())
    with torch.no_grad():
        for p in online.values():
            p.add_(1.0)
    before = {k: v.clone() for k, v in m.target.named_parameters()}
    m.after_optimizer_step(progress=0.0)
    for k, t in m.target.named_parameters():
        torch.testing.assert_close(t, 0.9 * before[k] + 0.1 * online[k].detach())
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
    value = float(loss.detach())
    assert r1.shape == (6, 16) and 0 <= value <= 4 and math.isfinite(value)
    assert value == pytest.approx(float(swapped.detach()), rel=1e-6)
