"""The `dualsweep` command."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainables import ConfigError

TABLE_COLUMNS = ("epoch", "loss", "knn_acc", "online_acc", "rank_repr", "rank_emb", "emb_std", "samples_per_s")


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def parse_overrides(pairs: list[str]) -> dict:
    for pair in pairs:
        if "=" not in pair or pair.startswith("="):
            raise UserError(f"override {pair!r}: expected key=value, e.g. method=vicreg or optim.lr=0.3")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(pairs))
    except OmegaConfBaseException as exc:
        raise UserError(f"overrides: {str(exc).splitlines()[0]}") from None


def format_row(metrics: dict) -> str:
    cells = []
    for key in TABLE_COLUMNS:
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
    from trainables import train

    config = parse_overrides(args.overrides)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualsweep", description="Sweeps of contrastive and non-contrastive SSL methods.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="run one trial without Ray; key=value overrides of the trial config")
    p.add_argument("overrides", nargs="*", help="e.g. method=vicreg data.name=digits epochs=30")
    p.add_argument("--checkpoint-dir", help="keep the latest epoch's checkpoint in this directory")
    p.add_argument("--resume", metavar="DIR", help="resume from a checkpoint directory written by --checkpoint-dir")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ConfigError) as exc:
        print(f"dualsweep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
