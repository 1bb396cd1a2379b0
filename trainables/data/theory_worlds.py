"""The theory papers' generated worlds: every sample is a vector (p,), every dataset is drawn from
`data.split_seed` (deterministic, nothing downloaded) as a training set of `n` samples plus a
held-out set of `n_test` samples from the same distribution, and each dataset makes its own views.

- sparse_coding (Pokle et al. 2022): x = M z + noise, M (p x d) with orthonormal columns, z sparse
  in {0, +-1}^d; views keep each coordinate at random (keep probability 0.5).
- gaussian_aug (Jing et al. 2021): x ~ N(0, I); views add N(0, noise^2) to chosen coordinates.
- isotropic (Tian et al. 2021): x ~ N(0, I); views x + sigma * eps.

Labels, for kNN and the probes: sparse_coding labels a sample by its first drawn active latent;
the Gaussian worlds label it by the quadrant of (x_0, x_1), which a collapsed encoder loses."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from trainables.data.containers import DATASETS, DataBundle, DatasetOptions, TensorSamples, require_option


@dataclass(frozen=True)
class NoiseViews:
    """Each view adds independent Gaussian noise with per-coordinate std `noise_std` (p,)."""

    noise_std: torch.Tensor

    def views(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(x + self.noise_std * torch.randn(x.shape, generator=gen, device=x.device) for _ in range(2))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to(self, device) -> "NoiseViews":
        return NoiseViews(self.noise_std.to(device))


@dataclass(frozen=True)
class MaskViews:
    """Each view keeps every coordinate independently with probability `keep_prob` and zeroes the
    others, without rescaling (the masks of Pokle et al.'s official code)."""

    keep_prob: float

    def views(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(x * (torch.rand(x.shape, generator=gen, device=x.device) < self.keep_prob) for _ in range(2))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to(self, device) -> "MaskViews":
        return self


@dataclass
class SampleCounts(DatasetOptions):
    # Training samples (SSL, kNN bank and probes) and held-out samples.
    n: int = 8192
    n_test: int = 1024

    def check(self) -> None:
        require_option(self.n > 0 and self.n_test > 0, "n", f"n and n_test must be > 0, got {self.n}, {self.n_test}")

    def train_size(self, cfg: DictConfig) -> int:
        return self.n


def split(x: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[TensorSamples, TensorSamples]:
    return TensorSamples(x[:n], labels[:n]), TensorSamples(x[n:], labels[n:])


def vector_bundle(x: torch.Tensor, labels: torch.Tensor, counts: SampleCounts, num_classes: int, view_maker,
                  dictionary: torch.Tensor | None = None) -> DataBundle:
    train, test = split(x, labels, counts.n)
    return DataBundle(train, train, test, num_classes, (x.shape[1],), view_maker, dictionary)


# --- sparse coding (Pokle et al.) ----------------------------------------------------------------
@dataclass
class SparseCodingOptions(SampleCounts):
    # Ambient and latent dimension: M is p x d. Pokle et al.'s overparameterized setting, with
    # model.width = m = 50 units.
    p: int = 50
    d: int = 10
    n: int = 3000
    n_test: int = 1000
    # Every z has exactly max(1, round(sparsity * d)) nonzero coordinates, each +1 or -1 with equal
    # probability. 0.2 (two of ten) is the middle of the paper's sparsity levels 0.1 / 0.2 / 0.3.
    sparsity: float = 0.2
    # Std of the isotropic noise added to M z; 0 as in the official overparameterized runs (the data
    # model's sqrt(log d) / d = 0.15 at d = 10 is the other setting the paper uses).
    noise_std: float = 0.0
    # Each view keeps each coordinate with this probability.
    keep_prob: float = 0.5

    def check(self) -> None:
        super().check()
        require_option(0 < self.d <= self.p, "d", f"need 0 < d <= p, got d={self.d}, p={self.p}")
        require_option(0.0 < self.sparsity <= 1.0, "sparsity", f"must be in (0, 1], got {self.sparsity}")
        require_option(self.noise_std >= 0.0, "noise_std", f"must be >= 0, got {self.noise_std}")
        require_option(0.0 < self.keep_prob < 1.0, "keep_prob", f"must be in (0, 1), got {self.keep_prob}")

    @property
    def active(self) -> int:
        return max(1, round(self.sparsity * self.d))


def sparse_codes(n: int, d: int, active: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """z (n, d) with `active` nonzero +-1 coordinates per row, and each row's first drawn active
    coordinate (uniform over d), its label."""
    order = torch.rand(n, d, generator=gen).argsort(dim=1)
    support = order[:, :active]
    signs = torch.randint(0, 2, (n, active), generator=gen).float() * 2 - 1
    z = torch.zeros(n, d).scatter_(1, support, signs)
    return z, support[:, 0]


@DATASETS.register_dataset("sparse_coding", SparseCodingOptions)
def sparse_coding(cfg: DictConfig, o: SparseCodingOptions) -> DataBundle:
    gen = torch.Generator().manual_seed(cfg.split_seed)
    dictionary, _ = torch.linalg.qr(torch.randn(o.p, o.d, generator=gen))
    z, labels = sparse_codes(o.n + o.n_test, o.d, o.active, gen)
    x = z @ dictionary.T + o.noise_std * torch.randn(len(z), o.p, generator=gen)
    return vector_bundle(x, labels, o, o.d, MaskViews(o.keep_prob), dictionary)


# --- Gaussian worlds (Jing et al., Tian et al.) -------------------------------------------------
def quadrant(x: torch.Tensor) -> torch.Tensor:
    """Which of the four quadrants of (x_0, x_1) a sample lies in."""
    return (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def standard_normal(cfg: DictConfig, n: int, dim: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(cfg.split_seed))


@dataclass
class GaussianAugOptions(SampleCounts):
    dim: int = 16
    # Each view adds N(0, noise^2) to these coordinates only. Jing et al.'s case 1: noise 1.5
    # collapses up to 8 dimensions of a linear encoder, noise 0.01 none.
    noise: float = 1.5
    noisy: list[int] = field(default_factory=lambda: list(range(8, 16)))

    def check(self) -> None:
        super().check()
        require_option(self.dim >= 2, "dim", f"must be >= 2 (labels use x_0 and x_1), got {self.dim}")
        require_option(self.noise >= 0.0, "noise", f"must be >= 0, got {self.noise}")
        require_option(all(0 <= i < self.dim for i in self.noisy) and len(set(self.noisy)) == len(self.noisy), "noisy",
                f"must be distinct coordinates in [0, {self.dim}), got {self.noisy}")


@DATASETS.register_dataset("gaussian_aug", GaussianAugOptions)
def gaussian_aug(cfg: DictConfig, o: GaussianAugOptions) -> DataBundle:
    x = standard_normal(cfg, o.n + o.n_test, o.dim)
    noise_std = torch.zeros(o.dim)
    noise_std[o.noisy] = o.noise
    return vector_bundle(x, quadrant(x), o, 4, NoiseViews(noise_std))


@dataclass
class IsotropicOptions(SampleCounts):
    dim: int = 16
    # Views are x + sigma * eps, eps ~ N(0, I): augmentation variance sigma^2 on every coordinate.
    sigma: float = 0.5

    def check(self) -> None:
        super().check()
        require_option(self.dim >= 2, "dim", f"must be >= 2 (labels use x_0 and x_1), got {self.dim}")
        require_option(self.sigma >= 0.0, "sigma", f"must be >= 0, got {self.sigma}")


@DATASETS.register_dataset("isotropic", IsotropicOptions)
def isotropic(cfg: DictConfig, o: IsotropicOptions) -> DataBundle:
    x = standard_normal(cfg, o.n + o.n_test, o.dim)
    return vector_bundle(x, quadrant(x), o, 4, NoiseViews(torch.full((o.dim,), o.sigma)))
