"""One SSL trial, Ray-free: `train(config, report)` builds everything from a plain dict, trains,
evaluates every epoch and hands each epoch's metrics (the loss and its terms, evaluation,
diagnostics, and the trial's provenance) and checkpoint to `report`.

Data-parallel (config `workers` > 1, torch.distributed initialized with that many processes, one
device each): every rank shuffles the training split alike and takes its share of each global
batch; the losses are the global batch's (trainables.distributed) and the gradients are averaged
over the ranks. Each rank draws its own augmentations (rank 0 the ones one process would draw):
with data.augment=none a run matches one process on the global batch up to rounding. Every rank
extracts features of its part of the held-out splits and gathers the whole splits, so the metrics
are the ones one process reports; rank 0 evaluates, writes the checkpoint and reports. A resumed
trial loads the checkpoint on every rank. `train` starts the processes on this machine when none
are running (`dualsweep train workers=2`); trainables.tune_entry starts them with Ray Train."""
from __future__ import annotations

import json
import logging
import math
import pickle
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainables.contract import loss_term_metric, ssl_trial_config
from trainables.data import DataBundle, FolderImages, load_data
from trainables.data.image_pipeline import InputMonitor
from trainables.device import Placement, available_cpus, resolve_placement, set_threads
from trainables.diagnostics import SPECTRA_FILE, garrido_metrics, model_diagnostics
from trainables.distributed import average_gradients, gather_rows, rank, synchronize_batch_norm, world_size
from trainables.errors import CheckpointError, ConfigError
from trainables.evaluate import (effective_rank, extract, fewshot_accuracy, knn_accuracy, linear_probe_accuracy,
                                 normalized_std)
from trainables.losses import LossTerms
from trainables.methods import METHODS, Method
from trainables.models import build_backbone, start_at_dictionary
from trainables.optim import build_optimizer, build_scheduler
from trainables.provenance import PROVENANCE_KEY, trial_provenance

log = logging.getLogger(__name__)

Report = Callable[[dict, str], None]
CHECKPOINT_FILE = "trial_state.pt"


def log_report(metrics: dict, checkpoint_dir: str) -> None:
    log.info("epoch %s: %s", metrics["epoch"], {k: v for k, v in metrics.items() if k != PROVENANCE_KEY})


