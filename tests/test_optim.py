import math

import pytest
import torch

from trainables.config import trial_config
from trainables.optim import LARS, build_optimizer, warmup_cosine


def test_warmup_then_cosine():
    f = warmup_cosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_lars_step_matches_trust_ratio_formula():
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    w.grad = torch.tensor([0.5, -1.0])
    opt = LARS([{"params": [w], "lars": True}], lr=0.1, momentum=0.9, weight_decay=0.01, eta=0.02)
    update = torch.tensor([0.5, -1.0]) + 0.01 * torch.tensor([3.0, 4.0])
    trust = 0.02 * 5.0 / float(update.norm())
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * trust * update)


def test_lars_leaves_excluded_groups_unadapted():
    b = torch.tensor([1.0, 1.0], requires_grad=True)
    b.grad = torch.tensor([1.0, 2.0])
    LARS([{"params": [b], "lars": False, "weight_decay": 0.0}], lr=0.1).step()
    torch.testing.assert_close(b.detach(), torch.tensor([0.9, 0.8]))


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lars", LARS)])
def test_build_optimizer_scales_lr_and_group_ratios(name, cls):
    cfg = trial_config({"optim": {"name": name, "lr": 0.2}}).optim
    p, q = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([dict(params=[p], lr_ratio=1.0, lars=True), dict(params=[q], lr_ratio=10.0, lars=False)], cfg, 512)
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4) and opt.param_groups[1]["lr"] == pytest.approx(4.0)
