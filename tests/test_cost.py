"""The cost of a sweep before it runs (orchestrator/spec/cost.py): the arithmetic, the FLOPs it
starts from, what a trial trains on, and the device-hours `run --dry-run` and `validate` print."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.spec import expand_cells, load_spec
from orchestrator.spec.cost import (GPU_ESTIMATE, GPU_PEAK_FLOPS, GPU_UTILISATION, CellCost, Measurement, Throughput,
                                    ThroughputTable, sweep_cost)
from trainables import ConfigError
from trainables.contract import TrainingLoad, ssl_training_load
from trainables.models import forward_flops

ROOT = Path(__file__).resolve().parents[1]
LOAD = TrainingLoad("convnet", 64, "128-128-128", (1, 24, 24), batch_size=128, epochs=20, samples_per_epoch=1408,
                    forward_flops=2e6)


def measurement(**changes) -> Measurement:
    fields = dict(backbone="convnet", width=64, projector="128-128-128", input_shape=(1, 24, 24), batch=128,
                  device="cpu", samples_per_s=1000.0, forward_flops=2e6)
    return Measurement(**{**fields, **changes})


TABLE = ThroughputTable("Test CPU, 1 core", "2026-12-01", 0.5, (
    measurement(),
    measurement(batch=64, samples_per_s=3000.0),  # 36 GFLOP/s of training
    measurement(backbone="mlp", samples_per_s=500.0),  # 6 GFLOP/s
))


def test_a_measured_figure_is_used_as_measured():
    t = TABLE.throughput(LOAD, 128, "cpu")
    assert t == Throughput(1000.0, "measured: Test CPU, 1 core, 2026-12-01, load average 0.5")


def test_without_a_measurement_the_cpu_rate_is_the_median_measured_flop_rate():
    # Training FLOP rates measured: 12, 36 and 6 GFLOP/s; the median is 12.
    t = TABLE.throughput(LOAD, 256, "cpu")
    assert t.samples_per_s == pytest.approx(12e9 / (6 * 2e6))
    assert t.source.startswith("estimate: model FLOPs (forward+backward x3, two views x2) at 12.0 GFLOP/s")


def test_a_gpu_figure_is_a_flop_estimate_at_the_stated_utilisation():
    t = TABLE.throughput(LOAD, 128, "gpu")
    assert t.samples_per_s == pytest.approx(GPU_UTILISATION * GPU_PEAK_FLOPS / (6 * 2e6))
    assert t.source == GPU_ESTIMATE and "20% of H100/H200 peak bf16 (790 TFLOP/s dense)" in t.source


def test_device_hours_are_trials_times_epochs_times_samples_over_the_rate():
    cost = CellCost(cell=None, trials=5, device="cpu", load=LOAD, batch_per_device=128,
                    throughput=Throughput(1000.0, "measured"))
    assert cost.device_hours == pytest.approx(5 * 20 * 1408 / 1000 / 3600)
    assert CellCost(None, 5, "cpu", None, 128, None, "unreadable").device_hours is None


def test_forward_flops_count_the_known_figures():
    # ResNet-18 with the CIFAR stem: ~0.56 GMAC per 32x32 image (1.11 GFLOP).
    assert forward_flops("resnet18", (3, 32, 32), 512, "none") == pytest.approx(1.11e9, rel=0.01)
    # A 16 -> 16 linear map, then a 16-8 projector: 2 x (256 + 16 x 16 + 16 x 8) FLOPs.
    assert forward_flops("linear", (16,), 16, "16-8") == 2 * (256 + 256 + 128)


def test_training_load_of_a_generated_and_of_a_folder_dataset(tmp_path):
    load = ssl_training_load({"data": {"name": "digits"}, "batch_size": 100, "epochs": 3,
                              "model": {"backbone": "mlp", "width": 32, "projector": "32-16"}})
    # 1438 training digits: 14 whole batches of 100.
    assert (load.input_shape, load.samples_per_epoch, load.epochs) == ((1, 8, 8), 1400, 3)
    assert load.forward_flops == 2 * (64 * 32 + 32 * 32 + 32 * 32 + 32 * 16)
    root = image_folder(tmp_path, per_class=30)
    config = {"data": {"name": "imagefolder", "root": str(root), "image_size": 112}, "batch_size": 16,
              "model": {"backbone": "resnet18", "projector": "none"}}
    load = ssl_training_load(config)
    assert (load.input_shape, load.samples_per_epoch) == ((3, 112, 112), 48)
    with pytest.raises(ConfigError, match="batch_size: 64 is larger than the 60 training samples of imagefolder"):
        ssl_training_load({**config, "batch_size": 64})


def image_folder(root: Path, per_class: int) -> Path:
    """An ImageNet layout of empty .JPEG files: listed, never decoded, by a cost estimate."""
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                (root / split / cls / f"{i}.JPEG").touch()
    return root


def test_every_cpu_size_cell_of_the_claim_sweeps_has_a_measured_figure():
    """The committed table (benchmarks/measure_throughput.py) covers the sweeps it was made from."""
    table = ThroughputTable.read()
    for path in [ROOT / "sweeps" / "quickstart.yaml", *sorted((ROOT / "sweeps" / "claims").glob("*.yaml"))]:
        spec = load_spec(path).spec
        for cost in sweep_cost(spec, expand_cells(spec), 1, table):
            assert cost.throughput.source.startswith("measured: "), (path.name, cost.cell.id)


def test_dry_run_of_the_cluster_size_prints_device_hours_per_cell_and_in_total(tmp_path, monkeypatch, capsys):
    # 2 x 1100 training images: batch 2048 fits once, 256 eight times, 1024 twice.
    image_folder(tmp_path / "data" / "imagenet", per_class=1100)
    monkeypatch.setenv("DUALSWEEP_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    sweep = str(ROOT / "sweeps" / "claims" / "garrido.yaml")
    assert main(["run", sweep, "scale=cluster", "--dry-run", "--address", "auto"]) == 0
    out = capsys.readouterr().out
    cells = re.findall(r"^    (c\d\d)  ([\d.,]+) GPU-hours  \(9 trials x 100 epochs x ([\d,]+) samples\) \[(\d)\]$",
                       out, re.MULTILINE)
    assert [c[0] for c in cells] == [f"c{i:02d}" for i in range(24)]
    assert {c[2] for c in cells} == {"2,048"}
    total = re.search(r"^  expected cost in total: ([\d.,]+) GPU-hours \(at most", out, re.MULTILINE)
    assert float(total.group(1)) == pytest.approx(sum(float(c[1]) for c in cells), rel=0.01)
    sources = dict(re.findall(r"^    \[(\d)\] (.*)$", out, re.MULTILINE))
    assert {c[3] for c in cells} == set(sources) and len(sources) == 6  # 2 projectors x 3 batch sizes
    assert all(s.endswith(GPU_ESTIMATE) and "resnet18" in s and "input 3x112x112" in s for s in sources.values())
    # One view's forward FLOPs at 112x112 with the wide projector, priced as the line says.
    wide = next(s for s in sources.values() if "8192-8192-2048" in s and "batch 256 " in s)
    rate = GPU_UTILISATION * GPU_PEAK_FLOPS / (6 * forward_flops("resnet18", (3, 112, 112), 512, "8192-8192-2048"))
    assert wide.startswith(f"{rate:,.0f} samples/s per gpu")

    assert main(["validate", sweep, "scale=cluster", "--address", "auto"]) == 0
    validated = capsys.readouterr().out
    assert "valid; 24 cells" in validated and total.group(0) in validated


def test_a_cell_whose_data_cannot_be_read_here_says_why(tmp_path, monkeypatch, capsys):
    for folder in ("imagenet/train/n01", "imagenet/val/n01"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    monkeypatch.setenv("DUALSWEEP_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(ROOT / "sweeps" / "claims" / "garrido.yaml"), "scale=cluster", "--address", "auto"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^    c00  unknown: data.root: .*imagenet/train: .*", out, re.MULTILINE)
    assert "expected cost in total: unknown (no cell's training data could be read here)" in out
