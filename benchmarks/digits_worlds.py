"""How hard the digit worlds are: raw-pixel kNN and 10-shot linear probe, a random encoder, and
SSL methods trained for a fixed number of epochs (small 3-conv CNN, this machine's cores); prints
kNN accuracy, fewshot_acc and wall time per run.

    .venv/bin/python benchmarks/digits_worlds.py clutter [--methods simclr,vicreg] [--epochs 60]
    .venv/bin/python benchmarks/digits_worlds.py natural [--epochs 30]

clutter: digits_clutter with its defaults (pair views), and SimCLR once more with both views
         from one composite (pair_views=false), where the clutter is shared by the views.
natural: digits_on_natural at three settings of background contrast and digit size.
"""
from __future__ import annotations

import argparse
import time

from trainables.config import trial_config
from trainables.data import load_data
from trainables.evaluate import fewshot_accuracy, knn_accuracy
from trainables.train import Trial


def raw_pixels(data: dict) -> tuple[float, float]:
    """kNN accuracy and 10-shot probe accuracy on the normalized pixels of the held-out split."""
    bundle = load_data(trial_config({"data": data}).data)
    normalize = bundle.view_maker.normalize
    train, test = normalize(bundle.eval_train.samples).flatten(1), normalize(bundle.test.samples).flatten(1)
    y_train, y_test = bundle.eval_train.labels, bundle.test.labels
    return (knn_accuracy(train, y_train, test, y_test, 20, 0.07, bundle.num_classes),
            fewshot_accuracy(train, y_train, test, y_test, bundle.num_classes, k=10))


# Learning rates per 256 samples, tuned by hand on digits_clutter (SGD, batch 64).
LEARNING_RATES = {"simclr": 0.5, "vicreg": 0.2}


def trained(method: str, data: dict, epochs: int) -> tuple[dict, float]:
    config = {"method": method, "data": data, "epochs": epochs, "batch_size": 64,
              "model": {"backbone": "convnet", "width": 128, "projector": "512-512-512"},
              "optim": {"lr": LEARNING_RATES.get(method, 0.5), "warmup_epochs": 2}}
    start = time.perf_counter()
    final = Trial(config).run(lambda metrics, checkpoint_dir: None)
    return final, time.perf_counter() - start


def report(label: str, data: dict, methods: list[str], epochs: int) -> None:
    knn, fewshot = raw_pixels(data)
    print(f"\n{label}: raw pixels kNN {knn:.3f}, 10-shot {fewshot:.3f}", flush=True)
    for method in methods:
        final, seconds = trained(method, data, epochs)
        print(f"  {method:<8} random encoder kNN {final['knn_acc_random_init']:.3f} -> trained kNN {final['knn_acc']:.3f}, "
              f"10-shot {final['fewshot_acc']:.3f}, linear {final['linear_acc']:.3f} ({epochs} epochs, {seconds:.0f} s)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", choices=["clutter", "natural"])
    parser.add_argument("--methods", default="simclr,vicreg")
    parser.add_argument("--epochs", type=int, help="default: 60 for clutter, 30 for natural")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.world == "clutter":
        epochs = args.epochs or 60
        report("digits_clutter (pair views)", {"name": "digits_clutter"}, methods, epochs)
        report("digits_clutter (both views from one composite)",
               {"name": "digits_clutter", "options": {"pair_views": False}}, methods[:1], epochs)
        return
    for contrast, digit in ((1.0, (12, 20)), (0.5, (12, 20)), (1.0, (20, 28))):
        options = {"contrast": contrast, "digit_min": digit[0], "digit_max": digit[1]}
        report(f"digits_on_natural contrast {contrast}, digits {digit[0]}-{digit[1]} px",
               {"name": "digits_on_natural", "options": options}, methods[:1], args.epochs or 30)


if __name__ == "__main__":
    main()
