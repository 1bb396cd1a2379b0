"""The claim sweeps in sweeps/claims/ (docs/claims.md): both sizes of each load and validate, the
cluster size against an empty dataset layout under DUALSWEEP_DATA and a named cluster (so that this
machine's GPUs are not checked), and each declares the claims its docs section names."""
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.spec import expand_cells, load_spec

ROOT = Path(__file__).resolve().parents[1]
CLAIM_SWEEPS = sorted((ROOT / "sweeps" / "claims").glob("*.yaml"))
DECLARED = {
    "garrido": {"G1", "G2b", "G3", "G4a", "G6", "G7"},
    "garrido_batch": {"G7"},
    "garrido_dims": {"G5a", "G5b"},
    "garrido_variants": {"G2a", "G4b"},
    "tian": {"T1a", "T1b", "T2a", "T2b", "T3"},
    "tian_directpred": {"T4", "T5"},
    "jing": {"J2", "J3"},
    "jing_directclr": {"J1", "J4"},
    "chen": {"C1", "C2"},
    "chen_objects": {"C3"},
    "pokle": {"P1", "P2a", "P2b"},
}


@pytest.fixture
def data_layout(tmp_path, monkeypatch):
    for folder in ("imagenet/train/n01440764", "imagenet/val/n01440764", "cifar10", "stl10"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    monkeypatch.setenv("DUALSWEEP_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


def test_every_claim_sweep_is_listed():
    assert {p.stem for p in CLAIM_SWEEPS} == set(DECLARED)


@pytest.mark.parametrize("path", CLAIM_SWEEPS, ids=lambda p: p.stem)
def test_claim_sweep_validates_at_both_sizes(path, data_layout, capsys):
    cpu, cluster = load_spec(path), load_spec(path, ["scale=cluster"], cluster_address="auto")
    assert {c.id for c in cpu.spec.claims} == DECLARED[path.stem]
    assert [c.id for c in cluster.spec.claims] == [c.id for c in cpu.spec.claims]
    assert set(cpu.spec.grid) == set(cluster.spec.grid)
    assert expand_cells(cpu.spec) and expand_cells(cluster.spec)
    assert main(["validate", str(path), "scale=cluster", "--address", "auto"]) == 0
    assert main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
