"""Seeds until decided without Ray: the error rate of the round-by-round rule (orchestrator.report.rounds)
by simulation, the rule itself, the searcher's rounds (driven as Tune would drive it) with a save and
restore in the middle, the plan's worst case, and the confidence in the report."""
from __future__ import annotations

import json
import logging
import math
import pickle
import time
from collections import Counter

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.report.claims import CANNOT, CONTRADICTED, INCONCLUSIVE, SUPPORTED, ClaimSpec, Verdict
from orchestrator.report.model import CellInfo, SweepInfo, TrialRecord
from orchestrator.report.render import write_report
from orchestrator.report.rounds import growing_cells, look, look_confidence, looks
from orchestrator.search import CellSearcher, create_studies
from orchestrator.spec import expand_cells, load_spec, planned_trials, sweep_info
from orchestrator.storage import read_rounds
from trainables.stand_in import score, validate_stand_in

ALPHA = 0.05
FIRST_SEEDS, MAX_SEEDS = 2, 6
NOISE_SD = 0.02
REPS = 2000
CELLS = [CellInfo("c00", "method=simclr", {"method": "simclr"}, "simclr", "sample_contrastive"),
         CellInfo("c01", "method=vicreg", {"method": "vicreg"}, "vicreg", "dimension_contrastive")]


# --- the error rate, by simulation --------------------------------------------------------------

def two_methods(tolerance: float, confidence: float) -> SweepInfo:
    claim = ClaimSpec(id="G2", kind="gap_within", methods=["simclr", "vicreg"], tolerance=tolerance)
    return SweepInfo("simulated", "knn_acc", "max", {"method": ["simclr", "vicreg"]}, CELLS,
                     list(range(1, FIRST_SEEDS + 1)), 1, 2 * (1 + MAX_SEEDS), False, claims=[claim],
                     confidence=confidence, max_seeds=MAX_SEEDS)


def confirmations(scores: np.ndarray, seeds: dict[str, int]) -> list[TrialRecord]:
    """The first seeds[cell] scores of each cell's row, as finished confirmation trials."""
    return [TrialRecord(f"{c.id}-confirm-seed{s}", c.id, c.values, c.method, c.family, "confirm", s, {}, "finished",
                        {"knn_acc": float(scores[i, s - 1])})
            for i, c in enumerate(CELLS) for s in range(1, seeds[c.id] + 1)]


def until_decided(info: SweepInfo, scores: np.ndarray) -> tuple[str, int]:
    """The searcher's procedure on one draw of scores: look after each round, grow what the rule
    says, stop when it grows nothing. (verdict, confirmation seeds per cell at the end)."""
    seeds = {c.id: FIRST_SEEDS for c in CELLS}
    round_ = 1
    while True:
        decision = look(info, confirmations(scores, seeds), round_, dict(seeds), MAX_SEEDS, max(seeds.values()) + 1)
        if decision.done:
            return decision.verdicts[0].verdict, max(seeds.values())
        for cell in decision.grow:
            seeds[cell] += 1
        round_ += 1


def wrong_rate(gap: float, tolerance: float, wrong: str, confidence: float, rng_seed: int) -> tuple[float, float]:
    """(rate of the wrong verdict, mean seeds per cell) over REPS draws: method A scores N(gap, sd^2),
    method B N(0, sd^2), per seed."""
    rng = np.random.default_rng(rng_seed)
    info = two_methods(tolerance, confidence)
    outcomes = []
    for _ in range(REPS):
        scores = rng.normal(0.0, NOISE_SD, size=(2, MAX_SEEDS))
        scores[0] += gap
        outcomes.append(until_decided(info, scores))
    verdicts = Counter(v for v, _ in outcomes)
    return verdicts[wrong] / REPS, float(np.mean([n for _, n in outcomes]))


