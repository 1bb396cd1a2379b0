"""Optimizers (SGD with momentum, AdamW, LARS) and the linear-warmup + cosine schedule."""
from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from trainables.config import warmup_epochs


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose update is scaled per tensor by the trust ratio
    eta * ||w|| / ||g + wd * w|| (You et al. 2017); groups with lars=False are plain SGD."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if group["lars"]:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm)
                    )
                    update.mul_(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def base_lr(cfg: DictConfig, batch_size: int) -> float:
    return cfg.lr * batch_size / 256 if cfg.scale_lr else cfg.lr


def build_optimizer(groups: list[dict], cfg: DictConfig, batch_size: int) -> torch.optim.Optimizer:
    lr = base_lr(cfg, batch_size)
    for g in groups:
        g["lr"] = lr * g.pop("lr_ratio", 1.0)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta)
    for g in groups:
        g.pop("lars", None)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    """Multiplier of each group's initial lr: linear from 1/warmup_steps to 1, then cosine to min_ratio."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def build_scheduler(optimizer, cfg: DictConfig, steps_per_epoch: int):
    """The per-step schedule of a trial config `cfg`: its warmup (see config.warmup_epochs), then cosine."""
    total = steps_per_epoch * cfg.epochs
    warmup = round(warmup_epochs(cfg) * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total, cfg.optim.min_lr_ratio))
