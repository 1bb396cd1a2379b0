"""Load: a 1,000-trial sweep of a trivial trainable (the stand-in, no sleep) against a 20-trial one,
both through the sweep machinery with real MLflow and Optuna sqlite stores, in this process on one
Ray started once. Exits non-zero when a check fails, so that `make load` fails in CI.

    .venv/bin/python benchmarks/load_test.py [--trials 1000] [--small 20] [--slots 8]

Prints, for both sweeps (after an untimed warm-up sweep that pays the process's first imports):
- wall time of the sweep (MLflow parent run, Optuna studies, Tuner, every trial; Ray already up)
  and the per-trial overhead, wall / trials: a trial does no work, so all of it is overhead;
- the driver's peak memory (RSS of this process, sampled every 50 ms while the sweep runs);
then the ratio of the per-trial overheads (target <= 2x: a sweep must not cost more per trial as
it grows); the seconds between trial ends over the first and the last fifth of the large sweep
(what a trial costs once the sweep is under way, without the fixed cost of starting it); and the
wall and CPU time of `dualsweep status` and `dualsweep report` on the large sweep, run as a user
runs them (fresh processes).

Checks (each a failing exit): the ratio; the large sweep's MLflow experiment holds exactly one
finished child run per trial, none RUNNING; `status` and `report` count every planned trial. Every
figure is noisy on a machine shared with other work: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Cells of the sweep and confirmation seeds per cell: a sweep of N trials has N / CELLS - SEEDS
# search trials per cell.
CELLS = 4
SEEDS = (1, 2)
TARGET_RATIO = 2.0
DUALSWEEP = Path(sys.executable).with_name("dualsweep")


def search_trials_per_cell(trials: int) -> int:
    """The search trials per cell of a sweep of `trials` trials; 0 when no sweep has that many."""
    per_cell = trials // CELLS - len(SEEDS)
    return per_cell if per_cell > 0 and (per_cell + len(SEEDS)) * CELLS == trials else 0


def sweep_yaml(directory: Path, name: str, trials: int) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "trainable: stand_in\n"
        f"storage: {directory / 'runs'}\n"
        f"tracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\n"
        # Two epochs, so that ASHA stops some trials at its first rung and the others checkpoint twice.
        "trial: {epochs: 2, seconds_per_epoch: 0}\n"
        f"grid: {{offset: {[float(i) for i in range(CELLS)]}}}\n"
        f"search: {{trials_per_cell: {search_trials_per_cell(trials)}, params: {{x: {{type: uniform, low: 0.0, high: 1.0}}}}}}\n"
        "scheduler: {type: asha, grace_period: 1, reduction_factor: 2}\n"
        f"seeds: {list(SEEDS)}\n"
    )
    return path


class PeakRss:
    """The peak resident memory of this process while the block runs, sampled in a thread."""

    def __init__(self, period_s: float = 0.05):
        self.period_s = period_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.period_s)

    def __enter__(self) -> "PeakRss":
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


@dataclass
class Timed:
    name: str
    trials: int
    wall: float
    peak_rss: int
    loaded: object  # orchestrator.spec.LoadedSpec

    def runs(self) -> tuple[list, object]:
        """The sweep's trial runs in MLflow, and its parent run."""
        from orchestrator.tracking import find_runs, sweep_runs

        client, experiment, parent = sweep_runs(self.loaded)
        return find_runs(client, experiment, sweep=self.loaded.spec.name, role="trial"), parent

    def summary(self) -> str:
        runs, parent = self.runs()
        start_up = (min(r.info.start_time for r in runs) - parent.info.start_time) / 1000
        wind_down = (parent.info.end_time - max(r.info.end_time for r in runs)) / 1000
        return (f"{self.name} sweep: {self.trials} trials in {self.wall:.1f} s, {self.wall / self.trials:.3f} s per "
                f"trial ({start_up:.1f} s to its first trial's start, {wind_down:.1f} s after its last trial's end); "
                f"driver peak RSS {mib(self.peak_rss)}")


