"""The `dualsweep` command."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from orchestrator.messages import SpecError, one_line
from orchestrator.overrides import OverrideError, parse_overrides
from orchestrator.spec import expand_cells, load_spec, planned_trials, tracking_uri
from orchestrator.spec.cost import cost_lines
from orchestrator.storage import ensure_new_sweep, find_sweep_dir, load_sweep_dir, optuna_url
from trainables import ConfigError, train
from trainables.methods import describe_methods

TABLE_COLUMNS = ("epoch", "loss", "knn_acc", "online_acc", "rank_repr", "rank_emb", "emb_std", "samples_per_s")
# Every loss term a method reports (loss_invariance, loss_variance, ...) follows the loss column.
LOSS_TERM_PREFIX = "loss_"


class StdoutHandler(logging.StreamHandler):
    """Progress lines go to whatever sys.stdout is when they are written (main() may run several
    times in one process, e.g. in tests, each time with another stdout)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse's refusals (an unknown option, a bad choice) as one line, like every other user
    error, instead of its usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dualsweep: error: {one_line(message)} (see {self.prog} --help)\n")


def format_row(metrics: dict) -> str:
    terms = sorted(key for key in metrics if key.startswith(LOSS_TERM_PREFIX))
    columns = [*TABLE_COLUMNS[:2], *terms, *TABLE_COLUMNS[2:]]
    cells = []
    for key in columns:
        value = metrics.get(key)
        cells.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return "  ".join(cells)


