"""Seeds until decided on the shared local Ray cluster: `dualsweep run` of a stand-in sweep with two
claims, one decided on the first seeds and one that needs more, then `dualsweep report`."""
from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient
from test_orchestrator_ray import child_runs, write_sweep

from orchestrator.cli import main
from orchestrator.spec import load_spec
from orchestrator.storage import read_rounds

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]

# Both claims compare two methods the stand-in scores alike (x = 0.3); G1's cells have no noise, so
# two seeds decide it; G2's cells add N(0, 0.01^2) per seed, and its interval needs more seeds to
# fit within the tolerance.
SWEEP = (
    "trial: {epochs: 2, x: 0.3, seconds_per_epoch: 0}\n"
    "grid: {method: [simclr, vicreg], noise: [0.0, 0.01]}\n"
    "search: {trials_per_cell: 1, params: {x: {type: choice, choices: [0.3]}}}\n"
    "scheduler: {type: none}\nseeds: [1, 2]\n"
    "confirm: {until_decided: true, max_seeds: 6, alpha: 0.05}\n"
    "claims:\n"
    "  - {id: G1, kind: gap_within, methods: [simclr, vicreg], tolerance: 0.04, where: {noise: 0.0}}\n"
    "  - {id: G2, kind: gap_within, methods: [simclr, vicreg], tolerance: 0.04, where: {noise: 0.01}}\n"
)
STOPPED = "claims decided after round 3: G1 supported, G2 supported"


def test_inconclusive_claims_get_seeds_until_decided(tmp_path, capsys):
    started = time.monotonic()
    path = write_sweep(tmp_path, "decided", SWEEP)
    spec = load_spec(path).spec
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    wall = time.monotonic() - started
    print(out)
    sweep_dir = tmp_path / "runs" / "decided"

    # The run said why it stopped, round by round, and counted against the worst case.
    assert "4 cells x (1 search + 2 to 6 confirmation trials) = at most 28 trials" in out
    assert "seeds until decided: round 1: G1 supported, G2 inconclusive; seed 3 for c01, c03" in out
    assert f"seeds until decided: {STOPPED}" in out
    assert "16 of at most 28 planned trials" in out
    assert read_rounds(sweep_dir)["stopped"] == STOPPED

    # Confirmation seeds per cell in MLflow: G1's cells (c00, c02: noise 0) kept the first two.
    client = MlflowClient(spec.tracking.uri)
    runs = child_runs(client, spec.tracking.experiment, spec.name)
    seeds: dict[str, list[int]] = {}
    for run in runs:
        assert run.info.status == "FINISHED"
        if run.data.tags["phase"] == "confirm":
            seeds.setdefault(run.data.tags["cell"], []).append(int(run.data.tags["seed"]))
    assert {cell: sorted(s) for cell, s in seeds.items()} == {"c00": [1, 2], "c01": [1, 2, 3, 4], "c02": [1, 2],
                                                             "c03": [1, 2, 3, 4]}

    # The report judges at the confidence each look used, and says so and why the rounds ended.
    report = tmp_path / "report"
    assert main(["report", str(sweep_dir), "--out", str(report)]) == 0
    document = json.loads((report / "claims.json").read_text())
    assert document["confidence"] == pytest.approx(1 - 0.05 / 5)
    assert document["seeds_until_decided"] == {"max_seeds": 6, "looks": 5, "stopped": STOPPED}
    assert document["partial"] is False
    assert {v["id"]: (v["verdict"], v["n"]) for v in document["verdicts"]} == {"G1": ("supported", 2),
                                                                              "G2": ("supported", 4)}
    assert "intervals are 99% (alpha 0.05 over 5 looks)" in (report / "report.html").read_text()
    print(f"seeds until decided on Ray: {len(runs)} trials, {wall:.1f} s")
