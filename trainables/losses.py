"""Pure SSL loss functions, each returning its total and the terms it is the sum of (LossTerms).

Each takes the two views' embeddings as (N, D) tensors (row i of both is sample i) plus its
hyperparameters. CLAIMS.md writes K as D x N; here rows are samples, so a view's (N, D) tensor is
K^T. Every term is already weighted by its coefficient, so `sum(terms.values()) == total`, and the
same quantity has the same name in every loss:
- InfoNCE family, spectral: alignment (the positive pairs) + repulsion (the negatives)
- generalized: alignment + distribution (matching the embeddings to a prior)
- VICReg family: invariance + variance + covariance
- Barlow Twins: on_diagonal + off_diagonal
- asymmetric (BYOL, SimSiam, DirectPred): prediction

Data-parallel (trainables.distributed): each rank passes its share of the global batch, and every
batch statistic (negatives, means, variances, covariances, correlations, the sliced-Wasserstein
matching) is taken over the global batch, with gradients to every rank. Each loss is defined so
that the mean of the ranks' losses is the loss of the global batch; its docstring says what is
global and what is local. One process: the global batch is the batch.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from trainables import distributed

# How a negative pair's similarity enters InfoNCE (Garrido et al.'s SimCLR, SimCLR-abs, SimCLR-sq).
NEGATIVE_TRANSFORMS = {"plain": lambda s: s, "abs": torch.abs, "sq": torch.square}
NEGATIVE_SIMILARITIES = tuple(NEGATIVE_TRANSFORMS)
SIMCLR_NORMALIZATIONS = ("none", "centering", "dimension_standardization")
GENERALIZED_PRIORS = ("lse", "uniform_cube", "gaussian")


class LossTerms(NamedTuple):
    """A loss's total (what is minimized) and its weighted terms, which sum to the total."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]

    def detach(self) -> "LossTerms":
        return LossTerms(self.total.detach(), {name: t.detach() for name, t in self.terms.items()})


def sum_of(**terms: torch.Tensor) -> LossTerms:
    """The loss whose total is the sum of `terms`."""
    return LossTerms(sum(terms.values()), terms)


def average(*losses: LossTerms) -> LossTerms:
    """Term by term mean of losses with the same terms (e.g. a loss symmetrized over the two views)."""
    terms = {name: sum(loss.terms[name] for loss in losses) / len(losses) for name in losses[0].terms}
    return LossTerms(sum(loss.total for loss in losses) / len(losses), terms)


