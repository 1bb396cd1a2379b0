"""write_report on synthetic trials: the files, their contents, the figures, the partial banner,
provenance warnings and atomic replacement. No Ray, no MLflow."""
from __future__ import annotations

import csv
import json
import math
import re
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from orchestrator.report.claims import ClaimSpec
from orchestrator.report.figures import projector_out_dim, projector_shapes
from orchestrator.report.model import CellInfo, SweepInfo, TrialRecord
from orchestrator.report.render import write_report

FAMILY = {"simclr": "sample_contrastive", "vicreg": "dimension_contrastive"}
PROVENANCE = {"dualsweep_version": "0.1.0", "git_commit": "a46cdb6", "git_dirty": "false", "torch": "2.5.1",
              "ray": "2.40.0", "optuna": "4.1.0", "mlflow": "3.1.0", "device": "cpu: AMD EPYC",
              "data_fingerprint": "digits_clutter/0/3f2a"}
CLAIMS = [
    # simclr - vicreg = -0.02 +- 0.0227 = [-0.0427, 0.0027] in every batch size: within 0.05
    ClaimSpec(id="G3", kind="gap_within", methods=["simclr", "vicreg"], tolerance=0.05,
              statement="SimCLR <tuned> matches VICReg & co"),
    # vicreg - simclr = 0.02 +- 0.0227: upper bound 0.0427 < 0.1
    ClaimSpec(id="G4", kind="ordering", methods=["vicreg", "simclr"], tolerance=0.1),
    # 64 -> 256: +0.04 +- 0.0227 for both methods, no step down
    ClaimSpec(id="G7", kind="monotone_along", axis="batch_size", direction="increasing"),
    ClaimSpec(id="J1", kind="no_collapse", metric="rank_emb", level=5.0),
    ClaimSpec(id="J2", kind="collapses", metric="rank_emb", level=5.0, where={"batch_size": 1024}),
]


def synthetic(grid: dict, claims: list[ClaimSpec], partial: bool = False, seeds: tuple = (1, 2, 3),
              search: int = 2) -> tuple[SweepInfo, list[TrialRecord]]:
    """A sweep over `grid`: simclr scores 0.60 + 0.02 log2(batch/64), vicreg 0.02 more; seeds add -0.01, 0,
    +0.01. Each cell has `search` search trials (the second stopped early) and one confirmation per seed,
    with per-epoch histories, spectra and provenance."""
    cells, trials = [], []
    for i, combo in enumerate(product(*grid.values())):
        values = dict(zip(grid, combo))
        method = values.get("method", "simclr")
        cell = CellInfo(f"c{i:02d}", ",".join(f"{k}={v}" for k, v in values.items()), values, method, FAMILY[method])
        cells.append(cell)
        mean = 0.60 + 0.02 * math.log2(values.get("batch_size", 64) / 64) + (0.02 if method == "vicreg" else 0.0)
        dim = int(str(values.get("model.projector", "64-32")).split("-")[-1])
        for k in range(search):
            status = "finished" if k == 0 else "stopped_early"
            trials.append(TrialRecord(
                f"{cell.id}-search-{k:03d}", cell.id, values, method, cell.family, "search", 0,
                {"optim.lr": 0.3 + k, "method_kwargs.temperature": 0.15}, status,
                {"epoch": 4.0 if k == 0 else 2.0, "knn_acc": mean - 0.01 * (k + 1), "rank_emb": 20.0, "loss": 3.0},
                [], None, dict(PROVENANCE), f"run-{cell.id}-s{k}", 4))
        for j, seed in enumerate(seeds):
            final = mean + (j - 1) * 0.01
            history = [{"epoch": float(e), "loss": 5.0 - e, "knn_acc": final * e / 4} for e in range(1, 5)]
            spectra = {"epoch": 4, "repr": [2.0 ** -(k / 4) for k in range(32)],
                       "emb": [float(np.exp(-k / (5 + j))) for k in range(dim)], "layer_alignment": [[1.0, 0.0], [0.0, 1.0]]}
            trials.append(TrialRecord(
                f"{cell.id}-confirm-seed{seed}", cell.id, values, method, cell.family, "confirm", seed,
                {"optim.lr": 0.3, "method_kwargs.temperature": 0.15}, "finished",
                {"epoch": 4.0, "knn_acc": final, "rank_emb": 20.0 + j + dim / 64, "loss": 1.0}, history, spectra,
                dict(PROVENANCE), f"run-{cell.id}-c{seed}", 4))
    planned = len(cells) * (search + len(seeds))
    info = SweepInfo("synthetic", "knn_acc", "max", grid, cells, list(seeds), search, planned, partial,
                     "two methods <across> batch sizes", claims)
    return info, trials