# (name, true gap A - B, tolerance, the verdict that would be wrong)
SCENARIOS = [
    ("no gap", 0.0, 0.03, CONTRADICTED),
    ("gap twice the tolerance", 0.06, 0.03, SUPPORTED),
    # The least favourable truth for a "contradicted": |gap| exactly at the tolerance, where the claim
    # still holds and each look's interval misses it on one side only by chance.
    ("gap at the tolerance", 0.03, 0.03, CONTRADICTED),
]


@pytest.mark.parametrize("name,gap,tolerance,wrong", SCENARIOS, ids=[s[0].replace(" ", "_") for s in SCENARIOS])
def test_wrong_verdicts_stay_within_the_stated_rate(name, gap, tolerance, wrong):
    started = time.monotonic()
    split = look_confidence(ALPHA, looks(FIRST_SEEDS, MAX_SEEDS))
    assert split == pytest.approx(1 - ALPHA / 5)
    # The same draws for both procedures (same generator seed): only the confidence of each look differs.
    rate, seeds = wrong_rate(gap, tolerance, wrong, split, rng_seed=20261201)
    naive, naive_seeds = wrong_rate(gap, tolerance, wrong, 1 - ALPHA, rng_seed=20261201)
    slack = 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)
    print(f"\n{name} (gap {gap}, tolerance {tolerance}, sd {NOISE_SD}, seeds {FIRST_SEEDS}..{MAX_SEEDS}, "
          f"{REPS} draws): "
          f"wrong '{wrong}' at {split:.4f} per look (alpha split over 5 looks) {rate:.4f}, mean seeds {seeds:.2f}; "
          f"at {1 - ALPHA} per look (naive) {naive:.4f}, mean seeds {naive_seeds:.2f}; "
          f"{time.monotonic() - started:.1f} s")
    assert rate <= ALPHA + slack
    assert naive >= rate
    if gap == tolerance:
        # Where wrong verdicts happen at all, repeated looks at 1 - alpha make more of them.
        assert naive > rate and naive > 2 * rate


# --- the rule ------------------------------------------------------------------------------------

def verdict(claim_id: str, kind: str, cells: list[str]) -> Verdict:
    return Verdict(claim_id, "gap_within", "", kind, None, None, 2, cells, "")


def test_growing_cells_are_closed_over_shared_cells():
    verdicts = [verdict("G1", INCONCLUSIVE, ["c00", "c01"]), verdict("G2", SUPPORTED, ["c01", "c02"]),
                verdict("G3", SUPPORTED, ["c03", "c04"]), verdict("G4", CANNOT, [])]
    # G2 shares c01 with G1: its c02 grows too, so that G2 stays judged on equal seeds per cell.
    assert growing_cells(verdicts) == ["c00", "c01", "c02"]
    assert growing_cells([verdict("G1", CONTRADICTED, ["c00"]), verdict("G2", CANNOT, [])]) == []


def scored_info(tolerance: float) -> tuple[SweepInfo, np.ndarray]:
    """Two methods whose scores alternate +-0.01 around 0.5 and 0.5 + 0.02."""
    scores = np.array([[0.52 + 0.01 * (-1) ** s for s in range(MAX_SEEDS)],
                       [0.50 + 0.01 * (-1) ** s for s in range(MAX_SEEDS)]])
    return two_methods(tolerance, look_confidence(ALPHA, looks(FIRST_SEEDS, MAX_SEEDS))), scores


def test_look_grows_the_cells_of_an_inconclusive_claim_or_says_why_it_stops():
    info, scores = scored_info(tolerance=0.05)
    seeds = {"c00": 2, "c01": 2}
    first = look(info, confirmations(scores, seeds), 1, seeds, MAX_SEEDS, 3)
    assert first.verdicts[0].verdict == INCONCLUSIVE
    assert first.grow == ["c00", "c01"]
    assert first.reason == "round 1: G2 inconclusive; seed 3 for c00, c01"
    full = {"c00": MAX_SEEDS, "c01": MAX_SEEDS}
    decided = look(info, confirmations(scores, full), 5, full, MAX_SEEDS, 7)
    assert decided.done and decided.reason == "claims decided after round 5: G2 supported"
    info, _ = scored_info(tolerance=0.02)  # the gap is the tolerance: no number of seeds decides it
    spent = look(info, confirmations(scores, full), 5, full, MAX_SEEDS, 7)
    assert spent.done and spent.reason == "max_seeds 6 reached after round 5: G2 still inconclusive"