def run_timed(directory: Path, name: str, trials: int) -> Timed:
    """One sweep of `trials` trials run in this process, timed, its driver's memory sampled."""
    from orchestrator.runner import run_sweep
    from orchestrator.spec import load_spec

    loaded = load_spec(sweep_yaml(directory, name, trials))
    with PeakRss() as memory:
        start = time.perf_counter()
        outcome = run_sweep(loaded, address=None, verbose=0)
        wall = time.perf_counter() - start
    if outcome.errors:
        raise SystemExit(f"{name} sweep: {outcome.errors} of {outcome.trials} trials failed")
    return Timed(name, trials, wall, memory.peak, loaded)


def cli(*args: str) -> tuple[str, str]:
    """How long `dualsweep <args>` took in a fresh process, as a user runs it (wall and CPU time),
    and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([str(DUALSWEEP), *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"dualsweep {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return f"{wall:.1f} s ({cpu:.1f} s CPU)", done.stdout


def trial_intervals(runs: list) -> tuple[float, float]:
    """Seconds between consecutive trial ends, averaged over the first and over the last fifth of
    the sweep's trials: equal when a trial costs as much late in a sweep as early on."""
    ends = sorted(run.info.end_time / 1000 for run in runs)
    fifth = max(1, len(ends) // 5)
    return (ends[fifth] - ends[0]) / fifth, (ends[-1] - ends[-1 - fifth]) / fifth


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000, help="trials of the large sweep")
    parser.add_argument("--small", type=int, default=20, help="trials of the small sweep it is compared with")
    parser.add_argument("--slots", type=int, default=8, help="Ray's logical CPUs: trials run at once")
    args = parser.parse_args()
    for trials in (args.trials, args.small):
        if not search_trials_per_cell(trials):
            parser.error(f"a sweep here has a multiple of {CELLS} trials above {CELLS * len(SEEDS)}, got {trials}")
    logging.basicConfig(level=logging.WARNING)

    import ray

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.slots} trial slots")
    ray_dir = tempfile.mkdtemp(prefix="rayload", dir="/tmp")  # Ray's socket paths must stay short
    try:
        with tempfile.TemporaryDirectory(prefix="dualsweep-load-") as tmp:
            directory = Path(tmp)
            ray.init(num_cpus=args.slots, include_dashboard=False, _temp_dir=ray_dir,
                     logging_level=logging.WARNING, log_to_driver=False)
            # The one-line-per-trial progress log, as the CLI writes it, into a file.
            progress = logging.getLogger("orchestrator.progress")
            progress.setLevel(logging.INFO)
            progress.addHandler(logging.FileHandler(directory / "progress.log"))
            progress.propagate = False
            # Not timed: the first sweep of a process pays for imports and the MLflow store's creation.
            run_timed(directory, "warmup", args.small)
            small = run_timed(directory, "small", args.small)
            print(small.summary(), flush=True)
            large = run_timed(directory, "large", args.trials)
            print(f"{large.summary()}: {(large.peak_rss - small.peak_rss) / 1024 / (large.trials - small.trials):+.0f} "
                  "KiB per extra trial", flush=True)
            ray.shutdown()

            runs, _ = large.runs()
            early, late = trial_intervals(runs)
            print(f"large sweep, seconds between trial ends: {early:.3f} over its first fifth, {late:.3f} over its last")
            status_time, status_out = cli("status", str(large.loaded.sweep_dir))
            report_time, report_out = cli("report", str(large.loaded.sweep_dir))
            print(f"dualsweep status: {status_time}; dualsweep report: {report_time} "
                  f"({large.trials} trials, fresh processes)")

            statuses = {r.info.status for r in runs}
            keys = {r.data.tags.get("trial_key") for r in runs}
            ratio = (large.wall / large.trials) / (small.wall / small.trials)
            n = large.trials
            checks = {
                f"per-trial overhead ratio {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x)": ratio <= TARGET_RATIO,
                f"MLflow: {len(runs)} child runs, {len(keys)} trial keys, statuses {sorted(statuses)} "
                f"(want {n}, {n}, FINISHED only)": len(runs) == len(keys) == n and statuses == {"FINISHED"},
                f"status: {status_out.splitlines()[0]}": f"{n} of {n} planned" in status_out,
                f"report: {report_out.splitlines()[0]}": report_out.startswith(f"report of {n} trials"),
            }
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    for text, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'} {text}")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on the machine make every figure noisier)")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