GRID = {"method": ["simclr", "vicreg"], "batch_size": [64, 128, 256]}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    info, trials = synthetic(GRID, CLAIMS)
    files = write_report(info, trials, tmp_path_factory.mktemp("sweep") / "report", strict_figures=True)
    return info, trials, files


def test_the_files_exist_and_claims_json_holds_the_verdicts(report) -> None:
    info, trials, files = report
    for path in (files.html, files.markdown, files.csv, files.claims_json):
        assert path.is_file() and path.stat().st_size > 0 and path.parent == files.out_dir
    document = json.loads(files.claims_json.read_text())
    assert document["partial"] is False and document["provenance_warnings"] == []
    assert document["trials_ended"] == len(trials) == document["trials_planned"] == 30
    verdicts = {v["id"]: v for v in document["verdicts"]}
    assert {k: v["verdict"] for k, v in verdicts.items()} == {
        "G3": "supported", "G4": "contradicted", "G7": "supported", "J1": "supported", "J2": "cannot be judged"}
    g3 = verdicts["G3"]
    assert g3["statistic"] == pytest.approx(-0.02) and g3["n"] == 3 and len(g3["per_group"]) == 3
    assert g3["interval"] == pytest.approx([-0.02 - 0.0226696, -0.02 + 0.0226696], abs=1e-6)
    assert g3["cells_used"] == [f"c0{i}" for i in range(6)]
    assert verdicts["J2"]["detail"] == "where.batch_size: 1024 is not a value of grid axis batch_size; its values: 64, 128, 256"
    # the cells and the gaps behind the verdicts
    cells = {c["cell"]: c for c in document["cells"]}
    assert cells["c00"]["best_trial"] == "c00-search-000" and cells["c00"]["confirm"]["mean"] == pytest.approx(0.60)
    assert cells["c00"]["search_counts"] == {"finished": 1, "stopped_early": 1}
    family = [g for g in document["gaps"] if g["kind"] == "family"]
    assert [g["group"] for g in family] == ["batch_size=64", "batch_size=128", "batch_size=256"]
    assert all(g["diff"] == pytest.approx(-0.02) for g in family)
    assert document["provenance"]["data_fingerprint"] == {"digits_clutter/0/3f2a": 30}
    assert [v.verdict for v in files.verdicts] == [verdicts[c.id]["verdict"] for c in CLAIMS]


def test_results_csv_has_one_row_per_trial(report) -> None:
    info, trials, files = report
    with open(files.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["key"] for r in rows] == [t.key for t in trials]
    assert list(rows[0])[:7] == ["key", "cell", "batch_size", "method", "family", "phase", "seed"]
    for column in ("optim.lr", "method_kwargs.temperature", "knn_acc", "rank_emb", "status", "stopped_early", "run_id"):
        assert column in rows[0]
    stopped = rows[1]
    assert stopped["key"] == "c00-search-001" and stopped["status"] == "stopped_early" and stopped["stopped_early"] == "true"
    assert stopped["batch_size"] == "64" and stopped["method"] == "simclr" and stopped["run_id"] == "run-c00-s1"
    assert float(rows[2]["knn_acc"]) == pytest.approx(0.59)


