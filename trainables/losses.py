"""Pure SSL loss functions.

Each takes the two views' embeddings as (N, D) tensors (row i of both is sample i) plus its
hyperparameters and returns a scalar. CLAIMS.md writes K as D x N; here rows are samples.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent: for each of the 2N embeddings, cross-entropy of its positive (the other
    view of the same sample) against the 2N - 2 other samples' embeddings, cosine / temperature."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    std_eps: float = 1e-4,
) -> torch.Tensor:
    """VICReg (Bardes et al.), as in the official code: MSE invariance; hinge on the per-dimension
    std (unbiased variance + eps) at 1, averaged over both views; squared off-diagonal covariance
    summed and divided by D, summed over both views."""
    n, d = z1.shape
    invariance = F.mse_loss(z1, z2)
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + std_eps)
        variance = variance + torch.mean(F.relu(1 - std)) / 2
        cov = (z.T @ z) / (n - 1)
        covariance = covariance + off_diagonal(cov).pow(2).sum() / d
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


def normalized_mse_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's 2 - 2 cos(p, z), averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()
