"""What a sweep file, a dataset folder or a checkpoint could make dualsweep do: nothing evaluates
config strings as code, and checkpoints are read as tensors only."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("orchestrator", "trainables") for p in (ROOT / package).rglob("*.py"))


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node


def called_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def test_sources_are_found():
    assert len(SOURCES) > 40


def test_no_eval_or_exec_anywhere():
    found = [f"{p.relative_to(ROOT)}:{c.lineno}" for p in SOURCES for c in calls(p)
             if called_name(c) in ("eval", "exec", "builtins.eval", "builtins.exec", "compile")]
    assert not found, found


def test_torch_load_reads_tensors_only():
    loads = [(p, c) for p in SOURCES for c in calls(p) if called_name(c) == "torch.load"]
    assert loads, "the trial's checkpoints are read with torch.load"
    for path, call in loads:
        weights_only = [k for k in call.keywords if k.arg == "weights_only"]
        assert weights_only and isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value is True, \
            f"{path.relative_to(ROOT)}:{call.lineno}: torch.load without weights_only=True"


def test_plain_pickle_load_is_not_used_on_user_files():
    """Ray's and the searcher's own state aside (orchestrator/search.py), nothing unpickles with the
    unrestricted loader; CIFAR batches go through trainables.data.disk.CifarUnpickler."""
    found = [f"{p.relative_to(ROOT)}:{c.lineno}" for p in SOURCES for c in calls(p)
             if called_name(c) in ("pickle.load", "pickle.loads") and p.name != "search.py"]
    assert not found, found
