"""Data-parallel training of one trial: collectives whose gradients autograd gets right, and
BatchNorm over the global batch, so that every loss is the loss of the global batch.

How a data-parallel trial uses it (W processes, one device each, torch.distributed initialized,
every rank holding the same number of samples each step, e.g. a DistributedSampler with
drop_last=True):
1. Build the method from the same seed on every rank, then call `synchronize_batch_norm(method)`
   before creating the optimizer (and before wrapping the method in DistributedDataParallel, where
   one does; trainables.train calls average_gradients instead).
2. Each step every rank runs `method.training_step` on its own share of the global batch. The
   losses (trainables.losses) take every batch statistic over the global batch through the
   functions below, and each rank's loss is defined so that the mean of the W ranks' losses is
   the loss of the global batch.
3. Average the gradients over the ranks, as DistributedDataParallel does (or average_gradients).
   The gradients are then those of one process on the whole batch (tests/test_distributed_losses.py
   checks every method).
   A rank's LossTerms are its share: report their mean over the ranks.

The backward of gather_with_grad and all_reduce_with_grad sums over the ranks, so each rank's
gradient is that of the sum of all ranks' losses, and DDP's mean over ranks gives the gradient of
their mean. Without torch.distributed initialized, world_size() is 1 and every function here
returns its input as it is: one-process training is unchanged and pays nothing.

Why not PyTorch's own: torch.distributed.all_reduce is invisible to autograd (Barlow Twins'
cross-correlation all-reduced with it gets gradients 1/W too small); the differentiable
collectives of torch.distributed.nn have shipped wrong gradients (pytorch#120386) and are
deprecated in torch 2.14 for a private module; nn.SyncBatchNorm refuses CPU tensors (torch 2.14),
so the path tested here with gloo would not be the one run on GPUs.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """The number of data-parallel processes: 1 when torch.distributed is not initialized."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank: 0 when torch.distributed is not initialized."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's copy of this rank's rows had a gradient: sum them, keep this rank's rows.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad.chunk(world_size())[rank()]


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        total = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss saw the sum, so each rank's term has the sum of their gradients.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` concatenated along dim 0 in rank order (rank r's rows start at
    r * len(t)); gradients reach every rank's rows. All ranks' `t` have one shape."""
    return t if world_size() == 1 else _GatherWithGrad.apply(t)


def all_reduce_with_grad(t: torch.Tensor) -> torch.Tensor:
    """The sum of every rank's `t`, with gradients to every rank's `t`."""
    return t if world_size() == 1 else _AllReduceWithGrad.apply(t)


def mean_over_global_batch(t: torch.Tensor) -> torch.Tensor:
    """The mean over dim 0 of the global batch of which `t` is this rank's share."""
    return all_reduce_with_grad(t.sum(dim=0)) / (len(t) * world_size())


def from_rank_zero(t: torch.Tensor) -> torch.Tensor:
    """`t` overwritten with rank 0's: random draws (a prior's samples, projection directions) that
    must be the same on every rank for the ranks' losses to add up to one loss."""
    if world_size() > 1:
        dist.broadcast(t, src=0)
    return t


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any input of shape (N, C, ...)) whose training statistics are the global
    batch's, with gradients through them to every rank: each rank's mean and sum of squared
    deviations are gathered and merged (Chan et al.'s pairwise update, stable where
    E[x^2] - E[x]^2 is not). Running statistics, eval mode and parameters as nn.BatchNorm*."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of shape (N, C, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.running_mean is not None:
            return super().forward(x)
        self._check_input_dim(x)
        input_dtype = x.dtype
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        local_count = x.numel() // x.shape[1]
        # Statistics in float32 at least, as cuDNN's BatchNorm keeps them under bf16 autocast.
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        local_mean = x.mean(dims)
        local_m2 = (x - local_mean.view(shape)).square().sum(dims)
        stats = gather_with_grad(torch.stack([local_mean, local_m2]))
        means, m2s = stats[0::2], stats[1::2]
        mean = means.mean(dim=0)
        count = local_count * len(means)
        var = (m2s.sum(dim=0) + local_count * (means - mean).square().sum(dim=0)) / count
        if self.track_running_stats:
            self.update_running_stats(mean.detach(), var.detach() * count / max(count - 1, 1))
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input_dtype)

    @torch.no_grad()
    def update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased_var, momentum)

    @classmethod
    def replacing(cls, bn: nn.modules.batchnorm._BatchNorm) -> "GlobalBatchNorm":
        """A GlobalBatchNorm with `bn`'s settings that shares its parameters and buffers (so an
        optimizer or EMA built on them still holds them)."""
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
        new.train(bn.training)
        return new


def synchronize_batch_norm(module: nn.Module) -> nn.Module:
    """Replace, in place, every BatchNorm layer of `module` (backbone, projector, predictor, EMA
    target) by a GlobalBatchNorm sharing its parameters, when running data-parallel; returns
    `module`. One process: nothing changes."""
    if world_size() == 1:
        return module
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            setattr(module, name, GlobalBatchNorm.replacing(child))
        else:
            synchronize_batch_norm(child)
    return module


@torch.no_grad()
def average_gradients(params: list[nn.Parameter]) -> None:
    """Each parameter's gradient replaced by its mean over the ranks, as DistributedDataParallel
    averages them, in one all-reduce after backward (DDP's hooks fire for forward(), and a method's
    training_step is more than one forward). A parameter that no rank has a gradient for keeps
    none, so the optimizer skips it as it would on one process."""
    if world_size() == 1:
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad.flatten() if p.grad is not None else p.new_zeros(p.numel()) for p in params]
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([*grads, has_grad])
    dist.all_reduce(flat)
    averaged = flat[: -len(params)].div_(world_size()).split([p.numel() for p in params])
    for p, grad, anyone in zip(params, averaged, flat[-len(params):].tolist()):
        p.grad = grad.view_as(p).to(p.dtype) if anyone else None


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `t` concatenated in rank order, without gradients; ranks may hold
    different numbers of rows (e.g. their parts of a held-out split)."""
    if world_size() == 1:
        return t
    counts = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([len(t)], device=t.device))
    counts = [int(c) for c in counts]
    padded = t.new_zeros((max(counts), *t.shape[1:]))
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])
