"""Diagnostics of embeddings beyond accuracy: Garrido et al.'s sample- and dimension-contrastive
criteria and their exact identity.

Convention: functions take `embeddings` of shape (N, M), rows = samples, like the losses. In
CLAIMS.md's notation K = embeddings.T is M x N (column i = sample i), so
K^T K = embeddings @ embeddings.T (N x N Gram of samples) and
K K^T = embeddings.T @ embeddings (M x M, uncentered covariance of dimensions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# L_c needs the N x N Gram matrix: cap the held-out samples it is computed on.
GARRIDO_MAX_SAMPLES = 2048


def squared_off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """||A - diag(A)||_F^2."""
    return m.pow(2).sum() - m.diagonal().pow(2).sum()


def l_c(embeddings: torch.Tensor) -> torch.Tensor:
    """Sample-contrastive criterion L_c = ||K^T K - diag(K^T K)||_F^2."""
    return squared_off_diagonal(embeddings @ embeddings.T)


def l_nc(embeddings: torch.Tensor) -> torch.Tensor:
    """Dimension-contrastive criterion L_nc = ||K K^T - diag(K K^T)||_F^2."""
    return squared_off_diagonal(embeddings.T @ embeddings)


def garrido_identity_sides(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides of Garrido et al.'s Theorem 3.3, which are equal for any K:
    L_nc + sum_j ||row_j(K)||^4 (dimensions) and L_c + sum_i ||col_i(K)||^4 (samples)."""
    dimension_norms = embeddings.pow(2).sum(dim=0)
    sample_norms = embeddings.pow(2).sum(dim=1)
    return l_nc(embeddings) + dimension_norms.pow(2).sum(), l_c(embeddings) + sample_norms.pow(2).sum()


def garrido_residual(embeddings: torch.Tensor) -> torch.Tensor:
    """|lhs - rhs| / |rhs| of the identity: rounding error only, ~1e-16 in float64."""
    lhs, rhs = garrido_identity_sides(embeddings)
    return (lhs - rhs).abs() / rhs.abs().clamp_min(torch.finfo(rhs.dtype).tiny)


def garrido_unit_norm_bounds(n: int, m: int, l_nc_value: float) -> tuple[float, float]:
    """Corollary 3.4.1: with unit-norm samples (columns of K),
    L_nc - N + N^2 / M <= L_c <= L_nc - N + N^2."""
    return l_nc_value - n + n * n / m, l_nc_value - n + n * n


@torch.no_grad()
def garrido_metrics(embeddings: torch.Tensor) -> dict[str, float]:
    """l_c, l_nc and garrido_residual of held-out embeddings, in float64, on the first
    GARRIDO_MAX_SAMPLES samples made unit-norm: the scale of SimCLR's criterion, comparable across
    methods whose embedding norms differ by orders of magnitude, and where the bounds apply."""
    k = F.normalize(embeddings[:GARRIDO_MAX_SAMPLES].double(), dim=1)
    return {"l_c": float(l_c(k)), "l_nc": float(l_nc(k)), "garrido_residual": float(garrido_residual(k))}
