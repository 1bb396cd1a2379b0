"""Pure SSL loss functions.

Each takes the two views' embeddings as (N, D) tensors (row i of both is sample i) plus its
hyperparameters and returns a scalar. CLAIMS.md writes K as D x N; here rows are samples, so a
view's (N, D) tensor is K^T.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEGATIVE_SIMILARITIES = ("plain", "abs", "sq")
SIMCLR_NORMALIZATIONS = ("none", "centering", "dimension_standardization")
GENERALIZED_PRIORS = ("lse", "uniform_cube", "gaussian")


def info_nce_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    temperature: float = 0.1,
    negatives: str = "plain",
    decoupled: bool = False,
) -> torch.Tensor:
    """InfoNCE over the 2N embeddings of both views, similarity = dot product of the embeddings as
    given: for each anchor, -s(positive)/tau + log sum over the other 2N - 1 embeddings of
    exp(s/tau), averaged over anchors.

    negatives: 'plain' | 'abs' | 'sq' -- negative pairs' similarities as they are, in absolute
    value or squared (Garrido's SimCLR-abs / -sq); the positive pair's stays as it is.
    decoupled: drop the positive from the denominator (DCL, Yeh et al. 2022)."""
    n = e1.shape[0]
    e = torch.cat([e1, e2])
    sims = e @ e.T
    if negatives == "abs":
        sims_neg = sims.abs()
    elif negatives == "sq":
        sims_neg = sims.square()
    elif negatives == "plain":
        sims_neg = sims
    else:
        raise ValueError(f"negatives must be one of {NEGATIVE_SIMILARITIES}, got {negatives!r}")
    rows = torch.arange(2 * n, device=e.device)
    partner = torch.cat([rows[n:], rows[:n]])
    positive = sims[rows, partner]
    is_positive = torch.zeros_like(sims, dtype=torch.bool)
    is_positive[rows, partner] = True
    # The positive enters SimCLR's denominator untransformed: it is not a negative pair.
    logits = torch.where(is_positive, sims, sims_neg) / temperature
    excluded = torch.eye(2 * n, dtype=torch.bool, device=e.device)
    if decoupled:
        excluded = excluded | is_positive
    denominator = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    return (denominator - positive / temperature).mean()


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    negatives: str = "plain",
    decoupled: bool = False,
) -> torch.Tensor:
    """SimCLR's NT-Xent: InfoNCE on cosine similarities (l2-normalized embeddings). With
    `negatives` / `decoupled` it is SimCLR-abs/-sq, DCL, DCL-abs/-sq."""
    return info_nce_loss(F.normalize(z1, dim=1), F.normalize(z2, dim=1), temperature, negatives, decoupled)


def simclr_embeddings(z: torch.Tensor, normalization: str) -> torch.Tensor:
    """Garrido et al.'s normalization strategies (their Table 1) for one view, returning what
    the InfoNCE dot products are taken on.
    none: unit-norm embeddings (classical SimCLR). centering: dimensions centered over the batch,
    then unit-norm embeddings. dimension_standardization: dimensions centered and scaled to norm
    sqrt(N / D) (their eq. 14), embeddings left unnormalized; the total squared norm is N either way."""
    if normalization == "none":
        return F.normalize(z, dim=1)
    centered = z - z.mean(dim=0)
    if normalization == "centering":
        return F.normalize(centered, dim=1)
    if normalization == "dimension_standardization":
        n, d = z.shape
        return F.normalize(centered, dim=0) * math.sqrt(n / d)
    raise ValueError(f"normalization must be one of {SIMCLR_NORMALIZATIONS}, got {normalization!r}")


def spectral_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """HaoChen et al. 2021: -2/N sum_i <z1_i, z2_i> + 1/(N(N-1)) sum_{i != j} <z1_i, z2_j>^2,
    on embeddings projected onto the sphere of radius sqrt(mu)."""
    n = z1.shape[0]
    scale = math.sqrt(mu)
    e1, e2 = F.normalize(z1, dim=1) * scale, F.normalize(z2, dim=1) * scale
    cross = e1 @ e2.T
    attraction = -2 * cross.diagonal().mean()
    repulsion = off_diagonal(cross).square().sum() / (n * (n - 1))
    return attraction + repulsion


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def squared_off_diagonal_covariance(cov: torch.Tensor) -> torch.Tensor:
    """VICReg's covariance criterion: squared off-diagonal entries summed, divided by D."""
    return off_diagonal(cov).pow(2).sum() / cov.shape[0]


def logsumexp_off_diagonal_covariance(cov: torch.Tensor, temperature: float) -> torch.Tensor:
    """Garrido's c_exp: (1/D) sum_i log sum_{j != i} exp(C_ij / tau)."""
    d = cov.shape[0]
    eye = torch.eye(d, dtype=torch.bool, device=cov.device)
    return torch.logsumexp((cov / temperature).masked_fill(eye, float("-inf")), dim=1).mean()


def weighted_vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float, std_coeff: float, cov_coeff: float, std_eps: float,
    temperature: float | None,
) -> torch.Tensor:
    """VICReg's invariance, variance and covariance terms as in the official code, weighted: MSE
    invariance; hinge on the per-dimension std (unbiased variance + eps) at 1, averaged over both
    views; covariance criterion summed over both views. temperature=None: squared off-diagonal
    covariance (VICReg); a float: c_exp with that temperature (VICReg-exp)."""
    n = z1.shape[0]
    invariance = F.mse_loss(z1, z2)
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + std_eps)
        variance = variance + torch.mean(F.relu(1 - std)) / 2
        cov = (z.T @ z) / (n - 1)
        if temperature is None:
            covariance = covariance + squared_off_diagonal_covariance(cov)
        else:
            covariance = covariance + logsumexp_off_diagonal_covariance(cov, temperature)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


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
    return weighted_vicreg_loss(z1, z2, sim_coeff, std_coeff, cov_coeff, std_eps, temperature=None)


