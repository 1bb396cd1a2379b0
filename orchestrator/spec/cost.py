"""What a sweep will cost before it runs: device-hours per cell and in total.

One trial takes epochs x samples per epoch / samples per second per device, in device-seconds (a
data-parallel trial's workers share the work: each device runs batch_size / workers per step,
scaling taken as ideal). Samples per second come from the throughput table (THROUGHPUT_FILE,
written by benchmarks/measure_throughput.py: figures measured on a named machine, keyed by
backbone, width, projector, input shape, batch per device and device) or, where it has no figure,
from the model's FLOPs (trainables' count of one forward pass; training = forward + backward, 3x,
of two views, 2x) at a stated rate, marked as an estimate. Counted: the training steps of every
planned trial, each to its last epoch; not counted: each epoch's evaluation (a forward pass over
the kNN and held-out splits), and what ASHA's early stops and seeds until decided save."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator.spec.cells import Cell, build_trial_config
from orchestrator.spec.plan import seeds_per_cell
from orchestrator.spec.schema import SweepSpec
from trainables import ConfigError
from trainables.contract import TRIAL_KINDS, TrainingLoad

THROUGHPUT_FILE = Path(__file__).resolve().parents[1] / "throughput.json"
# Training FLOPs per sample = this x one view's forward FLOPs: forward + backward (3x), two views (2x).
TRAIN_FLOPS_PER_FORWARD = 3 * 2
# Dense bf16 peak of an H100 / H200, and the share of it a ResNet trial is taken to reach: NVIDIA's
# supervised ResNet-50 with DALI and AMP runs ~2,470 images/s on one A100 (DeepLearningExamples),
# 2,470 x 3 x 8.2 GFLOP = 61 TFLOP/s, 20% of the A100's 312 TFLOP/s.
GPU_NAME, GPU_PEAK_FLOPS, GPU_UTILISATION = "H100/H200", 790e12, 0.20
GPU_ESTIMATE = (f"estimate: model FLOPs (forward+backward x3, two views x2) at {GPU_UTILISATION:.0%} of "
                f"{GPU_NAME} peak bf16 ({GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s dense)")


@dataclass(frozen=True)
class Measurement:
    backbone: str
    width: int
    projector: str
    input_shape: tuple[int, ...]
    batch: int  # per device
    device: str  # "cpu" or "gpu"
    samples_per_s: float
    forward_flops: float

    @property
    def train_flops_per_s(self) -> float:
        return self.samples_per_s * TRAIN_FLOPS_PER_FORWARD * self.forward_flops


@dataclass(frozen=True)
class ThroughputTable:
    machine: str
    date: str
    # Of the machine while it measured: other processes slow its figures down.
    load_average: float
    measurements: tuple[Measurement, ...]

    @classmethod
    def read(cls, path: Path = THROUGHPUT_FILE) -> "ThroughputTable":
        raw = json.loads(path.read_text())
        return cls(raw["machine"], raw["date"], raw["load_average"], tuple(
            Measurement(**{**m, "input_shape": tuple(m["input_shape"])}) for m in raw["measurements"]))

    @property
    def where(self) -> str:
        return f"{self.machine}, {self.date}, load average {self.load_average:g}"

    def throughput(self, load: TrainingLoad, batch: int, device: str) -> "Throughput":
        """Samples per second per device for `load` at `batch` per device: measured where the table
        has the figure, else estimated from the model's FLOPs."""
        key = (load.backbone, load.width, load.projector, load.input_shape, batch, device)
        for m in self.measurements:
            if (m.backbone, m.width, m.projector, m.input_shape, m.batch, m.device) == key:
                return Throughput(m.samples_per_s, f"measured: {self.where}")
        train_flops = TRAIN_FLOPS_PER_FORWARD * load.forward_flops
        if device == "gpu":
            return Throughput(GPU_UTILISATION * GPU_PEAK_FLOPS / train_flops, GPU_ESTIMATE)
        rates = [m.train_flops_per_s for m in self.measurements if m.device == "cpu"]
        rate = statistics.median(rates)
        return Throughput(rate / train_flops, "estimate: model FLOPs (forward+backward x3, two views x2) at "
                                              f"{rate / 1e9:.1f} GFLOP/s, the median training rate measured on "
                                              f"{self.where}")