# --- the searcher's rounds, driven as Tune drives it ---------------------------------------------

SWEEP = (
    "name: rounds\ntrainable: stand_in\ntrial: {epochs: 2, x: 0.3}\n"
    "grid: {method: [simclr, vicreg], noise: [0.0, 0.01]}\n"
    "search: {trials_per_cell: 1, params: {x: {type: choice, choices: [0.3]}}}\n"
    "scheduler: {type: none}\nseeds: [1, 2]\n"
    "confirm: {until_decided: true, max_seeds: 6}\n"
    "claims:\n"
    "  - {id: G1, kind: gap_within, methods: [simclr, vicreg], tolerance: 0.04, where: {noise: 0.0}}\n"
    "  - {id: G2, kind: gap_within, methods: [simclr, vicreg], tolerance: 0.04, where: {noise: 0.01}}\n"
)


@pytest.fixture
def rounds_sweep(tmp_path):
    path = tmp_path / "rounds.yaml"
    path.write_text(SWEEP + f"storage: {tmp_path}\n")
    loaded = load_spec(path)
    cells = expand_cells(loaded.spec)
    loaded.sweep_dir.mkdir(parents=True)
    url = f"sqlite:///{loaded.sweep_dir}/optuna.db"
    create_studies(loaded.spec, cells, url)
    return loaded, CellSearcher(loaded.spec, cells, url, str(loaded.sweep_dir))


def drive(searcher: CellSearcher, start: int = 0, stop_after: int | None = None) -> int:
    """Suggest and complete stand-in trials one at a time until FINISHED (or `stop_after` trials);
    the next trial number."""
    i = start
    while stop_after is None or i < start + stop_after:
        config = searcher.suggest(f"t{i}")
        if config == "FINISHED":
            break
        assert config is not None, "the searcher waits for nothing: every trial it suggested has ended"
        cfg = validate_stand_in(config["trial"])
        searcher.on_trial_complete(f"t{i}", {"epoch": 2, "knn_acc": score(cfg, 2), "loss": -score(cfg, 2)})
        i += 1
    return i