def check_pair(a: torch.Tensor, b: torch.Tensor, names: str = "z1, z2") -> None:
    """Both (N, D) with the same shape and N >= 2 (the statistics of a batch need two samples)."""
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(f"{names}: need two (N, D) tensors of one shape with N >= 2, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def against_global_batch(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of which `local` is this rank's share (gathered, with gradients), and the
    index in it of each of `local`'s rows."""
    everyone = distributed.gather_with_grad(local)
    return everyone, distributed.rank() * len(local) + torch.arange(len(local), device=local.device)


def marked(like: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """A boolean mask of `like`'s shape, True at (i, columns[i]) in each row i."""
    mask = torch.zeros_like(like, dtype=torch.bool)
    mask[torch.arange(len(columns), device=like.device), columns] = True
    return mask


def mean_logsumexp_excluding(logits: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """mean_i log sum_{j not excluded in row i} exp(logits_ij)."""
    return torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1).mean()


# --- sample-contrastive -----------------------------------------------------------------------
def info_nce_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    temperature: float = 0.1,
    negatives: str = "plain",
    decoupled: bool = False,
) -> LossTerms:
    """InfoNCE (van den Oord, Li, Vinyals 2018, "Representation Learning with Contrastive
    Predictive Coding") over the 2N embeddings of both views, with the similarity s = the dot
    product of the embeddings as given (see nt_xent_loss for cosine similarity):

        L = mean_i [ -s(i, i+)/tau + log sum_{k != i} exp(s(i, k)/tau) ]
          = alignment + repulsion

    negatives: 'plain' | 'abs' | 'sq' -- negative pairs' similarities as they are, in absolute value
    or squared (Garrido et al. 2023, "On the duality between contrastive and non-contrastive
    self-supervised learning": SimCLR-abs / -sq); the positive pair's stays as it is.
    decoupled: drop the positive from the denominator (DCL; Yeh et al. 2022, "Decoupled
    Contrastive Learning"). Default temperature 0.1: Garrido et al.'s SimCLR setting.

    Data-parallel: the anchors i and their positives are this rank's, the negatives k all 2N
    embeddings of the global batch (gathered); the mean is over this rank's anchors.

    Example:
        >>> e1, e2 = F.normalize(model(x1), dim=1), F.normalize(model(x2), dim=1)
        >>> loss = info_nce_loss(e1, e2, temperature=0.1, negatives="abs", decoupled=True)
        >>> loss.total.backward()
    """
    check_pair(e1, e2, "e1, e2")
    check_positive("temperature", temperature)
    if negatives not in NEGATIVE_SIMILARITIES:
        raise ValueError(f"negatives must be one of {NEGATIVE_SIMILARITIES}, got {negatives!r}")
    anchors = torch.cat([e1, e2])
    candidates, own = against_global_batch(anchors)
    # Anchor i's positive is the other view of its sample, n rows away among this rank's rows.
    partner = own.roll(e1.shape[0])
    sims = anchors @ candidates.T
    is_positive = marked(sims, partner)
    positive = sims[is_positive]
    # The positive enters SimCLR's denominator untransformed: it is not a negative pair.
    logits = torch.where(is_positive, sims, NEGATIVE_TRANSFORMS[negatives](sims)) / temperature
    excluded = marked(sims, own)
    if decoupled:
        excluded = excluded | is_positive
    return sum_of(alignment=-(positive / temperature).mean(), repulsion=mean_logsumexp_excluding(logits, excluded))


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    negatives: str = "plain",
    decoupled: bool = False,
) -> LossTerms:
    """NT-Xent (Chen, Kornblith, Norouzi, Hinton 2020, "A Simple Framework for Contrastive Learning
    of Visual Representations"): info_nce_loss on cosine similarities, i.e. on l2-normalized
    embeddings. With `negatives` / `decoupled` it is SimCLR-abs/-sq, DCL, DCL-abs/-sq.

        L = mean_i [ -cos(z_i, z_i+)/tau + log sum_{k != i} exp(cos(z_i, z_k)/tau) ]

    Default temperature 0.1: Garrido et al. 2023's SimCLR setting (SimCLR's paper: 0.1 to 0.5).
    Data-parallel: as info_nce_loss, negatives from the global batch.

    Example:
        >>> loss = nt_xent_loss(projector(backbone(x1)), projector(backbone(x2)), temperature=0.1)
        >>> loss.total.backward(); loss.terms["alignment"], loss.terms["repulsion"]
    """
    check_pair(z1, z2)
    return info_nce_loss(F.normalize(z1, dim=1), F.normalize(z2, dim=1), temperature, negatives, decoupled)


def simclr_embeddings(z: torch.Tensor, normalization: str) -> torch.Tensor:
    """Garrido et al.'s normalization strategies (their Table 1) for one view, returning what
    the InfoNCE dot products are taken on.
    none: unit-norm embeddings (classical SimCLR). centering: dimensions centered over the batch,
    then unit-norm embeddings. dimension_standardization: dimensions centered and scaled to norm
    sqrt(N / D) (their eq. 14), embeddings left unnormalized; the total squared norm is N either way.
    Data-parallel: the means and norms over the batch are the global batch's, N its size."""
    if normalization == "none":
        return F.normalize(z, dim=1)
    centered = z - distributed.mean_over_global_batch(z)
    if normalization == "centering":
        return F.normalize(centered, dim=1)
    if normalization == "dimension_standardization":
        n, d = len(z) * distributed.world_size(), z.shape[1]
        # F.normalize's floor on the norm, taken before the square root so that a constant
        # dimension gets a zero gradient rather than 0 * inf.
        norms = distributed.all_reduce_with_grad(centered.square().sum(dim=0)).clamp_min(1e-24).sqrt()
        return centered / norms * math.sqrt(n / d)
    raise ValueError(f"normalization must be one of {SIMCLR_NORMALIZATIONS}, got {normalization!r}")


