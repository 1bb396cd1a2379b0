"""Which checkpoint a restarted trial takes up (trainables.tune_entry), on a real folder tree."""
import json
from pathlib import Path

from trainables.tune_entry import REPORTED_FILE, reported_epoch, saved_checkpoints


def checkpoint(folder: Path, name: str, epoch: int | None) -> None:
    (folder / name).mkdir(parents=True)
    if epoch is not None:
        (folder / name / REPORTED_FILE).write_text(json.dumps({"epoch": epoch, "knn_acc": 0.5}))


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