@dataclass(frozen=True)
class Throughput:
    samples_per_s: float
    source: str


@dataclass(frozen=True)
class CellCost:
    cell: Cell
    trials: int
    device: str
    # What one trial trains and at which throughput; None with `problem` where unknown.
    load: Optional[TrainingLoad]
    batch_per_device: int
    throughput: Optional[Throughput]
    problem: str = ""

    @property
    def device_hours(self) -> Optional[float]:
        if self.throughput is None:
            return None
        samples = self.trials * self.load.epochs * self.load.samples_per_epoch
        return samples / self.throughput.samples_per_s / 3600


def trial_device(spec: SweepSpec, config: dict) -> str:
    return "gpu" if spec.resources.gpu > 0 and config.get("device") != "cpu" else "cpu"


def sweep_cost(spec: SweepSpec, cells: list[Cell], planned_per_cell: int,
               table: Optional[ThroughputTable] = None) -> list[CellCost]:
    """Each cell's cost: `planned_per_cell` trials of the cell's base config (the searched parameters
    change no cost here). Empty for a trial kind whose cost is not estimated."""
    training_load = TRIAL_KINDS[spec.trainable].training_load
    if training_load is None:
        return []
    table = table or ThroughputTable.read()
    costs = []
    for cell in cells:
        config = build_trial_config(spec, cell.values, {}, seed=None)
        device = trial_device(spec, config)
        batch = config["batch_size"] // config.get("workers", 1)
        try:
            load = training_load(config)
        except ConfigError as exc:
            costs.append(CellCost(cell, planned_per_cell, device, None, batch, None, str(exc)))
            continue
        costs.append(CellCost(cell, planned_per_cell, device, load, batch, table.throughput(load, batch, device)))
    return costs


def cost_lines(spec: SweepSpec, cells: list[Cell]) -> list[str]:
    """The plan's cost, for `run --dry-run` and `validate`: a line per cell, the total, and where
    each throughput figure comes from (numbered)."""
    return cost_report(sweep_cost(spec, cells, spec.search.trials_per_cell + seeds_per_cell(spec)))


def cost_report(costs: list[CellCost]) -> list[str]:
    if not costs:
        return []
    sources: dict[str, int] = {}
    lines = ["  expected cost, per cell (training steps of every planned trial to its last epoch):"]
    for c in costs:
        if c.throughput is None:
            lines.append(f"    {c.cell.id}  unknown: {c.problem}")
            continue
        load, t = c.load, c.throughput
        figure = (f"{t.samples_per_s:,.0f} samples/s per {c.device}: {load.backbone} (width {load.width}), "
                  f"projector {load.projector}, input {'x'.join(map(str, load.input_shape))}, batch "
                  f"{c.batch_per_device} per device; {t.source}")
        number = sources.setdefault(figure, len(sources) + 1)
        lines.append(f"    {c.cell.id}  {hours(c.device_hours)} {unit(c.device)}  ({c.trials} trials x {load.epochs} epochs x "
                     f"{load.samples_per_epoch:,} samples) [{number}]")
    totals: dict[str, float] = {}
    for c in costs:
        if c.device_hours is not None:
            totals[c.device] = totals.get(c.device, 0.0) + c.device_hours
    unknown = [c.cell.id for c in costs if c.device_hours is None]
    if not totals:
        lines.append("  expected cost in total: unknown (no cell's training data could be read here)")
        return lines
    total = "  expected cost in total: " + " + ".join(f"{hours(h)} {unit(d)}" for d, h in totals.items())
    if unknown:
        total += f" for the cells with a known cost; unknown for {', '.join(unknown)}"
    lines.append(total + " (at most: ASHA's early stops only lower it; each epoch's evaluation comes on top)")
    lines += [f"    [{number}] {figure}" for figure, number in sources.items()]
    return lines


def unit(device: str) -> str:
    return f"{device.upper()}-hours"


def hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