def spectral_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, mu: float = 1.0) -> LossTerms:
    """Spectral contrastive loss (HaoChen, Wei, Gaidon, Ma 2021, "Provable Guarantees for
    Self-Supervised Deep Learning with Spectral Contrastive Loss"), on embeddings projected onto
    the sphere of radius sqrt(mu) (e_i = sqrt(mu) z_i / ||z_i||):

        L = -2/N sum_i <e1_i, e2_i>  +  1/(N(N-1)) sum_{i != j} <e1_i, e2_j>^2
          = alignment + repulsion

    Default mu = 1: the unit sphere (the paper's official code projects onto radius sqrt(mu)).

    Data-parallel: the rows i are this rank's, the columns j all N of the global batch (e2
    gathered); both sums are normalized as means over this rank's rows i (the repulsion as
    1/(n_local (N-1)) sum_i sum_{j != i}).

    Example:
        >>> loss = spectral_contrastive_loss(z1, z2, mu=1.0)
        >>> loss.total.backward()
    """
    check_pair(z1, z2)
    check_positive("mu", mu)
    scale = math.sqrt(mu)
    e1, e2 = F.normalize(z1, dim=1) * scale, F.normalize(z2, dim=1) * scale
    targets, own = against_global_batch(e2)
    cross = e1 @ targets.T
    is_positive = marked(cross, own)
    repulsion = cross.masked_fill(is_positive, 0).square().sum() / (len(e1) * (len(targets) - 1))
    return sum_of(alignment=-2 * cross[is_positive].mean(), repulsion=repulsion)


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


# --- dimension-contrastive ----------------------------------------------------------------------
def squared_off_diagonal_covariance(cov: torch.Tensor) -> torch.Tensor:
    """VICReg's covariance criterion: squared off-diagonal entries summed, divided by D."""
    return off_diagonal(cov).pow(2).sum() / cov.shape[0]


def logsumexp_off_diagonal_covariance(cov: torch.Tensor, temperature: float) -> torch.Tensor:
    """Garrido's c_exp: (1/D) sum_i log sum_{j != i} exp(C_ij / tau)."""
    eye = torch.eye(cov.shape[0], dtype=torch.bool, device=cov.device)
    return mean_logsumexp_excluding(cov / temperature, eye)


def weighted_vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float, std_coeff: float, cov_coeff: float, std_eps: float,
    temperature: float | None,
) -> LossTerms:
    """VICReg's three terms as in the official code, weighted: MSE invariance; hinge on the
    per-dimension std (unbiased variance + eps) at 1, averaged over both views; covariance
    criterion summed over both views. temperature=None: squared off-diagonal covariance (VICReg);
    a float: c_exp with that temperature (VICReg-exp).
    Data-parallel (as the official code): the invariance is this rank's mean; variance and
    covariance are those of the global batch (gathered), the same on every rank."""
    check_pair(z1, z2)
    invariance = F.mse_loss(z1, z2)
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        z = distributed.gather_with_grad(z)
        n = z.shape[0]
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + std_eps)
        variance = variance + torch.mean(F.relu(1 - std)) / 2
        cov = (z.T @ z) / (n - 1)
        if temperature is None:
            covariance = covariance + squared_off_diagonal_covariance(cov)
        else:
            covariance = covariance + logsumexp_off_diagonal_covariance(cov, temperature)
    return sum_of(invariance=sim_coeff * invariance, variance=std_coeff * variance, covariance=cov_coeff * covariance)


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    std_eps: float = 1e-4,
) -> LossTerms:
    """VICReg (Bardes, Ponce, LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning"), as in the official code:

        L = lambda s(Z1, Z2) + mu [v(Z1) + v(Z2)] / 2 + nu [c(Z1) + c(Z2)]
          = invariance + variance + covariance
        s = mean_ij (Z1_ij - Z2_ij)^2
        v(Z) = mean_j max(0, 1 - sqrt(Var(Z_j) + eps))          (unbiased variance)
        c(Z) = 1/D sum_{i != j} C(Z)_ij^2,  C(Z) the covariance of the dimensions

    Defaults lambda = mu = 25, nu = 1, eps = 1e-4: the paper's and its official code's.
    Data-parallel: s is this rank's mean, v and c the global batch's (see weighted_vicreg_loss).

    Example:
        >>> loss = vicreg_loss(z1, z2)
        >>> loss.total.backward(); loss.terms["variance"]
    """
    return weighted_vicreg_loss(z1, z2, sim_coeff, std_coeff, cov_coeff, std_eps, temperature=None)


