"""Writing a report: report.html (one self-contained page), report.md, results.csv, claims.json and
one PNG per figure, all in one flat directory (as MLflow logs it), written atomically.

The page shows, in order: the sweep's plan and state (a banner when the sweep is partial), the
claims and their verdicts (table#verdicts), the best result per cell and method (table#cells), the
duality gaps (table#gaps), provenance (with a WARNING when the trials differ in anything but the
device), then the figures. Every user string is HTML-escaped; figures are inlined as data URIs, so
the page needs no other file, no network, no script.

Atomicity: everything is written into a temporary directory beside the output directory, then
moved into place. A directory that a previous report made (it holds the marker file) or an empty
one is swapped whole; any other existing directory gets each file by a rename of its own
(report.html last; the PNGs of its previous report, listed in a manifest, are removed). A kill
therefore leaves the previous report or the new one, never half a file.
"""
from __future__ import annotations

import base64
import csv
import glob
import html
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

from orchestrator.report.claims import CANNOT, CONTRADICTED, INCONCLUSIVE, SUPPORTED, Verdict, judge_claims, num
from orchestrator.report.figures import Figure, make_figures
from orchestrator.report.model import ENDED, STATUSES, SweepInfo, TrialRecord, percent
from orchestrator.report.rounds import looks
from orchestrator.report.stats import Analysis, analyze

log = logging.getLogger(__name__)

MARKER = ".dualsweep-report"
# In a directory shared with other files: the names the last report wrote there.
MANIFEST = ".dualsweep-report-files"
PAGES = ("results.csv", "report.md", "claims.json", "report.html")  # moved in this order, the page last
# Provenance fields that may differ between the trials of one sweep without a warning: where a trial
# ran (a cluster mixes machines). Any other difference (data fingerprint, dualsweep version or
# commit, package versions, ...) is a WARNING.
DEVICE_KEYS = ("device", "devices", "host", "hostname", "node", "node_ip", "ip", "gpu", "gpus", "gpu_name", "cpu",
               "cpu_model", "cuda_devices")
VERDICT_CLASS = {SUPPORTED: "supported", CONTRADICTED: "contradicted", INCONCLUSIVE: "inconclusive", CANNOT: "cannot"}
MAX_CELLS_SHOWN = 8

Cell = Union[str, tuple[str, str]]  # text, or (text, css class)


@dataclass
class ReportFiles:
    out_dir: Path
    html: Path
    markdown: Path
    csv: Path
    claims_json: Path
    figures: list[Figure]
    verdicts: list[Verdict]
    analysis: Analysis
    partial: bool
    provenance_warnings: list[str] = field(default_factory=list)

    def all(self) -> list[Path]:
        """Every file of the report (what is logged to MLflow)."""
        return [self.html, self.markdown, self.csv, self.claims_json] + [f.path for f in self.figures]


@dataclass
class Table:
    id: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    note: str = ""


# --- provenance -----------------------------------------------------------------------------------

def provenance_values(trials: list[TrialRecord]) -> dict[str, dict[str, list[str]]]:
    """field -> value -> the keys of the trials that recorded it ("(missing)" for a trial that
    recorded provenance but not this field). Trials without provenance (not started) are left out."""
    recorded = [t for t in trials if t.provenance]
    fields = list(dict.fromkeys(k for t in recorded for k in t.provenance))
    out: dict[str, dict[str, list[str]]] = {}
    for key in fields:
        values: dict[str, list[str]] = {}
        for t in recorded:
            values.setdefault(str(t.provenance.get(key, "(missing)")), []).append(t.key)
        out[key] = values
    return out


def is_device_key(key: str) -> bool:
    low = key.lower()
    return low in DEVICE_KEYS or "device" in low


def provenance_problems(trials: list[TrialRecord]) -> tuple[list[str], list[str]]:
    """(warnings, notes): a warning per provenance field other than the device's in which the trials
    differ; notes for differing devices and for trials run from a tree with uncommitted changes."""
    warnings, notes = [], []
    for key, values in provenance_values(trials).items():
        if len(values) > 1:
            ranked = sorted(values.items(), key=lambda item: -len(item[1]))
            parts = []
            for i, (value, keys) in enumerate(ranked):
                named = "" if i == 0 else ": " + ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                parts.append(f"{value} ({len(keys)} trial{'s' if len(keys) != 1 else ''}{named})")
            text = f"trials differ in {key}: " + "; ".join(parts)
            (notes if is_device_key(key) else warnings).append(text)
        if key == "git_dirty":
            dirty = [k for v, ks in values.items() if v.lower() in ("true", "1", "yes") for k in ks]
            if dirty:
                notes.append(f"{len(dirty)} trial(s) ran from a dualsweep tree with uncommitted changes (git_dirty)")
    return warnings, notes


