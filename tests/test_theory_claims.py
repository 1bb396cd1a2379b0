"""The theory papers' claims in their own small worlds, as whole trials (CPU, one thread: the models
are tiny). Longer versions with more seeds: benchmarks/theory_claims.py."""
import pytest
import torch

from trainables import train
from trainables.diagnostics import layer_alignment
from trainables.theory import ModeDynamics, collapse_threshold, fixed_points, flow_time
from trainables.train import Trial


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def quiet(metrics, checkpoint_dir):
    pass


def sgd(lr, momentum=0.9, weight_decay=0.0):
    return {"lr": lr, "scale_lr": False, "warmup_epochs": 0, "momentum": momentum, "weight_decay": weight_decay}


# --- Jing et al.: dimensional collapse ------------------------------------------------------------
def jing(noise, backbone="linear", init_spectrum_decay=None, epochs=20):
    """x ~ N(0, I_16), views add N(0, noise^2) to coordinates 8..15, InfoNCE (tau 0.1) on the
    output of a 16 -> 16 linear network, no projector."""
    return Trial({
        "method": "simclr", "method_kwargs": {"temperature": 0.1},
        "data": {"name": "gaussian_aug", "options": {"noise": noise, "n": 4096, "n_test": 512}},
        "model": {"backbone": backbone, "width": 16, "projector": "none", "init_spectrum_decay": init_spectrum_decay},
        "optim": sgd(0.03), "batch_size": 128, "epochs": epochs, "eval": {"fewshot_k": 0}, "cpus": 1,
    })


@pytest.mark.slow
def test_jing_strong_augmentation_collapses_a_linear_encoder_weak_does_not():
    strong = jing(noise=1.5)
    collapsed = strong.run(quiet)
    weak = jing(noise=0.01).run(quiet)
    print(f"n_collapsed: noise 1.5 -> {collapsed['n_collapsed']}, noise 0.01 -> {weak['n_collapsed']}")
    assert 4 <= collapsed["n_collapsed"] <= 8 and weak["n_collapsed"] == 0
    # What collapses is the noisy half: the encoder keeps all 8 clean input directions.
    w = strong.method.backbone.end_to_end().detach()
    clean, noisy = torch.linalg.svdvals(w[:, :8]), torch.linalg.svdvals(w[:, 8:])
    assert clean.min() > 0.3 * clean.max() and noisy.max() < 0.1 * clean.min()


@pytest.mark.slow
def test_jing_two_linear_layers_collapse_with_weak_augmentation():
    """Same initial spectrum exp(-0.35 k) per layer and noise 0.001: one layer recovers every
    dimension, two stacked layers keep several collapsed and align their singular spaces."""
    deep = jing(noise=0.001, backbone="deep_linear", init_spectrum_decay=0.35)
    _, initial_alignment = layer_alignment(*deep.method.backbone.layer_weights())
    deep_final = deep.run(quiet)
    shallow = jing(noise=0.001, backbone="linear", init_spectrum_decay=0.35).run(quiet)
    print(f"n_collapsed: two layers {deep_final['n_collapsed']}, one layer {shallow['n_collapsed']}; "
          f"layer alignment {initial_alignment:.2f} -> {deep_final['layer_alignment']:.2f}")
    assert deep_final["n_collapsed"] >= 3 and shallow["n_collapsed"] == 0
    assert initial_alignment < 0.7 and deep_final["layer_alignment"] > 0.95


# --- Tian et al.: non-contrastive dynamics with linear networks -------------------------------------
SIGMA = 1.0  # collapse threshold tau^2 / (4 (1 + sigma^2)) = 0.125 without EMA (tau = 1)


def tian(weight_decay, epochs=50, optim=None, init_spectrum_decay=0.0, **method_kwargs):
    """Linear W (16 -> 16), linear predictor, SimSiam-style target (W itself, stop-gradient), the
    unnormalized loss, isotropic data, views x + sigma eps. Plain SGD with a small step, so the
    trainable follows the gradient flow the ODE describes."""
    kwargs = {"normalize": False, "ema": False, "predictor": "linear", **method_kwargs}
    return Trial({
        "method": "byol", "method_kwargs": kwargs,
        "data": {"name": "isotropic", "options": {"sigma": SIGMA, "dim": 16, "n": 4096, "n_test": 512}},
        "model": {"backbone": "linear", "width": 16, "projector": "none", "init_spectrum_decay": init_spectrum_decay},
        "optim": {**sgd(0.05, momentum=0.0, weight_decay=weight_decay), "min_lr_ratio": 1.0, **(optim or {})},
        "batch_size": 128, "epochs": epochs, "eval": {"fewshot_k": 0}, "cpus": 1,
    })


