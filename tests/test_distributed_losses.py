"""Data-parallel losses are exact (trainables.distributed): for every registered method, one
training step with the global batch split over 2 processes (torch.distributed, gloo, CPU, float64)
gives, averaged over the ranks as DistributedDataParallel averages them, the loss and gradients of
1 process on the whole batch, and the same BatchNorm running statistics and DirectPred predictor.
With the collectives replaced by the usual plain ones (no gradient to the other ranks' rows) the
loss stays the same but the gradients do not: the comparison can fail.

Both ranks run every case in one start (starting a process is the expensive part): this file runs
itself as the worker, `python tests/test_distributed_losses.py RANK DIR`."""
from __future__ import annotations

import copy
import datetime
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from trainables import distributed
from trainables.methods import METHODS, AsymmetricMethod, Method
from trainables.models import build_backbone

WORLD = 2
GLOBAL_BATCH = 8
INPUT_SHAPE = (1, 4, 4)
WIDTH = 16
STEP_SEED = 5
# backbone, projector, and the predictor in place of an MLP one.
MODELS = {
    # BatchNorm in backbone, projector, predictor and EMA target: synchronized.
    "batch_norm": ("mlp", "16-8", "mlp"),
    # No BatchNorm anywhere: the losses' own collectives alone.
    "no_batch_norm": ("linear", "8", "linear"),
}
# Every registered method with its defaults, plus the settings whose batch statistics take other
# code paths (SimCLR's normalizations, the generalized loss's sampled priors).
CASES = {
    **{name: (name, {"d0": 8} if name == "directclr" else {}) for name in sorted(METHODS.names())},
    "simclr/centering": ("simclr", {"normalization": "centering"}),
    "simclr/dimension_standardization": ("simclr", {"normalization": "dimension_standardization"}),
    "generalized/uniform_cube": ("generalized", {"prior": "uniform_cube"}),
    "generalized/gaussian": ("generalized", {"prior": "gaussian"}),
}
COLLECTIVES = ("with_grad", "plain")


def build(model: str, case: str) -> Method:
    """The same initial method on every rank (same seed), its BatchNorm synchronized when 2 ranks run."""
    backbone_name, projector, predictor = MODELS[model]
    name, kwargs = CASES[case]
    cls = METHODS.get(name)
    if issubclass(cls, AsymmetricMethod) and cls.parse_kwargs(kwargs).predictor == "mlp":
        kwargs = {**kwargs, "predictor": predictor}
    torch.manual_seed(0)
    backbone, repr_dim = build_backbone(backbone_name, INPUT_SHAPE, WIDTH)
    method = cls(backbone, repr_dim, projector, cls.parse_kwargs(kwargs)).double()
    return distributed.synchronize_batch_norm(method)


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(GLOBAL_BATCH, *INPUT_SHAPE, generator=g, dtype=torch.float64)
    return x1, x1 + 0.3 * torch.randn(x1.shape, generator=g, dtype=torch.float64)


def one_step(method: Method, x1: torch.Tensor, x2: torch.Tensor, seed: int) -> dict:
    """The loss terms, the parameters' gradients and the state (running statistics, DirectPred's
    correlation and weight) after one training step."""
    # The step's random draws (the generalized loss's prior samples and directions).
    torch.manual_seed(seed)
    loss, _ = method.training_step(x1, x2)
    loss.total.backward()
    return dict(
        loss={"total": loss.total.detach(), **{k: v.detach() for k, v in loss.terms.items()}},
        grads={n: p.grad for n, p in method.named_parameters() if p.grad is not None},
        state={k: v.clone() for k, v in method.state_dict().items()},
    )


# --- the worker -----------------------------------------------------------------------------------
def gather_without_grad(t: torch.Tensor) -> torch.Tensor:
    """The common bug: the other ranks' rows gathered as constants, only this rank's rows carry
    gradients."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    parts[dist.get_rank()] = t
    return torch.cat(parts)


def all_reduce_without_grad(t: torch.Tensor) -> torch.Tensor:
    """torch.distributed.all_reduce on the tensor in place: autograd sees the identity."""
    total = t.detach().clone()
    dist.all_reduce(total)
    return t + (total - t.detach())


def collectives_backward(rank: int) -> dict:
    """Each rank's loss weights the collective's output by its own weights w_r: the gradient of
    this rank's input is the sum over ranks of their weights on it."""
    t = (torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * rank).requires_grad_()
    w = (rank + 1) * torch.arange(12, dtype=torch.float64).view(6, 2)
    gathered = distributed.gather_with_grad(t)
    (w * gathered).sum().backward()
    gather_grad, t.grad = t.grad, None
    reduced = distributed.all_reduce_with_grad(t)
    (w[:3] * reduced).sum().backward()
    return dict(gathered=gathered.detach(), gather_grad=gather_grad, reduced=reduced.detach(), reduce_grad=t.grad)


def worker(rank: int, folder: Path) -> None:
    # A short timeout: a rank whose peer died fails instead of waiting in a collective.
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    results = {"collectives_backward": collectives_backward(rank)}
    x1, x2 = (x.chunk(WORLD)[rank] for x in global_batch())
    for collectives in COLLECTIVES:
        if collectives == "plain":
            distributed.gather_with_grad = gather_without_grad
            distributed.all_reduce_with_grad = all_reduce_without_grad
        for model in MODELS:
            for case in CASES:
                # A different seed on each rank: rank 0's random draws must be the ones used.
                results[f"{collectives}/{model}/{case}"] = one_step(build(model, case), x1, x2, STEP_SEED + rank)
    torch.save(results, folder / f"rank{rank}.pt")
    dist.destroy_process_group()