# --- tables -----------------------------------------------------------------------------------------

def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return num(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value)


def interval_text(interval: Optional[tuple[float, float]]) -> str:
    return f"[{num(interval[0])}, {num(interval[1])}]" if interval else ""


def cells_text(cells: list[str]) -> str:
    shown = " ".join(cells[:MAX_CELLS_SHOWN])
    return shown + (f" +{len(cells) - MAX_CELLS_SHOWN} more" if len(cells) > MAX_CELLS_SHOWN else "")


def state_counts(trials: list[TrialRecord]) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    return {s: c for s, c in counts.items() if c}


def ended_count(trials: list[TrialRecord]) -> int:
    return sum(t.status in ENDED for t in trials)


def partial_text(info: SweepInfo, trials: list[TrialRecord]) -> str:
    return f"partial report: {ended_count(trials)} of {info.planned_text} trials ended"


def confidence_text(info: SweepInfo) -> str:
    """"95%", or with seeds until decided "99% (alpha 0.05 over 5 looks)"."""
    if info.max_seeds is None:
        return percent(info.confidence)
    n = looks(len(info.seeds), info.max_seeds)
    return f"{percent(info.confidence)} (alpha {(1 - info.confidence) * n:.3g} over {n} looks)"


def seeds_text(info: SweepInfo) -> str:
    first = ", ".join(str(s) for s in info.seeds)
    if info.max_seeds is None:
        return first
    return f"{first}, then one more per round for the cells of inconclusive claims, at most {info.max_seeds} per cell"


def plan_tables(info: SweepInfo, trials: list[TrialRecord]) -> list[Table]:
    rounds = [["seeds until decided", info.stopped or "not ended yet"]] if info.max_seeds is not None else []
    plan = Table("plan", "Plan", ["setting", "value"], [
        ["metric", f"{info.metric} ({info.mode})"],
        *[[f"grid: {axis}", ", ".join(str(v) for v in values)] for axis, values in info.grid.items()],
        ["cells", str(len(info.cells))],
        ["search trials per cell", str(info.trials_per_cell)],
        ["confirmation seeds", seeds_text(info)],
        *rounds,
        ["confidence of every interval", confidence_text(info)],
        ["planned trials", info.planned_text],
    ])
    by_phase: dict[tuple[str, str], int] = {}
    for t in trials:
        by_phase[(t.phase, t.status)] = by_phase.get((t.phase, t.status), 0) + 1
    state = Table("state", "State", ["phase", "status", "trials"],
                  [[phase, status, str(n)] for (phase, status), n in sorted(by_phase.items())]
                  + [["all", "ended", f"{ended_count(trials)} of {info.planned_text} planned"]])
    failed = [[t.key, t.error or "(no message)"] for t in trials if t.status == "failed"]
    failures = [Table("failures", "Failed trials", ["trial", "error"], failed,
                      "Each ran out of retries (max_failures); its traceback is in its MLflow run.")] if failed else []
    return [plan, state, *failures]


def verdict_table(verdicts: list[Verdict], confidence: float) -> Table:
    rows: list[list[Cell]] = [[v.id, v.kind, v.statement, (v.verdict, "verdict " + VERDICT_CLASS.get(v.verdict, "")),
                               num(v.statistic) if v.statistic is not None else "", interval_text(v.interval),
                               str(v.n), cells_text(v.cells_used), v.detail] for v in verdicts]
    return Table("verdicts", "Claims and verdicts", ["claim", "kind", "statement", "verdict", "statistic",
                                                     f"{percent(confidence)} interval", "n", "cells", "detail"], rows,
                 "" if verdicts else "This sweep declares no claims.")


