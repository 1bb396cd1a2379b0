"""The package contracts of pyproject.toml ([tool.importlinter]) hold, and each one fails when a
module breaks it: checked on a copy of both packages, so the source tree is never touched."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), str(tree / "pyproject.toml"), "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in ("orchestrator", "trainables"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_on_the_project():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


BREAKS = {
    "orchestrator sits above trainables, never the reverse":
        {"trainables/sneaky.py": "import orchestrator.runner\n"},
    "a trial knows nothing of tracking, search or sweeps":
        {"trainables/sneaky.py": "import mlflow\n"},
    "only trainables' Ray entry point imports ray":
        {"trainables/sneaky.py": "import ray\n"},
    "no import cycles inside either package":
        {"orchestrator/ping.py": "import orchestrator.pong\n", "orchestrator/pong.py": "import orchestrator.ping\n"},
}


@pytest.mark.parametrize("contract", list(BREAKS))
def test_breaking_a_contract_fails_the_check(tree, contract):
    for path, text in BREAKS[contract].items():
        (tree / path).write_text(text)
    result = lint(tree)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout
