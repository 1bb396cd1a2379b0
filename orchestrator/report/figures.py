"""The report's figures: matplotlib (Agg canvas, no pyplot state), PNG, each titled, with labelled
axes and a legend.

What is drawn depends on the grid's axes:
- metric vs batch size per method (log2 x), when an axis is named batch_size;
- metric vs output dim per projector shape and method, when an axis is a projector spec
  ("1024-1024-128": the last number is the output dim) or an output dim;
- effective rank (rank_emb) vs output dim, with the rank = output dim line, likewise;
- metric vs <axis> per method for every other numeric axis; a bar chart of the metric per method
  and comparison group when no such axis exists;
- a heatmap of each family gap over the first two non-method axes (when there are two);
- singular-value spectra per method (log y) from the trials' spectra (every list of numbers in it),
  from each method's best confirmed cell;
- learning curves (metric vs epoch) of the confirmation runs, per comparison group;
- one figure per claim with the numbers behind its verdict.
Points are confirmation means with their interval (at the analysis's confidence); a sweep without
confirmation results yet shows each cell's best search trial instead, and the caption says so.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Callable, Optional

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from orchestrator.report.claims import CANNOT, CONTRADICTED, INCONCLUSIVE, SUPPORTED, Verdict
from orchestrator.report.model import (CONFIRM, METHOD_AXIS, axis_order, finite, group_key, group_label, is_number,
                                       percent, same_value)
from orchestrator.report.stats import Analysis, CellResult, Estimate

log = logging.getLogger(__name__)

MAX_PANELS = 9
MAX_SPECTRA_KEYS = 4
DPI = 100
PROJECTOR_SPEC = re.compile(r"\d+(-\d+)*")
OUT_DIM_NAMES = ("out_dim", "output_dim", "emb_dim", "embedding_dim", "proj_dim", "projector_dim", "dim")
VERDICT_COLORS = {SUPPORTED: "#2e7d32", CONTRADICTED: "#c62828", INCONCLUSIVE: "#f9a825", CANNOT: "#757575"}


@dataclass
class Figure:
    name: str  # file stem, unique within a report
    title: str
    path: Path
    caption: str


# --- helpers --------------------------------------------------------------------------------------

def new_figure(width: float, height: float) -> MplFigure:
    fig = MplFigure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "figure"


def metric_unit(metric: str, values: list[float]) -> str:
    name = metric.lower()
    if "acc" in name:
        return "%" if values and max(abs(v) for v in values) > 1.5 else "fraction correct"
    if name.startswith("rank") or name.startswith("n_collapsed"):
        return "dimensions"
    if name.endswith("per_s"):
        return "samples/s"
    if "loss" in name:
        return "loss value"
    return "unitless"


def metric_label(metric: str, values: list[float]) -> str:
    return f"{metric} ({metric_unit(metric, values)})"


def is_batch_axis(axis: str) -> bool:
    return axis.split(".")[-1] in ("batch_size", "batch")


def projector_out_dim(value: Any) -> Optional[int]:
    """The output dim of a projector spec string ("8192-8192-256" -> 256); None for "none"."""
    text = str(value).strip()
    if is_number(value):
        return int(float(value))
    if PROJECTOR_SPEC.fullmatch(text):
        return int(text.split("-")[-1])
    return None


def output_dim_axis(analysis: Analysis) -> Optional[tuple[str, Callable[[Any], Optional[float]], bool]]:
    """(axis, value -> output dim, is a projector axis) for the first axis that sets the output dim."""
    for axis in analysis.info.non_method_axes:
        last = axis.split(".")[-1]
        values = analysis.info.grid[axis]
        if last.endswith("projector"):
            if sum(projector_out_dim(v) is not None for v in values) >= 2:
                return axis, lambda v: (None if projector_out_dim(v) is None else float(projector_out_dim(v))), True  # type: ignore[arg-type]
        elif last in OUT_DIM_NAMES and all(is_number(v) for v in values) and len(values) >= 2:
            return axis, lambda v: finite(v), False
    return None


def projector_shapes(values: list[Any]) -> dict[str, str]:
    """Projector spec -> the shape it belongs to, in Garrido's notation. Two readings: the hidden
    layers fixed ("8192-8192-d") or every layer as wide as the output ("d-d-d"); the one giving
    fewer shapes wins (ties: hidden layers fixed)."""
    specs = [str(v) for v in values if projector_out_dim(v) is not None and not is_number(v)]
    hidden = {s: "-".join(s.split("-")[:-1] + ["d"]) for s in specs}
    tied = {s: "-".join("d" if part == s.split("-")[-1] else part for part in s.split("-")) for s in specs}
    return tied if len(set(tied.values())) < len(set(hidden.values())) else hidden


def scale_for(values: list[float], force_log2: bool = False) -> str:
    positive = [v for v in values if v > 0]
    if force_log2 and len(positive) == len(values) and values:
        return "log2"
    if len(positive) == len(values) and len(values) >= 2 and max(values) / min(values) >= 8:
        return "log2" if all(math.log2(v).is_integer() for v in values) else "log10"
    return "linear"


def apply_xscale(ax: Any, scale: str, ticks: list[float]) -> str:
    if scale == "log2":
        ax.set_xscale("log", base=2)
    elif scale == "log10":
        ax.set_xscale("log", base=10)
    if ticks and scale != "linear":
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
    return {"log2": ", log2 scale", "log10": ", log scale"}.get(scale, "")


def method_colors(analysis: Analysis) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    methods = list(dict.fromkeys(r.method for r in analysis.results))
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def point(r: CellResult, metric: str, source: str) -> Optional[Estimate]:
    """A cell's point: its confirmation mean and interval, or its best search trial's value."""
    if source == "confirm":
        return r.estimate(metric)
    best = next((t for t in r.trials if t.key == r.best_trial), None)
    value = best.value(metric) if best else None
    return None if value is None else Estimate(value, 1)


def source_of(analysis: Analysis, metric: str) -> Optional[str]:
    if any(r.samples(metric) for r in analysis.results):
        return "confirm"
    if any(r.best_trial and point(r, metric, "search") for r in analysis.results):
        return "search"
    return None


def source_text(source: str, level: str) -> str:
    return (f"points are confirmation means over seeds with {level} t intervals" if source == "confirm" else
            "no confirmation results yet: points are each cell's best search trial (no interval)")


def errorbar(ax: Any, xs: list[float], points: list[Estimate], **kwargs: Any) -> None:
    means = [p.mean for p in points]
    low = [p.mean - p.lo if p.lo is not None else 0.0 for p in points]
    high = [p.hi - p.mean if p.hi is not None else 0.0 for p in points]
    ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, linewidth=1.5, markersize=4, **kwargs)


def grid_layout(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return math.ceil(n / cols), cols


class Writer:
    def __init__(self, analysis: Analysis, out_dir: Path, strict: bool):
        self.analysis = analysis
        self.out_dir = out_dir
        self.strict = strict
        self.figures: list[Figure] = []
        self.colors = method_colors(analysis)
        self.suffix = " (partial sweep)" if analysis.info.partial else ""
        self.level = percent(analysis.confidence)  # "95%": the confidence of every interval drawn

    def save(self, fig: MplFigure, name: str, title: str, caption: str) -> None:
        fig.suptitle(title + self.suffix, fontsize=11)
        names = {f.name for f in self.figures}
        stem, k = slug(name), 2
        while stem in names:
            stem, k = f"{slug(name)}_{k}", k + 1
        path = self.out_dir / f"{stem}.png"
        fig.savefig(path, dpi=DPI)
        self.figures.append(Figure(stem, title + self.suffix, path, caption))

    def attempt(self, what: str, draw: Callable[[], None]) -> None:
        try:
            draw()
        except Exception:  # noqa: BLE001 - one odd figure must not cost the whole report
            if self.strict:
                raise
            log.exception("report: could not draw %s", what)

    # metric vs an axis, per method (and projector shape)
    def along_axis(self, *, name: str, title: str, axis: str, metric: str, x_of: Callable[[Any], Optional[float]],
                   xlabel: str, xunit: str, exclude: tuple[str, ...], line_of: Callable[[CellResult], str],
                   force_log2: bool = False, diagonal: bool = False, caption: str = "") -> bool:
        analysis = self.analysis
        source = source_of(analysis, metric)
        if source is None:
            return False
        panels: dict[tuple, dict[str, list[tuple[float, Estimate]]]] = {}
        for r in analysis.results:
            x = x_of(r.cell.values.get(axis))
            p = point(r, metric, source)
            if x is None or p is None:
                continue
            key = group_key(r.cell.values, (METHOD_AXIS, axis) + exclude)
            panels.setdefault(key, {}).setdefault(line_of(r), []).append((x, p))
        if not panels:
            return False
        keys = list(panels)[:MAX_PANELS]
        rows, cols = grid_layout(len(keys))
        fig = new_figure(4.6 * cols, 3.4 * rows + 0.9)
        axes = fig.subplots(rows, cols, squeeze=False)
        all_x = sorted({x for k in keys for line in panels[k].values() for x, _ in line})
        all_y = [p.mean for k in keys for line in panels[k].values() for _, p in line]
        scale = scale_for(all_x, force_log2)
        for i, key in enumerate(keys):
            ax = axes[i // cols][i % cols]
            for line, pts in panels[key].items():
                pts.sort(key=lambda item: item[0])
                method = line.split(" ")[0]
                errorbar(ax, [x for x, _ in pts], [p for _, p in pts], label=line, color=self.colors.get(method))
            if diagonal:
                ax.plot(all_x, all_x, linestyle="--", color="grey", linewidth=1, label="rank = output dim")
            ax.set_xlabel(f"{xlabel} ({xunit}{apply_xscale(ax, scale, all_x)})")
            ax.set_ylabel(metric_label(metric, all_y))
            ax.set_title(group_label(key) if key else "all cells", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        for j in range(len(keys), rows * cols):
            axes[j // cols][j % cols].set_visible(False)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        more = f"; showing {len(keys)} of {len(panels)} panels" if len(panels) > len(keys) else ""
        self.save(fig, name, title, f"{caption}{'; ' if caption else ''}{source_text(source, self.level)}{more}.")
        return True


def axis_xlabel(axis: str, scale_text: str = "") -> str:
    if is_batch_axis(axis):
        return f"batch size (samples per step{scale_text})"
    if axis.split(".")[-1].endswith("projector"):
        return f"{axis} (projector spec, layer widths{scale_text})"
    return f"{axis} (grid value{scale_text})"


def along(w: Writer, **kwargs: Any) -> bool:
    drawn = [False]

    def draw() -> None:
        drawn[0] = w.along_axis(**kwargs)

    w.attempt(kwargs["name"], draw)
    return drawn[0]


# --- the figures ----------------------------------------------------------------------------------

def sweep_figures(w: Writer) -> None:
    info = w.analysis.info
    metric = info.metric
    drawn_metric = False
    out = output_dim_axis(w.analysis)
    for axis in info.non_method_axes:
        values = info.grid[axis]
        if out and axis == out[0]:
            continue
        if is_batch_axis(axis) and all(is_number(v) for v in values):
            drawn_metric |= along(
                w, name=f"{metric}_vs_batch_size", title=f"{metric} vs batch size per method", axis=axis, metric=metric,
                x_of=finite, xlabel="batch size", xunit="samples per step", exclude=(), line_of=lambda r: r.method,
                force_log2=True, caption=f"{metric} against the batch size ({axis}), one line per method")
        elif len(values) >= 2 and all(is_number(v) for v in values):
            drawn_metric |= along(
                w, name=f"{metric}_vs_{axis}", title=f"{metric} vs {axis} per method", axis=axis, metric=metric,
                x_of=finite, xlabel=axis, xunit="grid value", exclude=(), line_of=lambda r: r.method,
                caption=f"{metric} against {axis}, one line per method")
    if out:
        axis, x_of, is_projector = out
        shapes = projector_shapes(info.grid[axis]) if is_projector else {}

        def line_of(r: CellResult) -> str:
            shape = shapes.get(str(r.cell.values.get(axis)))
            return f"{r.method} {shape}" if shape else r.method

        what = "per projector and method" if is_projector else "per method"
        drawn_metric |= along(
            w, name=f"{metric}_vs_output_dim", title=f"{metric} vs output dim {what}", axis=axis, metric=metric,
            x_of=x_of, xlabel="output dim", xunit="embedding dimensions", exclude=(), line_of=line_of,
            force_log2=True, caption=f"{metric} against the output dim (from {axis}), one line per method"
                    + (" and projector shape (d: the output dim)" if is_projector else ""))
        if any("rank_emb" in t.metrics for t in w.analysis.trials):
            along(
                w, name="rank_emb_vs_output_dim", title=f"effective rank of the embedding vs output dim {what}", axis=axis,
                metric="rank_emb", x_of=x_of, xlabel="output dim", xunit="embedding dimensions", exclude=(), line_of=line_of,
                force_log2=True, diagonal=True, caption="effective rank (rank_emb) of the embedding against the output dim; the dashed "
                                       "line is the most it can be")
    if not drawn_metric:
        w.attempt("metric per method", lambda: bars(w))


def bars(w: Writer) -> None:
    analysis = w.analysis
    metric = analysis.info.metric
    source = source_of(analysis, metric)
    if source is None:
        return
    keys = [k for k, members in analysis.groups.items() if any(point(r, metric, source) for r in members)][:MAX_PANELS]
    if not keys:
        return
    rows, cols = grid_layout(len(keys))
    fig = new_figure(4.6 * cols, 3.4 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    values = [p.mean for k in keys for r in analysis.groups[k] for p in [point(r, metric, source)] if p]
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        members = [(r, point(r, metric, source)) for r in analysis.groups[key]]
        members = [(r, p) for r, p in members if p is not None]
        for j, (r, p) in enumerate(members):
            low = p.mean - p.lo if p.lo is not None else 0.0
            high = p.hi - p.mean if p.hi is not None else 0.0
            ax.bar(j, p.mean, yerr=[[low], [high]], capsize=4, color=w.colors.get(r.method), label=f"{r.method} ({r.family})")
        ax.set_xticks(range(len(members)))
        ax.set_xticklabels([r.method for r, _ in members], rotation=30, fontsize=8)
        ax.set_xlabel("method (name)")
        ax.set_ylabel(metric_label(metric, values))
        ax.set_title(group_label(key), fontsize=9)
        ax.legend(fontsize=7)
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    w.save(fig, f"{metric}_per_method", f"{metric} per method", f"{metric} of each method per comparison group; "
                                                               f"{source_text(source, w.level)}.")


def gap_heatmaps(w: Writer) -> None:
    analysis = w.analysis
    axes_ = [a for a in analysis.info.non_method_axes if analysis.info.grid[a]]
    if len(axes_) < 2 or not analysis.family_gaps:
        return
    x_axis, y_axis, rest = axes_[0], axes_[1], axes_[2:]
    xs, ys = axis_order(analysis.info.grid[x_axis]), axis_order(analysis.info.grid[y_axis])
    pairs = list(dict.fromkeys((g.a, g.b) for g in analysis.family_gaps))[:3]
    combos = list(product(*(axis_order(analysis.info.grid[a]) for a in rest)))[:6] or [()]
    metric = analysis.info.metric
    for fa, fb in pairs:
        gaps = [g for g in analysis.family_gaps if (g.a, g.b) == (fa, fb) and g.difference is not None]
        rows, cols = grid_layout(len(combos))
        fig = new_figure(max(6.5, 1.1 * len(xs) + 3.5) * cols, (max(3.2, 0.8 * len(ys) + 1.8)) * rows + 0.8)
        axes = fig.subplots(rows, cols, squeeze=False)
        limit = max([abs(g.difference.diff) for g in gaps] + [1e-12])  # type: ignore[union-attr]
        for i, combo in enumerate(combos):
            ax = axes[i // cols][i % cols]
            matrix = np.full((len(ys), len(xs)), np.nan)
            halves: dict[tuple[int, int], Optional[float]] = {}
            for g in gaps:
                r = analysis.result(g.cell_a, g.method_a)
                if r is None or any(not same_value(r.cell.values.get(a), v) for a, v in zip(rest, combo)):
                    continue
                xi = next((k for k, v in enumerate(xs) if same_value(v, r.cell.values.get(x_axis))), None)
                yi = next((k for k, v in enumerate(ys) if same_value(v, r.cell.values.get(y_axis))), None)
                if xi is None or yi is None:
                    continue
                d = g.difference
                matrix[yi, xi] = d.diff  # type: ignore[union-attr]
                halves[(yi, xi)] = None if d.interval is None else (d.hi - d.lo) / 2  # type: ignore[union-attr,operator]
            cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")
            ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto", origin="lower")
            image = ax.images[-1]
            for yi in range(len(ys)):
                for xi in range(len(xs)):
                    value = matrix[yi, xi]
                    if np.isnan(value):
                        text = "n/a"
                    else:
                        half = halves.get((yi, xi))
                        text = f"{value:.3g}" + (f"\n±{half:.2g}" if half is not None else "\n(n<2)")
                    dark = not np.isnan(value) and abs(value) > 0.6 * limit
                    ax.text(xi, yi, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels([str(v) for v in xs], fontsize=7, rotation=20)
            ax.set_yticks(range(len(ys)))
            ax.set_yticklabels([str(v) for v in ys], fontsize=7)
            ax.set_xlabel(axis_xlabel(x_axis))
            ax.set_ylabel(axis_xlabel(y_axis))
            ax.set_title(", ".join(f"{a}={v}" for a, v in zip(rest, combo)) or "all cells", fontsize=9)
            bar = fig.colorbar(image, ax=ax)
            bar.set_label(f"{metric} gap, A - B ({metric_unit(metric, [abs(x) for x in matrix.flatten() if not np.isnan(x)])})",
                          fontsize=8)
        for j in range(len(combos), rows * cols):
            axes[j // cols][j % cols].set_visible(False)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        w.save(fig, f"family_gap_{fa}_vs_{fb}", f"family gap {fa} - {fb}",
               f"Welch difference A - B ({fa} - {fb}) over {x_axis} and {y_axis}: the confirmation means of each "
               f"family's best method per comparison group "
               f"(cell text: the difference and the half width of its {w.level} interval; grey: not available).")


def flat_numbers(value: Any) -> Optional[list[float]]:
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        return None
    out = [finite(v) for v in value]
    if any(isinstance(v, (list, tuple, dict)) for v in value):
        return None
    return [np.nan if v is None else v for v in out]  # type: ignore[misc]


def spectra_figure(w: Writer) -> None:
    analysis = w.analysis
    mode = analysis.info.mode
    chosen: dict[str, list] = {}
    for method in dict.fromkeys(r.method for r in analysis.results):
        results = [r for r in analysis.results if r.method == method]
        confirmed = [r for r in results if r.confirm is not None and any(t.spectra for t in r.confirm_trials)]
        if confirmed:
            sign = 1.0 if mode == "max" else -1.0
            best = max(confirmed, key=lambda r: sign * r.confirm.mean)  # type: ignore[union-attr]
            chosen[method] = [t for t in best.confirm_trials if t.spectra]
        else:
            trials = [t for r in results for t in r.trials if t.spectra and t.finished]
            trials = trials or [t for r in results for t in r.trials if t.spectra]
            if trials:
                chosen[method] = trials[:3]
    keys: list[str] = []
    for trials in chosen.values():
        for t in trials:
            for key, value in t.spectra.items():
                if key not in keys and flat_numbers(value) is not None:
                    keys.append(key)
    keys = keys[:MAX_SPECTRA_KEYS]
    if not keys:
        return
    rows, cols = grid_layout(len(keys))
    fig = new_figure(4.8 * cols, 3.5 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    drawn = 0
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        for method, trials in chosen.items():
            labelled = False
            for t in trials:
                values = flat_numbers(t.spectra.get(key))
                if values is None:
                    continue
                ys = np.sort(np.asarray(values, dtype=float))[::-1]
                ys = np.where(ys > 0, ys, np.nan)
                if np.all(np.isnan(ys)):
                    continue
                ax.plot(np.arange(1, len(ys) + 1), ys, color=w.colors.get(method), alpha=0.8, linewidth=1.2,
                        label=None if labelled else f"{method} ({t.cell})")
                labelled, drawn = True, drawn + 1
        ax.set_yscale("log")
        ax.set_xlabel("index (largest first, count)")
        ax.set_ylabel(f"{key} value (log scale)")
        ax.set_title(key, fontsize=9)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not drawn:
        return
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    w.save(fig, "spectra", "singular-value spectra per method",
           "The last spectra each trial saved, sorted largest first (non-positive values left out), from each "
           "method's best confirmed cell (one line per seed), or its finished trials when none is confirmed.")


def learning_curves(w: Writer) -> None:
    analysis = w.analysis
    metric = analysis.info.metric
    panels: dict[tuple, dict[str, list[tuple[list[float], list[float]]]]] = {}
    for r in analysis.results:
        for t in r.trials:
            if t.phase != CONFIRM or not t.history:
                continue
            xs, ys = [], []
            for i, h in enumerate(t.history):
                y = finite(h.get(metric))
                if y is None:
                    continue
                x = finite(h.get("epoch"))
                xs.append(float(i + 1) if x is None else x)
                ys.append(y)
            if xs:
                panels.setdefault(r.group, {}).setdefault(r.method, []).append((xs, ys))
    if not panels:
        return
    keys = list(panels)[:MAX_PANELS]
    rows, cols = grid_layout(len(keys))
    fig = new_figure(4.6 * cols, 3.4 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    all_y = [y for k in keys for runs in panels[k].values() for _, ys in runs for y in ys]
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        for method, runs in panels[key].items():
            color = w.colors.get(method)
            for j, (xs, ys) in enumerate(runs):
                ax.plot(xs, ys, color=color, alpha=0.35, linewidth=1)
            epochs = sorted({x for xs, _ in runs for x in xs})
            means = [float(np.mean([ys[xs.index(e)] for xs, ys in runs if e in xs])) for e in epochs]
            ax.plot(epochs, means, color=color, linewidth=2, label=f"{method} (mean of {len(runs)} seeds)")
        ax.set_xlabel("epoch (epochs)")
        ax.set_ylabel(metric_label(metric, all_y))
        ax.set_title(group_label(key), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    more = f"; showing {len(keys)} of {len(panels)} groups" if len(panels) > len(keys) else ""
    w.save(fig, "learning_curves", f"learning curves of the confirmation runs ({metric} vs epoch)",
           f"{metric} per epoch of every confirmation run (thin: one seed; thick: the mean over seeds){more}.")


def x_positions(values: list[Any]) -> tuple[list[float], str, list[str]]:
    if values and all(is_number(v) for v in values):
        xs = [float(v) for v in values]
        return xs, scale_for(sorted(set(xs))), [f"{x:g}" for x in xs]
    return [float(i) for i in range(len(values))], "categorical", [str(v) for v in values]


def claim_figure(w: Writer, v: Verdict) -> None:
    analysis = w.analysis
    groups = [g for g in v.per_group if g.get("verdict") != CANNOT]
    claim = next((c for c in analysis.info.claims if c.id == v.id), None)
    title = f"claim {v.id} ({v.kind}): {v.verdict}"
    caption = f"{v.id}: {v.statement + ' ' if v.statement else ''}Verdict {v.verdict}: {v.detail}"
    if not groups:
        return
    metric = v.metric
    if v.kind in ("flat_along", "peaks_at", "monotone_along", "threshold") and all(g.get("values") for g in groups):
        order = axis_order([row["value"] for g in groups for row in g["values"]])
        xs, scale, labels = x_positions(order)
        if claim is not None and claim.axis and is_batch_axis(claim.axis) and scale != "categorical" and min(xs) > 0:
            scale = "log2"
        fig = new_figure(7.0, 4.4)
        ax = fig.add_subplot(1, 1, 1)
        ys_all = []
        for g in groups[:12]:
            rows = g["values"]
            pts = [Estimate(row["mean"], row["n"], None, row.get("lo"), row.get("hi")) for row in rows if row.get("mean") is not None]
            px = [xs[next(i for i, o in enumerate(order) if same_value(o, row["value"]))] for row in rows if row.get("mean") is not None]
            ys_all += [p.mean for p in pts]
            errorbar(ax, px, pts, label=f"{g['group']}: {g['verdict']}")
        if claim is not None and claim.at is not None:
            at_x = (float(claim.at) if scale != "categorical" and is_number(claim.at) else
                    next((xs[i] for i, o in enumerate(order) if same_value(o, claim.at)), None))
            if at_x is not None:
                ax.axvline(at_x, color="grey", linestyle=":", label=f"at = {claim.at}")
        if claim is not None and claim.level is not None and v.kind == "threshold":
            ax.axhline(claim.level, color="black", linestyle="--", linewidth=1, label=f"level = {claim.level:g}")
        if scale == "categorical":
            ax.set_xticks(xs)
            ax.set_xticklabels(labels, rotation=20, fontsize=8)
            unit = ""
        else:
            unit = apply_xscale(ax, scale, sorted(set(xs)))
        ax.set_xlabel(axis_xlabel(claim.axis if claim and claim.axis else "axis", unit))
        ax.set_ylabel(metric_label(metric, ys_all))
    else:
        fig = new_figure(7.0, 1.6 + 0.42 * min(len(groups), 30))
        ax = fig.add_subplot(1, 1, 1)
        shown = groups[:30]
        stats_ = []
        for i, g in enumerate(shown):
            s = g.get("statistic")
            if s is None:
                continue
            interval = g.get("interval")
            lo, hi = (interval if interval else (s, s))
            ax.errorbar([s], [i], xerr=[[s - lo], [hi - s]], fmt="o", capsize=4, color=VERDICT_COLORS.get(g["verdict"]))
            stats_ += [s, lo, hi]
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels([str(g["group"])[:48] for g in shown], fontsize=7)
        ax.invert_yaxis()
        tol = claim.tolerance if claim else 0.0
        pair = (list(claim.methods) or list(claim.families)) if claim else []
        a_b = f"{pair[0]} - {pair[1]}" if len(pair) == 2 else "A - B"
        if v.kind == "gap_within":
            ax.axvspan(-tol, tol, color="#2e7d32", alpha=0.12, label=f"|difference| <= {tol:g}")
            ax.axvline(0, color="grey", linewidth=0.8)
            ax.set_xlabel(f"difference in {metric}, {a_b} ({metric_unit(metric, stats_)})")
        elif v.kind == "ordering":
            ax.axvline(tol, color="black", linestyle="--", label=f"margin = {tol:g}")
            ax.set_xlabel(f"difference in {metric}, {a_b} ({metric_unit(metric, stats_)})")
        elif v.kind == "flat_along":
            ax.axvline(tol, color="black", linestyle="--", label=f"delta = {tol:g}")
            ax.set_xlabel(f"max - min of {metric} along the axis ({metric_unit(metric, stats_)})")
        else:
            level = claim.level if claim and claim.level is not None else None
            if level is not None:
                ax.axvline(level, color="black", linestyle="--", label=f"{'epsilon' if v.kind == 'identity_holds' else 'level'} = {level:g}")
            if v.kind == "identity_holds":
                ax.set_xlabel(f"max |{metric}| over trials ({metric_unit(metric, stats_)})")
                positive = [s for s in stats_ if s > 0] + ([level] if level else [])
                if positive and min(positive) > 0 and max(positive) / min(positive) >= 10:
                    ax.set_xscale("log")
            else:
                ax.set_xlabel(f"mean {metric} with {w.level} interval ({metric_unit(metric, stats_)})")
        for verdict, color in VERDICT_COLORS.items():
            if any(g["verdict"] == verdict for g in shown):
                ax.plot([], [], "o", color=color, label=verdict)
        ax.set_ylabel("comparison group (cells)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    w.save(fig, f"claim_{v.id}", title, caption)


def make_figures(analysis: Analysis, verdicts: list[Verdict], out_dir: Path, strict: bool = False) -> list[Figure]:
    """Draw every figure the sweep's axes and results allow into out_dir (created); a figure that
    fails is logged and left out unless strict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    w = Writer(analysis, out_dir, strict)
    w.attempt("metric figures", lambda: sweep_figures(w))
    w.attempt("family gap heatmap", lambda: gap_heatmaps(w))
    w.attempt("spectra", lambda: spectra_figure(w))
    w.attempt("learning curves", lambda: learning_curves(w))
    for v in verdicts:
        w.attempt(f"claim {v.id}", lambda v=v: claim_figure(w, v))
    return w.figures