class Trial:
    """Everything one trial owns; `run` is the epoch loop."""

    def __init__(self, config: dict | DictConfig):
        self.cfg = cfg = ssl_trial_config(config)
        if world_size() != cfg.workers:
            raise RuntimeError(f"workers={cfg.workers} but torch.distributed runs {world_size()} processes; "
                               "train() starts them")
        method_cls = METHODS.get(cfg.method)
        kwargs = method_cls.parse_kwargs(OmegaConf.to_container(cfg.method_kwargs))
        self.place: Placement = resolve_placement(process_device(cfg.device), cfg.precision, cfg.model.backbone)
        self.threads = set_threads(cfg.cpus)
        data = load_data(cfg.data)
        # Fingerprinted as read, before in-memory samples move to the device.
        self.provenance = trial_provenance(cfg, data, self.place.device)
        self.data: DataBundle = data.to(self.place.device)
        self.input_monitor = InputMonitor(reports=isinstance(self.data.train, FolderImages))
        self.steps_per_epoch = len(self.data.train) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"batch_size: {cfg.batch_size} is larger than the {len(self.data.train)} training samples of {cfg.data.name}")

        torch.manual_seed(cfg.seed)
        m = cfg.model
        backbone, repr_dim = build_backbone(m.backbone, self.data.input_shape, m.width, m.depth, m.init_spectrum_decay)
        if m.init == "dictionary":
            start_at_dictionary(backbone, self.data.dictionary, m.warm_start_noise)
        self.method: Method = method_cls(backbone, repr_dim, cfg.model.projector, kwargs).to(self.place.device)
        synchronize_batch_norm(self.method)
        self.probe = nn.Linear(repr_dim, self.data.num_classes).to(self.place.device)
        if self.place.channels_last:
            self.method.to(memory_format=torch.channels_last)
        groups = self.method.param_groups(cfg.optim.weight_decay, cfg.optim.exclude_bias_norm)
        self.optimizer = build_optimizer(groups, cfg.optim, cfg.batch_size)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.probe_optimizer = torch.optim.AdamW(self.probe.parameters(), lr=cfg.eval.online_probe_lr, weight_decay=0.0)
        self.epoch = 0
        self.knn_acc_random_init: float | None = None

    # --- one epoch -------------------------------------------------------------------------
    def to_device(self, samples: torch.Tensor) -> torch.Tensor:
        samples = samples.to(self.place.device, non_blocking=True)
        # Only image batches (B, C, H, W) have a channels_last layout; a batch of composite pairs
        # (B, K, C, H, W) gets it through its views.
        channels_last = self.place.channels_last and samples.ndim == 4
        return samples.contiguous(memory_format=torch.channels_last) if channels_last else samples

    def train_step(self, samples: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> LossTerms:
        """One optimizer step; returns its loss and terms, detached."""
        x1, x2 = self.data.view_maker.views(self.to_device(samples), gen)
        with self.place.autocast():
            loss, r1 = self.method.training_step(x1, x2)
        labels = labels.to(self.place.device)
        labeled = labels >= 0
        probe_loss = F.cross_entropy(self.probe(r1.detach().float()[labeled]), labels[labeled]) if labeled.any() else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        self.probe_optimizer.zero_grad(set_to_none=True)
        (loss.total + probe_loss).backward()
        average_gradients([*self.method.parameters(), *self.probe.parameters()])
        self.optimizer.step()
        self.probe_optimizer.step()
        self.scheduler.step()
        progress = self.scheduler.last_epoch / (self.steps_per_epoch * self.cfg.epochs)
        self.method.after_optimizer_step(progress)
        return loss.detach()

    def train_epoch(self) -> tuple[dict[str, float], float]:
        """Returns the epoch's mean loss and loss terms, as metrics (loss, loss_<term>; and the input's
        metrics where the training split streams from disk), and training samples per second (of the
        global batch)."""
        cfg = self.cfg
        self.method.train()
        # Shuffling and augmentation draw from generators seeded by (seed, epoch): an epoch
        # replays identically whether or not the trial was resumed before it.
        epoch_seed = cfg.seed * 1_000_003 + self.epoch
        order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(epoch_seed))
        # Rank r takes rows [r * share, (r + 1) * share) of every global batch: the ranks' shares,
        # gathered in rank order, are the global batch one process would take.
        share = cfg.batch_size // world_size()
        mine = order[: self.steps_per_epoch * cfg.batch_size].view(self.steps_per_epoch, world_size(), share)[:, rank()]
        # Rank 0 draws the augmentations one process would; the others, streams of their own.
        gen = torch.Generator(self.place.device).manual_seed(epoch_seed + (rank() << 40))
        terms = self.method.loss_terms
        # Summed on the device, in float32 whatever the autocast: one sync per epoch.
        sums = torch.zeros(1 + len(terms), device=self.place.device)
        start = time.perf_counter()
        batches = self.input_monitor.watch(self.data.train.batches(share, mine.flatten(), drop_last=True))
        for samples, labels in batches:
            step = self.train_step(samples, labels, gen)
            sums += torch.stack([step.total.float(), *(step.terms[term].float() for term in terms)])
        # A rank's loss is its share: the global batch's is their mean.
        if world_size() > 1:
            dist.all_reduce(sums)
        means = (sums / (self.steps_per_epoch * world_size())).tolist()
        names = ["loss", *map(loss_term_metric, terms)]
        elapsed = time.perf_counter() - start
        metrics = {**dict(zip(names, means)), **self.input_monitor.epoch_metrics(elapsed)}
        return metrics, self.steps_per_epoch * cfg.batch_size / elapsed

    # --- evaluation ------------------------------------------------------------------------
    def features(self):
        """(representations, embeddings, labels) of the whole eval_train and test splits, on every
        rank: each extracts its part, then they are gathered."""
        size = max(2 * self.cfg.batch_size, 512)
        args = (self.data.view_maker, self.place.device, size, self.place.autocast)
        return tuple(tuple(map(gather_rows, extract(self.method, RankPart(split), *args)))
                     for split in (self.data.eval_train, self.data.test))

    def knn(self, train_feats, train_labels, test_feats, test_labels) -> float:
        e = self.cfg.eval
        return knn_accuracy(train_feats, train_labels, test_feats, test_labels, e.knn_k, e.knn_temperature, self.data.num_classes)

    def evaluate(self, features, final: bool) -> tuple[dict[str, float], dict[str, Any]]:
        """The epoch's metrics, and the spectra saved beside its checkpoint."""
        (r_train, _, y_train), (r_test, z_test, y_test) = features
        e = self.cfg.eval
        with torch.no_grad():
            online_acc = (self.probe(r_test).argmax(dim=1) == y_test).float().mean().item()
        diagnostics, spectra = model_diagnostics(self.method, self.data.dictionary, r_test, z_test, e.collapse_threshold)
        metrics = {
            "knn_acc": self.knn(r_train, y_train, r_test, y_test),
            "online_acc": online_acc,
            "rank_repr": effective_rank(r_test),
            "rank_emb": effective_rank(z_test),
            "emb_std": normalized_std(z_test),
            **garrido_metrics(z_test),
            **diagnostics,
        }
        probe = (e.linear_probe_steps, e.linear_probe_weight_decay)
        classes = self.data.num_classes
        if e.fewshot_k:
            metrics["fewshot_acc"] = fewshot_accuracy(r_train, y_train, r_test, y_test, classes, e.fewshot_k, *probe)
        if final:
            metrics["linear_acc"] = linear_probe_accuracy(r_train, y_train, r_test, y_test, classes, *probe)
        return metrics, spectra

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "knn_acc_random_init": self.knn_acc_random_init,
            "method": self.method.state_dict(),
            "probe": self.probe.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "probe_optimizer": self.probe_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def save(self, directory: str, spectra: dict[str, Any] | None) -> None:
        torch.save(self.state_dict(), Path(directory) / CHECKPOINT_FILE)
        if spectra is not None:
            (Path(directory) / SPECTRA_FILE).write_text(json.dumps({"epoch": self.epoch, **spectra}))

    def load(self, directory: str) -> None:
        state = read_checkpoint(directory, self.place.device)
        self.method.load_state_dict(state["method"])
        self.probe.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.probe_optimizer.load_state_dict(state["probe_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.knn_acc_random_init = state["knn_acc_random_init"]

    # --- the loop ----------------------------------------------------------------------------
    def run(self, report: Report) -> dict[str, Any]:
        """Trains to the last epoch; returns its metrics. Data-parallel, only rank 0 evaluates and
        reports (the others return {})."""
        if self.knn_acc_random_init is None:
            (r_train, _, y_train), (r_test, _, y_test) = self.features()
            self.knn_acc_random_init = self.knn(r_train, y_train, r_test, y_test)
        metrics: dict[str, Any] = {}
        while self.epoch < self.cfg.epochs:
            losses, samples_per_s = self.train_epoch()
            self.epoch += 1
            features = self.features()
            # The same on every rank (global loss, whole splits): all ranks stop together.
            diverged = not math.isfinite(losses["loss"]) or not all_finite(features)
            if rank() == 0:
                metrics = self.report_epoch(report, losses, samples_per_s, features, diverged)
            if diverged:
                log.warning("trial diverged at epoch %d (loss %s): stopped", self.epoch, losses["loss"])
                break
        return metrics

    def report_epoch(self, report: Report, losses: dict[str, float], samples_per_s: float, features,
                     diverged: bool) -> dict[str, Any]:
        if diverged:
            # Nothing meaningful to evaluate: report the divergence and end the trial.
            evaluation, spectra = {"knn_acc": math.nan, "online_acc": math.nan, "diverged": 1.0}, None
        else:
            evaluation, spectra = self.evaluate(features, final=self.epoch == self.cfg.epochs)
        metrics = {"epoch": self.epoch, **losses, **evaluation, "samples_per_s": samples_per_s,
                   "lr": self.scheduler.get_last_lr()[0], "knn_acc_random_init": self.knn_acc_random_init,
                   PROVENANCE_KEY: self.provenance}
        with tempfile.TemporaryDirectory(prefix="dualsweep-ckpt-") as checkpoint_dir:
            self.save(checkpoint_dir, spectra)
            report(metrics, checkpoint_dir)
        return metrics


def train(config: dict | DictConfig, report: Report = log_report, resume_from: str | None = None) -> dict[str, Any]:
    """Run one trial. `report(metrics, checkpoint_dir)` is called after every epoch; the directory
    is deleted when report returns, so a caller that keeps checkpoints copies it (Ray Tune's
    `tune.report(checkpoint=Checkpoint.from_directory(d))` does). `resume_from` is such a copy.
    With `workers` > 1 and no torch.distributed running, the workers are started here: this
    process is rank 0 (it calls `report`), the others are child processes."""
    cfg = ssl_trial_config(config)
    if cfg.workers > 1 and world_size() == 1:
        return train_on_local_processes(cfg, report, resume_from)
    trial = Trial(cfg)
    if resume_from:
        trial.load(resume_from)
    return trial.run(report)


class RankPart:
    """This rank's contiguous part of a split, as extract() reads one: the ranks' parts in rank
    order are the split."""

    def __init__(self, samples):
        self.samples = samples
        self.order = torch.arange(len(samples)).tensor_split(world_size())[rank()]

    def batches(self, batch_size: int):
        return self.samples.batches(batch_size, self.order)


def process_device(device: str) -> str:
    """The device of this process: data-parallel on CUDA, the one its launcher made current (one
    per process; Ray Train and train_on_local_processes set it)."""
    if world_size() > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return device


# --- data-parallel on this machine ------------------------------------------------------------
def train_on_local_processes(cfg: DictConfig, report: Report, resume_from: str | None) -> dict[str, Any]:
    """`cfg.workers` processes on this machine: gloo on CPU, NCCL with one CUDA device each."""
    cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if cuda and cfg.workers > torch.cuda.device_count():
        raise ConfigError(f"workers: {cfg.workers} processes need a CUDA device each, and torch sees "
                          f"{torch.cuda.device_count()}; use at most that many workers, or device=cpu")
    config = OmegaConf.to_container(cfg)
    if not config["cpus"]:
        # Each process gets its share of the CPUs, not all of them.
        config["cpus"] = max(1, available_cpus() // cfg.workers)
    with tempfile.TemporaryDirectory(prefix="dualsweep-workers-") as rendezvous:
        args = (cfg.workers, cuda, f"file://{Path(rendezvous) / 'store'}", config, resume_from)
        others = torch.multiprocessing.start_processes(local_child, args=args, nprocs=cfg.workers - 1,
                                                       join=False, start_method="spawn")
        try:
            metrics = run_rank(0, *args, report=report)
        except BaseException:
            # They would wait for rank 0 in their next collective until the timeout.
            for process in others.processes:
                process.terminate()
            raise
        while not others.join():
            pass
    return metrics


def local_child(index: int, *args) -> None:
    """The child process `index` of train_on_local_processes: rank index + 1."""
    try:
        run_rank(index + 1, *args)
    except ConfigError:
        pass  # rank 0 meets the same problem with the data and reports it (one line, no traceback)


def run_rank(process_rank: int, workers: int, cuda: bool, init_method: str, config: dict, resume_from: str | None,
             report: Report = log_report) -> dict[str, Any]:
    if cuda:
        torch.cuda.set_device(process_rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=process_rank, world_size=workers)
    try:
        return train(config, report, resume_from)
    finally:
        dist.destroy_process_group()


def read_checkpoint(directory: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The trial state in a checkpoint directory; CheckpointError where it is missing or unreadable."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"resume: {path} not found; a trial checkpoint directory holds {CHECKPOINT_FILE}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def all_finite(features) -> bool:
    return all(bool(torch.isfinite(t).all()) for split in features for t in split[:2])


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"]))
    random.setstate(state["python"])
