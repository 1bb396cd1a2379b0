"""Where a trial runs: device, bf16 autocast, channels_last and CPU threads."""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch

from trainables.errors import ConfigError

CONV_BACKBONES = ("convnet", "resnet18")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    bf16: bool
    channels_last: bool

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def resolve_placement(device: str, precision: str, backbone: str) -> Placement:
    """auto: CUDA when torch sees one, else CPU. bf16 autocast and channels_last are the CUDA
    defaults (precision=auto); on CPU bf16 only when asked for."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device: unknown value {device!r}; allowed: auto, cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device} requested but torch sees no CUDA device; use device=auto or cpu")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device} requested but only {torch.cuda.device_count()} CUDA device(s) visible")
    dev = torch.device(device)
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    return Placement(dev, bf16, channels_last=dev.type == "cuda" and backbone in CONV_BACKBONES)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(cpus: int) -> int:
    """Torch intra-op threads = the CPUs the trial was given (0: all this process may use)."""
    threads = cpus or available_cpus()
    torch.set_num_threads(threads)
    return threads