def vicreg_exp_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    temperature: float = 0.1,
    std_eps: float = 1e-4,
) -> LossTerms:
    """VICReg-exp (Garrido et al. 2023, "On the duality between contrastive and non-contrastive
    self-supervised learning", eq. 12): vicreg_loss with its covariance criterion replaced by a
    LogSumExp over the off-diagonal covariances,

        c_exp(Z) = 1/D sum_i log sum_{j != i} exp(C(Z)_ij / tau)

    Defaults: VICReg's coefficients; temperature 0.1 (not stated in the paper's main text).
    Data-parallel: as vicreg_loss.

    Example:
        >>> loss = vicreg_exp_loss(z1, z2, temperature=0.1)
        >>> loss.total.backward(); loss.terms["covariance"]
    """
    check_positive("temperature", temperature)
    return weighted_vicreg_loss(z1, z2, sim_coeff, std_coeff, cov_coeff, std_eps, temperature)


def vicreg_ctr_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    temperature: float = 0.1,
    std_eps: float = 1e-4,
) -> LossTerms:
    """VICReg-ctr (Garrido et al. 2023, eq. 13): vicreg_exp_loss applied to K^T, i.e. with samples
    and dimensions swapped:

        L(Z1, Z2) = vicreg_exp_loss(Z1^T, Z2^T)

    The variance hinge then acts on each embedding's spread over its coordinates (its norm after
    centering), and c_exp repels the samples' Gram matrix like DCL; the invariance term is
    unchanged by the transpose. Defaults as vicreg_exp_loss.

    Data-parallel: on K^T the samples are the dimensions, so the invariance and each sample's
    variance hinge are this rank's means; the rows of the Gram matrix are this rank's samples,
    its columns all N of the global batch (gathered), and c_exp is the mean over this rank's rows.

    Example:
        >>> loss = vicreg_ctr_loss(z1, z2, temperature=0.1)
        >>> loss.total.backward()
    """
    check_pair(z1, z2)
    check_pair(z1.T, z2.T, "z1^T, z2^T")
    check_positive("temperature", temperature)
    invariance = F.mse_loss(z1, z2)
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        # Each sample centered over its coordinates: what centering the columns of K^T does.
        centered = z - z.mean(dim=1, keepdim=True)
        std = torch.sqrt(centered.var(dim=1) + std_eps)
        variance = variance + torch.mean(F.relu(1 - std)) / 2
        everyone, own = against_global_batch(centered)
        gram = centered @ everyone.T / (z.shape[1] - 1)
        covariance = covariance + mean_logsumexp_excluding(gram / temperature, marked(gram, own))
    return sum_of(invariance=sim_coeff * invariance, variance=std_coeff * variance, covariance=cov_coeff * covariance)


def barlow_twins_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    redundancy_weight: float = 5e-3,
    loss_scale: float = 1.0,
    bn_eps: float = 1e-5,
) -> LossTerms:
    """Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny 2021, "Barlow Twins: Self-Supervised Learning
    via Redundancy Reduction"): C the cross-correlation of the two views after a non-affine batch
    norm (biased batch variance, like nn.BatchNorm1d in training mode), C = BN(Z1)^T BN(Z2) / N,

        L = s [ sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 ] = on_diagonal + off_diagonal

    Defaults lambda = 5e-3 (the paper's), s = 1 (early official code scaled by 0.024), eps = 1e-5
    (nn.BatchNorm1d's).

    Data-parallel (as the official code, whose BN is a SyncBatchNorm): the batch norm's
    statistics and C are the global batch's (summed over ranks with gradients), the same on every
    rank; N is the global batch size.

    Example:
        >>> loss = barlow_twins_loss(z1, z2, redundancy_weight=5e-3)
        >>> loss.total.backward(); loss.terms["off_diagonal"]
    """
    check_pair(z1, z2)
    n = z1.shape[0] * distributed.world_size()

    def batch_norm(z: torch.Tensor) -> torch.Tensor:
        centered = z - distributed.mean_over_global_batch(z)
        return centered / torch.sqrt(distributed.mean_over_global_batch(centered.square()) + bn_eps)

    c = distributed.all_reduce_with_grad(batch_norm(z1).T @ batch_norm(z2)) / n
    return sum_of(on_diagonal=loss_scale * (1 - c.diagonal()).pow(2).sum(),
                  off_diagonal=loss_scale * redundancy_weight * off_diagonal(c).pow(2).sum())


