"""Image-folder input, measured side by side in one run on this machine: images/s of the batched
path (trainables/data/image_pipeline.py: files read by threads, JPEGs decoded by TorchCodec in
batches, centre-cropped and resized in batch) against the per-sample path it replaced (PIL decoding
and torchvision's Resize + CenterCrop in DataLoader worker processes). Both deliver the same
uint8 (B, 3, S, S) batches, with the same number of workers.

Rounds alternate between the two so that machine noise hits both alike; each figure is the median
over rounds. The folder is generated: JPEGs of ImageNet's typical 500x375 (and 375x500).

    .venv/bin/python benchmarks/input_pipeline.py [--images 512 --size 224 --workers 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainables.data.image_pipeline import FolderImages


def write_jpeg_folder(root: Path, images: int, shape: tuple[int, int], classes: int = 4, seed: int = 0) -> Path:
    """root/<class>/<i>.jpg: smooth colour fields with noise (JPEGs of a photograph's size and
    density, quality 90); every other image turned on its side when `shape` is not square."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = shape if i % 2 == 0 else shape[::-1]
        coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", format="JPEG", quality=90)
    return root


def images_per_s(batches, count: int) -> float:
    start = time.perf_counter()
    seen = sum(len(images) for images, _ in batches())
    assert seen == count, (seen, count)
    return seen / (time.perf_counter() - start)


def per_sample_loader(folder: Path, size: int, batch_size: int, workers: int):
    """The path image folders took before: PIL per sample in DataLoader worker processes."""
    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    transform = T.Compose([T.PILToTensor(), T.Resize(size, antialias=True), T.CenterCrop(size)])
    dataset = ImageFolder(str(folder), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=224, help="side of the decoded, resized images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="reading threads / DataLoader worker processes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} JPEGs of 500x375, "
          f"decoded to {args.size}x{args.size}, batch {args.batch_size}, {args.workers} workers, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_jpeg_folder(Path(tmp), args.images, (375, 500))
        batched = FolderImages(folder, args.size, args.workers)
        loader = per_sample_loader(folder, args.size, args.batch_size, args.workers)
        contenders = {"batched": lambda: batched.batches(args.batch_size), "per-sample": lambda: iter(loader)}
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for name, batches in contenders.items():
            images_per_s(batches, args.images)  # warm-up: page cache, worker processes
        for _ in range(args.rounds):
            for name, batches in contenders.items():
                rates[name].append(images_per_s(batches, args.images))
    ours, theirs = (statistics.median(rates[name]) for name in contenders)
    print(f"batched (TorchCodec, {args.workers} threads) {ours:7.0f} images/s | per-sample (PIL, DataLoader, "
          f"{args.workers} processes) {theirs:7.0f} images/s | ratio {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
