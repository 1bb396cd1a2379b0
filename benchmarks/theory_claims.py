"""The theory papers' claims in their small worlds, with more seeds and settings than the tests
(tests/test_theory_claims.py); prints the figures. A few minutes on 2 cores:

    .venv/bin/python benchmarks/theory_claims.py [--seeds 3] [--only jing,tian,pokle]

Jing et al.  n_collapsed of a linear 16 -> 16 InfoNCE encoder across the augmentation noise on
             coordinates 8..15 (case 1), and of one vs two stacked linear layers with weak noise
             and initial spectrum exp(-0.35 k) (case 2), with the layers' alignment.
Tian et al.  surviving modes of the linear trainable (W init spectrum exp(-0.35 k), symmetric
             linear predictor, no EMA, plain SGD) against the per-mode ODE, across weight decay on
             both sides of the collapse threshold; the predictor's symmetry and eigen-alignment.
Pokle et al. max / median / min recovery of the sparse-coding dictionary, contrastive (SimCLR) vs
             non-contrastive (BYOL without and with a linear predictor), per seed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainables.diagnostics import layer_alignment
from trainables.theory import ModeDynamics, collapse_threshold, fixed_points, flow_time
from trainables.train import Trial


def quiet(metrics: dict, checkpoint_dir: str) -> None:
    pass


def sgd(lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> dict:
    return {"lr": lr, "scale_lr": False, "warmup_epochs": 0, "momentum": momentum, "weight_decay": weight_decay}


def jing_trial(noise: float, seed: int, backbone: str = "linear", init_spectrum_decay: float | None = None) -> Trial:
    return Trial({
        "method": "simclr", "method_kwargs": {"temperature": 0.1},
        "data": {"name": "gaussian_aug", "split_seed": seed, "options": {"noise": noise, "n": 4096, "n_test": 512}},
        "model": {"backbone": backbone, "width": 16, "projector": "none", "init_spectrum_decay": init_spectrum_decay},
        "optim": sgd(0.01), "batch_size": 128, "epochs": 40, "seed": seed, "eval": {"fewshot_k": 0}, "cpus": 1,
    })


def jing(seeds: list[int]) -> None:
    print("\n== Jing et al. case 1: n_collapsed (of 16) of a linear encoder, per seed ==")
    for noise in (0.01, 0.25, 0.5, 1.0, 1.5):
        counts = [jing_trial(noise, seed).run(quiet)["n_collapsed"] for seed in seeds]
        print(f"noise {noise:<5} n_collapsed {counts}")
    print("\n== Jing et al. case 2: noise 0.001, initial spectrum exp(-0.35 k) ==")
    for seed in seeds:
        deep = jing_trial(0.001, seed, "deep_linear", 0.35)
        _, initial = layer_alignment(*deep.method.backbone.layer_weights())
        deep_final = deep.run(quiet)
        shallow = jing_trial(0.001, seed, "linear", 0.35).run(quiet)
        print(f"seed {seed}: n_collapsed two layers {deep_final['n_collapsed']}, one layer {shallow['n_collapsed']}; "
              f"layer alignment {initial:.2f} -> {deep_final['layer_alignment']:.2f}")


SIGMA = 1.0


def tian_trial(eta: float, seed: int, momentum: float = 0.0, lr: float = 0.05) -> Trial:
    return Trial({
        "method": "byol",
        "method_kwargs": {"normalize": False, "ema": False, "predictor": "linear", "predictor_symmetric": True},
        "data": {"name": "isotropic", "split_seed": seed, "options": {"sigma": SIGMA, "dim": 16, "n": 4096, "n_test": 512}},
        "model": {"backbone": "linear", "width": 16, "projector": "none", "init_spectrum_decay": 0.35},
        "optim": {**sgd(lr, momentum, eta), "min_lr_ratio": 1.0}, "batch_size": 128, "epochs": 50, "seed": seed,
        "eval": {"fewshot_k": 0}, "cpus": 1,
    })


def tian(seeds: list[int]) -> None:
    threshold = collapse_threshold(SIGMA)
    print(f"\n== Tian et al.: surviving modes (of 16), trainable vs ODE; sigma {SIGMA}, "
          f"threshold eta* = {threshold:.3f} ==")
    for ratio in (0.1, 0.25, 0.5, 0.8, 0.95, 1.05, 1.5):
        eta = ratio * threshold
        rows = []
        for seed in seeds:
            trial = tian_trial(eta, seed)
            w, w_p = trial.method.backbone.end_to_end().detach(), trial.method.predictor.weight.detach()
            s0, u = torch.linalg.eigh(w @ w.T)
            p0 = ((w_p @ u) * u).sum(dim=0)
            final = trial.run(quiet)
            singular_values = torch.linalg.svdvals(trial.method.backbone.end_to_end().detach())
            alive = int((singular_values > 0.05).sum())
            t_end = flow_time(trial.steps_per_epoch * trial.cfg.epochs, trial.cfg.optim.lr)
            predicted = int(ModeDynamics(eta, SIGMA).survivors(p0, s0, t_end, floor=0.05**2).sum())
            kept = singular_values[singular_values > 0.05]
            rows.append(f"{alive}/{predicted} (sv {float(kept.median()) if alive else 0:.3f}, "
                        f"asym {final['predictor_asymmetry']:.3f}, align {final['predictor_alignment']:.2f})")
        fixed = fixed_points(eta, SIGMA)
        print(f"eta/eta* {ratio:<4} trainable/ODE: {'; '.join(rows)}; ODE p+ {fixed[1] if fixed else 0:.3f}")
    print("\nmomentum 0.9, lr 0.05 (the ODE assumes gradient flow; heavy-ball momentum changes the early race):")
    for seed in seeds:
        trial = tian_trial(0.5 * threshold, seed, momentum=0.9)
        trial.run(quiet)
        alive = int((torch.linalg.svdvals(trial.method.backbone.end_to_end().detach()) > 0.05).sum())
        print(f"seed {seed}: eta = 0.5 eta*, surviving modes {alive}")


def pokle(seeds: list[int], epochs: int) -> None:
    print(f"\n== Pokle et al.: recovery max/median/min of M (p 50, d 10, m 50, n 3000), {epochs} epochs ==")
    runs = {"simclr": {"temperature": 0.05}, "byol (no predictor)": {"predictor": "none"},
            "byol (linear predictor)": {"predictor": "linear"}}
    for label, kwargs in runs.items():
        medians, rows = [], []
        for seed in seeds:
            final = Trial({
                "method": label.split()[0], "method_kwargs": kwargs,
                "data": {"name": "sparse_coding", "split_seed": seed, "options": {"n_test": 500}},
                "model": {"backbone": "symrelu", "width": 50, "projector": "none"},
                "optim": sgd(0.1), "batch_size": 256, "epochs": epochs, "seed": seed, "eval": {"fewshot_k": 0},
                "cpus": 1,
            }).run(quiet)
            medians.append(final["recovery_median"])
            rows.append(f"{final['recovery_max']:.2f}/{final['recovery_median']:.2f}/{final['recovery_min']:.2f}")
        print(f"{label:<24} per seed {'  '.join(rows)}   mean median {statistics.mean(medians):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="jing,tian,pokle")
    parser.add_argument("--pokle-epochs", type=int, default=40)
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))
    start = time.perf_counter()
    parts = set(args.only.split(","))
    if "jing" in parts:
        jing(seeds)
    if "tian" in parts:
        tian(seeds)
    if "pokle" in parts:
        pokle(seeds, args.pokle_epochs)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
