"""What dualsweep costs: 20 short SSL trials (digits) through `dualsweep run` machinery against the
same 20 trial configs called one after another in a plain loop, and how busy the machine's CPUs
were during the sweep. Prints ratios, not a pass/fail.

    .venv/bin/python benchmarks/sweep_overhead.py [--trials 20] [--epochs 3]

Figures:
- sweep wall: from the sweep's start (MLflow parent run, Optuna studies, Tuner) to its end, Ray
  already running (its start-up is printed apart);
- parallel loop wall: the same configs through trainables.train in as many plain, fresh processes
  as the sweep has trial slots (multiprocessing, one trial handed out at a time, same threads per
  trial): what running the trials side by side costs without dualsweep, process start, imports and
  the two trials sharing the machine's caches and memory bandwidth included;
- overhead per trial: (sweep wall - parallel loop wall) / trials (target <= 0.5 s);
- sequential loop wall: the same configs one after another in this process (already warm); the
  sweep against a perfect split of it, (sweep wall - loop wall / slots) / trials, is printed too: it
  counts the slow-down of trials sharing the machine as overhead;
- idle slot time per trial: (sweep wall x parallel slots - the trials' run time as Ray measured it)
  / trials: the time a trial slot was not running a trial, start-up and shut-down included;
- steady-state idle slot time per trial: the same from the first trial's start to the last one's
  end (MLflow run times), i.e. without the fixed cost of starting the sweep and its workers;
- busy: the machine's CPU busy fraction during the sweep from /proc/stat (target >= 80%); other
  processes on the machine count too.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run_trial(config: dict) -> None:
    from trainables import train

    train(config, report=lambda metrics, checkpoint_dir: None)


def parallel_loop(configs: list[dict], processes: int, threads: int) -> float:
    """Wall time of the configs run by `processes` fresh plain processes, one config at a time."""
    import multiprocessing

    # Ray sets the same for its trial workers.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(run_trial, configs, chunksize=1)
    return time.perf_counter() - start


def sweep_yaml(directory: Path, trials: int, epochs: int) -> Path:
    path = directory / "overhead.yaml"
    path.write_text(
        "name: overhead\n"
        f"storage: {directory / 'runs'}\n"
        f"tracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\n"
        f"trial: {{data: {{name: digits}}, model: {{width: 256, projector: 256-256-64}}, epochs: {epochs}, "
        "batch_size: 128, optim: {warmup_epochs: 0}}\n"
        "grid: {method: [simclr, vicreg]}\n"
        f"search: {{trials_per_cell: {trials // 2}, sampler: random, params: {{optim.lr: {{type: loguniform, low: 0.02, high: 0.2}}}}}}\n"
        "scheduler: {type: none}\n"
        "seeds: []\n"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="an even number: two cells share them")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray
    from mlflow.tracking import MlflowClient
    from ray.tune import ExperimentAnalysis

    from orchestrator.spec import load_spec
    from orchestrator.runner import run_sweep
    from orchestrator.storage import tune_path
    cpus = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()[0]:.2f} on {cpus} CPUs")
    with tempfile.TemporaryDirectory(prefix="dualsweep-bench-") as tmp:
        directory = Path(tmp)
        loaded = load_spec(sweep_yaml(directory, args.trials, args.epochs))
        start = time.perf_counter()
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        ray_start = time.perf_counter() - start

        busy0, total0 = cpu_times()
        start = time.perf_counter()
        outcome = run_sweep(loaded, address=None, verbose=0)
        sweep_wall = time.perf_counter() - start
        busy1, total1 = cpu_times()
        busy = (busy1 - busy0) / (total1 - total0)
        ray.shutdown()

        trials = ExperimentAnalysis(tune_path(loaded)).trials
        trial_time = sum((t.last_result or {}).get("time_total_s", 0.0) for t in trials)
        configs = [t.config["trial"] for t in trials]
        client = MlflowClient(loaded.spec.tracking.uri)
        experiment = client.get_experiment_by_name(loaded.spec.tracking.experiment).experiment_id
        runs = client.search_runs([experiment], filter_string="tags.role = 'trial'")
        steady_span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000

        # The threads a trial had under the sweep (its tune entry sets them from the Ray resources).
        threads = int(loaded.spec.resources.cpu)
        configs = [dict(config, cpus=threads) for config in configs]
        slots = int(cpus / loaded.spec.resources.cpu)
        parallel_wall = parallel_loop(configs, slots, threads)
        start = time.perf_counter()
        for config in configs:
            run_trial(config)
        loop_wall = time.perf_counter() - start

    n = len(configs)
    print(f"ray start-up: {ray_start:.1f} s (once per sweep)")
    print(f"sweep: {n} trials ({outcome.errors} failed) in {sweep_wall:.1f} s, {slots} at a time")
    print(f"plain parallel loop: the same {n} trials in {parallel_wall:.1f} s, {slots} fresh processes")
    print(f"plain sequential loop: the same {n} trials in {loop_wall:.1f} s")
    print(f"overhead per trial: {(sweep_wall - parallel_wall) / n:+.2f} s against the parallel loop "
          f"(target <= 0.5 s); {(sweep_wall - loop_wall / slots) / n:+.2f} s against a perfect {slots}-way split "
          "of the sequential loop")
    print(f"idle slot time per trial: {(sweep_wall * slots - trial_time) / n:.2f} s; in steady state "
          f"(first trial start to last trial end, {steady_span:.1f} s): {(steady_span * slots - trial_time) / n:.2f} s")
    print(f"CPU busy during the sweep: {busy:.0%} of {cpus} CPUs (target >= 80%)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other processes make every figure noisier)")


if __name__ == "__main__":
    main()
