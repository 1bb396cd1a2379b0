"""Diagnostics of embeddings beyond accuracy: Garrido et al.'s sample- and dimension-contrastive
criteria and their exact identity; dimensional collapse (Jing et al.); for the theory backbones
their norm, layer spectra and alignment, and the recovery of a sparse-coding dictionary (Pokle et
al.); for linear predictors their symmetry and eigen-alignment (Tian et al.).

Convention: functions take `embeddings` of shape (N, M), rows = samples, like the losses. In
CLAIMS.md's notation K = embeddings.T is M x N (column i = sample i), so
K^T K = embeddings @ embeddings.T (N x N Gram of samples) and
K K^T = embeddings.T @ embeddings (M x M, uncentered covariance of dimensions)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models import DirectPredPredictor, MatrixBackbone

# L_c needs the N x N Gram matrix: cap the held-out samples it is computed on.
GARRIDO_MAX_SAMPLES = 2048
# Written beside a trial's checkpoint every epoch: that epoch's spectra (see model_diagnostics).
SPECTRA_FILE = "spectra.json"


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


# --- collapse, theory models and predictors ----------------------------------------------------
def covariance_eigenvalues(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, float64) of the covariance of the rows of x: Jing et al.'s
    singular values of the embedding covariance."""
    x = x.double() - x.double().mean(dim=0)
    return torch.linalg.eigvalsh(x.T @ x / max(len(x) - 1, 1)).flip(0).clamp_min(0)


def significant(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which of non-negative `values` exceed `threshold` times the largest (all False at zero)."""
    return values > threshold * values.max().clamp_min(torch.finfo(values.dtype).tiny)


def n_collapsed(eigenvalues: torch.Tensor, threshold: float) -> int:
    return int((~significant(eigenvalues, threshold)).sum())


def recovery(weight: torch.Tensor, dictionary: torch.Tensor) -> dict[str, float]:
    """Pokle et al.'s metric: for each column M_j of the dictionary, max_i |cos(W_i, M_j)| over the
    rows W_i of the encoder's weight; its max, median and min over j."""
    cos = F.normalize(weight.detach().double(), dim=1) @ F.normalize(dictionary.double().to(weight.device), dim=0)
    best = cos.abs().amax(dim=0)
    return {"recovery_max": float(best.max()), "recovery_median": float(best.quantile(0.5)), "recovery_min": float(best.min())}


def layer_alignment(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Jing et al.'s alignment of two stacked layers W_lower = U1 S1 V1^T and W_upper = U2 S2 V2^T.
    The matrix |V2^T U1| (aligned layers: the identity, up to a permutation within groups of equal
    singular values), and a score that ties do not blur: ||W_upper W_lower||_* / sum_j s2_j s1_j,
    which is at most 1 (Horn's inequalities) and 1 when the layers align."""
    lower, upper = lower.detach().double(), upper.detach().double()
    u1, s1, _ = torch.linalg.svd(lower, full_matrices=False)
    _, s2, v2h = torch.linalg.svd(upper, full_matrices=False)
    k = min(len(s1), len(s2))
    product = torch.linalg.matrix_norm(upper @ lower, ord="nuc")
    bound = (s1[:k] * s2[:k]).sum().clamp_min(torch.finfo(torch.float64).tiny)
    return (v2h @ u1).abs(), float(product / bound)


def predictor_diagnostics(weight: torch.Tensor, embeddings: torch.Tensor, threshold: float) -> tuple[dict[str, float], dict[str, list]]:
    """Tian et al.'s checks of a linear predictor W_p against F = E[z z^T], the uncentered
    correlation of its inputs: asymmetry ||W_p - W_p^T|| / ||W_p||, and per eigenvector u_j of F
    the alignment cos(W_p u_j, u_j) and gain p_j = u_j^T W_p u_j. The scalar alignment is the mean
    over the eigenvectors whose eigenvalue is significant."""
    w = weight.detach().double()
    z = embeddings.double()
    s, u = torch.linalg.eigh(z.T @ z / len(z))
    s, u = s.flip(0).clamp_min(0), u.flip(1)
    mapped = w @ u
    alignment = F.cosine_similarity(mapped, u, dim=0)
    gains = (u * mapped).sum(dim=0)
    keep = significant(s, threshold)
    metrics = {
        "predictor_asymmetry": float(torch.linalg.matrix_norm(w - w.T) / torch.linalg.matrix_norm(w).clamp_min(1e-12)),
        "predictor_alignment": float(alignment[keep].mean()) if keep.any() else 0.0,
    }
    return metrics, {"correlation_eigenvalues": s.tolist(), "predictor_alignment": alignment.tolist(),
                     "predictor_gains": gains.tolist()}


@torch.no_grad()
def model_diagnostics(method: nn.Module, dictionary: torch.Tensor | None, representations: torch.Tensor,
                      embeddings: torch.Tensor, threshold: float) -> tuple[dict[str, float], dict[str, Any]]:
    """The diagnostics that apply to this trial's model and data, from held-out representations and
    embeddings: scalar metrics for every epoch, and the spectra behind them (the trial's artifact).

    Always: n_collapsed. Theory backbones (linear, deep_linear, symrelu): weight_norm (of the
    end-to-end matrix: 0 at complete collapse), per-layer singular values; with two layers or more
    layer_alignment; with a dictionary (sparse_coding) recovery_max/median/min. A linear or
    DirectPred predictor: predictor_asymmetry and predictor_alignment."""
    embedding_eigenvalues = covariance_eigenvalues(embeddings)
    metrics: dict[str, float] = {"n_collapsed": n_collapsed(embedding_eigenvalues, threshold)}
    spectra: dict[str, Any] = {"embedding_covariance": embedding_eigenvalues.tolist(),
                               "representation_covariance": covariance_eigenvalues(representations).tolist()}
    backbone = method.backbone
    if isinstance(backbone, MatrixBackbone):
        weights = backbone.layer_weights()
        end_to_end = backbone.end_to_end()
        metrics["weight_norm"] = float(torch.linalg.matrix_norm(end_to_end))
        spectra["layer_singular_values"] = [torch.linalg.svdvals(w.double()).tolist() for w in weights]
        if dictionary is not None and end_to_end.shape[1] == dictionary.shape[0]:
            metrics.update(recovery(end_to_end, dictionary))
        if len(weights) > 1:
            pairs = [layer_alignment(lower, upper) for lower, upper in zip(weights, weights[1:])]
            metrics["layer_alignment"] = sum(score for _, score in pairs) / len(pairs)
            spectra["layer_alignment"] = [matrix.tolist() for matrix, _ in pairs]
    predictor = getattr(method, "predictor", None)
    if isinstance(predictor, (nn.Linear, DirectPredPredictor)):
        predictor_metrics, predictor_spectra = predictor_diagnostics(predictor.weight, embeddings, threshold)
        metrics.update(predictor_metrics)
        spectra.update(predictor_spectra)
    return metrics, spectra