@pytest.mark.parametrize("ablation", [{"stop_gradient": False}, {"predictor": "none"}])
def test_tian_without_stop_gradient_or_predictor_w_collapses(ablation):
    healthy = tian(0.03, epochs=5, optim={"momentum": 0.9}).run(quiet)
    collapsed = tian(0.03, epochs=5, optim={"momentum": 0.9}, **ablation).run(quiet)
    print(f"||W||: {healthy['weight_norm']:.3f} with both, {collapsed['weight_norm']:.2e} with {ablation}")
    assert healthy["weight_norm"] > 1.0 and collapsed["weight_norm"] < 1e-2


@pytest.mark.slow
def test_tian_threshold_agrees_with_the_linear_trainable_on_both_sides():
    threshold = collapse_threshold(SIGMA)
    below = tian(0.5 * threshold)
    survived = below.run(quiet)
    collapsed = tian(2.0 * threshold).run(quiet)
    singular_values = torch.linalg.svdvals(below.method.backbone.end_to_end().detach())
    _, p_plus = fixed_points(0.5 * threshold, SIGMA)
    print(f"below: singular values {singular_values.min():.3f}..{singular_values.max():.3f} "
          f"(ODE fixed point {p_plus:.3f}); above: ||W|| {collapsed['weight_norm']:.2e}")
    # Below: every mode sits near the ODE's stable fixed point s = p_plus^2 (alpha_p = 1), and the
    # predictor has become symmetric and aligned with F (Tian et al.'s claim 2). Above: W -> 0.
    # The spread comes from the sample covariance of 4096 draws, not exactly I.
    assert abs(float(singular_values.median()) - p_plus) < 0.05 * p_plus
    assert torch.all((singular_values - p_plus).abs() < 0.25 * p_plus)
    assert survived["predictor_asymmetry"] < 0.05 and survived["predictor_alignment"] > 0.95
    assert collapsed["weight_norm"] < 1e-3
    assert not ModeDynamics(2.0 * threshold, SIGMA).survivors(torch.ones(16), torch.ones(16), t_end=100).any()


@pytest.mark.slow
def test_tian_ode_predicts_which_modes_survive():
    """W starts with singular values exp(-0.35 k): the weak modes fall outside the basin that the
    weight decay leaves. The ODE, started from each mode's s_j and predictor gain u_j^T W_p u_j,
    predicts how many survive."""
    eta = 0.8 * collapse_threshold(SIGMA)
    trial = tian(eta, init_spectrum_decay=0.35, predictor_symmetric=True)
    w, w_p = trial.method.backbone.end_to_end().detach(), trial.method.predictor.weight.detach()
    s0, u = torch.linalg.eigh(w @ w.T)
    p0 = ((w_p @ u) * u).sum(dim=0)
    trial.run(quiet)
    alive = int((torch.linalg.svdvals(trial.method.backbone.end_to_end().detach()) > 0.05).sum())
    t_end = flow_time(trial.steps_per_epoch * trial.cfg.epochs, 0.05)
    predicted = int(ModeDynamics(eta, SIGMA).survivors(p0, s0, t_end, floor=0.05**2).sum())
    print(f"surviving modes: trainable {alive}, ODE {predicted} of 16")
    assert 2 <= alive <= 14 and abs(alive - predicted) <= 1


# --- Pokle et al.: contrastive recovers the dictionary, non-contrastive does not ------------------------
def pokle(method, seed, **method_kwargs):
    """Sparse coding p = 50, d = 10, n = 3000; symmetric-ReLU encoder with m = 50 units, no
    projector; the data (M, z) and the initialization change with the seed."""
    return train({
        "method": method, "method_kwargs": method_kwargs,
        "data": {"name": "sparse_coding", "split_seed": seed, "options": {"n_test": 500}},
        "model": {"backbone": "symrelu", "width": 50, "projector": "none"},
        "optim": sgd(0.1), "batch_size": 256, "epochs": 40, "seed": seed, "eval": {"fewshot_k": 0}, "cpus": 1,
    }, report=quiet)


@pytest.mark.slow
def test_pokle_contrastive_recovers_the_dictionary_better_than_non_contrastive():
    contrastive, non_contrastive = [], []
    for seed in (1, 2, 3):
        simclr = pokle("simclr", seed, temperature=0.05)
        byol = pokle("byol", seed, predictor="linear")
        contrastive.append(simclr["recovery_median"])
        non_contrastive.append(byol["recovery_median"])
        # Non-contrastive ends in a bad minimum that is not collapsed: W is far from 0.
        assert byol["weight_norm"] > 1.0
    print(f"median recovery: simclr {contrastive}, byol {non_contrastive}")
    assert all(c > n + 0.1 for c, n in zip(contrastive, non_contrastive))
    assert min(contrastive) > 0.8