def cells_table(analysis: Analysis) -> Table:
    rows: list[list[Cell]] = []
    for r in analysis.results:
        c = r.confirm
        spread = " / ".join(num(x) for x in r.spread) if r.spread else ""
        counts = ", ".join(f"{s} {n}" for s, n in r.counts.items())
        config = fmt(r.best_params)
        if r.confirmed_params is not None and r.confirmed_params != r.best_params:
            config += f" (confirmed: {fmt(r.confirmed_params)})"
        rows.append([r.cell.id, r.group_label, r.method, r.family, config, num(r.best_value) if r.best_value is not None else "",
                     num(c.mean) if c else "", interval_text(c.interval) if c else "", str(c.n) if c else "0",
                     spread, counts])
    return Table("cells", f"Per cell and method ({analysis.info.metric})",
                 ["cell", "comparison group", "method", "family", "best config", "best search value",
                  "confirmation mean", f"{percent(analysis.confidence)} interval", "n", "search min / median / max",
                  "search trials"], rows)


def gaps_table(analysis: Analysis) -> Table:
    rows: list[list[Cell]] = []
    for g in analysis.gaps:
        d = g.difference
        a = f"{g.a} ({g.method_a})" if g.kind == "family" else g.a
        b = f"{g.b} ({g.method_b})" if g.kind == "family" else g.b
        rows.append([g.group, g.kind, a, b, num(d.diff) if d else "", interval_text(d.interval) if d else "",
                     num(d.df) if d and d.df is not None else "", f"{d.n_a} vs {d.n_b}" if d else "",
                     f"{g.cell_a} {g.cell_b}"])
    level = percent(analysis.confidence)
    return Table("gaps", f"Duality gaps ({analysis.info.metric}, A - B, Welch {level} interval)",
                 ["comparison group", "kind", "A", "B", "A - B", f"{level} interval", "df", "n", "cells"], rows,
                 "" if rows else "No gap yet: it needs confirmation results of two families or named methods in one group.")


def provenance_table(trials: list[TrialRecord]) -> Table:
    rows: list[list[Cell]] = []
    for key, values in provenance_values(trials).items():
        text = "; ".join(f"{v} ({len(ks)} trial{'s' if len(ks) != 1 else ''})" for v, ks in values.items())
        rows.append([key, text])
    return Table("provenance", "Provenance", ["field", "values (trials)"], rows,
                 "" if rows else "No trial recorded provenance.")


# --- HTML -------------------------------------------------------------------------------------------

