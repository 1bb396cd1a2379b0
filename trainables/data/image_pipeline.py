"""Image folders decoded in batches on the trial's device, and the clock of the input.

A batch of an image folder is read (raw bytes, by background threads), decoded by TorchCodec in one
call (nvJPEG on CUDA, libjpeg-turbo on the CPU), centre-cropped and resized to a fixed side in
batch, and handed on as uint8 (B, 3, S, S) on the device where the batched augmentations
(trainables.augment) make its views. The same code runs on CPU and GPU; only the hand-over
between the reading thread's CUDA stream and the training step's differs.

InputMonitor times how long the training loop waits for each batch: a trial streaming from disk
reports `data_wait_fraction` and `images_per_s_per_device` and warns once when the device starves."""
from __future__ import annotations

import copy
import itertools
import logging
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import torch
import torch.nn.functional as F

from trainables.errors import ConfigError

log = logging.getLogger(__name__)

# What TorchCodec decodes (an image folder's other files are not listed).
DECODABLE = (".jpg", ".jpeg", ".png", ".webp")
JPEG_MAGIC = b"\xff\xd8\xff"
# Above this share of the step time spent waiting for input, the device is starved.
STARVED_ABOVE = 0.3

Item = TypeVar("Item")
Result = TypeVar("Result")