def vicreg_exp_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    temperature: float = 0.1,
    std_eps: float = 1e-4,
) -> torch.Tensor:
    """VICReg-exp (Garrido et al. eq. 12): VICReg with its covariance criterion replaced by the
    LogSumExp one, c_exp(K) = (1/D) sum_i log sum_{j != i} exp(C(K)_ij / tau)."""
    return weighted_vicreg_loss(z1, z2, sim_coeff, std_coeff, cov_coeff, std_eps, temperature)


def vicreg_ctr_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    temperature: float = 0.1,
    std_eps: float = 1e-4,
) -> torch.Tensor:
    """VICReg-ctr (Garrido et al. eq. 13): VICReg-exp applied to K^T, i.e. with samples and
    dimensions swapped. The variance hinge then acts on each embedding's spread over its
    coordinates (its norm after centering), and c_exp repels the samples' Gram matrix like DCL.
    The invariance term is unchanged by the transpose."""
    return vicreg_exp_loss(z1.T, z2.T, sim_coeff, std_coeff, cov_coeff, temperature, std_eps)


def barlow_twins_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    redundancy_weight: float = 5e-3,
    loss_scale: float = 1.0,
    bn_eps: float = 1e-5,
) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021): cross-correlation C of the two views after a
    non-affine batch norm (biased batch variance, like nn.BatchNorm1d in training mode), then
    sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2, times loss_scale."""
    n = z1.shape[0]

    def batch_norm(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + bn_eps)

    c = batch_norm(z1).T @ batch_norm(z2) / n
    invariance = (1 - c.diagonal()).pow(2).sum()
    redundancy = off_diagonal(c).pow(2).sum()
    return loss_scale * (invariance + redundancy_weight * redundancy)


def sample_prior(prior: str, n: int, d: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """n samples of a prior scaled to unit expected squared norm (per-coordinate variance 1/d),
    the scale of the unit sphere, so that the temperature means the same for every prior."""
    if prior == "gaussian":
        return torch.randn(n, d, generator=generator, device=like.device, dtype=like.dtype) / math.sqrt(d)
    if prior == "uniform_cube":
        half_width = math.sqrt(3 / d)
        u = torch.rand(n, d, generator=generator, device=like.device, dtype=like.dtype)
        return (2 * u - 1) * half_width
    raise ValueError(f"sliced-Wasserstein prior must be uniform_cube or gaussian, got {prior!r}")


def sliced_wasserstein_sq(
    x: torch.Tensor, y: torch.Tensor, num_projections: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Monte-Carlo sliced 2-Wasserstein distance squared between two equal-size point clouds:
    mean over random unit directions of the 1-D W2^2 between the projections (sorted matching)."""
    directions = torch.randn(x.shape[1], num_projections, generator=generator, device=x.device, dtype=x.dtype)
    directions = F.normalize(directions, dim=0)
    px, _ = torch.sort(x @ directions, dim=0)
    py, _ = torch.sort(y @ directions, dim=0)
    return (px - py).pow(2).mean()


def generalized_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    prior: str = "lse",
    distribution_weight: float = 1.0,
    temperature: float = 0.1,
    num_projections: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Chen, Luo, Li 2021: alignment + lambda * distribution matching.
    alignment: mean_i ||z1_i - z2_i||^2 / (2 tau).
    lse: on unit-norm embeddings the distribution term is NT-Xent's denominator, mean over the 2N
    anchors of log sum_{k != i} exp(cos_ik / tau); with lambda = 1 the loss is NT-Xent + 1/tau.
    uniform_cube / gaussian: on the raw embeddings, the sliced-Wasserstein distance squared
    between the 2N embeddings and 2N samples of the prior (see sample_prior), over
    `num_projections` random directions. `generator` draws the directions and prior samples."""
    if prior == "lse":
        e1, e2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        alignment = (e1 - e2).pow(2).sum(dim=1).mean() / (2 * temperature)
        e = torch.cat([e1, e2])
        logits = (e @ e.T / temperature).masked_fill(torch.eye(len(e), dtype=torch.bool, device=e.device), float("-inf"))
        distribution = torch.logsumexp(logits, dim=1).mean()
    else:
        alignment = (z1 - z2).pow(2).sum(dim=1).mean() / (2 * temperature)
        z = torch.cat([z1, z2])
        target = sample_prior(prior, z.shape[0], z.shape[1], z, generator)
        distribution = sliced_wasserstein_sq(z, target, num_projections, generator)
    return alignment + distribution_weight * distribution


def normalized_mse_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's 2 - 2 cos(p, z), averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()


def negative_cosine_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, z), averaged over the batch."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def squared_error_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """1/2 ||p - z||^2, summed over dimensions and averaged over the batch: the unnormalized loss
    of Tian et al.'s analysis."""
    return 0.5 * (p - z).pow(2).sum(dim=1).mean()
