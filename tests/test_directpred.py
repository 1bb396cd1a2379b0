"""DirectPred: the predictor set from F_hat, its EMA statistics, its reset period, and resume."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from trainables import train
from trainables.models import DirectPredPredictor, DirectPredSettings, directpred_weight
from trainables.train import CHECKPOINT_FILE, Trial


def random_psd(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim + 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / (dim + 2)


def test_known_f_hat_gives_u_diag_p_ut():
    f_hat = random_psd(6, 0)
    eps = 0.05
    w = directpred_weight(f_hat, eps)
    s, u = torch.linalg.eigh(f_hat)
    expected = torch.zeros(6, 6, dtype=torch.float64)
    for j in range(6):
        p_j = max(math.sqrt(max(s[j].item(), 0.0) / s.max().item()) + eps, 1e-4)
        expected += p_j * torch.outer(u[:, j], u[:, j])
    assert torch.allclose(w, expected, atol=1e-12)
    assert torch.allclose(w, w.T, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(w)
    assert eigenvalues.min() >= 1e-4 - 1e-12
    # The strongest direction passes with gain 1 + eps.
    assert eigenvalues.max().item() == pytest.approx(1 + eps, rel=1e-12)


def test_rank_deficient_f_hat_clamps_negative_and_null_eigenvalues():
    v = torch.randn(5, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = directpred_weight(v @ v.T, eps=-0.5)
    eigenvalues = torch.linalg.eigvalsh(w)
    assert eigenvalues.min().item() == pytest.approx(1e-4, rel=1e-6)
    assert eigenvalues.max().item() == pytest.approx(0.5, rel=1e-9)


def batches(steps: int, n: int = 8, dim: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(n, dim, generator=g) + 1.0, torch.randn(n, dim, generator=g)) for _ in range(steps)]


def test_f_hat_is_the_uncentered_ema_over_both_views():
    rho = 0.6
    predictor = DirectPredPredictor(4, DirectPredSettings(rho=rho, eps=0.1, freq=1))
    expected = None
    for z1, z2 in batches(5):
        predictor.observe(z1, z2)
        f = torch.cat([z1, z2]).double()
        batch = sum(torch.outer(row, row) for row in f) / len(f)
        expected = batch if expected is None else rho * expected + (1 - rho) * batch
    assert torch.allclose(predictor.correlation.double(), expected, atol=1e-5)
    # Uncentered: the inputs' mean of 1.0 on view 1 shows up in F_hat.
    assert predictor.correlation.mean() > 0.2
    assert int(predictor.observed_steps) == 5


def test_predictor_is_set_every_freq_steps_and_frozen_between():
    predictor = DirectPredPredictor(4, DirectPredSettings(rho=0.3, eps=0.1, freq=3))
    set_at = []
    previous = predictor.weight.detach().clone()
    for step, (z1, z2) in enumerate(batches(8)):
        predictor.observe(z1, z2)
        weight = predictor.weight.detach().clone()
        if not torch.equal(weight, previous):
            set_at.append(step)
            assert torch.allclose(weight, directpred_weight(predictor.correlation, 0.1).float(), atol=1e-6)
        previous = weight
    assert set_at == [0, 3, 6]


def test_predictor_weight_is_not_trained_unless_asked():
    frozen = DirectPredPredictor(4, DirectPredSettings())
    trained = DirectPredPredictor(4, DirectPredSettings(trainable=True))
    assert not frozen.weight.requires_grad and trained.weight.requires_grad
    assert {"weight", "correlation", "observed_steps"} <= set(frozen.state_dict())


def config(epochs: int) -> dict:
    return dict(
        method="directpred",
        # rho near 1 and freq 3: a lost F_hat or step counter would visibly change the result.
        method_kwargs=dict(directpred_rho=0.9, directpred_freq=3),
        epochs=epochs, batch_size=256, seed=0, cpus=1,
        model=dict(backbone="mlp", width=64, projector="64-32"),
        optim=dict(lr=0.2, warmup_epochs=1.0), eval=dict(linear_probe_steps=10),
    )


def keep_checkpoints(root: Path):
    def report(metrics: dict, checkpoint_dir: str) -> None:
        shutil.copytree(checkpoint_dir, root / f"epoch{metrics['epoch']}")

    return report


def predictor_state(directory: Path) -> dict[str, torch.Tensor]:
    state = torch.load(directory / CHECKPOINT_FILE, weights_only=True)["method"]
    return {k: v for k, v in state.items() if k.startswith("predictor.")}


def digits_training_split_size(test_fraction: float) -> int:
    """Training digits after the stratified split: every class keeps its count less its rounded
    share of the test split (scikit-learn's 1797 digits at test_fraction 0.2: 1438)."""
    return sum(int(n) - round(int(n) * test_fraction) for n in np.bincount(load_digits().target))


def test_directpred_statistics_survive_checkpoint_and_resume(tmp_path):
    # One predictor observation per optimizer step: len(training split) // batch_size, the last
    # partial batch dropped.
    trial = Trial(config(2))
    assert len(trial.data.train) == digits_training_split_size(trial.cfg.data.test_fraction)
    steps_per_epoch = len(trial.data.train) // trial.cfg.batch_size
    assert trial.steps_per_epoch == steps_per_epoch

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    final_straight = train(config(2), report=keep_checkpoints(straight))
    final_resumed = train(config(2), report=keep_checkpoints(resumed), resume_from=str(straight / "epoch1"))

    after_one = predictor_state(straight / "epoch1")
    assert int(after_one["predictor.observed_steps"]) == steps_per_epoch
    assert after_one["predictor.correlation"].abs().sum() > 0

    a, b = predictor_state(straight / "epoch2"), predictor_state(resumed / "epoch2")
    assert int(b["predictor.observed_steps"]) == 2 * steps_per_epoch
    for key in ("predictor.correlation", "predictor.weight"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert not torch.allclose(after_one["predictor.correlation"], a["predictor.correlation"], atol=1e-3)
    assert final_resumed["loss"] == pytest.approx(final_straight["loss"], rel=1e-5)
