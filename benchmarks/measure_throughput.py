"""Measures the training throughput that `dualsweep run --dry-run` prices CPU trials with, and writes
orchestrator/throughput.json (the table of orchestrator/spec/cost.py).

For every distinct (backbone, width, projector, input shape, batch) of the CPU-size trials of the
sweeps in sweeps/ (the claim sweeps at scale=cpu and the quickstart), one trial of that config
(its own dataset and method) is built and its training steps (Trial.train_step: views, method,
probe, optimizer) are timed on one core of this machine's CPU (a CPU trial's device: `resources.cpu:
1`, one torch thread), the best of several short rounds. Evaluation is not timed. GPU figures are never written here: without a measurement on a GPU, the dry run
estimates from FLOPs and says so.

    .venv/bin/python benchmarks/measure_throughput.py [--seconds 0.5 --rounds 10]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

from orchestrator.spec import expand_cells, load_spec
from orchestrator.spec.cells import build_trial_config
from orchestrator.spec.cost import THROUGHPUT_FILE
from trainables.contract import ssl_training_load
from trainables.provenance import cpu_model
from trainables.train import Trial

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = [ROOT / "sweeps" / "quickstart.yaml", *sorted((ROOT / "sweeps" / "claims").glob("*.yaml"))]


def cpu_configs() -> dict[tuple, dict]:
    """The first trial config of each distinct throughput key among the CPU-size sweeps' cells."""
    configs: dict[tuple, dict] = {}
    for path in SWEEPS:
        spec = load_spec(path).spec
        if spec.resources.gpu > 0:
            continue
        for cell in expand_cells(spec):
            config = build_trial_config(spec, cell.values, {}, seed=None)
            load = ssl_training_load(config)
            key = (load.backbone, load.width, load.projector, load.input_shape,
                   config["batch_size"] // config.get("workers", 1))
            configs.setdefault(key, config)
    return configs


def samples_per_s(config: dict, seconds: float, rounds: int) -> float:
    """Training samples per second of the trial's steps after two warm-up steps: the best of
    `rounds` rounds of at least `seconds` each (the epoch's batches, cycled). The best, as timeit
    takes it: other processes on a shared machine only ever slow a round down."""
    trial = Trial({**config, "cpus": 1})
    gen = torch.Generator(trial.place.device).manual_seed(0)
    batches = list(trial.data.train.batches(config["batch_size"], drop_last=True))
    for samples, labels in batches[:2]:
        trial.train_step(samples, labels, gen)
    best, step = 0.0, 0
    for _ in range(rounds):
        samples_seen, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            samples, labels = batches[step % len(batches)]
            trial.train_step(samples, labels, gen)
            step, samples_seen = step + 1, samples_seen + len(samples)
        best = max(best, samples_seen / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of a timed round")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per config; the best counts")
    parser.add_argument("--out", type=Path, default=THROUGHPUT_FILE)
    args = parser.parse_args(argv)
    measurements = []
    for (backbone, width, projector, shape, batch), config in cpu_configs().items():
        rate = samples_per_s(config, args.seconds, args.rounds)
        flops = ssl_training_load(config).forward_flops
        measurements.append({"backbone": backbone, "width": width, "projector": projector, "input_shape": list(shape),
                             "batch": batch, "device": "cpu", "samples_per_s": round(rate, 1), "forward_flops": flops})
        print(f"{backbone:>11} w{width:<4} {projector:>16} {'x'.join(map(str, shape)):>9} batch {batch:>4}: "
              f"{rate:8.1f} samples/s ({config['method']}, {config['data']['name']})", flush=True)
    table = {
        "machine": f"{cpu_model()}, 1 core",
        "date": datetime.date.today().isoformat(),
        # Other processes on the machine slow the figures down; the load says how busy it was.
        "load_average": round(os.getloadavg()[0], 1),
        "measurements": measurements,
    }
    # One line per measurement: the table reads (and diffs) as a table.
    rows = ",\n".join("  " + json.dumps(m) for m in measurements)
    head = json.dumps({k: v for k, v in table.items() if k != "measurements"}, indent=1)[:-2]
    args.out.write_text(f'{head},\n "measurements": [\n{rows}\n ]\n}}\n')
    print(f"wrote {args.out} ({len(measurements)} figures; load average {table['load_average']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