class FolderImages:
    """An image folder (root/<class>/<image>), read and decoded batch by batch on `device`."""

    def __init__(self, folder: Path, image_size: int, workers: int, device: str | torch.device = "cpu"):
        # Imported here: torchvision adds ~1.5 s to a trial's start, and only image folders need it.
        from torchvision.datasets import DatasetFolder

        # The folder's listing (classes, (path, label) samples, in torchvision's order); its loader
        # reads the raw bytes, but batches are read and decoded here.
        self.dataset = DatasetFolder(str(folder), loader=read_bytes, extensions=DECODABLE)
        self.labels = torch.tensor(self.dataset.targets)
        self.image_size, self.workers, self.device = image_size, workers, torch.device(device)

    def __len__(self) -> int:
        return len(self.dataset)

    def to(self, device) -> "FolderImages":
        moved = copy.copy(self)
        moved.device = torch.device(device)
        return moved

    def batches(self, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False) -> Iterator:
        """(uint8 images (B, 3, S, S) on the device, labels), `loader_workers` batches read ahead."""
        order = torch.arange(len(self)) if order is None else order
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        chunks = [order[start : start + batch_size] for start in range(0, stop, batch_size)]
        for images, labels, ready in read_ahead(chunks, self.load_batch, self.workers):
            yield handed_over(images, ready), labels

    def load_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event | None]:
        """One batch, decoded and resized; on CUDA on a stream of its own, with the event that marks it done."""
        paths = [self.dataset.samples[i][0] for i in indices.tolist()]
        encoded = [read_bytes(path) for path in paths]
        images, ready = on_own_stream(self.device, lambda: centre_square(decode(encoded, paths, self.device),
                                                                         self.image_size))
        return images, self.labels[indices], ready


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def decode(encoded: list[bytes], paths: list[str], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 (3, H, W) images on `device`: the JPEGs in one call (one nvJPEG batch on CUDA), the
    rest (PNG, WebP) one by one on the CPU. A file that does not decode is a ConfigError naming it."""
    from torchcodec.decoders import decode_image, decode_jpeg

    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded]
    jpeg = [i for i, data in enumerate(encoded) if data.startswith(JPEG_MAGIC)]
    other = [i for i, data in enumerate(encoded) if not data.startswith(JPEG_MAGIC)]
    images: list[torch.Tensor] = [torch.empty(0)] * len(encoded)
    try:
        if jpeg:
            for i, image in zip(jpeg, decode_jpeg([tensors[i] for i in jpeg], mode="RGB", device=device)):
                images[i] = image
        for i in other:
            image = decode_image(tensors[i], mode="RGB")
            # An animated WebP decodes to (N, C, H, W): its first frame.
            images[i] = (image if image.ndim == 3 else image[0]).to(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"data.root: {undecodable(tensors, paths)} is not a decodable image "
                          "(JPEG, PNG or WebP)") from None
    return images


def undecodable(tensors: list[torch.Tensor], paths: list[str]) -> str:
    """The first of a batch's files that fails to decode alone (the batch's first if each decodes)."""
    from torchcodec.decoders import decode_image

    for tensor, path in zip(tensors, paths):
        try:
            decode_image(tensor)
        except (RuntimeError, ValueError):
            return path
    return paths[0]


def centre_square(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """Each image's centred square resized to size x size (bilinear, antialiased: torchvision's
    Resize(size) + CenterCrop(size) up to rounding), as one uint8 batch. Images of one shape are
    cropped and resized together, in one call."""
    device = images[0].device
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=device)
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        by_shape[tuple(image.shape[1:])].append(i)
    for (height, width), indices in by_shape.items():
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = torch.stack([images[i][:, top : top + side, left : left + side] for i in indices])
        if side != size:
            # The CPU resizes uint8 directly (~4x faster than in float); CUDA has no uint8 kernel.
            resized = F.interpolate(square if device.type == "cpu" else square.float(), size=(size, size),
                                    mode="bilinear", antialias=True, align_corners=False)
            square = resized if resized.dtype == torch.uint8 else resized.round_().clamp_(0, 255)
        out[indices] = square.to(torch.uint8)
    return out


def on_own_stream(device: torch.device, make: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """make() on a CUDA stream of its own, so that a reading thread's decoding overlaps the training
    step, with the event that marks its end; on the CPU simply make() (no event)."""
    if device.type != "cuda":
        return make(), None
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        result = make()
    return result, stream.record_event()


def handed_over(images: torch.Tensor, ready: torch.cuda.Event | None) -> torch.Tensor:
    """The batch, safe to use on the current stream: it waits for the decoding stream's event, and
    the caching allocator keeps the memory until the current stream is done with it."""
    if ready is not None:
        current = torch.cuda.current_stream(images.device)
        current.wait_event(ready)
        images.record_stream(current)
    return images


def read_ahead(items: Iterable[Item], load: Callable[[Item], Result], workers: int) -> Iterator[Result]:
    """load(item) for every item, in order, computed by `workers` background threads up to
    2 x workers items ahead; workers=0: in the calling thread, one at a time."""
    if workers == 0:
        yield from map(load, items)
        return
    items = iter(items)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dualsweep-input")
    try:
        pending = deque(pool.submit(load, item) for item in itertools.islice(items, 2 * workers))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(load, item) for item in itertools.islice(items, 1))
            yield result
    finally:
        # An epoch left early (an error, a stop) does not wait for the batches read ahead.
        pool.shutdown(wait=True, cancel_futures=True)


class InputMonitor:
    """The input's clock over a trial: how long the training loop waits for each batch and how many
    images it gets. `reports` (a trial streaming its training split from disk): each epoch's
    metrics hold `data_wait_fraction` (waiting / the epoch's training time) and
    `images_per_s_per_device` (this process's images), and the first starved epoch logs a warning."""

    def __init__(self, reports: bool):
        self.reports = reports
        self.warned = False
        self.waited = 0.0
        self.images = 0

    def watch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch, timed. (On CUDA the host waits for a batch while the device
        still runs the steps queued before: a wait the device does not see until that queue drains.)"""
        self.waited, self.images = 0.0, 0
        batches = iter(batches)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            self.waited += time.perf_counter() - start
            if batch is None:
                return
            self.images += len(batch[0])
            yield batch

    def epoch_metrics(self, elapsed: float) -> dict[str, float]:
        """The epoch's input metrics (none unless `reports`), `elapsed` seconds of training."""
        if not self.reports:
            return {}
        fraction = self.waited / elapsed
        images_per_s = self.images / elapsed
        if fraction > STARVED_ABOVE and not self.warned:
            self.warned = True
            log.warning("the input starves the device: %.0f%% of the epoch's training time went to waiting for "
                        "data (%.0f images/s); raise data.loader_workers or lower data.image_size "
                        "(warned once per trial)", 100 * fraction, images_per_s)
        return {"data_wait_fraction": fraction, "images_per_s_per_device": images_per_s}