def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for cell in row:
            text, cls = (cell if isinstance(cell, tuple) else (cell, ""))
            cells.append(f'<td class="{esc(cls)}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{esc(table.note)}</p>' if table.note else ""
    return (f'<h2>{esc(table.title)}</h2>{note}<table id="{esc(table.id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top;text-align:left}th{background:#f2f2f2}
td.verdict{font-weight:bold;white-space:nowrap}td.supported{background:#c8e6c9}td.contradicted{background:#ffcdd2}
td.inconclusive{background:#fff3cd}td.cannot{background:#e0e0e0}
.banner{padding:.7em 1em;margin:1em 0;font-weight:bold;border-radius:4px}
.partial{background:#ffe0b2;border:2px solid #ef6c00}.warning{background:#ffcdd2;border:2px solid #c62828}
.notes{background:#eef;border:1px solid #99c;font-weight:normal}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#444}
.note{color:#555;font-size:.9em}
"""


def html_page(info: SweepInfo, trials: list[TrialRecord], tables: dict[str, Table], figures: list[tuple[Figure, bytes]],
              warnings: list[str], notes: list[str], generated: str) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{esc(('[partial] ' if info.partial else '') + 'dualsweep report: ' + info.name)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>dualsweep report: {esc(info.name)}</h1>"]
    if info.description:
        parts.append(f"<p>{esc(info.description)}</p>")
    parts.append(f'<p class="note">Generated {esc(generated)}. Metric {esc(info.metric)} ({esc(info.mode)}); '
                 f"intervals are {esc(confidence_text(info))}.</p>")
    if info.partial:
        parts.append(f'<div class="banner partial" id="partial">{esc(partial_text(info, trials))}: the sweep is '
                     f"still running or was stopped; every number below is provisional.</div>")
    for warning in warnings:
        parts.append(f'<div class="banner warning">WARNING: {esc(warning)}</div>')
    parts.append(html_table(tables["plan"]) + html_table(tables["state"]))
    if "failures" in tables:
        parts.append(html_table(tables["failures"]))
    parts.append(html_table(tables["verdicts"]))
    parts.append(html_table(tables["cells"]))
    parts.append(html_table(tables["gaps"]))
    parts.append(html_table(tables["provenance"]))
    for warning in warnings:
        parts.append(f'<p class="banner warning">WARNING: {esc(warning)}</p>')
    for note in notes:
        parts.append(f'<p class="banner notes">Note: {esc(note)}</p>')
    parts.append("<h2>Figures</h2>" if figures else "<h2>Figures</h2><p class=\"note\">No figure: no results yet.</p>")
    for figure, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure id="fig-{esc(figure.name)}"><img alt="{esc(figure.title)}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{esc(figure.title)}: {esc(figure.caption)}'
                     f"</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- markdown ---------------------------------------------------------------------------------------

def md_escape(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(table: Table) -> str:
    lines = [f"## {md_escape(table.title)}", ""]
    if table.note:
        lines += [md_escape(table.note), ""]
    if table.rows:
        lines.append("| " + " | ".join(md_escape(h) for h in table.headers) + " |")
        lines.append("|" + "---|" * len(table.headers))
        for row in table.rows:
            texts = [cell[0] if isinstance(cell, tuple) else cell for cell in row]
            if table.id == "verdicts":
                texts[3] = f"**{texts[3]}**"
            lines.append("| " + " | ".join(md_escape(t) for t in texts) + " |")
        lines.append("")
    return "\n".join(lines)


def markdown_page(info: SweepInfo, trials: list[TrialRecord], tables: dict[str, Table], figures: list[Figure],
                  warnings: list[str], notes: list[str], generated: str) -> str:
    lines = [f"# dualsweep report: {md_escape(info.name)}", ""]
    if info.description:
        lines += [md_escape(info.description), ""]
    lines += [f"Generated {generated}. Metric {info.metric} ({info.mode}); intervals are {confidence_text(info)}.", ""]
    if info.partial:
        lines += [f"> **{partial_text(info, trials)}**: the sweep is still running or was stopped; every number "
                  f"below is provisional.", ""]
    lines += [f"> **WARNING**: {md_escape(w)}" for w in warnings] + ([""] if warnings else [])
    for key in ("plan", "state", "failures", "verdicts", "cells", "gaps", "provenance"):
        if key in tables:
            lines.append(md_table(tables[key]))
    lines += [f"Note: {md_escape(n)}" for n in notes] + ([""] if notes else [])
    lines += ["## Figures", ""]
    for figure in figures:
        lines += [f"![{md_escape(figure.title)}]({figure.path.name})", "",
                  f"*{md_escape(figure.title)}*: {md_escape(figure.caption)}", ""]
    return "\n".join(lines)


# --- CSV and JSON -----------------------------------------------------------------------------------

def csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(jsonable(value))
    return str(value)


def results_rows(info: SweepInfo, trials: list[TrialRecord]) -> tuple[list[str], list[dict[str, str]]]:
    """One row per trial. Columns: key, cell, one per grid axis but the method (by its dotted key),
    method, family, phase, seed, one per searched param (its dotted key), one per final metric,
    status, stopped_early, epochs_run, epochs_planned, run_id, error. A param or metric whose name is
    already a column gets the prefix "param." or "metric."."""
    axes = [a for a in dict.fromkeys(list(info.grid) + [k for t in trials for k in t.cell_values]) if a != "method"]
    fixed = ["key", "cell", *axes, "method", "family", "phase", "seed"]
    tail = ["status", "stopped_early", "epochs_run", "epochs_planned", "run_id", "error"]
    taken = set(fixed) | set(tail)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    param_cols = {p: (f"param.{p}" if p in taken else p) for p in params}
    taken |= set(param_cols.values())
    metrics = list(dict.fromkeys(k for t in trials for k in t.metrics))
    metric_cols = {m: (f"metric.{m}" if m in taken else m) for m in metrics}
    columns = fixed + list(param_cols.values()) + list(metric_cols.values()) + tail
    rows = []
    for t in trials:
        row = {"key": t.key, "cell": t.cell, "method": t.method, "family": t.family, "phase": t.phase,
               "seed": csv_value(t.seed), "status": t.status, "stopped_early": str(t.stopped_early).lower(),
               "epochs_run": str(t.epochs_run), "epochs_planned": str(t.epochs_planned), "run_id": t.run_id or "",
               "error": t.error or ""}
        for a in axes:
            row[a] = csv_value(t.cell_values.get(a))
        for p, col in param_cols.items():
            row[col] = csv_value(t.params.get(p))
        for m, col in metric_cols.items():
            row[col] = csv_value(t.metrics.get(m))
        rows.append(row)
    return columns, rows


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN and infinities become null, tuples lists, anything else its text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def claims_document(info: SweepInfo, trials: list[TrialRecord], analysis: Analysis, verdicts: list[Verdict],
                    warnings: list[str], notes: list[str], generated: str) -> dict[str, Any]:
    return jsonable({
        "sweep": info.name, "metric": info.metric, "mode": info.mode, "generated": generated,
        "partial": info.partial, "trials_ended": ended_count(trials), "trials_planned": info.planned_trials,
        "confidence": analysis.confidence,
        "seeds_until_decided": None if info.max_seeds is None else {
            "max_seeds": info.max_seeds, "looks": looks(len(info.seeds), info.max_seeds), "stopped": info.stopped},
        "trials_by_status": state_counts(trials),
        "verdicts": [v.to_dict() for v in verdicts],
        "cells": [r.to_dict() for r in analysis.results],
        "gaps": [g.to_dict() for g in analysis.gaps],
        "provenance": {k: {v: len(ks) for v, ks in values.items()} for k, values in provenance_values(trials).items()},
        "provenance_warnings": warnings, "provenance_notes": notes,
    })


# --- writing ----------------------------------------------------------------------------------------

def write_report(info: SweepInfo, trials: list[TrialRecord], out_dir: Path, *,
                 pairs: Optional[list[tuple[str, str]]] = None, strict_figures: bool = False) -> ReportFiles:
    """Compute and write the whole report into out_dir (created; replaced atomically)."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    analysis = analyze(info, trials, pairs)
    verdicts = judge_claims(info, trials, analysis)
    warnings, notes = provenance_problems(trials)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the report directory is meant to be read by others
    try:
        figures = make_figures(analysis, verdicts, tmp, strict=strict_figures)
        pngs = [(f, f.path.read_bytes()) for f in figures]
        tables = {t.id: t for t in plan_tables(info, trials) + [verdict_table(verdicts, analysis.confidence),
                                                                 cells_table(analysis),
                                                                 gaps_table(analysis), provenance_table(trials)]}
        (tmp / "report.html").write_text(html_page(info, trials, tables, pngs, warnings, notes, generated), encoding="utf-8")
        (tmp / "report.md").write_text(markdown_page(info, trials, tables, figures, warnings, notes, generated), encoding="utf-8")
        columns, rows = results_rows(info, trials)
        with open(tmp / "results.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        document = claims_document(info, trials, analysis, verdicts, warnings, notes, generated)
        (tmp / "claims.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    placed = [Figure(f.name, f.title, out_dir / f.path.name, f.caption) for f in figures]
    return ReportFiles(out_dir, out_dir / "report.html", out_dir / "report.md", out_dir / "results.csv",
                       out_dir / "claims.json", placed, verdicts, analysis, info.partial, warnings)


def publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished report in tmp to out_dir."""
    if not out_dir.exists():
        (tmp / MARKER).write_text("written by dualsweep report; this directory is replaced by the next report\n")
        os.rename(tmp, out_dir)
        return
    if (out_dir / MARKER).exists() or not any(out_dir.iterdir()):
        (tmp / MARKER).write_text("written by dualsweep report; this directory is replaced by the next report\n")
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    # A directory with files of its own: replace ours one by one, the page last.
    log.info("report: %s holds other files; replacing the report's files one by one", out_dir)
    pngs = sorted(p.name for p in tmp.glob("*.png"))
    manifest = out_dir / MANIFEST
    before = manifest.read_text().split() if manifest.is_file() else []
    (tmp / MANIFEST).write_text("\n".join(sorted(set(before) | set(pngs) | set(PAGES))) + "\n")
    os.replace(tmp / MANIFEST, manifest)  # first: a kill below leaves no file of ours unlisted
    for name in pngs + list(PAGES):
        os.replace(tmp / name, out_dir / name)
    for name in before:
        if name.endswith(".png") and name not in pngs and "/" not in name:
            (out_dir / name).unlink(missing_ok=True)
    (tmp / MANIFEST).write_text("\n".join(pngs + list(PAGES)) + "\n")
    os.replace(tmp / MANIFEST, manifest)


def remove_leftovers(out_dir: Path) -> None:
    """Temporary and old directories that a killed report left beside out_dir."""
    for path in out_dir.parent.glob(glob.escape(f".{out_dir.name}.") + "*-*"):
        kind, _, rest = path.name[len(out_dir.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not path.is_dir():
            continue
        pid = rest.split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue  # another report is being written right now
        shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
