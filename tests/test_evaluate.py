import math

import torch

from trainables.evaluate import effective_rank, knn_accuracy, linear_probe_accuracy, normalized_std


def clusters(n_per=30, dim=16, classes=4, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g)
    labels = torch.arange(classes).repeat_interleave(n_per)
    return centers[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_knn_separable_clusters_and_chance_on_noise():
    x, y = clusters()
    xt, yt = clusters(seed=0)
    assert knn_accuracy(x, y, xt + 0.01, yt, k=5) == 1.0
    noise = torch.randn(400, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(2))
    assert knn_accuracy(noise[:200], labels[:200], noise[200:], labels[200:], k=20) < 0.45


def test_knn_weighted_vote_by_similarity():
    # Two neighbours of class 0 far less similar than one of class 1: the weighted vote picks 1.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.2]])
    assert knn_accuracy(train, labels, query, torch.tensor([1]), k=3, temperature=0.07) == 1.0


def test_effective_rank_limits():
    assert math.isclose(effective_rank(torch.eye(8)), 8.0, rel_tol=1e-9)
    rank_one = torch.randn(50, 1) @ torch.randn(1, 8)
    assert effective_rank(rank_one) < 1.01
    s = torch.tensor([3.0, 1.0], dtype=torch.float64)
    p = s / s.sum()
    assert math.isclose(effective_rank(torch.diag(s)), math.exp(-(p * p.log()).sum()), rel_tol=1e-9)


def test_normalized_std_healthy_and_collapsed():
    spread = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    assert abs(normalized_std(spread) - 1 / math.sqrt(64)) < 0.005
    assert normalized_std(torch.ones(100, 64) * 3.0) == 0.0


def test_linear_probe_separates_linearly_separable_data():
    x, y = clusters(spread=0.3)
    xt, yt = clusters(spread=0.3, seed=0)
    assert linear_probe_accuracy(x, y, xt, yt, num_classes=4) == 1.0
