"""The GPU check (benchmarks/gpu_check.sh runs it and keeps its output): on one GPU, at most 8 minutes.

(1) a dualsweep trial step (Trial.train_step) against a bare PyTorch loop doing the same work
    (same ResNet-18 and projector, batched augmentations, SimCLR loss, SGD; bf16 autocast and
    channels_last on CUDA as a trial uses them). Target: ratio >= 0.95.
(2) ResNet-18 (CIFAR stem) SimCLR samples/s at batch 512 on CIFAR-size images (random pixels in
    CIFAR-10's files), and the model FLOP utilisation: samples/s x 6 x one view's forward FLOPs
    (forward + backward 3x, two views 2x) / the device's dense bf16 peak.
(3) images/s of the image-folder input path at ImageNet size: generated 224x224 JPEGs, read by
    threads, decoded on the device, resized in batch (224, nothing to resize), then with the two
    SimCLR views of the batched augmentations.

Without a GPU it runs a CPU fallback with smaller sizes and says so: its figures check that the
script works, not the GPU figures.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from input_pipeline import write_jpeg_folder
from orchestrator.spec.cost import GPU_PEAK_FLOPS, TRAIN_FLOPS_PER_FORWARD
from trainables.augment import Augmenter, recipe
from trainables.data.disk import IMAGENET_MEAN, IMAGENET_STD
from trainables.data.image_pipeline import FolderImages
from trainables.models import forward_flops
from trial_throughput import synchronize, trial_step_vs_bare, write_random_cifar

PROJECTOR = "2048-128"
# Dense bf16 peaks by device name (H100 / H200 as the cost estimates take them).
PEAKS = {"H100": GPU_PEAK_FLOPS, "H200": GPU_PEAK_FLOPS, "A100": 312e12}


def input_path(folder: Path, size: int, batch_size: int, workers: int, device: torch.device) -> tuple[float, float]:
    """images/s of the decoded batches alone, and with the two SimCLR views made of each."""
    images = FolderImages(folder, size, workers).to(device)
    augmenter = Augmenter(recipe("imagefolder", "simclr"), size, IMAGENET_MEAN, IMAGENET_STD, device)
    gen = torch.Generator(device).manual_seed(0)

    def rate(with_views: bool) -> float:
        synchronize(device)
        start, seen = time.perf_counter(), 0
        for batch, _ in images.batches(batch_size):
            if with_views:
                augmenter.views(batch, gen)
            seen += len(batch)
        synchronize(device)
        return seen / (time.perf_counter() - start)

    rate(False)  # warm-up: page cache, decoder set-up
    return rate(False), rate(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="reading threads of the input path")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    if gpu:
        name = torch.cuda.get_device_name(0)
        batch, steps, rounds, jpegs, input_batch = 512, 20, 3, 4096, 256
        print(f"GPU check on {name}; torch {torch.__version__}")
    else:
        name = "CPU fallback"
        batch, steps, rounds, jpegs, input_batch = 16, 1, 3, 256, 64
        args.workers = min(args.workers, 2)
        print(f"CPU fallback (no GPU here): smaller sizes (batch {batch}, {jpegs} JPEGs); torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads. These figures check the script, not a GPU.")

    with tempfile.TemporaryDirectory() as tmp:
        write_random_cifar(Path(tmp), n_per_batch=batch)
        ours, bare, device = trial_step_vs_bare(Path(tmp), batch, steps, rounds, "resnet18", 512, PROJECTOR)
    print(f"(1) trial step {ours:8.1f} samples/s | bare PyTorch loop {bare:8.1f} samples/s | ratio {ours / bare:.3f} "
          f"(target >= 0.95; {'bf16, channels_last' if gpu else 'fp32, CPU'})")

    flops = ours * TRAIN_FLOPS_PER_FORWARD * forward_flops("resnet18", (3, 32, 32), 512, PROJECTOR)
    peak = next((value for key, value in PEAKS.items() if key in name), None)
    utilisation = f"model FLOP utilisation {flops / peak:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else \
        "model FLOP utilisation: no peak known for this device"
    print(f"(2) ResNet-18 CIFAR SimCLR, batch {batch}: {ours:8.1f} samples/s, {flops / 1e12:.3f} TFLOP/s; {utilisation}")

    with tempfile.TemporaryDirectory() as tmp:
        write_jpeg_folder(Path(tmp), jpegs, (224, 224))
        decoded, with_views = input_path(Path(tmp), 224, input_batch, args.workers, device)
    print(f"(3) input path, 224x224 JPEGs, batch {input_batch}, {args.workers} reading threads, on {device.type}: "
          f"{decoded:8.0f} images/s decoded | {with_views:8.0f} images/s with two SimCLR views")
    return 0


if __name__ == "__main__":
    sys.exit(main())
