"""Where a trial's numbers come from, as a dict of strings that every epoch's report carries under
PROVENANCE_KEY: the code (dualsweep's version, the git commit of the source tree and whether it had
uncommitted changes, the versions of torch, ray, optuna, mlflow), the device, and a fingerprint of
the data (dataset, split seed and a short sha256 of what was read or generated). Under Ray Tune the
entry point adds the id of the Ray node that ran the epoch (RAY_NODE_KEY)."""
from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig

from trainables.data import DataBundle, FolderImages, TensorSamples

PROVENANCE_KEY = "provenance"
RAY_NODE_KEY = "ray_node_id"
# Looked up in the installed distributions' metadata, never imported: ray, optuna and mlflow are no
# dependency of a trial.
PACKAGES = ("torch", "ray", "optuna", "mlflow")
UNKNOWN = "unknown"


@functools.cache
def code_provenance() -> dict[str, str]:
    """The code this process runs; computed once per process (git takes a few milliseconds)."""
    commit, dirty = git_state(Path(__file__).resolve().parent)
    return {"dualsweep_version": package_version("dualsweep"), "git_commit": commit, "git_dirty": dirty,
            **{f"{name}_version": package_version(name) for name in PACKAGES}}


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_state(package_dir: Path) -> tuple[str, str]:
    """(HEAD commit, "true"/"false" for uncommitted changes) of the git checkout that holds this
    package as <top>/trainables; ("unknown", "unknown") for an installed copy (which may sit in some
    other repository, e.g. a virtual environment inside one) or where git is missing."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout

    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() != package_dir.parent:
            return UNKNOWN, UNKNOWN
        dirty = bool(git("status", "--porcelain").strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return UNKNOWN, UNKNOWN
    return commit, str(dirty).lower()


def device_provenance(device: torch.device) -> dict[str, str]:
    """The device a trial runs on: its name (GPU model, or CPU model from /proc/cpuinfo) and the
    number of CUDA devices visible."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_model()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"device": str(device), "device_name": name, "cuda_devices": str(count)}


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return UNKNOWN
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), UNKNOWN)


def data_fingerprint(bundle: DataBundle) -> str:
    """A short sha256 over every split as read or generated: the tensors (shape, dtype, bytes) of
    in-memory samples and labels, and the sorted file list with sizes of an image folder."""
    digest = hashlib.sha256()
    for split in bundle.splits():
        if isinstance(split, TensorSamples):
            for tensor in (split.samples, split.labels):
                tensor = tensor.detach().cpu().contiguous()
                digest.update(f"{tuple(tensor.shape)} {tensor.dtype}\n".encode())
                digest.update(tensor.view(torch.uint8).numpy())
        elif isinstance(split, FolderImages):
            root = Path(split.dataset.root)
            for path in sorted(path for path, _ in split.dataset.samples):
                digest.update(f"{Path(path).relative_to(root)} {Path(path).stat().st_size}\n".encode())
        else:
            raise TypeError(f"no fingerprint for samples of type {type(split).__name__}")
    return digest.hexdigest()[:16]


def trial_provenance(cfg: DictConfig, data_bundle: DataBundle, device: torch.device) -> dict[str, str]:
    """The provenance of a trial with config `cfg` (its `data` section names the dataset), the data
    it loaded (before it moved to the device) and its device."""
    return {**code_provenance(), **device_provenance(device), "data_name": cfg.data.name,
            "data_split_seed": str(cfg.data.split_seed), "data_sha256": data_fingerprint(data_bundle)}
