"""Where a sweep stands, read from its storage alone (no Ray cluster): the per-cell
table that `run`, `resume` and `status` print, with the family gap per comparison group once
confirmation results exist. The numbers are the report's (orchestrator.report.stats)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

from orchestrator.report.stats import analyze
from orchestrator.storage import load_sweep_dir, optuna_url
from orchestrator.report.model import percent
from orchestrator.sweep_report import plan_of, read_trials

# Failed trials whose error `status` prints; the report lists them all.
MAX_FAILURES_LISTED = 10


def status_table(sweep_dir: Path) -> str:
    loaded = load_sweep_dir(sweep_dir)
    spec = loaded.spec
    trials = read_trials(loaded)
    info = plan_of(loaded, partial=True)
    analysis = analyze(info, trials)
    states = ", ".join(f"{n} {s}" for s, n in sorted(Counter(t.status for t in trials).items())) or "none started"
    lines = [f"sweep {spec.name}: {len(trials)} of {info.planned_text} planned trials ({states})"]
    retried = [t for t in trials if t.retries]
    if retried:
        lines.append(f"retries after failures: {sum(t.retries for t in retried)} ("
                     + ", ".join(f"{t.key} {t.retries}" for t in retried[:MAX_FAILURES_LISTED])
                     + (", ..." if len(retried) > MAX_FAILURES_LISTED else "") + ")")
    if info.stopped:
        lines.append(f"seeds until decided: {info.stopped}")
    lines.append(f"{'cell':5} {'search ran/stopped/diverged/failed':>35} {'best ' + spec.metric:>14} "
                 f"{'confirm mean':>13} {'sd':>7} {'n':>3}  label")
    for result in analysis.results:
        counts = result.counts
        ran = sum(counts.values())
        search = "/".join(str(n) for n in (ran, counts.get("stopped_early", 0), counts.get("diverged", 0),
                                           counts.get("failed", 0)))
        confirm = result.confirm
        lines.append(f"{result.cell.id:5} {search:>35} "
                     f"{fmt(result.best_value):>14} {fmt(confirm.mean if confirm else None):>13} "
                     f"{fmt(confirm.sd if confirm else None):>7} {confirm.n if confirm else 0:>3}  {result.cell.label}")
    failed = [t for t in trials if t.status == "failed"]
    for trial in failed[:MAX_FAILURES_LISTED]:
        lines.append(f"failed {trial.key}: {trial.error or '(no message)'}")
    if len(failed) > MAX_FAILURES_LISTED:
        lines.append(f"... and {len(failed) - MAX_FAILURES_LISTED} more failed trials (all in the report's results.csv)")
    gaps = [gap for gap in analysis.family_gaps if gap.difference is not None]
    if gaps:
        lines.append(f"family gap ({spec.metric}, confirmation means, {percent(info.confidence)} Welch interval):")
        for gap in gaps:
            d = gap.difference
            interval = f" [{d.lo:+.4f}, {d.hi:+.4f}]" if d.interval else " (one seed: no interval)"
            lines.append(f"  {gap.group}: {gap.a} ({gap.method_a}) - {gap.b} ({gap.method_b}) = {d.diff:+.4f}{interval}")
    lines.append(f"Report: dualsweep report {sweep_dir}")
    lines.append(f"Browse: dualsweep ui {sweep_dir}   (MLflow {spec.tracking.uri}; "
                 f"Optuna: optuna-dashboard {optuna_url(sweep_dir)})")
    return "\n".join(lines)


def fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"
