"""Evaluation on frozen features: weighted kNN, linear probes, and collapse diagnostics."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract(method: nn.Module, samples, view_maker, device, batch_size: int, autocast) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Representations, embeddings (float32, on device) and labels of a split, eval mode."""
    was_training = method.training
    method.eval()
    reps, embs, labels = [], [], []
    for x, y in samples.batches(batch_size):
        with autocast():
            r, z = method(view_maker.normalize(x.to(device, non_blocking=True)))
        reps.append(r.float())
        embs.append(z.float())
        labels.append(y.to(device))
    method.train(was_training)
    return torch.cat(reps), torch.cat(embs), torch.cat(labels)


@torch.no_grad()
def knn_accuracy(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
    k: int = 20, temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024,
) -> float:
    """Weighted kNN (Wu et al. 2018) on l2-normalized features: each of the k nearest training
    samples votes for its class with weight exp(cos / temperature)."""
    num_classes = num_classes or int(train_labels.max()) + 1
    train_n = F.normalize(train_feats, dim=1)
    test_n = F.normalize(test_feats, dim=1)
    k = min(k, len(train_n))
    correct = 0
    for start in range(0, len(test_n), chunk):
        sims, idx = (test_n[start : start + chunk] @ train_n.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes, device=sims.device)
        votes.scatter_add_(1, train_labels[idx], torch.exp(sims / temperature))
        correct += (votes.argmax(dim=1) == test_labels[start : start + chunk]).sum().item()
    return correct / len(test_n)


def effective_rank(feats: torch.Tensor) -> float:
    """exp of the entropy of the normalized singular values (Roy & Vetterli 2007; RankMe)."""
    s = torch.linalg.svdvals(feats.double())
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def normalized_std(emb: torch.Tensor) -> float:
    """Mean over dimensions of the std over samples of l2-normalized embeddings:
    ~1/sqrt(D) when spread out, 0 at complete collapse."""
    return float(F.normalize(emb.double(), dim=1).std(dim=0).mean())


def linear_probe_accuracy(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
    num_classes: int, steps: int = 200, weight_decay: float = 1e-4,
) -> float:
    """Offline linear probe: multinomial logistic regression on standardized frozen features,
    full-batch L-BFGS. Deterministic for given features."""
    mean, std = train_feats.mean(dim=0), train_feats.std(dim=0).clamp_min(1e-6)
    x_train, x_test = (train_feats - mean) / std, (test_feats - mean) / std
    probe = nn.Linear(x_train.shape[1], num_classes).to(x_train.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x_train), train_labels) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return (probe(x_test).argmax(dim=1) == test_labels).float().mean().item()


def fewshot_indices(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """k samples of every class (all of a class that has fewer), drawn by `seed`: the same labeled
    subset for every trial on a split, so trials compare on equal terms."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(labels.device)
    shuffled = labels[order]
    chosen = [order[shuffled == c][:k] for c in shuffled.unique()]
    return torch.cat(chosen)


def fewshot_accuracy(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
    num_classes: int, k: int, steps: int = 200, weight_decay: float = 1e-4,
) -> float:
    """The offline linear probe trained on k labeled samples per class only."""
    idx = fewshot_indices(train_labels, k)
    return linear_probe_accuracy(train_feats[idx], train_labels[idx], test_feats, test_labels, num_classes, steps, weight_decay)