# --- the tests ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, list[dict]]:
    """(one process on the whole batch, [each rank's results])."""
    folder = tmp_path_factory.mktemp("ranks")
    ranks = [subprocess.Popen([sys.executable, __file__, str(rank), str(folder)]) for rank in range(WORLD)]
    try:
        x1, x2 = global_batch()
        one = {f"{model}/{case}": one_step(build(model, case), x1, x2, STEP_SEED) for model in MODELS for case in CASES}
        assert [p.wait(timeout=300) for p in ranks] == [0] * WORLD
    finally:
        for p in ranks:
            p.kill()
    return one, [torch.load(folder / f"rank{rank}.pt") for rank in range(WORLD)]


def mean_over_ranks(results: list[dict]) -> dict:
    """What DDP's gradient averaging sees: each quantity's mean over the ranks."""
    return {k: sum(r[k] for r in results) / len(results) for k in results[0]}


def assert_equal(got, want) -> None:
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-10)


def test_one_process_needs_no_torch_distributed():
    t = torch.ones(3, 2)
    assert (distributed.world_size(), distributed.rank()) == (1, 0)
    assert distributed.gather_with_grad(t) is t and distributed.all_reduce_with_grad(t) is t
    method = build("batch_norm", "vicreg")
    assert not any(isinstance(m, distributed.GlobalBatchNorm) for m in method.modules())


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 2, 2)])
def test_global_batch_norm_is_batch_norm_on_one_process(shape, momentum):
    """Its arithmetic (Chan's merge of the ranks' statistics, here of one rank) against
    nn.BatchNorm's: outputs, gradients, running statistics, eval mode; BatchNorm2d too."""
    torch.manual_seed(0)
    reference = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(shape[1], momentum=momentum).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2)
        reference.bias.uniform_(-1, 1)
    ours = distributed.GlobalBatchNorm.replacing(copy.deepcopy(reference))
    for step in range(2):
        x = (3 * torch.randn(shape, dtype=torch.float64) + step).requires_grad_()
        w = torch.randn(shape, dtype=torch.float64)
        got, want = ours(x), reference(x)
        assert_equal(got, want)
        assert_equal(torch.autograd.grad((w * got).sum(), [x, ours.weight, ours.bias]),
                     torch.autograd.grad((w * want).sum(), [x, reference.weight, reference.bias]))
    assert_equal(ours.state_dict(), reference.state_dict())
    ours.eval(), reference.eval()
    assert_equal(ours(x), reference(x))


def test_global_batch_norm_shares_what_it_replaces_and_keeps_float32_statistics():
    bn = torch.nn.BatchNorm1d(3)
    ours = distributed.GlobalBatchNorm.replacing(bn)
    assert ours.weight is bn.weight and ours.bias is bn.bias and ours.running_mean is bn.running_mean
    x = torch.randn(8, 3).to(torch.bfloat16)
    assert ours(x).dtype == torch.bfloat16
    torch.testing.assert_close(bn.running_mean, 0.1 * x.float().mean(dim=0), rtol=1e-6, atol=0)


def test_collectives_sum_the_ranks_gradients(runs):
    _, ranks = runs
    w = torch.arange(12, dtype=torch.float64).view(6, 2)
    inputs = [torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * rank for rank in range(WORLD)]
    for rank, result in enumerate(ranks):
        got = result["collectives_backward"]
        assert_equal(got["gathered"], torch.cat(inputs))
        # Both ranks' weights (1 w and 2 w) on this rank's rows.
        assert_equal(got["gather_grad"], 3 * w[3 * rank: 3 * rank + 3])
        assert_equal(got["reduced"], sum(inputs))
        assert_equal(got["reduce_grad"], 3 * w[:3])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model", MODELS)
def test_two_ranks_give_the_loss_and_gradients_of_one_process(runs, model, case):
    one, ranks = runs
    want = one[f"{model}/{case}"]
    got = [r[f"with_grad/{model}/{case}"] for r in ranks]
    assert_equal(mean_over_ranks([g["loss"] for g in got]), want["loss"])
    assert want["grads"]
    assert_equal(mean_over_ranks([g["grads"] for g in got]), want["grads"])
    for g in got:
        assert_equal(g["state"], want["state"])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model", MODELS)
def test_plain_collectives_keep_the_loss_but_break_the_gradients(runs, model, case):
    one, ranks = runs
    want = one[f"{model}/{case}"]
    got = [r[f"plain/{model}/{case}"] for r in ranks]
    assert_equal(mean_over_ranks([g["loss"] for g in got]), want["loss"])
    grads = mean_over_ranks([g["grads"] for g in got])
    # Asymmetric losses are per-sample means: without BatchNorm they need no collective.
    needs_collectives = model == "batch_norm" or METHODS.get(CASES[case][0]).family != "asymmetric"
    if needs_collectives:
        error = max(((grads[k] - want["grads"][k]).norm() / want["grads"][k].norm()).item() for k in grads)
        assert error > 1e-3
    else:
        assert_equal(grads, want["grads"])


if __name__ == "__main__":
    worker(int(sys.argv[1]), Path(sys.argv[2]))
