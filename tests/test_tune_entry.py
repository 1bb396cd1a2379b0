"""Which checkpoint a restarted trial takes up (trainables.tune_entry), on a real folder tree."""
import json
from pathlib import Path

import ray.tune

from trainables.contract import REPORTED_FILE
from trainables.tune_entry import reported_epoch, reported_results, saved_checkpoints


def checkpoint(folder: Path, name: str, epoch: int | None) -> None:
    (folder / name).mkdir(parents=True)
    if epoch is not None:
        history = [{"epoch": e, "knn_acc": 0.1 * e} for e in range(1, epoch + 1)]
        (folder / name / REPORTED_FILE).write_text(json.dumps(history))


def test_the_furthest_checkpoint_wins_across_the_folders_tune_made_for_the_trial(tmp_path):
    # The trial ran to epoch 1 under its first id, then (Ray's snapshot did not know it) again under
    # a new id, which Tune put in c00-confirm-seed1_6c9c and numbered from 0.
    checkpoint(tmp_path / "c00-confirm-seed1", "checkpoint_000000", 1)
    checkpoint(tmp_path / "c00-confirm-seed1_6c9c", "checkpoint_000001", 2)
    checkpoint(tmp_path / "c00-confirm-seed1_6c9c", "checkpoint_000002", 3)
    checkpoint(tmp_path / "c00-confirm-seed1_6c9c", "checkpoint_000003", None)  # cut short by a kill
    # Other trials' folders, including one whose key starts with this one's.
    checkpoint(tmp_path / "c00-confirm-seed10", "checkpoint_000009", 9)
    checkpoint(tmp_path / "c00-confirm-seed2", "checkpoint_000004", 4)

    found = saved_checkpoints(str(tmp_path / "c00-confirm-seed1"))

    assert [(Path(c.path).parent.name, Path(c.path).name, reported_epoch(c)) for c in found] == [
        ("c00-confirm-seed1_6c9c", "checkpoint_000002", 3),
        ("c00-confirm-seed1_6c9c", "checkpoint_000001", 2),
        ("c00-confirm-seed1", "checkpoint_000000", 1),
        ("c00-confirm-seed1_6c9c", "checkpoint_000003", -1),
    ]


def test_no_folder_no_checkpoints(tmp_path):
    assert saved_checkpoints(None) == []
    assert saved_checkpoints(str(tmp_path / "never-ran")) == []


def test_a_checkpoint_holds_every_result_reported_up_to_it(tmp_path):
    """What a trial that takes a checkpoint up reports again: every result Tune may not know."""
    checkpoint(tmp_path / "c00-search-000", "checkpoint_000002", 3)
    found = ray.tune.Checkpoint.from_directory(str(tmp_path / "c00-search-000" / "checkpoint_000002"))
    assert [r["epoch"] for r in reported_results(found)] == [1, 2, 3]
    assert reported_epoch(found) == 3

    # A checkpoint written before the history was kept: its own result alone.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / REPORTED_FILE).write_text(json.dumps({"epoch": 7, "knn_acc": 0.4}))
    old = ray.tune.Checkpoint.from_directory(str(tmp_path / "old"))
    assert reported_results(old) == [{"epoch": 7, "knn_acc": 0.4}] and reported_epoch(old) == 7