def test_the_figures_are_real_plots(report) -> None:
    info, trials, files = report
    names = [f.name for f in files.figures]
    assert names == ["knn_acc_vs_batch_size", "spectra", "learning_curves", "claim_G3", "claim_G4", "claim_G7", "claim_J1"]
    for figure in files.figures:
        assert figure.path == files.out_dir / f"{figure.name}.png"
        assert figure.title and figure.caption
        pixels = mpimg.imread(figure.path)[..., :3]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels.var() > 1e-3, figure.name  # not a blank canvas
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, figure.name


def test_the_page_is_self_contained(report) -> None:
    info, trials, files = report
    page = files.html.read_text()
    assert page.index('id="plan"') < page.index('id="verdicts"') < page.index('id="cells"') < page.index('id="gaps"') \
        < page.index('id="provenance"') < page.index("<figure")
    verdicts = page[page.index('<table id="verdicts"'):]
    verdicts = verdicts[:verdicts.index("</table>")]
    assert verdicts.count("<tr>") == 1 + len(CLAIMS)
    assert '<td class="verdict supported">supported</td>' in verdicts
    assert '<td class="verdict contradicted">contradicted</td>' in verdicts
    assert '<td class="verdict cannot">cannot be judged</td>' in verdicts
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,[A-Za-z0-9+/=]+">', page)
    assert len(images) == page.count("<img") == len(files.figures)
    assert images == [f.title.replace("<", "&lt;").replace(">", "&gt;") for f in files.figures]
    assert page.count("<figcaption>") == len(files.figures)
    for external in ("<script", "<link", 'src="http', "href=", "@import", "url("):
        assert external not in page
    # user strings are escaped
    assert "SimCLR &lt;tuned&gt; matches VICReg &amp; co" in page and "<tuned>" not in page
    assert "two methods &lt;across&gt; batch sizes" in page
    assert 'id="partial"' not in page and "WARNING" not in page


def test_the_markdown_has_the_same_tables(report) -> None:
    info, trials, files = report
    text = files.markdown.read_text()
    for title in ("## Plan", "## Claims and verdicts", "## Per cell and method", "## Duality gaps", "## Provenance"):
        assert title in text
    assert "| G3 | gap_within | SimCLR <tuned> matches VICReg & co | **supported** | -0.02 |" in text
    assert [line for line in text.splitlines() if line.startswith("![")] == \
        [f"![{f.title}]({f.name}.png)" for f in files.figures]


def test_a_partial_sweep_says_so_everywhere(tmp_path: Path) -> None:
    info, trials = synthetic({"method": ["simclr", "vicreg"]}, [], partial=True)
    trials[-1].status, trials[-1].metrics, trials[-1].history = "running", {"epoch": 2.0, "knn_acc": 0.3}, []
    trials[-2].status, trials[-2].metrics = "pending", {}
    files = write_report(info, trials, tmp_path / "report", strict_figures=True)
    banner = "partial report: 8 of 10 trials ended"
    page = files.html.read_text()
    assert f'<div class="banner partial" id="partial">{banner}' in page
    assert "<title>[partial]" in page
    assert banner in files.markdown.read_text()
    document = json.loads(files.claims_json.read_text())
    assert document["partial"] is True and document["trials_ended"] == 8 and document["trials_by_status"] == {
        "finished": 6, "stopped_early": 2, "running": 1, "pending": 1}
    assert all(f.title.endswith("(partial sweep)") for f in files.figures)
    # no numeric axis: a bar chart of the metric per method instead of a line
    assert [f.name for f in files.figures][0] == "knn_acc_per_method"
    vicreg = next(c for c in document["cells"] if c["method"] == "vicreg")
    assert vicreg["confirm"]["n"] == 1  # the running and the pending confirmation are not counted


