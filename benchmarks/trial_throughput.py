"""Trial throughput, measured side by side in one run (CPU, this machine's threads).

(a) samples/s of a dualsweep trial step (Trial.train_step: augmentation, method, online probe,
    scheduler, EMA hook) against a bare PyTorch loop with the same model, batch and batched
    augmentations. Target: ratio >= 0.95.
(b) the batched tensor augmentation (two SimCLR views of a batch) against torchvision v2
    per-sample transforms in a DataLoader with 2 workers, 32x32 RGB images. Target: >= 3x.

Rounds alternate between the contenders so that machine noise hits both alike; each figure is
the median over rounds.
"""
from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainables.augment import Augmenter, recipe
from trainables.losses import nt_xent_loss
from trainables.models import build_backbone, build_projector
from trainables.train import Trial


def write_random_cifar(root: Path, n_per_batch: int) -> None:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_per_batch if name != "test_batch" else 64
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist()}, f)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, steps: int, device: torch.device = torch.device("cpu")) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start


def trial_step_vs_bare(root: Path, batch_size: int, steps: int, rounds: int, backbone: str = "convnet",
                       width: int = 128, projector: str = "512-128") -> tuple[float, float, torch.device]:
    """Median samples/s of the trial step and of a bare loop doing the same work (same model,
    batched augmentations, SimCLR loss, SGD; on CUDA the trial's bf16 autocast and channels_last),
    alternating rounds, on the device a trial picks."""
    trial = Trial({"method": "simclr", "data": {"name": "cifar10", "root": str(root)}, "batch_size": batch_size,
                   "model": {"backbone": backbone, "width": width, "projector": projector}, "epochs": 100,
                   "optim": {"warmup_epochs": 0}})
    place = trial.place
    images, labels = next(trial.data.train.batches(batch_size))
    images, labels = trial.to_device(images), labels.to(place.device)
    gen = torch.Generator(place.device).manual_seed(0)

    torch.manual_seed(0)
    net, dim = build_backbone(backbone, (3, 32, 32), width)
    head, _ = build_projector(projector, dim)
    model = torch.nn.Sequential(net, head).to(place.device)
    if place.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    augmenter = trial.data.view_maker

    def bare_step():
        x1, x2 = augmenter.views(images, gen)
        with place.autocast():
            loss = nt_xent_loss(model(x1), model(x2), 0.1).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def trial_step():
        trial.train_step(images, labels, gen)

    for _ in range(2):  # warm-up: kernels chosen, memory cached
        trial_step(), bare_step()
    ours, bare = [], []
    for _ in range(rounds):
        ours.append(steps * batch_size / timed(trial_step, steps, place.device))
        bare.append(steps * batch_size / timed(bare_step, steps, place.device))
    return statistics.median(ours), statistics.median(bare), place.device


def batched_vs_torchvision(n_images: int, batch_size: int, rounds: int) -> tuple[float, float]:
    import torchvision.transforms.v2 as T

    data = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8)
    augmenter = Augmenter(recipe("cifar10", "simclr"), 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), "cpu")
    gen = torch.Generator().manual_seed(0)

    def batched():
        for start in range(0, n_images, batch_size):
            augmenter.views(data[start : start + batch_size], gen)

    view = T.Compose([
        T.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
    ])

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self):
            return n_images

        def __getitem__(self, i):
            return view(data[i]), view(data[i])

    loader = torch.utils.data.DataLoader(TwoViews(), batch_size=batch_size, num_workers=2, persistent_workers=True)

    def per_sample():
        for _ in loader:
            pass

    per_sample()  # warm-up: workers start
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(n_images / timed(batched, 1))
        theirs.append(n_images / timed(per_sample, 1))
    return statistics.median(ours), statistics.median(theirs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--aug-images", type=int, default=4096)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        write_random_cifar(Path(tmp), n_per_batch=args.batch_size)
        ours, bare, _ = trial_step_vs_bare(Path(tmp), args.batch_size, args.steps, args.rounds)
    ratio_a = ours / bare
    print(f"(a) trial step {ours:8.1f} samples/s | bare loop {bare:8.1f} samples/s | ratio {ratio_a:.3f} (target >= 0.95)")
    batched, per_sample = batched_vs_torchvision(args.aug_images, args.batch_size, args.rounds)
    ratio_b = batched / per_sample
    print(f"(b) batched augmentation {batched:8.0f} images/s | torchvision v2 DataLoader(2 workers) "
          f"{per_sample:8.0f} images/s | speed-up {ratio_b:.2f}x (target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