# --- generalized contrastive ----------------------------------------------------------------------
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
    mean over random unit directions (rank 0's when data-parallel) of the 1-D W2^2 between the
    projections (sorted matching)."""
    directions = torch.randn(x.shape[1], num_projections, generator=generator, device=x.device, dtype=x.dtype)
    directions = distributed.from_rank_zero(directions)
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
) -> LossTerms:
    """Generalized contrastive loss (Chen, Luo, Li 2021, "Intriguing Properties of Contrastive
    Losses"): alignment plus lambda times a distribution-matching term,

        L = mean_i ||z1_i - z2_i||^2 / (2 tau) + lambda D = alignment + distribution

    lse: on unit-norm embeddings, D is NT-Xent's denominator, the mean over the 2N anchors of
    log sum_{k != i} exp(cos_ik / tau); with lambda = 1 the loss is NT-Xent + 1/tau.
    uniform_cube / gaussian: on the raw embeddings, D is the sliced-Wasserstein distance squared
    between the 2N embeddings and 2N samples of the prior (see sample_prior), over
    `num_projections` random directions; `generator` draws the prior samples, then the directions.
    Defaults lambda = 1, tau = 0.1: the paper's SimCLR-equivalent setting.

    Data-parallel: the alignment is this rank's mean. lse: as info_nce_loss, anchors this rank's,
    the other embeddings k all 2N of the global batch. Sliced Wasserstein: between the global
    batch's 2N embeddings (gathered) and rank 0's prior samples and directions, the same on every
    rank.

    Example:
        >>> loss = generalized_contrastive_loss(z1, z2, prior="uniform_cube", distribution_weight=2.0)
        >>> loss.total.backward(); loss.terms["distribution"]
    """
    check_pair(z1, z2)
    check_positive("temperature", temperature)
    if prior not in GENERALIZED_PRIORS:
        raise ValueError(f"prior must be one of {GENERALIZED_PRIORS}, got {prior!r}")
    if prior == "lse":
        e1, e2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        alignment = (e1 - e2).pow(2).sum(dim=1).mean() / (2 * temperature)
        anchors = torch.cat([e1, e2])
        candidates, own = against_global_batch(anchors)
        logits = anchors @ candidates.T / temperature
        distribution = mean_logsumexp_excluding(logits, marked(logits, own))
    else:
        alignment = (z1 - z2).pow(2).sum(dim=1).mean() / (2 * temperature)
        z = distributed.gather_with_grad(torch.cat([z1, z2]))
        target = distributed.from_rank_zero(sample_prior(prior, z.shape[0], z.shape[1], z, generator))
        distribution = sliced_wasserstein_sq(z, target, num_projections, generator)
    return sum_of(alignment=alignment, distribution=distribution_weight * distribution)


# --- asymmetric: a prediction against a target ------------------------------------------------------
def normalized_mse_loss(p: torch.Tensor, z: torch.Tensor) -> LossTerms:
    """BYOL's loss (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
    Learning"), the MSE of l2-normalized prediction and target:

        L = mean_i ||p_i/||p_i|| - z_i/||z_i|| ||^2 = mean_i (2 - 2 cos(p_i, z_i)) = prediction

    No hyperparameters.
    Data-parallel: a mean over samples, this rank's; no batch statistic.

    Example:
        >>> loss = normalized_mse_loss(predictor(z1_online), z2_target.detach())
        >>> loss.total.backward()
    """
    check_pair(p, z, "p, z")
    return sum_of(prediction=(2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean())


def negative_cosine_loss(p: torch.Tensor, z: torch.Tensor) -> LossTerms:
    """SimSiam's loss (Chen & He 2021, "Exploring Simple Siamese Representation Learning"):

        L = D(p, z) = -mean_i cos(p_i, z_i) = prediction

    No hyperparameters (the stop-gradient on z is the caller's).
    Data-parallel: a mean over samples, this rank's; no batch statistic.

    Example:
        >>> loss = negative_cosine_loss(predictor(z1), z2.detach())
        >>> loss.total.backward()
    """
    check_pair(p, z, "p, z")
    return sum_of(prediction=-F.cosine_similarity(p, z, dim=-1).mean())


def squared_error_loss(p: torch.Tensor, z: torch.Tensor) -> LossTerms:
    """The unnormalized loss of Tian, Chen, Ganguli 2021 ("Understanding Self-Supervised Learning
    Dynamics without Contrastive Pairs"), whose dynamics they analyse:

        L = 1/2 mean_i ||p_i - z_i||^2 = prediction

    No hyperparameters.
    Data-parallel: a mean over samples, this rank's; no batch statistic.

    Example:
        >>> loss = squared_error_loss(predictor(z1), z2_target)
        >>> loss.total.backward()
    """
    check_pair(p, z, "p, z")
    return sum_of(prediction=0.5 * (p - z).pow(2).sum(dim=1).mean())