def test_provenance_warns_when_the_data_differs_but_not_for_devices(tmp_path: Path) -> None:
    info, trials = synthetic({"method": ["simclr", "vicreg"]}, [], search=1, seeds=(1, 2))
    trials[2].provenance["device"] = "cuda: NVIDIA H200 x1"
    files = write_report(info, trials, tmp_path / "same")
    assert files.provenance_warnings == []
    assert "Note: trials differ in device" in files.html.read_text()
    trials[4].provenance["data_fingerprint"] = "digits_clutter/0/ffff"
    files = write_report(info, trials, tmp_path / "differs")
    expected = ("trials differ in data_fingerprint: digits_clutter/0/3f2a (5 trials); "
                f"digits_clutter/0/ffff (1 trial: {trials[4].key})")
    assert files.provenance_warnings == [expected]
    assert json.loads(files.claims_json.read_text())["provenance_warnings"] == [expected]
    assert f'<div class="banner warning">WARNING: {expected}</div>' in files.html.read_text()
    assert f"> **WARNING**: {expected}" in files.markdown.read_text()


def test_two_axes_give_heatmaps_output_dim_and_rank_figures(tmp_path: Path) -> None:
    grid = {"method": ["simclr", "vicreg"], "batch_size": [64, 256], "model.projector": ["128-64", "128-256"]}
    claims = [ClaimSpec(id="G5", kind="peaks_at", axis="model.projector", at="128-256")]
    info, trials = synthetic(grid, claims, seeds=(1, 2), search=1)
    files = write_report(info, trials, tmp_path / "report", strict_figures=True)
    assert [f.name for f in files.figures] == [
        "knn_acc_vs_batch_size", "knn_acc_vs_output_dim", "rank_emb_vs_output_dim",
        "family_gap_sample_contrastive_vs_dimension_contrastive", "spectra", "learning_curves", "claim_G5"]
    assert "projector shape" in next(f for f in files.figures if f.name == "knn_acc_vs_output_dim").caption
    for figure in files.figures:
        assert mpimg.imread(figure.path)[..., :3].var() > 1e-3, figure.name


def test_a_new_report_replaces_the_old_one_whole(tmp_path: Path) -> None:
    out = tmp_path / "report"
    info, trials = synthetic({"method": ["simclr", "vicreg"]}, [CLAIMS[0]], seeds=(1, 2), search=1)
    first = write_report(info, trials, out)
    assert (out / "claim_G3.png").is_file()
    (tmp_path / ".report.tmp-999999999-x").mkdir()  # left by a killed report
    info.claims = []
    second = write_report(info, trials, out)
    assert not (out / "claim_G3.png").exists() and first.html == second.html
    assert json.loads(second.claims_json.read_text())["verdicts"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary or old directory left


def test_a_directory_with_other_files_keeps_them(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    info, trials = synthetic({"method": ["simclr", "vicreg"]}, [CLAIMS[0]], seeds=(1, 2), search=1)
    files = write_report(info, trials, out)
    assert (out / "notes.txt").read_text() == "mine" and files.html.is_file() and (out / "claim_G3.png").is_file()
    assert not (out / ".dualsweep-report").exists()
    info.claims = []  # the next report has no claim figure: the old one goes, the user's file stays
    files = write_report(info, trials, out)
    assert not (out / "claim_G3.png").exists() and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".dualsweep-report-files", "notes.txt", "report.html", "report.md", "results.csv", "claims.json"]
        + [p.name for p in files.all() if p.suffix == ".png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_projector_specs_give_output_dims_and_shapes() -> None:
    assert [projector_out_dim(v) for v in ("8192-8192-256", "2048-512", "none", 128)] == [256, 512, None, 128]
    garrido = ["8192-8192-256", "8192-8192-1024", "256-256-256", "1024-1024-1024"]
    assert projector_shapes(garrido) == {"8192-8192-256": "8192-8192-d", "8192-8192-1024": "8192-8192-d",
                                         "256-256-256": "d-d-d", "1024-1024-1024": "d-d-d"}
    quickstart = ["256-256-64", "256-256-256"]
    assert projector_shapes(quickstart) == {"256-256-64": "256-256-d", "256-256-256": "256-256-d"}