def replace_dir(source: str, target: Path) -> None:
    """Copy `source` over `target` so that a kill at any moment leaves a complete directory."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def cmd_train(args: argparse.Namespace) -> int:
    config = parse_overrides(args.overrides, example="method=vicreg or optim.lr=0.3")
    keep = Path(args.checkpoint_dir).resolve() if args.checkpoint_dir else None

    def report(metrics: dict, checkpoint_dir: str) -> None:
        print(format_row(metrics), flush=True)
        if keep is not None:
            replace_dir(checkpoint_dir, keep)

    final = train(config, report=report, resume_from=args.resume)
    print(
        f"knn_acc: random init {final['knn_acc_random_init']:.4f} -> trained {final['knn_acc']:.4f}; "
        f"linear_acc {final.get('linear_acc', float('nan')):.4f}"
    )
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    for entry in describe_methods():
        defaults = ", ".join(f"{k}={v}" for k, v in entry["hyperparameters"].items()) or "-"
        print(f"{entry['name']:<13} {entry['family']:<22} {entry['source']}\n{'':<13} {defaults}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_spec(args.sweep, args.overrides, cluster_address=args.address)
    cells = expand_cells(loaded.spec)
    print(f"{args.sweep}: valid; {len(cells)} cells, at most {planned_trials(loaded.spec, cells)} trials; "
          f"sweep directory {loaded.sweep_dir}")
    for line in cost_lines(loaded.spec, cells):
        print(line)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, f"storage={args.storage}"] if args.storage else args.overrides
    loaded = load_spec(args.sweep, overrides, cluster_address=args.address)
    ensure_new_sweep(loaded)
    print(loaded.describe(), flush=True)
    if args.dry_run:
        return 0
    from orchestrator.runner import run_sweep  # Ray: only once there is a sweep to run

    outcome = run_sweep(loaded, args.address, verbose=args.verbose)
    return report_outcome(loaded.sweep_dir, outcome)


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.runner import resume_sweep  # Ray: only once there is a sweep to run
    sweep_dir = find_sweep_dir(args.sweep)
    outcome = resume_sweep(sweep_dir, args.address, verbose=args.verbose)
    return report_outcome(sweep_dir, outcome)


# The shell's code for a process ended by Ctrl-C (128 + SIGINT).
EXIT_STOPPED = 130


def report_outcome(sweep_dir: Path, outcome) -> int:
    """The status table, then the sweep's report (verdicts, gaps, figures) and where it is."""
    from orchestrator.status import status_table  # Ray's experiment reader (no cluster)
    from orchestrator.sweep_report import write_sweep_report

    print(status_table(sweep_dir))
    print(write_sweep_report(sweep_dir).summary())
    if outcome.stopped:
        print(f"stopped before the sweep ended; `dualsweep resume {sweep_dir}` continues it", file=sys.stderr)
        return EXIT_STOPPED
    if outcome.errors:
        print(f"{outcome.errors} of {outcome.trials} trials failed; their errors are in MLflow (status FAILED) "
              f"and under {sweep_dir}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.status import status_table  # Ray's experiment reader (no cluster)

    print(status_table(find_sweep_dir(args.sweep)))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrator.browse import serve_until_stopped, start
    from orchestrator.tracking import sweep_runs  # MLflow and Ray's callback base class

    if not args.sweep:
        uri = tracking_uri(args.tracking_uri)
        servers = start(uri, args.host, args.port, None, None, 0)
        print(f"MLflow UI for {uri} on {servers.mlflow_url}", flush=True)
        return serve_until_stopped(servers)
    sweep_dir = find_sweep_dir(args.sweep)
    loaded = load_sweep_dir(sweep_dir)
    _, experiment, _ = sweep_runs(loaded)
    servers = start(loaded.spec.tracking.uri, args.host, args.port, experiment, optuna_url(sweep_dir),
                    args.dashboard_port)
    print(f"MLflow UI: {servers.runs_url or servers.mlflow_url}\n"
          f"Optuna dashboard: {servers.dashboard_url}\n(Ctrl-C stops both)", flush=True)
    return serve_until_stopped(servers)


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.sweep_report import write_sweep_report  # Ray's experiment reader (no cluster), MLflow

    sweep_dir = find_sweep_dir(args.sweep)
    print(write_sweep_report(sweep_dir, Path(args.out).resolve() if args.out else None).summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dualsweep", description="Sweeps of contrastive and non-contrastive SSL methods.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="run one trial without Ray; key=value overrides of the trial config")
    p.add_argument("overrides", nargs="*", help="e.g. method=vicreg data.name=digits epochs=30 (workers=2: two "
                                                "data-parallel processes on this machine)")
    p.add_argument("--checkpoint-dir", help="keep the latest epoch's checkpoint in this directory")
    p.add_argument("--resume", metavar="DIR", help="resume from a checkpoint directory written by --checkpoint-dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("methods", help="every method: family, hyperparameters with defaults, source")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("validate", help="check a sweep file and report every error; starts nothing")
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. search.trials_per_cell=2")
    p.add_argument("--address", help="the Ray cluster it will run on: resources are then not checked against this machine")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a sweep: per-cell search, then confirmation runs")
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. search.trials_per_cell=2")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else Ray on this machine)")
    p.add_argument("--storage", help="folder (local or shared, e.g. NFS) under which the sweep directory is made, "
                                    "or a storage URI (s3://bucket/sweeps, gs://, hdfs://, abfs://, file://)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the cells; start nothing")
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                   help="0: a line per finished trial; 1, 2: Ray Tune's own tables and worker logs")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a sweep after a crash, a kill, or on another cluster")
    p.add_argument("sweep", help="sweep name (under ./sweeps-runs), sweep directory, the sweep's YAML, or its URI (<storage URI>/<name>)")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else Ray on this machine)")
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                   help="0: a line per finished trial; 1, 2: Ray Tune's own tables and worker logs")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", help="cells, trials by state, best per cell, read from the sweep directory")
    p.add_argument("sweep", help="sweep name (under ./sweeps-runs), sweep directory, the sweep's YAML, or its URI (<storage URI>/<name>)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="claims with verdicts, duality gaps, tables and figures of a sweep, from its storage")
    p.add_argument("sweep", help="sweep name (under ./sweeps-runs), sweep directory, the sweep's YAML, or its URI")
    p.add_argument("--out", help="folder to write the report into (default: the sweep directory's report/)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="the sweep's MLflow UI and Optuna dashboard, bound to the loopback interface")
    p.add_argument("sweep", nargs="?", help="sweep whose MLflow store and studies to open (default: only the MLflow "
                                            "UI of ./mlflow.db or MLFLOW_TRACKING_URI)")
    p.add_argument("--port", type=int, default=0, help="MLflow UI port (default: a free one)")
    p.add_argument("--dashboard-port", type=int, default=0, help="optuna-dashboard port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback exposes every run")
    p.add_argument("--tracking-uri", help="MLflow store to open instead")
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    progress = logging.getLogger("orchestrator.progress")
    progress.setLevel(logging.INFO)
    progress.propagate = False
    if not any(isinstance(h, StdoutHandler) for h in progress.handlers):
        progress.addHandler(StdoutHandler())
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ConfigError, OverrideError) as exc:
        print(f"dualsweep: error: {exc}", file=sys.stderr)
        return 2
    except SpecError as exc:
        for problem in exc.problems:
            print(f"dualsweep: error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