@pytest.fixture
def progress_lines(monkeypatch):
    """What the run says on the progress log (which `dualsweep` keeps from propagating to the root)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("orchestrator.progress")
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_the_searcher_adds_seeds_to_the_cells_of_inconclusive_claims_only(rounds_sweep, progress_lines):
    loaded, searcher = rounds_sweep
    trials = drive(searcher)
    # G1 (no noise) is decided on the first two seeds; G2's cells (noise 0.01) need two more rounds.
    assert searcher.confirm_seeds == {"c00": [1, 2], "c01": [1, 2, 3, 4], "c02": [1, 2], "c03": [1, 2, 3, 4]}
    assert trials == 4 + 2 * 2 + 2 * 4 < planned_trials(loaded.spec, searcher.cells) == 4 * (1 + 6)
    assert progress_lines == ["seeds until decided: round 1: G1 supported, G2 inconclusive; seed 3 for c01, c03",
                    "seeds until decided: round 2: G1 supported, G2 inconclusive; seed 4 for c01, c03",
                    "seeds until decided: claims decided after round 3: G1 supported, G2 supported"]
    rounds = read_rounds(loaded.sweep_dir)
    assert rounds["stopped"] == searcher.stopped == "claims decided after round 3: G1 supported, G2 supported"
    assert [r["grow"] for r in rounds["looks"]] == [["c01", "c03"], ["c01", "c03"], []]
    keys = sorted(r.key for r in searcher.trials.values() if r.phase == "confirm")
    expected = {"c00": (1, 2), "c01": (1, 2, 3, 4), "c02": (1, 2), "c03": (1, 2, 3, 4)}
    assert keys == sorted(f"{cell}-confirm-seed{s}" for cell, seeds in expected.items() for s in seeds)
    # Every finished trial keeps its final metrics, not only the sweep's.
    records = searcher.trials.values()
    assert all({"epoch", "knn_acc", "loss"} <= set(r.metrics) and r.status == "finished" for r in records)


def test_a_restored_searcher_continues_its_rounds(rounds_sweep, tmp_path):
    """Tune pickles the searcher into tuner.pkl at the start and restores its saved state on resume:
    a sweep killed in the middle of round 2 goes on to the same seeds and the same end."""
    loaded, searcher = rounds_sweep
    fresh = pickle.dumps(searcher)  # tuner.pkl
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    url = f"sqlite:///{reference_dir}/optuna.db"
    create_studies(loaded.spec, searcher.cells, url)
    reference = CellSearcher(loaded.spec, searcher.cells, url, str(reference_dir))
    drive(reference)

    done = drive(searcher, stop_after=4 + 8 + 1)  # the search, round 1 and one trial of round 2
    assert len(searcher.looks) == 1 and searcher.stopped is None
    snapshot = tmp_path / "searcher-state.pkl"
    searcher.save(str(snapshot))
    restored = pickle.loads(fresh)
    restored.restore(str(snapshot))
    assert restored.confirm_seeds == searcher.confirm_seeds and restored.looks == searcher.looks
    assert all(r.metrics for r in restored.trials.values())  # the TrialRecords pickled their final metrics
    drive(restored, start=done)
    assert restored.confirm_seeds == reference.confirm_seeds
    assert restored.looks == reference.looks
    assert read_rounds(loaded.sweep_dir)["stopped"] == reference.stopped


def test_with_fixed_seeds_the_searcher_looks_at_nothing(rounds_sweep):
    loaded, _ = rounds_sweep
    spec = load_spec(loaded.source, ["confirm.until_decided=false"]).spec
    cells = expand_cells(spec)
    url = f"sqlite:///{loaded.sweep_dir}/fixed.db"
    create_studies(spec, cells, url)
    searcher = CellSearcher(spec, cells, url, str(loaded.sweep_dir))
    assert drive(searcher) == planned_trials(spec, cells) == 4 * (1 + 2)
    assert searcher.looks == [] and searcher.stopped is None
    assert read_rounds(loaded.sweep_dir) == {}


# --- the plan and the report -----------------------------------------------------------------------

def test_dry_run_and_validate_state_the_worst_case(rounds_sweep, capsys):
    loaded, _ = rounds_sweep
    assert main(["validate", loaded.source]) == 0
    assert "4 cells, at most 28 trials" in capsys.readouterr().out
    assert main(["run", loaded.source, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells x (1 search + 2 to 6 confirmation trials) = at most 28 trials" in out
    assert "at most 6 per cell; each look judges at 99% (alpha 0.05 over 5 looks)" in out


def test_the_report_states_its_confidence_and_why_the_rounds_ended(rounds_sweep, tmp_path):
    loaded, searcher = rounds_sweep
    drive(searcher)
    info = sweep_info(loaded.spec, searcher.cells, partial=False, stopped=searcher.stopped)
    assert info.confidence == pytest.approx(0.99) and info.planned_text == "at most 28"
    files = write_report(info, searcher.report_trials(), tmp_path / "report")
    document = json.loads(files.claims_json.read_text())
    assert document["confidence"] == pytest.approx(0.99)
    assert document["seeds_until_decided"] == {"max_seeds": 6, "looks": 5, "stopped": searcher.stopped}
    assert {v["id"]: v["verdict"] for v in document["verdicts"]} == {"G1": SUPPORTED, "G2": SUPPORTED}
    page = files.html.read_text()
    assert "intervals are 99% (alpha 0.05 over 5 looks)" in page and "99% interval" in page
    assert "at most 28" in page and searcher.stopped in page
